"""The PatchNCE explorer: where does a patch of the input land in the translation?

CUT's argument (Park et al., 2020, Fig. 1 and Sec. 3) is that a patch of the output should be
most similar to the input patch at the same place (its positive) and unlike the other patches of
the image (its negatives). This module computes that picture for any point: the query is the
embedding of the input at the point, taken at each NCE layer of the generator's encoder (through
the trained PatchSampler MLP H when one is available, as in training; else the raw encoder
features, L2-normalised); the key map is the same layer's embedding of the *translated* image at
every location; the heatmap is their cosine similarity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw

from cut_hf.demo.errors import DemoError
from cut_hf.demo.render import draw_marker, overlay_heatmap, upscale
from cut_hf.models.generator import CUTGenerator
from cut_hf.models.patch_sampler import PatchSampler, l2_normalize
from cut_hf.models.stylegan2 import StyleGAN2Generator

QUERY_COLOUR, PEAK_COLOUR = "#00ff66", "#ffe600"


@dataclass
class LayerHeatmap:
    """Similarity of the query embedding with every location of one layer's map of the translation.

    ``similarity`` is over the feature map cropped to the image (the reflection padding of layer 0
    removed); a cell covers ``stride`` x ``stride`` image pixels.
    """

    layer: int
    similarity: np.ndarray  # (h, w) cosine similarities
    stride: float
    query_cell: tuple[int, int]  # (row, col)
    peak_cell: tuple[int, int]  # (row, col) of the maximum

    @property
    def peak_distance(self) -> float:
        """Distance in cells (at this layer's resolution) from the query to the peak."""
        return float(np.hypot(self.peak_cell[0] - self.query_cell[0], self.peak_cell[1] - self.query_cell[1]))

    @property
    def peak_xy(self) -> tuple[float, float]:
        """Image coordinates (x, y) of the peak cell's centre."""
        return ((self.peak_cell[1] + 0.5) * self.stride, (self.peak_cell[0] + 0.5) * self.stride)

    def summary(self) -> dict:
        sim = self.similarity
        return {"layer": self.layer, "map": list(sim.shape), "pixels_per_cell": self.stride,
                "query_cell": list(self.query_cell), "peak_cell": list(self.peak_cell),
                "peak_distance_cells": round(self.peak_distance, 2),
                "similarity_at_query": round(float(sim[self.query_cell]), 4),
                "similarity_peak": round(float(sim.max()), 4), "similarity_mean": round(float(sim.mean()), 4)}


@dataclass
class PatchSimilarity:
    """Everything the explorer shows: the (resized) input and translation, the query point in
    their pixel coordinates, and one heatmap per NCE layer."""

    image: Image.Image
    translated: Image.Image
    query_xy: tuple[int, int]
    layers: list[LayerHeatmap]
    embedding: str  # "PatchSampler MLP" or "raw encoder features"

    def summary(self) -> dict:
        return {"image_size": list(self.image.size), "query_xy": list(self.query_xy), "embedding": self.embedding,
                "layers": [layer.summary() for layer in self.layers]}


def prepare_image(image: Image.Image, max_side: int = 256) -> tuple[Image.Image, float, float]:
    """Resize so the longer side is at most ``max_side`` and both sides are multiples of 4 (the
    generator's requirement). Returns the image and the x and y scale factors applied."""
    w, h = image.size
    s = min(1.0, max_side / max(w, h))
    nw, nh = max(16, round(w * s / 4) * 4), max(16, round(h * s / 4) * 4)
    rgb = image.convert("RGB")
    out = rgb if (nw, nh) == (w, h) else rgb.resize((nw, nh), Image.Resampling.BICUBIC)
    return out, nw / w, nh / h


def _crop_to_image(feat: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, float]:
    """Remove reflection padding (maps larger than the image, e.g. layer 0) and return the
    map (C, h, w) with its stride in image pixels per cell."""
    _, fh, fw = feat.shape
    if fh > height:  # padded: same resolution as the image plus a border
        ph, pw = (fh - height) // 2, (fw - width) // 2
        return feat[:, ph:ph + height, pw:pw + width], 1.0
    return feat, height / fh


@torch.inference_mode()
def patch_similarity(generator: CUTGenerator | StyleGAN2Generator, image: Image.Image, x: float, y: float,
                     sampler: PatchSampler | None = None, max_side: int = 256) -> PatchSimilarity:
    """Heatmaps of the cosine similarity between the input's embedding at (x, y) and every
    location of the translation's embedding, one per NCE layer of ``generator``.

    Args:
        generator: a ``CUTGenerator`` (any object with ``forward``, ``encode`` and ``nce_layers``).
        image: the input (any size; resized to at most ``max_side``).
        x, y: the query point in the pixel coordinates of ``image`` as given.
        sampler: the trained PatchSampler (embedding = its MLP, as in training); None uses the raw
            encoder features.
        max_side: longer side the explorer works at (keeps a click cheap on a CPU).
    """
    w0, h0 = image.size
    if not (0 <= float(x) < w0 and 0 <= float(y) < h0):
        raise DemoError(f"the point ({x:g}, {y:g}) lies outside the {w0}x{h0} image")
    img, sx, sy = prepare_image(image, max_side)
    qx, qy = min(int(float(x) * sx), img.width - 1), min(int(float(y) * sy), img.height - 1)
    layers = list(generator.nce_layers)
    if sampler is not None and len(sampler.in_channels) != len(layers):
        raise DemoError(f"the model's sampler has {len(sampler.in_channels)} MLPs but the generator "
                        f"{len(layers)} NCE layers; they do not belong together")

    dev = next(generator.parameters()).device
    x_in = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True).unsqueeze(0).to(dev) * 2 - 1  # (1,3,H,W)
    fake = generator(x_in)
    feats_src = generator.encode(x_in)
    feats_fake = generator.encode(fake)
    if sampler is not None:  # whole maps through the MLPs, (1, nc, h, w) each, unit length over nc
        maps_src, _ = sampler(feats_src, num_patches=0)
        maps_fake, _ = sampler(feats_fake, num_patches=0)
        embedding = "PatchSampler MLP"
    else:
        maps_src = [l2_normalize(f) for f in feats_src]
        maps_fake = [l2_normalize(f) for f in feats_fake]
        embedding = "raw encoder features"

    heatmaps = []
    for layer, m_src, m_fake in zip(layers, maps_src, maps_fake, strict=True):
        src, stride = _crop_to_image(m_src[0].float(), img.height, img.width)
        tgt, _ = _crop_to_image(m_fake[0].float(), img.height, img.width)
        row, col = min(int(qy / stride), src.shape[1] - 1), min(int(qx / stride), src.shape[2] - 1)
        q = src[:, row, col]  # (C,)
        sim = torch.einsum("chw,c->hw", tgt, q).cpu().numpy()  # (h, w), both sides unit length
        peak = np.unravel_index(int(sim.argmax()), sim.shape)
        heatmaps.append(LayerHeatmap(layer, sim, float(stride), (row, col), (int(peak[0]), int(peak[1]))))
    translated = TF.to_pil_image(((fake[0].float().cpu() + 1) / 2).clamp(0, 1))
    return PatchSimilarity(img, translated, (qx, qy), heatmaps, embedding)


