"""cut_hf.images: every PIL mode to 1-4 channels, EXIF orientation, [-1, 1] tensors, clear load errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import image_to_tensor
from cut_hf.images import (
    IMAGE_EXTENSIONS,
    ImageLoadError,
    ImageTooLargeError,
    find_images,
    from_array,
    load_image,
    open_image,
    pil_to_tensor,
    tensor_to_pil,
    to_channels,
)

RNG = np.random.default_rng(0)
RGB = Image.fromarray(RNG.integers(0, 256, (6, 9, 3), dtype=np.uint8))


def _mode_image(mode: str) -> Image.Image:
    if mode == "I;16":
        return Image.fromarray((np.arange(54).reshape(6, 9) * 1200).astype(np.uint16))
    if mode == "P+transparency":
        im = RGB.convert("P")
        im.info["transparency"] = 0
        return im
    return RGB.convert(mode)


MODES = ["1", "L", "LA", "RGB", "RGBA", "P", "P+transparency", "CMYK", "YCbCr", "I;16", "I", "F"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_every_mode_converts_to_every_channel_count(mode: str, channels: int) -> None:
    out = to_channels(_mode_image(mode), channels)
    assert out.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    assert out.size == (9, 6)
    assert pil_to_tensor(out).shape == (channels, 6, 9)


def test_sixteen_bit_is_rescaled_not_clipped(tmp_path) -> None:
    # Pillow's own convert("L") clips 16-bit values at 255: almost every pixel would turn white.
    values = np.array([[0, 1000, 32768, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)  # a real 16-bit PNG, opened back as I;16 or I
    gray = np.asarray(load_image(path, 1)).astype(int)
    np.testing.assert_array_equal(gray[0], np.round(values[0] / 65535 * 255).astype(int))
    rgb = np.asarray(load_image(path, 3))
    assert rgb.shape == (1, 4, 3) and (rgb[0, :, 0] == gray[0]).all()


def test_float_and_int32_ranges() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))  # mode F in [0, 1]
    np.testing.assert_array_equal(np.asarray(to_channels(unit, 1))[0], [0, 128, 255])
    eight = Image.fromarray(np.array([[0, 128, 255]], dtype=np.int32))  # mode I holding 8-bit values
    np.testing.assert_array_equal(np.asarray(to_channels(eight, 1))[0], [0, 128, 255])


def test_alpha_is_composited_over_white_when_dropped() -> None:
    rgba = Image.fromarray(np.array([[[10, 20, 30, 0], [10, 20, 30, 255]]], dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(to_channels(rgba, 3))[0], [[255, 255, 255], [10, 20, 30]])
    assert to_channels(rgba, 4).getpixel((0, 0)) == (10, 20, 30, 0)  # kept when the target has alpha
    la = Image.fromarray(np.array([[[0, 0], [40, 255]]], dtype=np.uint8))
    np.testing.assert_array_equal(np.asarray(to_channels(la, 1))[0], [255, 40])
    pal = _mode_image("P+transparency")
    transparent = np.asarray(pal) == 0
    assert (np.asarray(to_channels(pal, 3))[transparent] == 255).all()


def test_cmyk_and_gray_conversions() -> None:
    cyan = Image.new("CMYK", (2, 2), (255, 0, 0, 0))
    assert to_channels(cyan, 3).getpixel((0, 0)) == (0, 255, 255)
    gray = Image.new("L", (2, 2), 77)
    assert to_channels(gray, 3).getpixel((1, 1)) == (77, 77, 77)


def _exif_jpeg(orientation: int) -> bytes:
    im = Image.new("RGB", (20, 10), (255, 0, 0))
    im.paste((0, 0, 255), (10, 0, 20, 10))  # left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    im.save(buf, "JPEG", exif=exif, quality=95)
    return buf.getvalue()


def test_exif_orientation_is_applied(tmp_path) -> None:
    path = tmp_path / "phone.jpg"
    path.write_bytes(_exif_jpeg(6))  # 6: display rotated 90 degrees clockwise
    image = open_image(path)
    assert image.size == (10, 20)
    top, bottom = np.asarray(image)[2, 5], np.asarray(image)[17, 5]
    assert top[0] > 200 and top[2] < 60  # the red left half is now on top
    assert bottom[2] > 200 and bottom[0] < 60
    raw = Image.open(io.BytesIO(_exif_jpeg(6)))
    assert open_image(raw).size == (10, 20) and raw.size == (20, 10)  # a PIL input is not modified


def test_tensor_conversions_round_trip() -> None:
    t = pil_to_tensor(Image.fromarray(np.array([[0, 255, 128]], dtype=np.uint8)))
    assert t.dtype == torch.float32 and t.shape == (1, 1, 3)
    torch.testing.assert_close(t[0, 0], torch.tensor([-1.0, 1.0, 128 / 127.5 - 1]))
    for mode in ("L", "LA", "RGB", "RGBA"):
        im = RGB.convert(mode)
        back = tensor_to_pil(pil_to_tensor(im))
        assert back.mode == mode
        np.testing.assert_array_equal(np.asarray(back), np.asarray(im))
    assert tensor_to_pil(torch.full((1, 3, 2, 2), 5.0)).getpixel((0, 0)) == (255, 255, 255)  # clipped
    with pytest.raises(ValueError, match="C, H, W"):
        tensor_to_pil(torch.zeros(5, 2, 2))
    with pytest.raises(ValueError, match="to_channels"):
        pil_to_tensor(RGB.convert("CMYK"))


def test_arrays() -> None:
    assert from_array(np.zeros((4, 5), np.uint8)).mode == "L"
    assert from_array(np.zeros((4, 5, 2), np.uint8)).mode == "LA"
    assert from_array(np.ones((4, 5, 3), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    deep = from_array(np.full((4, 5), 65535, np.uint16))
    assert deep.mode.startswith("I;16") and to_channels(deep, 1).getpixel((0, 0)) == 255
    assert from_array(np.ones((4, 5), bool)).getpixel((0, 0)) == 255
    x = image_to_tensor(np.zeros((4, 5, 3), np.uint8), 3)
    assert x.shape == (3, 4, 5) and (x == -1).all()
    with pytest.raises(ImageLoadError, match="shape"):
        from_array(np.zeros((4, 5, 7), np.uint8))
    with pytest.raises(ImageLoadError, match="dtype"):
        from_array(np.zeros((4, 5), np.int64))


def test_unreadable_inputs_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(ImageLoadError, match="no such file"):
        open_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="not a file"):
        open_image(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("this is not a picture")
    with pytest.raises(ImageLoadError, match=r"notes\.png.*not an image"):
        open_image(text)
    full = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(full, "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match=r"cut\.png.*truncated"):
        open_image(cut)
    with Image.open(cut) as lazy:  # a caller's PIL image, opened but not decoded yet
        with pytest.raises(ImageLoadError, match="truncated"):
            open_image(lazy)
    jpeg = tmp_path / "cut.jpg"
    jpeg.write_bytes(_exif_jpeg(1)[:300])
    with pytest.raises(ImageLoadError, match=r"cut\.jpg"):
        load_image(jpeg)


def test_pixel_limits(tmp_path, monkeypatch) -> None:
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 80)).save(path)
    with pytest.raises(ImageTooLargeError, match="100x80 = 8,000 pixels"):
        open_image(path, max_pixels=7999)
    assert open_image(path, max_pixels=8000).size == (100, 80)
    with pytest.raises(ImageTooLargeError):
        open_image(Image.new("RGB", (100, 80)), max_pixels=100)
    # Pillow's own decompression-bomb guard (2x MAX_IMAGE_PIXELS) is reported the same way,
    # even with our limit switched off.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageTooLargeError, match="decompression-bomb"):
        open_image(path, max_pixels=None)


def test_find_images(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for name in ("b.png", "a.JPG", "sub/c.webp", "notes.txt", ".DS_Store", "._a.jpg", ".hidden/d.png"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.relative_to(tmp_path).as_posix() for p in find_images(tmp_path)] == ["a.JPG", "b.png", "sub/c.webp"]
    assert {".png", ".jpg", ".jpeg", ".tif", ".webp", ".bmp"} <= IMAGE_EXTENSIONS
    assert ".h5" not in IMAGE_EXTENSIONS  # a stub Pillow cannot decode


def test_find_images_follows_links_once_and_can_stay_flat(tmp_path) -> None:
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    (root / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    for name in ("root/a.png", "root/sub/b.png", "elsewhere/c.png"):
        (tmp_path / name).write_bytes(b"x")
    (root / "linked").symlink_to(elsewhere, target_is_directory=True)  # a folder assembled from links
    (root / "d.png").symlink_to(elsewhere / "c.png")  # a linked file
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)  # a loop: searched once
    (root / "broken.png").symlink_to(tmp_path / "missing.png")
    found = [p.relative_to(root).as_posix() for p in find_images(root)]
    assert found == ["a.png", "d.png", "linked/c.png", "sub/b.png"]
    assert [p.name for p in find_images(root, recursive=False)] == ["a.png", "d.png"]
    assert find_images(str(root)) == find_images(root)  # str or Path
