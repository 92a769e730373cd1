"""The app's Video tab without a server: limits refused in one line, the example clip, frames in the bar."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import pytest
import torch

from cut_hf import CUTGenerator
from cut_hf.demo.catalog import ModelCatalog
from cut_hf.demo.errors import DemoError
from cut_hf.demo.handlers import DemoHandlers
from cut_hf.demo.video import EXAMPLE_CLIP, VideoLimits
from cut_hf.translation.video import read_frames, video_info
from tests.helpers import ROOT, make_clip


@functools.cache
def load_app():  # app.py is a script, not part of the installed package: imported from its path
    spec = importlib.util.spec_from_file_location("cut_hf_app", ROOT / "app.py")
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


@pytest.fixture(scope="module")
def handlers(tmp_path_factory) -> DemoHandlers:
    path = tmp_path_factory.mktemp("model") / "tiny"
    torch.manual_seed(0)
    CUTGenerator(ngf=4, n_blocks=1).save_pretrained(path)
    h = DemoHandlers(ModelCatalog.from_flags([str(path)]), video_limits=VideoLimits(seconds=4, pixels=64 * 64))
    h.start()
    return h


def test_example_clip_is_shipped_small_and_translates(handlers) -> None:
    assert EXAMPLE_CLIP.stat().st_size < 100_000
    assert video_info(EXAMPLE_CLIP)[:4] == (64, 64, 12, 36)
    calls = []
    out, info = handlers.translate_video({"path": str(EXAMPLE_CLIP), "orig_name": "a.mp4"}, "original",
                                         "fp32", "clip", progress=lambda done, total: calls.append((done, total)))
    assert len(list(read_frames(out))) == 36 and "36 frames" in info and "whole clip" in info
    assert calls[-1] == (36, 36) and len(calls) > 1  # the bar counts frames as batches finish


def test_too_long_too_large_and_unreadable_videos_are_refused_in_one_line(handlers, tmp_path) -> None:
    long = make_clip(tmp_path / "long.mp4", frames=10, fps=2, size=(16, 16), audio=False)  # 5 s > 4 s
    large = make_clip(tmp_path / "large.mp4", frames=2, size=(64, 96), audio=False)  # 6144 px > 4096
    (tmp_path / "notes.mp4").write_text("not a video")
    for upload, message in ((long, r"'long.mp4' is 5.0 s long, over this app's limit of 4 s"),
                            (large, r"'large.mp4' has 96x64 frames, over this app's limit"),
                            (tmp_path / "notes.mp4", r"'notes.mp4' could not be read as a video"),
                            (None, "no video")):
        with pytest.raises(DemoError, match=message) as err:
            handlers.translate_video(None if upload is None else str(upload))
        assert "\n" not in str(err.value) and str(tmp_path) not in str(err.value)
    with pytest.raises(DemoError, match="has 192x128 frames"):  # the limit is on the frames as translated...
        handlers.translate_video(str(large), "128")
    out, _ = handlers.translate_video(str(large), "32")  # ...so a smaller resolution fits
    assert video_info(out)[:2] == (48, 32)
    with pytest.raises(DemoError, match="temporal must be one of"):
        handlers.translate_video(str(EXAMPLE_CLIP), temporal="scene")


def test_frame_progress_goes_to_the_page_bar_in_frames() -> None:
    calls = []
    load_app()._frame_progress(lambda *args, **kwargs: calls.append((args, kwargs)), 12, 36)
    assert calls == [(((12, 36),), {"desc": "translating", "unit": "frames"})]


def test_sincut_results_in_the_app_are_reproducible() -> None:
    from PIL import Image

    from cut_hf import StyleGAN2Generator
    from cut_hf.demo.models import DemoModel
    from cut_hf.demo.translation import run_translation

    torch.manual_seed(0)
    g = StyleGAN2Generator(ngf=4, n_blocks=1, crop_size=16, nce_layers=(0,))
    for name, p in g.named_parameters():
        if name.endswith("noise.weight"):
            p.data.fill_(0.5)  # visible noise (it starts at zero)
    model, image = DemoModel("sincut", g, None), Image.new("RGB", (24, 16), (120, 160, 200))
    first, again = run_translation(model, image), run_translation(model, image)
    assert first.after.tobytes() == again.after.tobytes()  # noise from a fixed seed, not the global RNG
    x = torch.zeros(1, 3, 16, 24)
    assert not torch.equal(g(x), g(x))  # the model itself draws new noise per call


def test_app_offers_the_shipped_sincut_model_with_its_photograph(tmp_path) -> None:
    from cut_hf.demo.catalog import SHIPPED_MODEL, SHIPPED_SINCUT, ModelCatalog
    from cut_hf.demo.examples import sincut_photo

    catalog = ModelCatalog.from_flags(shipped=(SHIPPED_MODEL, SHIPPED_SINCUT))
    assert list(catalog.choices) == ["mini-horse2zebra", "sincut-china2night"]
    assert (SHIPPED_SINCUT / "model.safetensors").is_file()
    photo = sincut_photo()  # shipped with the model: no training package (scikit-learn) needed in a Space
    assert photo is not None and Path(photo).stat().st_size < 100_000


def test_old_outputs_are_deleted_by_the_next_job(tmp_path) -> None:
    import os

    from cut_hf.demo.video import OUTPUT_KEEP_SECONDS, _output_path

    old, recent = tmp_path / "old_translated.mp4", tmp_path / "recent_translated.mp4"
    for p in (old, recent):
        p.write_bytes(b"x")
    now = old.stat().st_mtime + OUTPUT_KEEP_SECONDS + 1
    os.utime(recent, (now - 5, now - 5))
    fresh = _output_path("clip", tmp_path, now=now)
    assert not old.exists() and recent.exists() and fresh.parent == tmp_path and fresh.name.startswith("clip_")
