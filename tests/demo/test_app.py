"""The demo's handler logic (cut_hf.demo) and app.py's error mapping, without a server."""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import inspect
import io
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cut_hf import CUTGenerator, PatchSampler, Tiling, translate
from cut_hf.demo import augment_explorer as aug
from cut_hf.demo import models as demo_models
from cut_hf.demo.catalog import ModelCatalog, display_name
from cut_hf.demo.errors import DemoError
from cut_hf.demo.handlers import DemoHandlers
from cut_hf.demo.models import SHIPPED_MODEL, ModelCache, load_demo_model
from cut_hf.demo.patch_explorer import patch_similarity, render_heatmaps, render_query
from cut_hf.demo.translation import parse_resolution, precision_note, run_translation
from cut_hf.demo.uploads import read_image
from cut_hf.objectives.losses import nt_xent_loss
from cut_hf.perf import native_bf16
from tests.helpers import sharpen

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def load_app():  # app.py is a script, not part of the installed package: imported from its path
    spec = importlib.util.spec_from_file_location("cut_hf_app", ROOT / "app.py")
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def tiny_model_dir(tmp_path: Path) -> Path:
    """A train.py-style output folder: generator/ and sampler/ of a tiny random model."""
    torch.manual_seed(0)
    g = CUTGenerator(ngf=4, n_blocks=5)  # NCE layers 12 and 16 inside the residual trunk, as in the default
    g.save_pretrained(tmp_path / "run" / "generator")
    PatchSampler(g.feature_channels(), nc=16).save_pretrained(tmp_path / "run" / "sampler")
    return tmp_path / "run"


@pytest.fixture
def sharp_model_dir(tmp_path: Path) -> Path:
    """Like ``tiny_model_dir`` with weights at He scale (tests.helpers.sharpen): a busy, contrasty
    output (the paper's init gives a nearly flat one, which any tiling would reproduce)."""
    torch.manual_seed(0)
    g = sharpen(CUTGenerator(ngf=4, n_blocks=5))
    g.save_pretrained(tmp_path / "sharp" / "generator")
    PatchSampler(g.feature_channels(), nc=16).save_pretrained(tmp_path / "sharp" / "sampler")
    return tmp_path / "sharp"


