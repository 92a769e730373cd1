"""Train SimCLR (Chen et al., 2020) with 🤗 Accelerate: two views per image, NT-Xent over every process.

    python train_simclr.py --data images/ --backbone resnet18 --cifar-stem --image-size 32
    accelerate launch train_simclr.py --data images/ --batch-size 512 --optimizer lars

The same as ``train.py --task simclr`` and ``python -m cut_hf.simclr_train``. The flags, the frozen
config, data, model, objective and loop read top to bottom in :mod:`cut_hf.cli.simclr_train`
(inside the package, so that the ``python -m`` path works wherever cut-hf is installed).
"""

import sys

from cut_hf.cli.simclr_train import main

if __name__ == "__main__":
    sys.exit(main())
