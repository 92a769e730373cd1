"""``cut-hf push OUTPUT --hub-model-id user/name``: a training output folder to the Hub, in one commit.

The same upload ``--push-to-hub`` makes at the end of training (:func:`cut_hf.training.logs.push_folders_to_hub`),
for a run trained without it or whose push failed: the generator (or SimCLR model) at the
repository's root, ``sampler/`` and ``discriminator/`` beside it, stale remote files deleted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cut_hf.cli.help import HelpFormatter
from cut_hf.training.logs import PushError, output_folders, push_folders_to_hub


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``cut-hf push``."""
    p = argparse.ArgumentParser(prog="cut-hf push", description="Upload a training output folder to the Hub.",
                                formatter_class=HelpFormatter)
    p.add_argument("output_dir", help="the folder train.py wrote (with generator/, or model/ for SimCLR)")
    p.add_argument("--hub-model-id", required=True, help="user/name on the Hub")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("--hub-endpoint", default=None, help="Hub URL (default: huggingface.co or HF_ENDPOINT)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns 0, or 1 with a one-line message when the push failed."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        root, subfolders = output_folders(args.output_dir)
        url = push_folders_to_hub(args.hub_model_id, root, subfolders, private=args.private, endpoint=args.hub_endpoint)
    except PushError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
