"""int8 translation (cut_hf.translation.quantize): quantise once, run with OpenVINO, stay close to fp32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from cut_hf import CUTGenerator, Tiling, load_generator, translate
from cut_hf.translation import quantize
from cut_hf.translation.exported import OpenVinoGenerator
from cut_hf.translation.quantize import QuantizationError, int8_generator, psnr
from tests.helpers import ROOT, make_images, sharpen

SHIPPED = ROOT / "models" / "mini-horse2zebra"


def _smooth(seed: int, size: int = 48) -> Image.Image:
    """A photo-like RGB image (upsampled noise): int8 ranges calibrated on one suit the others."""
    small = np.random.default_rng(seed).integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.BICUBIC)


@pytest.fixture(scope="module")
def tiny() -> CUTGenerator:
    torch.manual_seed(0)
    return sharpen(CUTGenerator(ngf=4, n_blocks=1)).eval()  # He-scale weights: every layer shows in the output


def test_int8_translation_is_close_to_fp32_and_quantised_once(tiny) -> None:
    calibration = [_smooth(s) for s in range(3)]
    image = _smooth(7)
    out, report = translate(tiny, image, precision="int8", calibration=calibration, return_report=True)
    assert report.precision == "int8" and report.device == "cpu" and not report.tiled
    assert out.size == image.size
    assert psnr(translate(tiny, image), out) > 30
    # cached per weights, size class and calibration: the same runner comes back, no second quantisation
    first = int8_generator(tiny, calibration, 256)
    assert int8_generator(tiny, calibration, 256) is first
    with torch.no_grad():  # new weights (changed in place): quantised again
        tiny.model[1].bias.add_(0.1)
    assert int8_generator(tiny, calibration, 256) is not first


def test_without_calibration_the_first_inputs_calibrate_and_later_calls_reuse_them(tiny) -> None:
    translate(tiny, _smooth(1), precision="int8")
    runner = int8_generator(tiny, None, 256)  # no inputs needed now: cached
    assert isinstance(runner, OpenVinoGenerator)
    translate(tiny, _smooth(2), precision="int8")
    assert int8_generator(tiny, None, 256) is runner


def test_unquantisable_models_and_bad_requests_get_one_line(tiny, tmp_path) -> None:
    sincut = load_generator(ROOT / "models" / "sincut-china2night")  # StyleGAN2 modulated convolutions
    with pytest.raises(QuantizationError, match="not a plain convolution") as err:
        translate(sincut, _smooth(0), precision="int8")
    assert "\n" not in str(err.value)
    exported = torch.nn.Module()
    exported.tileable = False  # what the exported graphs say of themselves
    with pytest.raises(QuantizationError, match="exported graph"):
        quantize.check_quantizable(exported)
    with pytest.raises(ValueError, match=r"int8.*whole"):
        translate(tiny, _smooth(0), precision="int8", tiling=Tiling(tile=128))
    with pytest.raises(ValueError, match="runs on the CPU"):
        translate(tiny, _smooth(0), precision="int8", device="cuda")
    with pytest.raises(ValueError, match=r"precision must be one of fp32, bf16, fp16, int8"):
        translate(tiny, _smooth(0), precision="int4")
    with pytest.raises(QuantizationError, match="holds no images"):
        translate(tiny, _smooth(0), precision="int8", calibration=tmp_path)


def test_missing_packages_are_named(tiny, monkeypatch) -> None:
    real = quantize.find_spec
    monkeypatch.setattr(quantize, "find_spec", lambda name: None if name == "openvino" else real(name))
    with pytest.raises(QuantizationError, match=r"needs openvino: pip install .*\[int8\]"):
        translate(tiny, _smooth(0), precision="int8", calibration=[_smooth(1)])


def test_int8_file_with_its_record_loads_and_matches_the_in_memory_model(tiny, tmp_path) -> None:
    make_images(tmp_path / "cal", 2, size=(48, 48))
    path = quantize.quantize_to_file(tiny, tmp_path / "tiny.int8.onnx", tmp_path / "cal", source="tiny")
    record = json.loads((tmp_path / "tiny.int8.onnx.calibration.json").read_text())
    assert record["side"] == 256 and len(record["calibration_images"]) == 2
    assert record["float_layers"][:2] and record["weights_digest"] == quantize.weights_key(tiny)
    loaded = load_generator(path)
    assert isinstance(loaded, OpenVinoGenerator) and loaded.precision == "int8"
    image = _smooth(3)
    from_file = translate(loaded, image, precision="int8")  # an int8 file runs as it is, not quantised again
    assert int8_generator(loaded, None) is loaded
    assert psnr(translate(tiny, image), from_file) > 30


def test_shipped_model_int8_is_within_35_db_of_fp32_on_its_examples_and_a_photo() -> None:
    """The issue's fidelity bar: calibrated on the shipped model's own four examples."""
    data = pytest.importorskip("skimage.data")
    generator = load_generator(SHIPPED)
    examples = sorted(str(p) for p in (SHIPPED / "examples").glob("*.png"))
    photo = Image.fromarray(data.astronaut()).resize((256, 256), Image.BICUBIC)  # a real 256 px photo
    for image in [*examples, photo]:
        fidelity = psnr(translate(generator, image), translate(generator, image, precision="int8",
                                                               calibration=examples))
        assert fidelity >= 35, (image, fidelity)
