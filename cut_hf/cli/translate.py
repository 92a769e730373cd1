"""Command line: translate an image, a video, a folder of both or a 🤗 dataset column with a CUT generator.

    cut-hf translate --model ID_OR_DIR --input FILE_OR_DIR --output DIR \\
        [--size N] [--batch-size B] [--device D] [--precision fp32|bf16|fp16|int8] [--tile N] [--format png]
        [--calibration DIR_OR_FILES] [--num-workers N] [--overwrite] [--temporal clip|window|frame] [--crf N] [--seed N]
    cut-hf translate --model ID_OR_DIR --dataset ID_OR_DIR [--column image] [--split train] \\
        [--output-dataset DIR] [--push-to-hub user/name] [--output-column NAME]

(``torchrun -m cut_hf translate`` and ``accelerate launch -m cut_hf translate`` shard the inputs
over processes). ``--model`` is a Hub id, a ``save_pretrained`` folder or a ``train.py`` output
folder (its ``generator/``). ``--precision int8`` runs on the CPU with 8-bit convolutions
(:mod:`cut_hf.translation.quantize`), calibrated on ``--calibration`` images, else the model
folder's ``examples/``, else the first inputs. Folders are searched recursively; each output keeps its input's
relative path and stem, saved as PNG (or ``--format``); a video (mp4, mov, mkv, webm, avi,
animated gif) keeps its name and container, its audio copied (:mod:`cut_hf.translation.video`);
outputs already there are kept
(``--overwrite`` redoes them). Unreadable files are reported and passed over; the summary counts
the inputs translated, already there, unreadable and failed, in the words of the per-file lines.
Exit status: 0 when every input has an output (translated now or before) or at least one was
translated, 1 when none could be, 2 for a bad command line (unknown model, missing input or
dataset, unusable device or precision, a tile below the minimum).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image

from cut_hf.cli.help import HelpFormatter
from cut_hf.data.unpaired import default_num_workers
from cut_hf.errors import DiskFullError, ModelLoadError
from cut_hf.hub.loading import load_generator
from cut_hf.images import DEFAULT_MAX_PIXELS, find_images
from cut_hf.perf import EMULATED_BF16_NOTE, emulated_bf16
from cut_hf.precision import INFERENCE_PRECISIONS, check_inference_precision
from cut_hf.translation.folders import (
    BatchOptions,
    Summary,
    job_device,
    job_state,
    translate_files,
)
from cut_hf.translation.inference import MIN_TILE, Tiling
from cut_hf.translation.quantize import QuantizationError, check_quantizable, model_examples, require_int8
from cut_hf.translation.video import DEFAULT_CRF, TEMPORAL, VIDEO_EXTENSIONS, find_videos
from cut_hf.translation.video_files import VideoOptions, translate_video_files, video_line

if TYPE_CHECKING:
    from accelerate import PartialState

__all__ = ["build_parser", "main", "output_paths"]


class UsageError(Exception):
    """A bad command line: main() prints it as one ``error:`` line and exits with ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cut-hf translate``."""
    p = argparse.ArgumentParser(
        prog="cut-hf translate",
        description="Translate images with a CUT, FastCUT or SinCUT generator (Hub id or local folder).",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--model", required=True, help="Hub id, save_pretrained folder or train.py output folder")
    p.add_argument("--input", help="an image file or a folder (searched recursively)")
    p.add_argument("--output", help="output folder (created; relative paths and stems are kept)")
    p.add_argument("--size", type=int, default=None, help="resize the shorter side to N before translating")
    p.add_argument("--no-keep-size", action="store_true", help="with --size: save at the working size")
    p.add_argument("--batch-size", type=int, default=8, help="images of equal size per forward")
    p.add_argument("--device", default=None,
                   help="cpu, cuda, cuda:1, mps, xpu, ... (default: the launch's device per process; one process: "
                        "CUDA, then MPS / XPU, then the CPU)")
    p.add_argument("--precision", default="fp32", choices=INFERENCE_PRECISIONS,
                   help="fp16 needs CUDA; int8 runs on the CPU (pip install -e '.[int8]' in the cut-hf folder)")
    p.add_argument("--calibration", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="int8: images of the model's domain that set the 8-bit ranges (default: the model "
                        "folder's examples/, else the first inputs)")
    p.add_argument("--tile", type=int, default=None,
                   help=f"tile images larger than N x N, N >= {MIN_TILE} (default: only images over 1 Mpx; 0: never)")
    p.add_argument("--format", default="png", help="output file format / extension")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help="skip inputs with more pixels than this")
    p.add_argument("--num-workers", type=int, default=None,
                   help="DataLoader workers decoding inputs per process (default: the usable cores left, at most 4)")
    p.add_argument("--overwrite", action="store_true", help="translate again inputs whose output exists")
    v = p.add_argument_group("videos (found among the --input files by extension)")
    v.add_argument("--temporal", default="clip", choices=TEMPORAL,
                   help="norm statistics of the whole clip (default: colour-stable), of a sliding window, or of "
                        "each frame (the paper)")
    v.add_argument("--crf", type=int, default=DEFAULT_CRF, help=f"H.264 / VP9 quality (default {DEFAULT_CRF})")
    v.add_argument("--seed", type=int, default=0, help="SinCUT's noise, drawn once per video (default 0)")
    d = p.add_argument_group("🤗 datasets (instead of --input/--output)")
    d.add_argument("--dataset", help="Hub id, save_to_disk folder or local dataset folder")
    d.add_argument("--column", default="image", help="the image column")
    d.add_argument("--split", default="train", help="the split")
    d.add_argument("--streaming", action="store_true",
                   help="read the dataset as a stream (Hub ids: no full download first; rows come out in the "
                        "order they were translated)")
    d.add_argument("--output-dataset", help="save_to_disk folder for the result (all rows and columns)")
    d.add_argument("--push-to-hub", metavar="USER/NAME", help="push the result to this Hub dataset repository")
    d.add_argument("--output-column", help="name of the translated column (default: <column>_translated)")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _check_numbers(args: argparse.Namespace) -> str:
    """The output extension; raises UsageError for out-of-range numbers or an unwritable format."""
    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.size is not None and args.size < 1:
        raise UsageError(f"--size must be positive, got {args.size}")
    ext = "." + args.format.lower().lstrip(".")
    if Image.registered_extensions().get(ext) not in Image.SAVE:
        raise UsageError(f"--format {args.format!r}: Pillow cannot write this format")
    return ext


def _is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _input_files(path: str) -> tuple[Path, list[Path], list[Path]]:
    """(root, images, videos): a folder's (recursively), or one file's with its folder as the root."""
    source = Path(path).expanduser()
    if not source.exists():
        raise UsageError(f"input {str(source)!r} does not exist")
    if not source.is_dir():
        return (source.parent, [], [source]) if _is_video(source) else (source.parent, [source], [])
    images = [f for f in find_images(source) if not _is_video(f)]  # a .gif is a video here
    videos = find_videos(source)
    if not images and not videos:
        raise UsageError(f"no image or video files in {str(source)!r}", code=1)
    return source, images, videos


def _device(name: str, precision: str) -> torch.device:
    """The device to run on; raises UsageError when it or the precision cannot be used."""
    try:
        device = torch.device(name)
        check_inference_precision(precision, device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("CUDA is not available on this machine")
    except (RuntimeError, ValueError) as err:
        raise UsageError(f"--device {name} / --precision {precision}: {err}") from None
    if emulated_bf16(precision, device):
        print(f"note: {EMULATED_BF16_NOTE}. Use --precision fp32 on this machine.", file=sys.stderr)
    return device


def _calibration(args: argparse.Namespace) -> object:
    """int8's calibration images: ``--calibration``, else the model folder's ``examples/``, else None
    (translate then calibrates on the first inputs)."""
    if args.precision != "int8":
        return None
    if args.tile:
        raise UsageError("--precision int8 runs the quantised graph whole (no norm modules to freeze for tiles): "
                         "drop --tile or use --tile 0")
    if args.calibration:
        missing = [c for c in args.calibration if not Path(c).expanduser().exists()]
        if missing:
            raise UsageError(f"--calibration {missing[0]!r} does not exist")
        return args.calibration[0] if len(args.calibration) == 1 else list(args.calibration)
    return model_examples(args.model)


def _check_int8(generator: torch.nn.Module) -> None:
    """For --precision int8: the packages and a quantisable model, as one error line before any work."""
    try:
        require_int8()
        check_quantizable(generator)
    except QuantizationError as err:
        raise UsageError(str(err)) from None


def output_paths(files: list[Path], root: Path, out_dir: Path, ext: str) -> list[Path]:
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


def _options(args: argparse.Namespace, state: PartialState) -> BatchOptions:
    """The job's options from the flags; raises UsageError for bad combinations."""
    ext = _check_numbers(args)
    if args.num_workers is not None and args.num_workers < 0:
        raise UsageError(f"--num-workers must be >= 0, got {args.num_workers}")
    if bool(args.dataset) == bool(args.input):
        raise UsageError("give either --input (with --output) or --dataset")
    if args.input and not args.output:
        raise UsageError("--input needs --output")
    if args.dataset and not (args.output_dataset or args.push_to_hub):
        raise UsageError("--dataset needs --output-dataset and/or --push-to-hub")
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))  # set by torchrun
    # Decoding runs beside the model: one core per process stays with the main process.
    workers = args.num_workers
    if workers is None:
        workers = default_num_workers(processes_per_machine=per_machine, spare=1)
    try:
        tiling = Tiling(tile=args.tile)
    except ValueError as err:  # a tile below the minimum: one line, before any work
        raise UsageError(f"--{err}") from None  # "--tile 10 px is too small: ..."
    return BatchOptions(size=args.size, keep_size=not args.no_keep_size, batch_size=args.batch_size,
                        precision=args.precision, calibration=_calibration(args), tiling=tiling,
                        max_pixels=args.max_pixels,
                        num_workers=workers, overwrite=args.overwrite, ext=ext)


