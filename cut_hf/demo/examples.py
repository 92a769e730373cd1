"""The demo's example pictures: the shipped model's test images, plus photographs."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from cut_hf.demo.catalog import SHIPPED_MODEL, SHIPPED_SINCUT

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


def sincut_photo() -> str | None:
    """The photograph the shipped SinCUT model was trained on (``examples/china.jpg`` in its folder:
    scikit-learn's sample image, CC BY 2.0, danielbuechele on Flickr), or None when it is missing."""
    path = SHIPPED_SINCUT / "examples" / "china.jpg"
    return str(path) if path.is_file() else None