def render_query(result: PatchSimilarity, display: int = 256) -> tuple[Image.Image, Image.Image]:
    """The input with the query point marked, and the query patch (the deepest layer's cell and
    its neighbours) enlarged."""
    img = upscale(result.image, display)
    k = img.width / result.image.width
    qx, qy = result.query_xy
    marked = draw_marker(img, ((qx + 0.5) * k, (qy + 0.5) * k), QUERY_COLOUR)
    half = max(4.0, 1.5 * max(layer.stride for layer in result.layers))
    box = (int(max(0, qx - half)), int(max(0, qy - half)),
           int(min(result.image.width, qx + half + 1)), int(min(result.image.height, qy + half + 1)))
    ImageDraw.Draw(marked).rectangle([c * k for c in box], outline=QUERY_COLOUR, width=max(1, img.width // 128))
    patch = result.image.crop(box)
    return marked, patch.resize((patch.width * max(1, 128 // patch.width), patch.height * max(1, 128 // patch.width)),
                                Image.Resampling.NEAREST)


def render_heatmaps(result: PatchSimilarity, display: int = 256) -> list[tuple[Image.Image, str]]:
    """One (picture, caption) per layer: the heatmap (its own min..max) over the translation, the
    query point as a green cross and the peak as a yellow ring."""
    base = upscale(result.translated, display)
    k = base.width / result.translated.width
    out = []
    for layer in result.layers:
        sim = layer.similarity
        pic = overlay_heatmap(base, sim, float(sim.min()), float(sim.max()))
        qx, qy = result.query_xy
        pic = draw_marker(pic, ((qx + 0.5) * k, (qy + 0.5) * k), QUERY_COLOUR)
        px, py = layer.peak_xy
        pic = draw_marker(pic, (px * k, py * k), PEAK_COLOUR, radius=max(4, int(layer.stride * k / 2) + 2),
                          shape="ring")
        # Short enough for a thumbnail at 1280 px: the map size, stride and the similarity at the
        # query and on average are in :meth:`PatchSimilarity.summary`.
        caption = f"layer {layer.layer}: peak {sim.max():.2f}, {layer.peak_distance:.1f} cells off"
        out.append((pic, caption))
    return out
