"""The demo's example pictures: the shipped model's test images, plus photographs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cut_hf.demo.catalog import SHIPPED_MODEL

EXAMPLES_DIR = SHIPPED_MODEL / "examples"  # test-split images of the shipped model's dataset


def example_images(folder: Path = EXAMPLES_DIR, extra_dir: Path | None = None) -> list[str]:
    """The PNG images in ``folder``, plus two scikit-image photos (when installed) for the
    augmentation explorer, written once to ``extra_dir`` (None: none)."""
    paths = sorted(str(p) for p in folder.glob("*.png")) if folder.is_dir() else []
    if extra_dir is not None:
        try:
            from skimage import data
        except ImportError:  # scikit-image is optional for the app
            return paths
        extra_dir.mkdir(parents=True, exist_ok=True)
        for name in ("chelsea", "coffee"):
            path = extra_dir / f"{name}.png"
            if not path.exists():
                img = Image.fromarray(getattr(data, name)())
                img.thumbnail((256, 256))
                img.save(path)
            paths.append(str(path))
    return paths


def sincut_photo(extra_dir: Path) -> str | None:
    """The photograph the shipped SinCUT model was trained on (scikit-learn's ``china.jpg``), written
    once to ``extra_dir``; None when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_sample_image
    except ImportError:  # scikit-learn is optional for the app
        return None
    path = extra_dir / "china.jpg"
    if not path.exists():
        extra_dir.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_sample_image("china.jpg")).save(path, quality=92)
    return str(path)