Job = Callable[[torch.nn.Module, BatchOptions, torch.device, object], int]


def _folder_job(args: argparse.Namespace, ext: str) -> Job:
    """The folder (or file) job of ``--input``/``--output``; inputs are checked now, before the model loads."""
    root, files, videos = _input_files(args.input)
    out_dir = Path(args.output).expanduser()
    targets = output_paths(files, root, out_dir, ext)
    video_targets = [out_dir / (v.relative_to(root) if v != root else Path(v.name)) for v in videos]
    video = VideoOptions(args.temporal, args.crf, args.seed)

    def run(generator: torch.nn.Module, options: BatchOptions, device: torch.device, state: PartialState) -> int:
        codes = []
        if files:
            summary = translate_files(generator, files, targets, options, device=device, state=state)
            codes.append(_report(summary, len(files), str(out_dir), state))
        if videos:
            summary, frames = translate_video_files(generator, videos, video_targets, options, video, device, state)
            if state.is_main_process:
                print(video_line(summary, frames, len(videos), str(out_dir)))
            codes.append(0 if summary.translated or summary.already_there else 1)
        return min(codes)

    return run


def _dataset_job(args: argparse.Namespace) -> Job:
    """The dataset job of ``--dataset``; the dataset and its columns are checked now."""
    from cut_hf.data.sources import open_hf_dataset
    from cut_hf.translation.datasets import open_stream, translate_dataset, translate_stream

    try:  # DataError is a ValueError
        dataset = (open_stream if args.streaming else open_hf_dataset)(args.dataset, args.split)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if args.column not in dataset.column_names:
        raise UsageError(f"dataset {args.dataset!r} has no column {args.column!r} (it has "
                         f"{', '.join(dataset.column_names)})")
    column = args.output_column or f"{args.column}_translated"
    if column in dataset.column_names:
        raise UsageError(f"the dataset already has a column {column!r}: choose another --output-column")
    # Push-only jobs keep the result in a folder every process of this machine can reach.
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", args.push_to_hub or "")
    out_dir = Path(args.output_dataset or Path(tempfile.gettempdir()) / f"cut-hf-translate-{safe}").expanduser()

    def run(generator: torch.nn.Module, options: BatchOptions, device: torch.device, state: PartialState) -> int:
        work = translate_stream if args.streaming else translate_dataset
        result, summary = work(generator, dataset, args.column, out_dir, options, column, device=device, state=state)
        if result is not None and args.push_to_hub:
            result.push_to_hub(args.push_to_hub)
            if not args.output_dataset:
                shutil.rmtree(out_dir, ignore_errors=True)  # only a staging folder for the upload
        total = summary.inputs  # a stream's length is known at its end
        return _report(summary, total, args.push_to_hub or str(out_dir), state)

    return run


def _report(summary: Summary, total: int, where: str, state: PartialState) -> int:
    """Print the job's summary (main process) and return the exit status."""
    if state.is_main_process:
        print(summary.line(total, where))
    return 0 if summary.translated or summary.already_there else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 nothing translated or a full disk, 2 bad command line)."""
    args = build_parser().parse_args(argv)
    try:
        try:
            on_cpu = str(args.device).startswith("cpu") or (args.precision == "int8" and args.device is None)
            state = job_state(cpu=on_cpu or None)
        except RuntimeError as err:  # the launch and Accelerate disagree on the process count
            raise UsageError(str(err)) from None
        options = _options(args, state)
        job = _dataset_job(args) if args.dataset else _folder_job(args, options.ext)
        default_device = "cpu" if args.precision == "int8" else str(job_device(state))
        device = _device(args.device or default_device, args.precision)
        try:
            generator = load_generator(args.model, map_location=str(device))
        except ModelLoadError as err:
            raise UsageError(str(err)) from None
        if args.precision == "int8":
            _check_int8(generator)
        return job(generator, options, device, state)
    except UsageError as err:
        return _fail(str(err), err.code)
    except DiskFullError as err:  # the outputs written so far stay; a rerun continues
        return _fail(str(err), 1)
