"""``cut-hf <command>`` and ``python -m cut_hf <command>``: one program, one subcommand per job.

    cut-hf translate --model user/horse2zebra --input photos/ --output zebras/
    cut-hf train --data-dir datasets/horse2zebra --mode cut
    accelerate launch -m cut_hf train ...        torchrun --nproc_per_node 4 -m cut_hf translate ...

Each command's flags live in its own module of :mod:`cut_hf.cli`, imported only when that command
runs, so ``cut-hf --help`` is quick and one command's optional packages never slow another.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> (module of cut_hf.cli with a ``main(argv) -> int``, one line for ``--help``)
COMMANDS: dict[str, tuple[str, str]] = {
    "translate": ("translate", "translate images, folders or a 🤗 dataset column with a trained generator"),
    "train": ("train", "train CUT / FastCUT / SinCUT (or SimCLR with --task simclr) with 🤗 Accelerate"),
    "push": ("push", "upload a training output folder to the Hub in one commit (what a failed push says to run)"),
    "convert": ("convert", "turn the paper's official checkpoints into from_pretrained folders"),
    "export": ("export", "write a generator as ONNX or a torch.export program"),
    "evaluate": ("evaluate", "translate a test folder and score it (FID / KID, or PSNR / SSIM when paired)"),
    "evaluate-simclr": ("evaluate_simclr", "kNN and linear-probe accuracy of a SimCLR encoder"),
}
PROG = "cut-hf"


def usage() -> str:
    """The top-level help: the commands with one line each."""
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} <command> [flags]   ({PROG} <command> --help for a command's flags)", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to the command's main; returns its exit status (2 for an unknown command)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from cut_hf import __version__

        print(f"{PROG} {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\n{PROG}: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"cut_hf.cli.{COMMANDS[name][0]}")
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
