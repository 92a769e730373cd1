"""``--precision int8`` on the command line: cut-hf translate and cut-hf export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from cut_hf import CUTGenerator, load_generator
from cut_hf.cli import export as export_cli
from cut_hf.cli import translate as translate_cli
from cut_hf.translation.exported import OpenVinoGenerator
from tests.helpers import ROOT, make_images, sharpen


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A tiny model folder with an examples/ folder, as the shipped model has."""
    path = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    sharpen(CUTGenerator(ngf=4, n_blocks=1)).save_pretrained(path)
    make_images(path / "examples", 2, size=(32, 32), seed=5)
    return path


def test_translate_int8_writes_every_output(model_dir, tmp_path, capsys) -> None:
    make_images(tmp_path / "in", 3, size=(32, 40))
    code = translate_cli.main(["--model", str(model_dir), "--input", str(tmp_path / "in"), "--output",
                               str(tmp_path / "out"), "--precision", "int8"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "translated 3 of 3" in out.out
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img_0.png", "img_1.png", "img_2.png"]
    assert Image.open(tmp_path / "out" / "img_0.png").size == (40, 32)


@pytest.mark.parametrize("extra, message", [
    (["--tile", "256"], "--precision int8 runs the quantised graph whole"),
    (["--calibration", "nowhere"], "--calibration 'nowhere' does not exist"),
])
def test_translate_int8_bad_requests_exit_2_in_one_line(model_dir, tmp_path, capsys, extra, message) -> None:
    make_images(tmp_path / "in", 1, size=(32, 32))
    code = translate_cli.main(["--model", str(model_dir), "--input", str(tmp_path / "in"), "--output",
                               str(tmp_path / "out"), "--precision", "int8", *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_translate_int8_refuses_sincut_in_one_line(tmp_path, capsys) -> None:
    make_images(tmp_path / "in", 1, size=(32, 32))
    code = translate_cli.main(["--model", str(ROOT / "models" / "sincut-china2night"), "--input",
                               str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--precision", "int8"])
    err = capsys.readouterr().err
    assert code == 2 and "not a plain convolution" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_export_int8_writes_the_file_and_its_calibration_record(model_dir, tmp_path, capsys) -> None:
    path = tmp_path / "model.onnx"
    code = export_cli.main(["--model", str(model_dir), "--format", "onnx", "--precision", "int8",
                            "--output", str(path)])
    out = capsys.readouterr().out
    assert code == 0 and "verified: PSNR int8 vs eager fp32" in out
    record = json.loads((tmp_path / "model.onnx.calibration.json").read_text())
    assert sorted(Path(p).name for p in record["calibration_images"]) == ["img_0.png", "img_1.png"]  # examples/
    assert isinstance(load_generator(path), OpenVinoGenerator)
    code = export_cli.main(["--model", str(model_dir), "--format", "exported-program", "--precision", "int8",
                            "--output", str(tmp_path / "m.pt2")])
    assert code == 2 and "--format onnx" in capsys.readouterr().err
