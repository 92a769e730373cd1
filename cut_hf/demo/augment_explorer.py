"""The augmentation explorer: SimCLR's T(.) on one image, and NT-Xent over a small batch of views.

Part 1 (:func:`explore_views`) draws two views of one image and reports what each sampled.
Part 2 (:func:`batch_similarity`) takes N images through two views each, embeds the 2N views,
and shows the 2N x 2N cosine-similarity matrix and the NT-Xent loss the SimCLR objective would
give it. Two embeddings are offered, neither trained with SimCLR, and the page says so:
``"pixels"`` (each view at 32 x 32, mean removed, flattened: cosine = pixel correlation) and
``"cut-encoder"`` (the loaded CUT generator's encoder features, global-average-pooled).
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image, ImageDraw

from cut_hf.data.augment import PRESETS, SimCLRAugment, ViewParams
from cut_hf.demo.errors import DemoError
from cut_hf.demo.render import colormap, draw_boxes, font
from cut_hf.models.generator import CUTGenerator
from cut_hf.models.stylegan2 import StyleGAN2Generator
from cut_hf.objectives.losses import nt_xent_loss

VIEW_COLOURS = ("#ff8c1a", "#1ad1ff")  # view 1 orange, view 2 cyan: boxes, labels and matrix marks

PRESET_LABELS = {"paper": "simclr", "cifar": "cifar"}  # app names -> cut_hf.data.augment.PRESETS keys


@dataclass(frozen=True)
class AugmentControls:
    """The explorer's controls as one value: each operation's switch and its parameters.

    The page has a component per field and the ``/augment`` and ``/augment_batch`` API endpoints a
    parameter per field, in this order (:data:`CONTROL_NAMES`); the handlers take this one value.
    :meth:`preset` gives a preset's values, :meth:`augment` the transform.
    """

    size: int
    crop: bool
    crop_scale_min: float
    crop_scale_max: float
    flip: bool
    flip_p: float
    jitter: bool
    jitter_p: float
    jitter_strength: float
    grayscale: bool
    grayscale_p: float
    blur: bool
    blur_p: float
    blur_sigma_min: float
    blur_sigma_max: float

    @classmethod
    def preset(cls, name: str = "paper") -> AugmentControls:
        """A preset's values: ``"paper"`` (ImageNet recipe, 224 px) or ``"cifar"`` (32 px, s 0.5, no blur)."""
        if name not in PRESET_LABELS:
            raise DemoError(f"unknown preset {name!r}; choose from {sorted(PRESET_LABELS)}")
        cfg = SimCLRAugment(**PRESETS[PRESET_LABELS[name]], seed=0).config()
        return cls(size=cfg["size"], crop=cfg["crop"], crop_scale_min=cfg["crop_scale"][0],
                   crop_scale_max=cfg["crop_scale"][1], flip=cfg["flip"], flip_p=cfg["flip_p"], jitter=cfg["jitter"],
                   jitter_p=cfg["jitter_p"], jitter_strength=cfg["jitter_strength"], grayscale=cfg["grayscale"],
                   grayscale_p=cfg["grayscale_p"], blur=cfg["blur"], blur_p=cfg["blur_p"],
                   blur_sigma_min=cfg["blur_sigma"][0], blur_sigma_max=cfg["blur_sigma"][1])

    def augment(self) -> SimCLRAugment:
        """The :class:`SimCLRAugment` these controls describe; bad values raise :class:`DemoError`."""
        if not 8 <= int(self.size) <= 512:
            raise DemoError(f"view size must be between 8 and 512 pixels, got {self.size}")
        try:
            return SimCLRAugment(
                size=int(self.size), crop=bool(self.crop),
                crop_scale=(float(self.crop_scale_min), float(self.crop_scale_max)), flip=bool(self.flip),
                flip_p=float(self.flip_p), jitter=bool(self.jitter), jitter_p=float(self.jitter_p),
                jitter_strength=float(self.jitter_strength), grayscale=bool(self.grayscale),
                grayscale_p=float(self.grayscale_p), blur=bool(self.blur), blur_p=float(self.blur_p),
                blur_sigma=(float(self.blur_sigma_min), float(self.blur_sigma_max)), seed=0,
            )
        except (TypeError, ValueError) as err:
            raise DemoError(f"invalid augmentation settings: {err}") from err


#: The controls in the order the app lays them out and the API endpoints take them.
CONTROL_NAMES = tuple(f.name for f in fields(AugmentControls))