def photo(w: int = 40, h: int = 30, seed: int = 0) -> Image.Image:
    """A random RGB picture with a left-right gradient (so orientation changes are detectable)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
    arr[..., 0] += np.linspace(0, 190, w, dtype=np.uint8)[None, :]
    return Image.fromarray(arr)


def save(img: Image.Image, path: Path, **kwargs) -> Path:
    img.save(path, **kwargs)
    return path


# ---------------------------------------------------------------------------- uploads
@pytest.mark.parametrize("mode", ["L", "P", "RGBA", "CMYK", "I;16", "LA", "1"])
def test_read_image_converts_every_mode_to_rgb(tmp_path: Path, mode: str) -> None:
    base = photo()
    if mode == "I;16":
        img = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257))  # 16-bit gray
        assert img.mode == "I;16"
    else:
        img = base.convert(mode)
    path = save(img, tmp_path / ("x.jpg" if mode == "CMYK" else "x.png"))
    out = read_image({"path": str(path), "orig_name": "x.png"})
    assert out.mode == "RGB" and out.size == (40, 30)
    if mode == "I;16":  # rescaled, not clipped at 255 (clipping would make it nearly all white)
        assert np.asarray(out).mean() == pytest.approx(np.asarray(base.convert("L")).mean(), abs=2)


def test_read_image_applies_exif_rotation(tmp_path: Path) -> None:
    img = photo(40, 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = save(img, tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = read_image(str(path))
    assert out.size == (30, 40)  # displayed upright: width and height swapped


def test_read_image_rgba_composited_over_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (8, 8), (0, 0, 0, 0))  # fully transparent black
    out = read_image(save(rgba, tmp_path / "a.png"))
    assert np.asarray(out).min() == 255


@pytest.mark.parametrize("content, expected", [
    (b"hello, I am text", "not an image"),
    (None, "truncated or corrupt"),  # a PNG cut in half
])
def test_read_image_refuses_non_images_and_corrupt_files(tmp_path: Path, content, expected) -> None:
    if content is None:
        buf = io.BytesIO()
        photo(64, 64).save(buf, "PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(DemoError, match=expected) as err:
        read_image({"path": str(path), "orig_name": "holiday.png"})
    assert "holiday.png" in str(err.value) and str(tmp_path) not in str(err.value)  # no server paths


def test_read_image_refuses_oversize_and_decompression_bombs(tmp_path: Path, monkeypatch) -> None:
    path = save(photo(100, 100), tmp_path / "big.png")
    with pytest.raises(DemoError, match="too large"):
        read_image(str(path), max_pixels=5000)
    # Pillow's own guard (raised at twice MAX_IMAGE_PIXELS) is reported the same way.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    with pytest.raises(DemoError, match="too large"):
        read_image(str(path), max_pixels=None)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels in a few bytes (a decompression-bomb header)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_bomb_header_is_refused_before_decoding(tmp_path: Path) -> None:
    big = tmp_path / "big.png"
    big.write_bytes(png_header_only(8000, 5000))  # 40 Mpx in ~100 bytes: over the app's 25 Mpx
    with pytest.raises(DemoError, match="too large.*8000x5000") as err:
        read_image({"path": str(big), "orig_name": "big.png"})
    assert str(tmp_path) not in str(err.value)  # the server's paths stay private
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(30000, 30000))  # 900 Mpx: Pillow's own guard refuses it at open
    for limit in (None, 10**12):
        with pytest.raises(DemoError, match="too large.*decompression-bomb"):
            read_image(str(bomb), max_pixels=limit)


def test_read_image_needs_an_upload() -> None:
    with pytest.raises(DemoError, match="upload"):
        read_image(None)
    with pytest.raises(DemoError, match="cannot read"):
        read_image({"url": "http://x"})


# ------------------------------------------------------------------------------- models
def test_model_cache_loads_train_output_with_sampler_once(tiny_model_dir: Path) -> None:
    cache = ModelCache(capacity=2)
    m1 = cache.get(str(tiny_model_dir))
    assert m1.sampler is not None and m1.generator.ngf == 4
    assert cache.get(str(tiny_model_dir)) is m1  # cached
    assert "with its PatchSampler" in m1.describe()


def test_model_errors_are_one_readable_line(tmp_path: Path, hub_offline) -> None:
    with pytest.raises(DemoError, match="does not exist"):
        load_demo_model(tmp_path / "nope")
    with pytest.raises(DemoError, match="HF_HUB_OFFLINE") as err:
        load_demo_model("someone/not-a-cached-model")
    assert "\n" not in str(err.value)
    with pytest.raises(DemoError, match="enter a model"):
        load_demo_model("  ")


def test_an_exported_file_is_refused_in_one_line(tmp_path: Path) -> None:
    from cut_hf.translation.export import export_program

    path = export_program(CUTGenerator(ngf=4, n_blocks=1).eval(), tmp_path / "g.pt2", example_size=(16, 16))
    with pytest.raises(DemoError, match="not an exported file") as err:
        load_demo_model(path)  # an .onnx / .pt2 graph has no encoder features to explore
    assert "\n" not in str(err.value)


def test_mismatched_sampler_is_refused(tiny_model_dir: Path) -> None:
    PatchSampler([3, 8], nc=16).save_pretrained(tiny_model_dir / "sampler")
    with pytest.raises(DemoError, match="do not belong together"):
        load_demo_model(tiny_model_dir)


# ------------------------------------------------------------------------ the model allowlist
def test_catalog_refuses_every_other_name_the_same_way(tmp_path: Path) -> None:
    """The answer for a refused name never depends on what exists on the server."""
    catalog = ModelCatalog.from_flags()
    assert catalog.choices == {"mini-horse2zebra": str(SHIPPED_MODEL)} and catalog.default == "mini-horse2zebra"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    answers = set()
    for name in ("/etc", str(tmp_path / "missing"), str(tmp_path / "half"), "nobody/nothing", str(SHIPPED_MODEL),
                 "../models/mini-horse2zebra"):
        with pytest.raises(DemoError, match="not a model of this app") as err:
            catalog.resolve(name)
        answers.add(str(err.value).split("' is not a model", 1)[1])  # all but the echoed name
    assert len(answers) == 1 and str(ROOT) not in answers.pop(), answers
    with pytest.raises(DemoError, match="enter a model: one of mini-horse2zebra"):
        catalog.resolve("  ")
    assert catalog.resolve(" mini-horse2zebra ") == ("mini-horse2zebra", str(SHIPPED_MODEL))


def test_catalog_display_names_and_allow_any(tiny_model_dir: Path) -> None:
    catalog = ModelCatalog.from_flags([str(tiny_model_dir), "user/zebras", str(tiny_model_dir / "generator")])
    assert list(catalog.choices) == ["run", "user/zebras", "run/generator", "mini-horse2zebra"]
    assert catalog.default == "run" and catalog.resolve("run") == ("run", str(tiny_model_dir))
    assert not any(str(ROOT) in name or str(tiny_model_dir) in name for name in catalog.choices)
    assert display_name("user/zebras") == "user/zebras" and display_name("/srv/models/missing") == "missing"
    anything = ModelCatalog.from_flags(allow_any=True)
    assert anything.resolve(str(tiny_model_dir)) == ("run", str(tiny_model_dir))
    assert anything.resolve("someone/else") == ("someone/else", "someone/else")


def test_load_errors_name_the_model_not_the_server_path(tmp_path: Path) -> None:
    (tmp_path / "broken").mkdir()
    with pytest.raises(DemoError, match="cannot load model 'broken'") as err:
        load_demo_model(tmp_path / "broken")
    assert str(tmp_path) not in str(err.value)


def test_slow_load_times_out_and_keeps_the_previous_model(tiny_model_dir: Path, monkeypatch) -> None:
    cache = ModelCache()
    first = cache.get(tiny_model_dir)
    release = threading.Event()
    real = demo_models.load_demo_model

    def stalled(model, device="cpu", name=None):
        release.wait(30)
        raise DemoError("cannot load model 'slow': unreachable")

    monkeypatch.setattr(demo_models, "load_demo_model", stalled)
    start = time.perf_counter()
    with pytest.raises(DemoError, match="takes longer than 0.3 s"):
        cache.get("someone/slow", timeout=0.3)
    assert time.perf_counter() - start < 5
    assert cache.loaded(tiny_model_dir) is first and cache.get(tiny_model_dir, timeout=0.1) is first
    release.set()
    with pytest.raises(DemoError, match="unreachable"):  # the background load's own answer, once it has one
        cache.get("someone/slow", timeout=5)
    monkeypatch.setattr(demo_models, "load_demo_model", real)
    assert cache.loaded("someone/slow") is None and cache.loaded(tiny_model_dir) is first


@pytest.fixture
def silent_hub(monkeypatch):
    """A Hub endpoint that accepts connections and never answers (HF_ENDPOINT points at it)."""
    from huggingface_hub import constants

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", url)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    try:
        yield url
    finally:
        server.close()  # pending connections are reset: the background load ends


def test_stalled_hub_lookup_is_bounded_and_translations_go_on(tiny_model_dir: Path, silent_hub) -> None:
    h = DemoHandlers(ModelCatalog.from_flags([str(tiny_model_dir), "someone/stalled"]), load_timeout=1.0)
    h.start()
    start = time.perf_counter()
    with pytest.raises(DemoError, match="takes longer than 1 s|could not be reached"):  # app or Hub timeout first
        h.model_info("someone/stalled")
    assert time.perf_counter() - start < 10
    (before, after), _ = h.translate(photo(), model="run")  # the previous model serves on
    assert after.size == (40, 30)
    with pytest.raises(DemoError, match="'someone/stalled' is not loaded: press 'Load model'"):
        h.translate(photo(), model="someone/stalled")


def test_handlers_translate_only_with_loaded_models(tiny_model_dir: Path) -> None:
    h = DemoHandlers(ModelCatalog.from_flags(["user/never-loaded", str(tiny_model_dir)]))
    with pytest.raises(DemoError, match="not loaded"):
        h.translate(photo(), model="run")
    assert "CUTGenerator ngf 4" in h.model_info("run") and "**run**" in h.model_info("run")
    (before, after), info = h.translate(photo(), "16", "fp32", "run")
    assert min(after.size) == 16 and "resized from 40×30" in info
    with pytest.raises(DemoError, match="not a model of this app"):
        h.patch_similarity(photo(), model=str(tiny_model_dir))  # a path is not a display name


# --------------------------------------------------------------------------- translation
def test_parse_resolution() -> None:
    assert parse_resolution("original") is None and parse_resolution(None) is None and parse_resolution(0) is None
    assert parse_resolution("256") == 256 and parse_resolution(128.0) == 128
    for bad in ("big", 5, 10**5):
        with pytest.raises(DemoError):
            parse_resolution(bad)


def test_run_translation_sizes_precision_and_tiles(tiny_model_dir: Path, sharp_model_dir: Path, monkeypatch) -> None:
    model = load_demo_model(tiny_model_dir)
    img = photo(37, 29)  # odd sizes: padded and cropped back
    res = run_translation(model, img)
    assert res.before.size == res.after.size == (37, 29) and not res.tiled
    assert res.seconds > 0 and "37×29" in res.describe(img.size)
    res = run_translation(model, img, "16")  # shorter side 16: before and after resized alike
    assert res.before.size == res.after.size and min(res.after.size) == 16
    assert "resized from 37×29" in res.describe(img.size)
    # The tiled path, with tiles small enough (128 px instead of 768) that a 320x256 image takes 9 of them.
    from cut_hf.translation import inference

    monkeypatch.setattr(inference, "DEFAULT_TILE", 128)
    sharp, big = load_demo_model(sharp_model_dir), photo(320, 256)
    steps: list[tuple[int, int]] = []
    res = run_translation(sharp, big, tile_above=65_000, progress=lambda *a: steps.append(a))
    assert res.tiled and res.after.size == (320, 256)
    assert res.tiles == 9 and steps[-1] == (9, 9)  # the progress bar counts tiles
    assert "tiled (9 tiles" in res.describe((320, 256))
    # It is the library's tiled translation (whose seams and statistics tests/translation checks) ...
    library = translate(sharp.generator, big, tiling=Tiling(tile=128, max_whole_pixels=65_000))
    np.testing.assert_array_equal(np.asarray(res.after), np.asarray(library))
    # ... and close to the one-piece result on an output that varies: norm statistics estimated from
    # 65 kpx of the 82 kpx image move pixels by ~8 grey levels on average, against ~49 for a flat
    # image of the right mean colour (measured), so a flat or misplaced output fails.
    whole = run_translation(sharp, big)
    assert not whole.tiled
    tiled_px, whole_px = (np.asarray(r.after, dtype=float) for r in (res, whole))
    flat = np.abs(whole_px - whole_px.mean(axis=(0, 1))).mean()
    assert flat > 30 and np.abs(tiled_px - whole_px).mean() < 0.35 * flat
    bf16 = run_translation(model, img, precision="bf16")
    assert bf16.after.size == (37, 29)
    # The slow emulated path is named in the timing line, and only there.
    assert ("no native bf16" in bf16.describe(img.size)) == (not native_bf16(bf16.device))
    assert "no native bf16" not in run_translation(model, img).describe(img.size)
    assert (precision_note() is None) == native_bf16(bf16.device)
    with pytest.raises(DemoError, match="precision"):
        run_translation(model, img, precision="fp16" if not torch.cuda.is_available() else "fp8")
    with pytest.raises(DemoError, match="limit"):
        run_translation(model, img, "2048", max_pixels=1_000_000)


# ------------------------------------------------------------------------- augmentations
def controls(preset: str = "paper", **changes) -> aug.AugmentControls:
    return dataclasses.replace(aug.AugmentControls.preset(preset), **changes)


def test_presets_and_bad_controls() -> None:
    paper, cifar = aug.AugmentControls.preset("paper"), aug.AugmentControls.preset("cifar")
    assert tuple(dataclasses.asdict(paper)) == aug.CONTROL_NAMES
    assert (paper.size, paper.blur, paper.jitter_strength) == (224, True, 1.0)
    assert (cifar.size, cifar.blur, cifar.jitter_strength) == (32, False, 0.5)
    assert paper.crop_scale_min == pytest.approx(0.08) and paper.blur_sigma_max == pytest.approx(2.0)
    with pytest.raises(DemoError, match="crop_scale"):
        controls(crop_scale_min=0.9, crop_scale_max=0.2).augment()
    with pytest.raises(DemoError, match="probability"):
        controls(flip_p=1.5).augment()
    with pytest.raises(DemoError, match="view size"):
        controls(size=4).augment()
    with pytest.raises(DemoError):
        aug.AugmentControls.preset("imagenet21k")


def test_explore_views_is_seeded_and_reports_what_it_drew() -> None:
    img = photo(80, 60)
    augment = aug.AugmentControls.preset("cifar").augment()
    a, b, c = (aug.explore_views(img, augment, seed) for seed in (1, 1, 2))
    assert np.array_equal(np.asarray(a.view1), np.asarray(b.view1)) and a.params == b.params
    assert a.params != c.params
    assert a.view1.size == (32, 32) and a.boxes.size == img.size
    # The reported parameters replay to the same view.
    assert np.array_equal(np.asarray(aug.to_pil(augment.apply(img, a.params[0]))), np.asarray(a.view1))
    top, left, h, w = a.params[0].crop
    assert 0.08 <= h * w / (80 * 60) <= 1.0
    table = aug.params_markdown(*a.params)
    assert "view 1" in table and f"{top}, {left}, {h}, {w}" in table
    # Both boxes are drawn in their colours on the original.
    colours = {tuple(int(v) for v in px) for px in np.asarray(a.boxes).reshape(-1, 3)}
    assert (255, 140, 26) in colours and (26, 209, 255) in colours


def test_batch_similarity_matches_nt_xent_and_marks_positives() -> None:
    rng = np.random.default_rng(0)  # unrelated noise images: negatives near 0 cosine in pixel space
    images = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(3)]
    seen = {}

    def embed(views: torch.Tensor) -> torch.Tensor:
        seen["z"] = aug.pixel_embedding(views)
        return seen["z"]

    augment = controls("cifar", size=24).augment()
    res = aug.batch_similarity(images, augment, embed, temperature=0.3, seed=0)
    z = seen["z"]
    assert res.similarity.shape == (6, 6)
    assert np.allclose(res.similarity, res.similarity.T, atol=1e-6) and np.allclose(np.diag(res.similarity), 1, atol=1e-5)
    assert res.loss == pytest.approx(float(nt_xent_loss(z[:3], z[3:], temperature=0.3)), rel=1e-5)
    # Without augmentation the two views are equal: positives are perfect and the loss drops.
    none = controls(size=24, crop=False, flip=False, jitter=False, grayscale=False, blur=False).augment()
    same = aug.batch_similarity(images, none, aug.pixel_embedding, temperature=0.3, seed=0)
    assert same.top1 == 1.0 and same.loss < res.loss
    assert np.allclose([same.similarity[i, (i + 3) % 6] for i in range(6)], 1.0, atol=1e-5)
    pic = aug.render_similarity(res, cell=20)
    assert pic.size == (20 + 6 + 6 * 20,) * 2
    with pytest.raises(DemoError, match="at least two"):
        aug.batch_similarity(images[:1], augment, embed)


def test_generator_embedding(tiny_model_dir: Path) -> None:
    g = load_demo_model(tiny_model_dir).generator
    z = aug.generator_embedding(g)(torch.rand(4, 3, 30, 30))
    assert z.shape == (4, g.feature_channels()[-1])  # the last NCE layer's channels, average-pooled


# ------------------------------------------------------------------------- PatchNCE explorer
def test_patch_similarity_shapes_and_errors(tiny_model_dir: Path) -> None:
    model = load_demo_model(tiny_model_dir)
    img = photo(70, 50)
    for sampler, kind in ((model.sampler, "PatchSampler MLP"), (None, "raw encoder features")):
        res = patch_similarity(model.generator, img, 35, 20, sampler)
        assert res.embedding == kind and len(res.layers) == 5
        assert res.image.size == res.translated.size
        # Sides snapped to the nearest multiples of 4 (the generator's requirement).
        assert all(s % 4 == 0 and abs(s - s0) <= 2 for s, s0 in zip(res.image.size, img.size))
        strides = [layer.stride for layer in res.layers]
        assert strides == [1.0, 1.0, 2.0, 4.0, 4.0]  # layer 0's reflection padding is cropped away
        for layer in res.layers:
            assert layer.similarity.max() <= 1.0 + 1e-5 and layer.similarity.min() >= -1.0 - 1e-5
    assert len(render_heatmaps(res)) == 5 and render_query(res)[0].size[0] >= 256
    with pytest.raises(DemoError, match="outside"):
        patch_similarity(model.generator, img, 70, 10)


def test_shipped_model_hottest_spot_is_the_clicked_point() -> None:
    """On the shipped model, the translation's location most similar to an input patch is that
    patch's own place (PatchNCE's positive): always at trunk layers 12 and 16 (within one cell of
    4 px; 16 queries: 16/16 measured), at layer 8 for 15 of 16 (one cell of 2 px; a random
    location would be that near 1% of the time) and at layer 4 for 14 of 16, on the horse and on
    the ground alike. Layer 0 sees a few pixels of colour, which recur all over the image, so its
    peak may lie anywhere."""
    assert (SHIPPED_MODEL / "model.safetensors").is_file(), "the shipped model is missing"
    model = load_demo_model(SHIPPED_MODEL)
    assert model.sampler is not None
    examples = sorted((SHIPPED_MODEL / "examples").glob("*.png"))
    assert len(examples) >= 4
    distances: dict[int, list[float]] = {}
    for path in examples[:4]:
        img = Image.open(path).convert("RGB")
        for x, y in ((32, 32), (12, 54), (50, 10), (20, 30)):
            res = patch_similarity(model.generator, img, x, y, model.sampler)
            for layer in res.layers:
                distances.setdefault(layer.layer, []).append(layer.peak_distance)
    near = {layer: float(np.mean(np.asarray(d) <= 1.5)) for layer, d in distances.items()}
    assert near[12] == 1.0 and near[16] >= 15 / 16, distances
    assert near[8] >= 12 / 16 and near[4] >= 10 / 16, distances


# -------------------------------------------------------------------------------- app.py
def test_guarded_turns_errors_into_messages() -> None:
    import gradio as gr

    app = load_app()

    def bad_input():
        raise DemoError("<b>file</b> is not an image")

    def crash():
        raise RuntimeError("secret /srv/path detail")

    with pytest.raises(gr.Error) as err:
        app.guarded(bad_input)()
    assert err.value.message == "&lt;b&gt;file&lt;/b&gt; is not an image"  # escaped: the toast renders HTML
    with pytest.raises(gr.Error) as err:
        app.guarded(crash)()
    assert "RuntimeError" in err.value.message and "/srv/path" not in err.value.message


def test_augment_handlers_take_the_controls_as_one_value(tiny_model_dir: Path) -> None:
    """The handlers take one AugmentControls; the app's endpoints spell it out as named parameters
    (the API names the server test checks) and gather them back into the same value."""
    h = DemoHandlers(ModelCatalog.from_flags([tiny_model_dir]), ModelCache())
    h.batch_images = [photo(48, 40, seed) for seed in range(3)]
    cifar = aug.AugmentControls.preset("cifar")
    spelled = aug.spell_out_controls(h.augment)
    assert list(inspect.signature(spelled).parameters) == ["image", *aug.CONTROL_NAMES, "seed"]
    direct = h.augment(photo(), cifar, 3)
    via_api = spelled(photo(), *dataclasses.astuple(cifar), 3)
    assert np.array_equal(np.asarray(direct[1]), np.asarray(via_api[1])) and direct[4] == via_api[4]
    assert np.asarray(h.augment(photo())[1]).shape == (224, 224, 3)  # no controls: the paper's preset
    batch = aug.spell_out_controls(h.augment_batch)
    assert list(inspect.signature(batch).parameters) == [*aug.CONTROL_NAMES, "seed", "temperature", "embedding",
                                                         "model"]
    assert batch(*dataclasses.astuple(cifar), 0, 0.5)[1] == h.augment_batch(cifar, 0, 0.5)[1]
    assert inspect.signature(batch).parameters["size"].default == 224  # the paper's preset


def test_tile_progress_goes_to_the_page_bar_in_tiles() -> None:
    calls = []
    load_app()._tile_progress(lambda *args, **kwargs: calls.append((args, kwargs)), 2, 6)  # a gr.Progress stand-in
    assert calls == [(((2, 6),), {"desc": "translating in tiles", "unit": "tiles"})]


def test_space_card_and_lfs_attributes() -> None:
    """The repository pushed as it is makes a Gradio Space that runs app.py with the pinned Gradio."""
    import gradio as gr
    from huggingface_hub import SpaceCard

    card = SpaceCard.load(ROOT / "README.md").data
    assert (card.sdk, card.app_file, card.sdk_version) == ("gradio", "app.py", gr.__version__)
    assert card.python_version == f"{sys.version_info.major}.{sys.version_info.minor}" and card.title
    assert f"gradio=={gr.__version__}" in (ROOT / "requirements-app.txt").read_text()  # what the Space installs
    assert "-r requirements-app.txt" in (ROOT / "requirements.txt").read_text()
    upload = "hf upload USER/cut-hf requirements-app.txt requirements.txt --type space"
    assert upload in (ROOT / "README.md").read_text()
    lfs = {line.split()[0] for line in (ROOT / ".gitattributes").read_text().splitlines() if "filter=lfs" in line}
    assert {"*.safetensors", "*.png", "*.jpg", "*.mp4"} <= lfs  # the Video tab's example clip too
    assert "### Deploy as a Space" in (ROOT / "README.md").read_text()


def test_help_and_flags_show_no_server_paths(capsys, monkeypatch) -> None:
    app = load_app()
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        app.parse_args(["--help"])
    text = capsys.readouterr().out
    assert "mini-horse2zebra" in text and str(ROOT) not in text and "--allow-any-model" in text
    args = app.parse_args([])
    assert args.model is None and args.host is None and args.port is None  # GRADIO_SERVER_NAME/PORT apply
    args = app.parse_args(["--model", "a/b", "--model", "c/d", "--host", "0.0.0.0", "--port", "9"])
    assert args.model == ["a/b", "c/d"] and (args.host, args.port) == ("0.0.0.0", 9)


# ----------------------------------------------------------------- the shipped model and its data
def _script(name: str):
    """Import scripts/<name>.py (the scripts folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def mini_dataset(tmp_path_factory) -> Path:
    """The demo dataset's first 8 test images per domain (same seed: the same images as the full build)."""
    out = tmp_path_factory.mktemp("mini-h2z")
    _script("build_demo_dataset").build(out, size=64, n_train=2, n_test=8, seed=0)
    return out


def test_demo_dataset_is_seeded_and_masks_fit(tmp_path: Path, mini_dataset: Path) -> None:
    build = _script("build_demo_dataset")
    again = tmp_path / "again"
    build.build(again, size=64, n_train=2, n_test=8, seed=0)
    for split in build.SPLITS:
        names = sorted(p.name for p in (mini_dataset / split).glob("*.png"))
        assert len(names) == (2 if split.startswith("train") else 8)
        for name in names:  # same seed -> the same pixels
            assert (mini_dataset / split / name).read_bytes() == (again / split / name).read_bytes()
    other = tmp_path / "other"
    build.build(other, size=64, n_train=1, n_test=1, seed=1)
    assert (other / "testA" / "testA_0000.png").read_bytes() != (mini_dataset / "testA" / "testA_0000.png").read_bytes()
    # Masks cover the horse: striped pixels (B) are inside the mask, and it is a plausible size.
    img = np.asarray(Image.open(mini_dataset / "testB" / "testB_0000.png").convert("L"), dtype=float)
    mask = np.asarray(Image.open(mini_dataset / "masks" / "testB" / "testB_0000.png")) > 127
    assert 0.05 < mask.mean() < 0.6
    eval_script = _script("eval_demo_model")
    assert eval_script.stripe_energy(np.stack([img] * 3, -1), mask) > 0.1
    with pytest.raises(ValueError, match="domain"):
        build.render_scene(np.random.default_rng(0), "C")


def test_eval_measures() -> None:
    ev = _script("eval_demo_model")
    a = np.zeros((8, 8), bool)
    a[2:6, 2:6] = True
    b = np.zeros((8, 8), bool)
    b[2:6, 4:8] = True
    assert ev.iou(a, a) == 1.0 and ev.iou(a, b) == pytest.approx(8 / 24)
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3)).astype(np.uint8)
    assert ev.background_psnr(img, img, a) == float("inf")
    noisy = np.clip(img.astype(int) + 10, 0, 255).astype(np.uint8)
    assert 20 < ev.background_psnr(noisy, img, a) < 40


