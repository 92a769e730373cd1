"""``cut-hf export``: write a generator as ONNX or as a torch.export program.

    cut-hf export --model ID_OR_DIR --format onnx|exported-program --output FILE \\
        [--opset N] [--precision fp32|fp16|bf16|int8] [--example-size H W] [--no-verify]
    cut-hf export --model DIR --format onnx --precision int8 --output model.onnx [--calibration DIR_OR_FILES]

``--model`` takes what :func:`cut_hf.load_generator` takes (Hub id, ``save_pretrained`` folder,
``train.py`` output folder). After writing, the file is loaded back (onnxruntime, or
``torch.export.load``) and run against the eager generator at a size other than the traced one;
the largest difference is printed. Exit status: 0 on success, 1 when an fp32 export differs from
eager PyTorch by more than :data:`TOLERANCE`, 2 for a bad command line (unknown model, unwritable
output, bad size, missing onnx/onnxruntime).

``--precision int8`` (ONNX only) writes the quantised file of :mod:`cut_hf.translation.quantize`,
calibrated on ``--calibration`` images (default: the model folder's ``examples/``) resized to
``--calibration-size``, with its calibration record ``FILE.calibration.json`` beside it; the check
prints the PSNR of the int8 file's output against eager fp32 on the first calibration image.
:func:`cut_hf.load_generator` runs the file with OpenVINO.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from cut_hf.cli.help import HelpFormatter
from cut_hf.errors import ModelLoadError
from cut_hf.hub.loading import load_generator
from cut_hf.images import ImageLoadError
from cut_hf.translation.export import (
    DEFAULT_EXAMPLE_SIZE,
    DEFAULT_OPSET,
    FORMATS,
    ExportedModelError,
    ExportError,
    export_onnx,
    export_program,
    max_difference,
    require_onnx,
    size_multiple,
)
from cut_hf.translation.exported import load_exported_generator
from cut_hf.translation.quantize import (
    CALIBRATION_SIDES,
    RECORD_SUFFIX,
    QuantizationError,
    calibration_inputs,
    model_examples,
    psnr,
    quantize_to_file,
)

#: Largest difference from eager PyTorch accepted for an fp32 export, in [-1, 1] units.
TOLERANCE = 1e-4


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cut-hf export``."""
    p = argparse.ArgumentParser(prog="cut-hf export",
                                description="Export a CUT generator to ONNX or to a torch.export program.",
                                formatter_class=HelpFormatter)
    p.add_argument("--model", required=True, help="Hub id, save_pretrained folder or train.py output folder")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="onnx, or exported-program (.pt2)")
    p.add_argument("--output", required=True, help="the file to write (.onnx or .pt2)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset")
    p.add_argument("--precision", default="fp32", choices=("fp32", "fp16", "bf16", "int8"),
                   help="bf16: exported-program only; int8: onnx only, calibrated")
    p.add_argument("--calibration", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="int8: images of the model's domain (default: the model folder's examples/)")
    p.add_argument("--calibration-size", type=int, default=CALIBRATION_SIDES[0], choices=CALIBRATION_SIDES,
                   help="int8: shorter side of the calibration images (the size class the file is tuned for)")
    p.add_argument("--example-size", type=int, nargs=2, default=list(DEFAULT_EXAMPLE_SIZE), metavar=("H", "W"),
                   help="size of the traced example (multiples of 4; the export takes any such size)")
    p.add_argument("--no-verify", action="store_true", help="skip running the written file against PyTorch")
    return p


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _export_int8(args: argparse.Namespace) -> int:
    """``--precision int8``: quantise, write the file and its record, report its fidelity on one image."""
    if args.format != "onnx":
        return _fail("--precision int8 is for --format onnx")
    calibration: object = model_examples(args.model)
    if args.calibration:
        calibration = args.calibration[0] if len(args.calibration) == 1 else list(args.calibration)
    if calibration is None:
        return _fail(f"--precision int8 needs --calibration images of the model's domain ({args.model!r} has no "
                     "examples/ folder)")
    try:
        generator = load_generator(args.model, map_location="cpu")
        path = quantize_to_file(generator, args.output, calibration, side=args.calibration_size, source=args.model)
        print(f"wrote {path} (onnx, int8) and {path}{RECORD_SUFFIX}")
        if args.no_verify:
            return 0
        image = calibration_inputs(calibration, args.calibration_size)[0]
        with torch.inference_mode():
            fidelity = psnr(generator.eval()(image), load_exported_generator(path)(image))
    except (ModelLoadError, ExportError, ExportedModelError, QuantizationError, ImageLoadError) as e:
        return _fail(str(e))
    print(f"verified: PSNR int8 vs eager fp32 = {fidelity:.1f} dB on the first calibration image")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.precision == "int8":
        return _export_int8(args)
    h, w = args.example_size
    try:
        if args.format == "onnx":
            require_onnx(runtime=not args.no_verify)
        generator = load_generator(args.model, map_location="cpu")
        if args.format == "onnx":
            path = export_onnx(generator, args.output, opset=args.opset, precision=args.precision,
                               example_size=(h, w), source=args.model)
        else:
            path = export_program(generator, args.output, precision=args.precision, example_size=(h, w),
                                  source=args.model)
        print(f"wrote {path} ({args.format}, {args.precision})")
        if args.no_verify:
            return 0
        # Check at a size and batch other than the traced ones: the dimensions must really be dynamic.
        m = size_multiple(generator)
        size = (h + m, w + 2 * m)
        diff = max_difference(generator, load_exported_generator(path), size, batch=3)
    except (ModelLoadError, ExportError, ExportedModelError) as e:
        return _fail(str(e))
    print(f"verified: max |exported - eager| = {diff:.3g} at batch 3, {size[0]}x{size[1]}")
    if args.precision == "fp32" and not diff <= TOLERANCE:
        return _fail(f"the export differs from eager PyTorch by {diff:.3g} (more than {TOLERANCE})", code=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
