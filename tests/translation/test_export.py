"""Export to ONNX and torch.export: dynamic shapes, parity with eager PyTorch, metadata, translate(), CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime")

from cut_hf import CUTGenerator, Tiling, translate  # noqa: E402
from cut_hf.cli.export import main  # noqa: E402
from cut_hf.translation.export import ExportError, export_onnx, export_program, max_difference  # noqa: E402
from cut_hf.translation.exported import (  # noqa: E402
    ExportedModelError,
    OnnxGenerator,
    ProgramGenerator,
    load_exported_generator,
    load_onnx_generator,
)

TRACED = (32, 32)
# Sizes and batches other than the traced (2, 32, 32), to show the dimensions are really dynamic.
CASES = [(1, (48, 64)), (3, (64, 40))]


def _generator(**kwargs) -> CUTGenerator:
    """A tiny generator with sharper weights than the init's (gain 0.02), so that outputs vary."""
    torch.manual_seed(0)
    g = CUTGenerator(ngf=8, n_blocks=2, **kwargs)
    with torch.no_grad():
        for p in g.parameters():
            p.normal_(0.0, 0.2)
    return g


@pytest.fixture(scope="module")
def generator() -> CUTGenerator:
    return _generator()


@pytest.fixture(scope="module")
def exported(generator, tmp_path_factory) -> dict:
    """Both formats, written once for the module (an ONNX export takes seconds)."""
    out = tmp_path_factory.mktemp("export")
    generator.train()  # export must not depend on, nor change, the mode it is given
    paths = {
        "onnx": export_onnx(generator, out / "g.onnx", example_size=TRACED, source="tiny/model"),
        "pt2": export_program(generator, out / "g.pt2", example_size=TRACED, source="tiny/model"),
    }
    assert generator.training and next(generator.parameters()).dtype == torch.float32
    return paths


@pytest.mark.parametrize("batch,size", CASES)
@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_parity_with_eager_at_other_sizes_and_batches(fmt, batch, size, generator, exported) -> None:
    runtime = load_exported_generator(exported[fmt])
    x = torch.rand(batch, 3, *size) * 2 - 1
    y = runtime(x)
    assert y.shape == (batch, 3, *size) and y.dtype == torch.float32
    assert max_difference(generator, runtime, size, batch) <= 1e-4
    assert generator.training  # max_difference restores the mode


def test_onnx_metadata_and_dynamic_axes(exported) -> None:
    model = onnx.load(str(exported["onnx"]))
    meta = {p.key: p.value for p in model.metadata_props}
    opset = {o.domain: o.version for o in model.opset_import}[""]
    assert meta["opset"] == str(opset) == "20"
    assert meta["precision"] == "fp32" and meta["input_nc"] == "3" and meta["output_nc"] == "3"
    assert meta["size_multiple"] == "4" and meta["source"] == "tiny/model" and meta["format"] == "onnx"
    assert meta["cut_hf_version"] and meta["generator"] == "CUTGenerator"
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 3 and dims[2].dim_param and dims[3].dim_param
    assert not list(exported["onnx"].parent.glob("*.data"))  # one self-contained file


def test_program_metadata(exported) -> None:
    runtime = ProgramGenerator(exported["pt2"])
    assert runtime.metadata["format"] == "exported-program" and runtime.metadata["source"] == "tiny/model"
    assert (runtime.input_nc, runtime.output_nc, runtime.size_multiple) == (3, 3, 4)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_translate_accepts_exported_generators(fmt, generator, exported) -> None:
    runtime = load_onnx_generator(exported[fmt]) if fmt == "onnx" else ProgramGenerator(exported[fmt])
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(37, 51), (40, 40)]]
    want = translate(generator, images, batch_size=2)
    got = translate(runtime, images, batch_size=2)
    for a, b in zip(want, got):
        assert a.size == b.size
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert generator.training  # translate restored the eager generator's mode


