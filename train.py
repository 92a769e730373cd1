"""Train CUT, FastCUT or SinCUT (Park et al., ECCV 2020), or SimCLR, with 🤗 Accelerate.

    python train.py --data-dir datasets/horse2zebra --output-dir outputs/h2z             # one device
    python train.py --mode sincut --image-a photo.jpg --image-b painting.jpg             # one image per domain
    accelerate launch train.py --data-dir datasets/horse2zebra --mode fastcut            # many GPUs / nodes
    torchrun --nproc_per_node 4 train.py --data-dir datasets/horse2zebra                 # the same with torchrun
    python train.py --task simclr --data images/ ...                                     # SimCLR

The same program as ``cut-hf train`` (and ``accelerate launch -m cut_hf train`` for an installed
package). It reads top to bottom in :mod:`cut_hf.cli.train`: the flags, the frozen configuration,
data, models, the objective and the loop.
"""

import sys

from cut_hf.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