def test_shipped_model_folder_and_card() -> None:
    from huggingface_hub import ModelCard

    folder = SHIPPED_MODEL
    for f in ("config.json", "model.safetensors", "README.md", "sampler/config.json", "sampler/model.safetensors",
              "eval_results.json", "before_after.png"):
        assert (folder / f).is_file(), f
    size = (folder / "model.safetensors").stat().st_size + (folder / "sampler" / "model.safetensors").stat().st_size
    assert size < 8_000_000  # small enough to commit
    card_text = (folder / "README.md").read_text()
    assert card_text == (ROOT / "model_cards" / "mini-horse2zebra.md").read_text()  # the card's source
    card = ModelCard(card_text)
    assert card.data.library_name == "cut-hf" and card.data.pipeline_tag == "image-to-image"
    import json

    scores = json.loads((folder / "eval_results.json").read_text())["model_scores"]
    card_metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert card_metrics["mask_iou"] == pytest.approx(scores["mask_iou"]["mean"], abs=1e-3)
    assert card_metrics["striped_fraction"] == pytest.approx(scores["striped_fraction"]["mean"], abs=1e-3)
    assert card_metrics["background_psnr"] == pytest.approx(scores["background_psnr"]["mean"], abs=0.05)
    assert "python train.py --data-dir datasets/mini-horse2zebra --mode cut" in card_text.replace("\\\n    ", "")


