"""``python -m cut_hf.simclr_train``: an alias of ``train_simclr.py`` (the CLI is :mod:`cut_hf.cli.simclr_train`)."""

from __future__ import annotations

import sys

from .cli.simclr_train import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
