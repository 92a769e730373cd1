"""``cut-hf convert``: official CUT / FastCUT / SinCUT checkpoints in, ``from_pretrained`` folders out.

The work is :func:`cut_hf.official.convert.convert`; this is its command line.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from cut_hf.cli.help import HelpFormatter
from cut_hf.errors import one_line
from cut_hf.official.checkpoints import MODES, ConversionError
from cut_hf.official.convert import OFFICIAL_PRETRAINED_URL, convert


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``cut-hf convert``."""
    p = argparse.ArgumentParser(
        prog="cut-hf convert",
        description="Convert official CUT/FastCUT/SinCUT checkpoints (latest_net_G.pth, ...) "
                    "to a from_pretrained folder.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, help="the generator: latest_net_G.pth of the official release")
    p.add_argument("--netD", help="also convert this discriminator (latest_net_D.pth) into OUTPUT/discriminator/")
    p.add_argument("--netF", help="also convert this patch sampler (latest_net_F.pth) into OUTPUT/sampler/")
    p.add_argument("--output", required=True, help="folder to write (the generator at its root)")
    p.add_argument("--name", help="dataset name for the model card, e.g. horse2zebra")
    p.add_argument("--mode", choices=sorted(MODES), help="how the weights were trained: " + " or ".join(sorted(MODES)))
    p.add_argument("--source", default=OFFICIAL_PRETRAINED_URL, help="where the checkpoint came from (for the card)")
    p.add_argument("--push-to-hub", metavar="ID", help="upload the folder to this Hub repository")
    p.add_argument("--private", action="store_true", default=None, help="create the Hub repository as private")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 refused input or failed push)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    command = "cut-hf convert " + shlex.join(argv)
    try:
        out = convert(args.checkpoint, args.output, netD=args.netD, netF=args.netF, name=args.name, mode=args.mode,
                      source=args.source, push_to_hub=args.push_to_hub, private=args.private, command=command)
    except ConversionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # disk full, permissions, Hub upload failures (HTTP errors are OSErrors)
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 1
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    print(f"converted {args.checkpoint} -> {out} ({', '.join(written)})")
    print(f"generator config: {(out / 'config.json').read_text(encoding='utf-8').strip()}")
    if args.push_to_hub:
        print(f"pushed to https://huggingface.co/{args.push_to_hub}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
