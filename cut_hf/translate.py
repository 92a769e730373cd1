"""Command line: translate an image or a folder of images with a CUT generator.

    python -m cut_hf.translate --model ID_OR_DIR --input FILE_OR_DIR --output DIR \\
        [--size N] [--batch-size B] [--device D] [--precision fp32|bf16|fp16] [--tile N] [--format png]

(also installed as ``cut-translate``). ``--model`` is a Hub id, a ``save_pretrained`` folder or a
``train.py`` output folder (its ``generator/``). Folders are searched recursively; each output keeps
its input's relative path and stem, saved as PNG (or ``--format``). Unreadable files are reported
and skipped. Exit status: 0 when at least one image was translated, 1 when none could be, 2 for a
bad command line (unknown model, missing input, unusable device or precision).

Note on the name: ``cut_hf.translate`` is both this module and the function the package exports
(``from cut_hf import translate``). Importing a submodule rebinds the package attribute to the
module, so this module is made callable (it forwards to :func:`cut_hf.pipeline.translate`) and
``cut_hf.translate(generator, image)`` works whichever was imported first.
"""

from __future__ import annotations

import argparse
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from tqdm.auto import tqdm

from .hub import ModelLoadError, load_generator
from .images import DEFAULT_MAX_PIXELS, ImageLoadError, find_images, load_image
from .perf import EMULATED_BF16_NOTE, emulated_bf16
from .pipeline import PRECISIONS, _channels, autocast_dtype, resolve_device, translate

__all__ = ["build_parser", "main", "translate"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m cut_hf.translate``."""
    p = argparse.ArgumentParser(
        prog="python -m cut_hf.translate",
        description="Translate images with a CUT / FastCUT generator (Hub id or local folder).",
    )
    p.add_argument("--model", required=True, help="Hub id, save_pretrained folder or train.py output folder")
    p.add_argument("--input", required=True, help="an image file or a folder (searched recursively)")
    p.add_argument("--output", required=True, help="output folder (created; relative paths and stems are kept)")
    p.add_argument("--size", type=int, default=None, help="resize the shorter side to N before translating")
    p.add_argument("--no-keep-size", action="store_true", help="with --size: save at the working size")
    p.add_argument("--batch-size", type=int, default=8, help="images of equal size per forward (default 8)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS, help="fp32 (default), bf16, fp16 (CUDA)")
    p.add_argument("--tile", type=int, default=None,
                   help="tile images larger than N x N (default: only images over 1 Mpx; 0: never)")
    p.add_argument("--format", default="png", help="output file format / extension (default png)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"skip inputs with more pixels than this (default {DEFAULT_MAX_PIXELS})")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _output_paths(files: list[Path], root: Path, out_dir: Path, ext: str) -> list[Path]:
    """``out_dir / relative path / stem.ext``; when two inputs share a stem (a.jpg, a.png) the later
    ones keep their extension in the name (a_png.ext) instead of overwriting."""
    taken: set[Path] = set()
    outputs = []
    for f in files:
        rel = f.relative_to(root) if f != root else Path(f.name)
        out = out_dir / rel.with_suffix(ext)
        if out in taken:
            out = out_dir / rel.with_name(f"{rel.stem}_{rel.suffix.lstrip('.')}{ext}")
        taken.add(out)
        outputs.append(out)
    return outputs


def _header_size(path: Path) -> tuple[int, int] | None:
    """(W, H) from the file header, for grouping equal sizes; None when unreadable (found later)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - the real load reports the reason
        return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 nothing translated, 2 bad command line)."""
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        return _fail(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.size is not None and args.size < 1:
        return _fail(f"--size must be positive, got {args.size}")
    if args.tile is not None and args.tile < 0:
        return _fail(f"--tile must be >= 0, got {args.tile}")
    ext = "." + args.format.lower().lstrip(".")
    if Image.registered_extensions().get(ext) not in Image.SAVE:
        return _fail(f"--format {args.format!r}: Pillow cannot write this format")

    source = Path(args.input).expanduser()
    if not source.exists():
        return _fail(f"input {str(source)!r} does not exist")
    if source.is_dir():
        root, files = source, find_images(source)
        if not files:
            return _fail(f"no image files in {str(source)!r}", code=1)
    else:
        root, files = source.parent, [source]

    try:
        device = resolve_device(args.device)
        autocast_dtype(args.precision, device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
    except (RuntimeError, ValueError) as err:
        return _fail(f"--device {args.device or device} / --precision {args.precision}: {err}")
    if emulated_bf16(args.precision, device):
        print(f"note: {EMULATED_BF16_NOTE}. Use --precision fp32 on this machine.", file=sys.stderr)
    try:
        generator = load_generator(args.model, map_location=str(device))
    except ModelLoadError as err:
        return _fail(str(err))
    in_nc, _ = _channels(generator)

    out_dir = Path(args.output).expanduser()
    outputs = dict(zip(files, _output_paths(files, root, out_dir, ext)))
    # Equal sizes next to each other, so that translate() can batch them; otherwise input order.
    sizes = {f: _header_size(f) for f in files}
    order = sorted(files, key=lambda f: sizes[f] or (0, 0))

    done, skipped = 0, 0
    bar = tqdm(total=len(order), unit="img", desc="translate", file=sys.stderr)

    def skip(path: Path, reason: str) -> None:
        nonlocal skipped
        skipped += 1
        bar.write(f"skipped {path}: {reason}", file=sys.stderr)
        bar.update(1)

    try:
        for start in range(0, len(order), args.batch_size):
            loaded: list[tuple[Path, Image.Image]] = []
            for path in order[start : start + args.batch_size]:
                try:
                    loaded.append((path, load_image(path, in_nc, max_pixels=args.max_pixels)))
                except ImageLoadError as err:
                    skip(path, str(err).removeprefix(f"{str(path)!r}: "))
            if not loaded:
                continue
            try:
                results = translate(
                    generator, [im for _, im in loaded], size=args.size, keep_size=not args.no_keep_size,
                    batch_size=args.batch_size, device=device, precision=args.precision, tile=args.tile,
                    max_pixels=None,  # checked while loading
                )
            except (RuntimeError, ValueError) as err:  # e.g. out of memory: report, go on with the rest
                for path, _ in loaded:
                    skip(path, f"translation failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                continue
            for (path, _), result in zip(loaded, results):
                target = outputs[path]
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if ext in (".jpg", ".jpeg", ".jpe", ".jfif"):
                        result.save(target, quality=95)
                    else:
                        result.save(target)
                except (OSError, ValueError) as err:
                    skip(path, f"cannot write {target}: {err}")
                    continue
                done += 1
                bar.update(1)
    finally:
        bar.close()

    print(f"translated {done} of {len(files)} image(s) into {out_dir}" + (f" ({skipped} skipped)" if skipped else ""))
    return 0 if done else 1


class _CallableModule(types.ModuleType):
    """This module, callable as :func:`cut_hf.pipeline.translate` (see the module docstring)."""

    def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
        return translate(*args, **kwargs)


if __name__ == "__main__":
    sys.exit(main())
else:
    sys.modules[__name__].__class__ = _CallableModule