def spell_out_controls(fn: Callable) -> Callable:
    """``fn`` with its one ``controls`` parameter (an :class:`AugmentControls`)
    spelled out as a parameter per control, defaulting to the paper's preset: the page has one
    component per control and the API endpoint names each one. The controls are gathered back into
    one value before ``fn`` runs."""
    signature, hints = inspect.signature(fn), typing.get_type_hints(fn)
    paper = asdict(AugmentControls.preset("paper"))
    params: list[inspect.Parameter] = []
    for p in signature.parameters.values():
        if p.name == "controls":
            params += [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value,
                                         annotation=type(value)) for name, value in paper.items()]
        else:
            params.append(p.replace(annotation=hints.get(p.name, p.annotation)))
    spelled = signature.replace(parameters=params, return_annotation=hints.get("return", signature.empty))

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        bound = spelled.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        controls = AugmentControls(**{name: values.pop(name) for name in CONTROL_NAMES})
        return fn(**values, controls=controls)

    call.__signature__ = spelled  # type: ignore[attr-defined]  # what gradio (inspect.signature) reads
    call.__annotations__ = {p.name: p.annotation for p in params} | {"return": spelled.return_annotation}
    return call


def to_pil(view: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> PIL RGB."""
    return TF.to_pil_image(view.clamp(0, 1))


def describe_params(params: ViewParams) -> dict[str, Any]:
    """What one view sampled, as JSON values with readable names (the page's parameter table)."""
    top, left, h, w = params.crop
    return {
        "crop (top, left, height, width)": [top, left, h, w],
        "crop area (fraction of image)": round(params.crop_area_fraction, 4),
        "crop aspect (w/h)": round(w / h, 3),
        "horizontal flip": params.flip,
        "colour jitter": [f"{name} {factor:.3f}" for name, factor in params.jitter_ops] if params.jitter else False,
        "grayscale": params.grayscale,
        "gaussian blur": ({"sigma": round(params.sigma, 3), "kernel": params.kernel_size}
                          if params.sigma is not None else False),  # sigma is None without blur
    }


def params_markdown(p1: ViewParams, p2: ViewParams) -> str:
    """A two-column Markdown table of what view 1 and view 2 sampled."""
    d1, d2 = describe_params(p1), describe_params(p2)

    def cell(v: Any) -> str:
        if isinstance(v, bool):
            return "yes" if v else "no"
        if isinstance(v, list):
            return ", ".join(str(x) for x in v) if v else "-"
        if isinstance(v, dict):
            return ", ".join(f"{k} {x}" for k, x in v.items())
        return str(v)

    rows = [f"| {k} | {cell(d1[k])} | {cell(d2[k])} |" for k in d1]
    return "| sampled | view 1 (orange) | view 2 (cyan) |\n|---|---|---|\n" + "\n".join(rows)


@dataclass
class ViewsResult:
    """Part 1's output: the original with both crop boxes, the two views and their parameters."""

    boxes: Image.Image
    view1: Image.Image
    view2: Image.Image
    params: tuple[ViewParams, ViewParams]

    def params_json(self) -> dict[str, Any]:
        return {"view 1": describe_params(self.params[0]), "view 2": describe_params(self.params[1])}


def explore_views(image: Image.Image, augment: SimCLRAugment, seed: int = 0) -> ViewsResult:
    """Two views of ``image`` drawn with a generator seeded by ``seed`` (same seed, same views)."""
    g = torch.Generator().manual_seed(int(seed))
    (v1, v2), (p1, p2) = augment(image, generator=g, return_params=True)
    boxes = draw_boxes(image.convert("RGB"), [p1.crop, p2.crop], VIEW_COLOURS, ["1", "2"])
    return ViewsResult(boxes, to_pil(v1), to_pil(v2), (p1, p2))


# ------------------------------------------------------------------------------- part 2: NT-Xent
Embed = Callable[[torch.Tensor], torch.Tensor]  # (2N, 3, S, S) in [0, 1] -> (2N, D)


def pixel_embedding(views: torch.Tensor, side: int = 32) -> torch.Tensor:
    """Views resized to ``side`` x ``side``, flattened, per-view mean removed: (2N, 3 * side**2)."""
    small = F.interpolate(views, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
    flat = small.flatten(1)
    return flat - flat.mean(dim=1, keepdim=True)


def generator_embedding(generator: CUTGenerator | StyleGAN2Generator, layer: int | None = None) -> Embed:
    """An embedding from a CUT generator's encoder: features after ``layer`` (default: the last
    NCE layer), global-average-pooled. The generator was trained for translation, not SimCLR."""
    layers = list(generator.nce_layers)
    chosen = layer if layer is not None else (layers[-1] if layers else None)
    if chosen is None:
        raise DemoError("the loaded generator has no encoder layers to embed with")

    @torch.inference_mode()
    def embed(views: torch.Tensor) -> torch.Tensor:
        side = max(4, views.shape[-1] // 4 * 4)  # the generator needs multiples of 4
        x = F.interpolate(views, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        dev = next(generator.parameters()).device
        feat = generator.encode(x.to(dev) * 2 - 1, layers=[chosen])[0]  # (2N, C, h, w), inputs in [-1, 1]
        return feat.float().mean(dim=(2, 3)).cpu()

    return embed


@dataclass
class SimilarityResult:
    """Part 2's output. Rows and columns are ordered [view 1 of images 1..N, view 2 of images 1..N],
    so the positive of row i is column (i + N) mod 2N, as in :func:`cut_hf.objectives.losses.nt_xent_loss`."""

    similarity: np.ndarray  # (2N, 2N) cosine similarities
    loss: float  # NT-Xent at ``temperature``
    temperature: float
    top1: float  # fraction of the 2N anchors whose most similar other view is their positive
    views: list[Image.Image]  # the 2N views in matrix order

    @property
    def n(self) -> int:
        return self.similarity.shape[0] // 2


def batch_similarity(images: Sequence[Image.Image], augment: SimCLRAugment, embed: Embed, temperature: float = 0.5,
                     seed: int = 0) -> SimilarityResult:
    """Two views of each image -> embeddings -> 2N x 2N cosine similarities and NT-Xent."""
    if len(images) < 2:
        raise DemoError("the batch needs at least two images (each image's views are the others' negatives)")
    if not 0.005 <= float(temperature) <= 10:
        raise DemoError(f"temperature must be between 0.005 and 10, got {temperature}")
    g = torch.Generator().manual_seed(int(seed))
    firsts, seconds = [], []
    for img in images:
        v1, v2 = augment(img, generator=g)
        firsts.append(v1)
        seconds.append(v2)
    views = torch.stack(firsts + seconds)  # (2N, 3, S, S)
    z = embed(views).float()
    n = len(images)
    loss = float(nt_xent_loss(z[:n], z[n:], temperature=float(temperature)))
    zn = F.normalize(z, dim=1)
    sim = (zn @ zn.t()).numpy()
    masked = sim.copy()
    np.fill_diagonal(masked, -np.inf)
    positives = (np.arange(2 * n) + n) % (2 * n)
    top1 = float((masked.argmax(axis=1) == positives).mean())
    return SimilarityResult(sim, loss, float(temperature), top1, [to_pil(v) for v in views])


def render_similarity(result: SimilarityResult, cell: int = 40) -> Image.Image:
    """The matrix as a picture: view thumbnails along both axes, cells coloured by cosine
    similarity (blue -1, white 0, red +1) with the value written in, the excluded self-similarity
    cells grey, and the positive pair of each row outlined in green."""
    m = result.similarity.shape[0]
    n = result.n
    margin = cell + 6
    size = margin + m * cell
    out = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(out)
    colours = colormap(result.similarity, -1.0, 1.0, "diverging")
    f = font(max(9, cell // 4))
    for i in range(m):
        thumb = result.views[i].resize((cell - 4, cell - 4), Image.Resampling.BILINEAR)
        tag = VIEW_COLOURS[i // n]
        for xy in ((2, margin + i * cell + 2), (margin + i * cell + 2, 2)):
            out.paste(thumb, xy)
            draw.rectangle([xy[0] - 1, xy[1] - 1, xy[0] + cell - 4, xy[1] + cell - 4], outline=tag, width=2)
        for j in range(m):
            x0, y0 = margin + j * cell, margin + i * cell
            box = [x0, y0, x0 + cell - 1, y0 + cell - 1]
            if i == j:
                draw.rectangle(box, fill=(160, 160, 160))
                continue
            draw.rectangle(box, fill=tuple(int(c) for c in colours[i, j]))
            value = f"{result.similarity[i, j]:.2f}".replace("0.", ".")
            draw.text((x0 + cell / 2, y0 + cell / 2), value, fill="black", font=f, anchor="mm")
            if j == (i + n) % m:
                draw.rectangle(box, outline=(0, 170, 60), width=3)
    return out