def test_shipped_model_puts_stripes_on_the_horse(mini_dataset: Path) -> None:
    """The shipped model on test images it never saw: strong stripe energy inside the horse
    (many times the input's) and the ground kept outside it (background PSNR, 27.2 dB on the
    50 test images; the paper's recipe repainted it, 16.9 dB), as the card reports."""
    ev = _script("eval_demo_model")
    model = load_demo_model(SHIPPED_MODEL)
    ratios, psnrs = [], []
    for path in sorted((mini_dataset / "testA").glob("*.png")):
        img = Image.open(path).convert("RGB")
        mask = np.asarray(Image.open(mini_dataset / "masks" / "testA" / path.name)) > 127
        out = np.asarray(run_translation(model, img).after)
        ratios.append(ev.stripe_energy(out, mask) / max(ev.stripe_energy(np.asarray(img), mask), 1e-3))
        psnrs.append(ev.background_psnr(out, np.asarray(img), mask))
    assert np.median(ratios) > 5, ratios
    assert min(psnrs) > 23, psnrs


def test_eval_script_end_to_end(tmp_path: Path, mini_dataset: Path, capsys) -> None:
    """scripts/eval_demo_model.py on 4 test images (segmenter fitted on the 2 + 2 training images)."""
    import json

    ev = _script("eval_demo_model")
    out = tmp_path / "scores.json"
    fig = tmp_path / "before_after.png"
    assert ev.main(["--model", str(SHIPPED_MODEL), "--data", str(mini_dataset), "--limit", "4", "--json", str(out),
                    "--figure", str(fig)]) == 0
    result = json.loads(out.read_text())
    assert result["test_images"] == 4
    model, identity = result["model_scores"], result["identity_scores"]
    assert identity["background_psnr"]["mean"] == float("inf") and model["background_psnr"]["mean"] < 60
    assert model["stripe_energy"]["mean"] > 5 * identity["stripe_energy"]["mean"]
    assert "| horse mask IoU" in capsys.readouterr().out
    assert Image.open(fig).size[0] == 4 * 64 * 3 + 3 * 4  # 4 columns, 3x zoom, 4 px gaps
    assert ev.main(["--model", str(tmp_path / "missing"), "--data", str(mini_dataset)]) == 1
