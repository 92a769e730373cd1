"""The demo's event handlers as plain methods: named, typed parameters (they become the names of
the app's API), no gradio, testable without a server.

Handlers that translate or explore only use models that are loaded already; loading happens in
:meth:`DemoHandlers.model_info` alone, which ``app.py`` runs in a concurrency group of its own
with a time limit, so a slow Hub never holds up a translation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from cut_hf.demo import augment_explorer as aug
from cut_hf.demo.catalog import ModelCatalog
from cut_hf.demo.errors import DemoError
from cut_hf.demo.models import DemoModel, ModelCache, warm_up
from cut_hf.demo.patch_explorer import patch_similarity, render_heatmaps, render_query
from cut_hf.demo.render import upscale
from cut_hf.demo.translation import DEFAULT_TILE_ABOVE, run_translation
from cut_hf.demo.uploads import UPLOAD_MAX_PIXELS, read_image
from cut_hf.demo.video import VideoLimits, describe, run_video

#: How long the model box waits for a load before it answers (the load goes on in the background).
DEFAULT_LOAD_TIMEOUT = 30.0

Upload = dict[str, Any] | str | None  # a Gradio file-data dict (handlers run with preprocess=False) or a path
Progress = Callable[[int, int], None]

_EMBEDDINGS = {
    "pixels": "raw pixels (each view at 32×32, mean removed)",
    "cut-encoder": "the CUT generator's encoder (last NCE layer, average-pooled; trained for translation, not SimCLR)",
}


@dataclass
class DemoHandlers:
    """The app's handlers over one model catalog and cache.

    Attributes:
        catalog: the models this session offers (its default is loaded by :meth:`start`).
        cache: loaded models.
        max_pixels: uploads with more pixels are refused.
        tile_above: images with more pixels are translated in tiles.
        load_timeout: seconds the model box waits for a load.
        batch_images: the pictures of the NT-Xent batch.
        video_limits: what one video upload may cost (duration, pixels per frame).
    """

    catalog: ModelCatalog = field(default_factory=ModelCatalog.from_flags)
    cache: ModelCache = field(default_factory=ModelCache)
    max_pixels: int = UPLOAD_MAX_PIXELS
    tile_above: int = DEFAULT_TILE_ABOVE
    load_timeout: float = DEFAULT_LOAD_TIMEOUT
    batch_images: Sequence[Image.Image] = ()
    video_limits: VideoLimits = field(default_factory=VideoLimits)

    def start(self) -> DemoModel:
        """Load and warm up the default model, waiting as long as it takes (at startup, before serving)."""
        name, source = self.catalog.resolve(self.catalog.default)
        loaded = self.cache.get(source, name)
        warm_up(loaded)
        return loaded

    def model(self, name: str | None) -> DemoModel:
        """A loaded model by display name; never loads (that is :meth:`model_info`'s job)."""
        shown, source = self.catalog.resolve(name)
        loaded = self.cache.loaded(source)
        if loaded is None:
            raise DemoError(f"model {shown!r} is not loaded: press 'Load model' first")
        return loaded

    def model_info(self, model: str) -> str:
        """Load a model of the catalog (bounded by ``load_timeout``) and describe it in one line."""
        name, source = self.catalog.resolve(model)
        return self.cache.get(source, name, timeout=self.load_timeout).describe()

    def translate(self, image: Upload, resolution: str = "original", precision: str = "fp32",
                  model: str | None = None, progress: Progress | None = None) -> tuple[tuple[Image.Image, ...], str]:
        """Translate an upload; returns (before, after) for the slider and a line of timing."""
        img = read_image(image, self.max_pixels)
        result = run_translation(self.model(model or self.catalog.default), img, resolution, precision,
                                 self.tile_above, self.max_pixels, progress)
        return (result.before, result.after), result.describe(img.size)

    def translate_video(self, video: Upload, resolution: str = "original", precision: str = "fp32",
                        temporal: str = "clip", model: str | None = None,
                        progress: Progress | None = None) -> tuple[str, str]:
        """Translate a video upload (within :attr:`video_limits`); returns (output path, a line of timing)."""
        path, report = run_video(self.model(model or self.catalog.default), video, resolution, precision, temporal,
                                 self.video_limits, progress)
        return path, describe(report)

    def augment(self, image: Upload, controls: aug.AugmentControls | None = None,
                seed: int = 0) -> tuple[Image.Image, Image.Image, Image.Image, str, dict[str, Any]]:
        """Two SimCLR views of an image (``controls``: the paper's preset when None), the crop boxes
        drawn on it, and what each view sampled."""
        augment = (controls or aug.AugmentControls.preset()).augment()
        res = aug.explore_views(read_image(image, self.max_pixels), augment, int(seed or 0))
        return res.boxes, res.view1, res.view2, aug.params_markdown(*res.params), res.params_json()

    def augment_batch(self, controls: aug.AugmentControls | None = None, seed: int = 0, temperature: float = 0.5,
                      embedding: str = "pixels", model: str | None = None) -> tuple[Image.Image, str]:
        """The example images through two views each (``controls``: the paper's preset when None):
        the 2N x 2N cosine-similarity matrix and NT-Xent."""
        augment = (controls or aug.AugmentControls.preset()).augment()
        if embedding not in _EMBEDDINGS:
            raise DemoError(f"embedding must be 'pixels' or 'cut-encoder', got {embedding!r}")
        embed = (aug.generator_embedding(self.model(model or self.catalog.default).generator)
                 if embedding == "cut-encoder" else aug.pixel_embedding)
        res = aug.batch_similarity(self.batch_images, augment, embed, float(temperature), int(seed or 0))
        text = (f"**NT-Xent = {res.loss:.4f}** at τ = {res.temperature:g} over 2N = {2 * res.n} views "
                f"(chance level ln(2N-1) = {math.log(2 * res.n - 1):.3f}). Embedding: {_EMBEDDINGS[embedding]}. "
                f"The positive is the most similar view for {res.top1:.0%} of the anchors. "
                "Green boxes mark the positive pairs; grey cells (self-similarity) are left out of the loss.")
        return aug.render_similarity(res), text

    def patch_similarity(self, image: Upload, x: float = -1, y: float = -1,
                         model: str | None = None) -> tuple[Image.Image, Image.Image, Image.Image, list, dict]:
        """PatchNCE explorer: the query at (x, y) (negative: the image centre) against every
        location of the translation, one heatmap per NCE layer."""
        img = read_image(image, self.max_pixels)
        x = img.width / 2 if x is None or float(x) < 0 else float(x)
        y = img.height / 2 if y is None or float(y) < 0 else float(y)
        m = self.model(model or self.catalog.default)
        res = patch_similarity(m.generator, img, x, y, m.sampler)
        marked, patch = render_query(res)
        return marked, patch, upscale(res.translated, 256), render_heatmaps(res), res.summary()