def test_readme_onnxruntime_only_snippet(generator, exported) -> None:
    """The README's deployment recipe (numpy + onnxruntime, no cut-hf) gives translate()'s pixels."""
    import onnxruntime as ort

    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (43, 58, 3), dtype=np.uint8))
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    cropped = image.crop((0, 0, image.width // 4 * 4, image.height // 4 * 4))
    x = np.asarray(cropped, np.float32).transpose(2, 0, 1)[None] / 127.5 - 1
    y = session.run(None, {"input": x})[0][0]
    out = ((y.transpose(1, 2, 0) + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    want = np.asarray(translate(generator, cropped), dtype=int)
    assert out.shape == want.shape and np.abs(out.astype(int) - want).max() <= 1


def test_exported_generators_refuse_tiling(exported) -> None:
    """Tiles need whole-image norm statistics, which a graph cannot take: a clear error, not seams."""
    image = Image.new("RGB", (40, 40), (120, 30, 200))
    with pytest.raises(ValueError, match=r"Tiling\(tile=0\)"):
        translate(OnnxGenerator(exported["onnx"]), image, tiling=Tiling(tile=128))
    runtime = ProgramGenerator(exported["pt2"])
    assert translate(runtime, image, tiling=Tiling(tile=0)).size == (40, 40)
    assert translate(runtime, image).size == (40, 40)  # automatic tiling: whole for a graph
    with pytest.raises(ValueError, match="multiples of 4"):
        runtime(torch.zeros(1, 3, 30, 32))


class _HalfResGenerator(torch.nn.Module):
    """Another generator class: 1 channel in, 2 out, one stride-2 stage, so sizes are multiples of 2."""

    size_multiple = 2

    def __init__(self) -> None:
        super().__init__()
        self.input_nc, self.output_nc = 1, 2
        self.down = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.norm = torch.nn.InstanceNorm2d(4)
        self.up = torch.nn.ConvTranspose2d(4, 2, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.up(torch.relu(self.norm(self.down(x)))))


def test_other_generator_classes_export_with_their_size_multiple(tmp_path) -> None:
    g = _HalfResGenerator()
    runtime = ProgramGenerator(export_program(g, tmp_path / "other.pt2", example_size=(10, 12)))
    assert (runtime.input_nc, runtime.output_nc, runtime.size_multiple) == (1, 2, 2)
    assert max_difference(g, runtime, (14, 6), 3) <= 1e-6
    with pytest.raises(ExportError, match="multiples of 2"):
        export_program(g, tmp_path / "bad.pt2", example_size=(11, 12))


def test_residual_generator_exports_exactly(tmp_path) -> None:
    g = _generator(residual=True)
    for path in (export_onnx(g, tmp_path / "r.onnx", example_size=TRACED),
                 export_program(g, tmp_path / "r.pt2", example_size=TRACED)):
        assert max_difference(g, load_exported_generator(path), (48, 40), 2) <= 1e-4


def test_fp16_onnx_runs_in_onnxruntime(generator, tmp_path) -> None:
    path = export_onnx(generator, tmp_path / "half.onnx", precision="fp16", example_size=TRACED)
    runtime = OnnxGenerator(path)
    assert runtime.precision == "fp16" and runtime.input_dtype == np.float16
    assert max_difference(generator, runtime, (48, 40), 1) < 0.05  # half precision, not exact


def test_bad_arguments_raise_one_line_errors(generator, tmp_path) -> None:
    with pytest.raises(ExportError, match="multiples of 4"):
        export_program(generator, tmp_path / "a.pt2", example_size=(30, 32))
    with pytest.raises(ExportError, match="bfloat16"):
        export_onnx(generator, tmp_path / "a.onnx", precision="bf16")
    with pytest.raises(ExportError, match="opset"):
        export_onnx(generator, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ExportError, match="folder"):
        export_program(generator, tmp_path, example_size=TRACED)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(ExportError, match="cannot create"):
        export_program(generator, tmp_path / "afile" / "g.pt2", example_size=TRACED)
    with pytest.raises(ExportError, match="input_nc"):
        export_program(torch.nn.Conv2d(3, 3, 1), tmp_path / "a.pt2")
    for name in ("missing.onnx", "missing.pt2"):
        with pytest.raises(ExportedModelError, match="does not exist"):
            load_exported_generator(tmp_path / name)
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    (tmp_path / "junk.pt2").write_bytes(b"not a model")
    for name in ("junk.onnx", "junk.pt2"):
        with pytest.raises(ExportedModelError, match="cannot load"):
            load_exported_generator(tmp_path / name)
    assert not list(tmp_path.glob("a.*"))


def test_missing_onnxruntime_is_one_clear_line(monkeypatch, exported, tmp_path, capsys) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails, find_spec says absent
    with pytest.raises(ExportedModelError, match="needs onnxruntime"):
        OnnxGenerator(exported["onnx"])
    assert main(["--model", str(tmp_path), "--output", str(tmp_path / "g.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "onnxruntime" in err


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny"
    _generator().save_pretrained(path)
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "{tmp}/nowhere"], "does not exist"),
        (["--model", "{tmp}"], "incomplete"),  # a folder, but not a model
        (["--example-size", "30", "32"], "multiples of 4"),
        (["--output", "{tmp}/afile/g.onnx"], "cannot create"),
        (["--output", "{tmp}"], "is a folder"),
    ],
)
def test_cli_errors_exit_2_with_one_line(args, message, model_dir, tmp_path, capsys, hub_offline) -> None:
    (tmp_path / "afile").write_text("x")
    base = ["--model", str(model_dir), "--output", str(tmp_path / "g.pt2"), "--format", "exported-program"]
    flat = base + [a.format(tmp=tmp_path) for a in args]  # a repeated flag: argparse keeps the last
    assert main(flat) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert not (tmp_path / "g.pt2").exists()


def test_cli_exported_program_in_process(model_dir, tmp_path, capsys) -> None:
    out = tmp_path / "sub" / "g.pt2"
    assert main(["--model", str(model_dir), "--format", "exported-program", "--output", str(out),
                 "--example-size", "32", "32"]) == 0
    assert "verified" in capsys.readouterr().out
    assert ProgramGenerator(out).metadata["source"] == str(model_dir)


def test_python_m_cut_hf_export_round_trip(model_dir, tmp_path) -> None:
    """The real process: `cut-hf export` writes an ONNX file that runs like the model."""
    out = tmp_path / "g.onnx"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    run = subprocess.run(
        [sys.executable, "-m", "cut_hf", "export", "--model", str(model_dir), "--format", "onnx", "--output", str(out),
         "--opset", "18", "--example-size", "32", "32"], capture_output=True, text=True, env=env, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "verified" in run.stdout and "Traceback" not in run.stderr
    runtime = OnnxGenerator(out, threads=1)
    assert runtime.metadata["opset"] == "18" and runtime.metadata["source"] == str(model_dir)
    assert max_difference(CUTGenerator.from_pretrained(model_dir), runtime, (40, 56), 2) <= 1e-4
