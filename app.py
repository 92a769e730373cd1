#!/usr/bin/env python
"""cut-hf demo: translate images, explore SimCLR's augmentations, and see PatchNCE at work.

    python app.py                                  # offline, the small model shipped in models/
    python app.py --model user/horse2zebra         # a Hub id (or a local save_pretrained folder)
    python app.py --host 0.0.0.0 --port 7860 --share

Three tabs, each an API endpoint with stable names (``gradio_client`` can call them):
``/translate`` (before/after slider), ``/augment`` and ``/augment_batch`` (SimCLR's T(.) and
NT-Xent), ``/patch_similarity`` (the PatchNCE explorer). The work is done by ``cut_hf.demo``;
this file only lays out the page and turns errors into messages (never a traceback).
"""

from __future__ import annotations

import argparse
import functools
import html
import logging
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no telemetry calls

import gradio as gr  # noqa: E402
from PIL import Image  # noqa: E402

from cut_hf.demo import augment_explorer as aug  # noqa: E402
from cut_hf.demo.errors import DemoError  # noqa: E402
from cut_hf.demo.models import ModelCache, warm_up  # noqa: E402
from cut_hf.demo.patch_explorer import patch_similarity, render_heatmaps, render_query  # noqa: E402
from cut_hf.demo.render import upscale  # noqa: E402
from cut_hf.demo.translation import (  # noqa: E402
    DEFAULT_TILE_ABOVE,
    RESOLUTIONS,
    precision_note,
    precisions_available,
    run_translation,
)
from cut_hf.demo.uploads import DEFAULT_MAX_PIXELS, read_image  # noqa: E402
from cut_hf.perf import set_threads  # noqa: E402

log = logging.getLogger("cut_hf.app")

#: The model ``python app.py`` uses when given none: shipped with the repository, works offline.
SHIPPED_MODEL = Path(__file__).resolve().parent / "models" / "mini-horse2zebra"
EXAMPLES_DIR = SHIPPED_MODEL / "examples"  # test-split images of the shipped model's dataset
DEFAULT_MAX_FILE_SIZE = "25mb"


# --------------------------------------------------------------------------------------- helpers
def guarded(fn: Callable) -> Callable:
    """Run a handler; its DemoError becomes a gr.Error with the same message, anything else a
    short gr.Error (the traceback goes to the server log, never to the page)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except DemoError as err:
            raise gr.Error(html.escape(str(err), quote=False), print_exception=False) from None
        except MemoryError:
            raise gr.Error("out of memory: try a smaller image or resolution", print_exception=False) from None
        except Exception as err:  # noqa: BLE001 - the page gets a message, the log the traceback
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"something went wrong ({html.escape(type(err).__name__, quote=False)}); the server log has "
                           "the details", print_exception=False) from None

    return wrapper


def example_images(folder: Path, extra_dir: Path | None = None) -> list[str]:
    """The shipped example images, plus two scikit-image photos (when installed) for the
    augmentation explorer, written once to ``extra_dir``."""
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


# ------------------------------------------------------------------------------------------ page
def build_demo(
    model: str | os.PathLike = SHIPPED_MODEL,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    tile_above: int = DEFAULT_TILE_ABOVE,
    examples_cache: str | os.PathLike | None = None,
    cache: ModelCache | None = None,
) -> gr.Blocks:
    """The Blocks app. Loads ``model`` once (raises DemoError when it cannot) and caches the
    example outputs under ``examples_cache`` (default: a fresh temporary folder, so a cache from
    another model or version is never shown)."""
    cache = cache or ModelCache()
    default_model = str(model)
    loaded = cache.get(default_model)  # fail early with a readable message
    warm_up(loaded)
    if examples_cache is None:
        examples_cache = tempfile.mkdtemp(prefix="cut-hf-examples-")
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(examples_cache)  # read by gr.Examples when created
    horse_examples = example_images(EXAMPLES_DIR)
    all_examples = example_images(EXAMPLES_DIR, Path(examples_cache) / "photos")
    batch_images = [read_image(p) for p in all_examples]

    # ---------------------------------------------------------------- handlers (plain functions)
    @guarded
    def translate_fn(image: Any, resolution: str = "original", precision: str = "fp32",
                     model_id: str = default_model) -> tuple[tuple[Image.Image, Image.Image], str]:
        """Translate an image; returns (before, after) for the slider and a line of timing."""
        img = read_image(image, max_pixels)
        result = run_translation(cache.get(model_id), img, resolution, precision, tile_above, max_pixels)
        return (result.before, result.after), result.describe(img.size)

    @guarded
    def augment_fn(image: Any, *controls_and_seed: Any) -> tuple:
        """Two SimCLR views of an image, the crop boxes drawn on it, and what each view sampled."""
        *controls, seed = controls_and_seed
        augment = aug.make_augment(**dict(zip(aug.CONTROL_NAMES, controls, strict=True)))
        res = aug.explore_views(read_image(image, max_pixels), augment, int(seed or 0))
        return res.boxes, res.view1, res.view2, aug.params_markdown(*res.params), res.params_json()

    @guarded
    def augment_batch_fn(*args: Any) -> tuple[Image.Image, str]:
        """The example images through two views each: the 2N x 2N cosine-similarity matrix and NT-Xent."""
        *controls, seed, temperature, encoder, model_id = args
        augment = aug.make_augment(**dict(zip(aug.CONTROL_NAMES, controls, strict=True)))
        if encoder == "cut-encoder":
            embed = aug.generator_embedding(cache.get(model_id).generator)
            how = "the CUT generator's encoder (last NCE layer, average-pooled; trained for translation, not SimCLR)"
        elif encoder == "pixels":
            embed, how = aug.pixel_embedding, "raw pixels (each view at 32×32, mean removed)"
        else:
            raise DemoError(f"encoder must be 'pixels' or 'cut-encoder', got {encoder!r}")
        res = aug.batch_similarity(batch_images, augment, embed, float(temperature), int(seed or 0))
        text = (f"**NT-Xent = {res.loss:.4f}** at τ = {res.temperature:g} over 2N = {2 * res.n} views "
                f"(chance level ln(2N-1) = {math.log(2 * res.n - 1):.3f}). Embedding: {how}. "
                f"The positive is the most similar view for {res.top1:.0%} of the anchors. "
                "Green boxes mark the positive pairs; grey cells (self-similarity) are left out of the loss.")
        return aug.render_similarity(res), text

    @guarded
    def patch_fn(image: Any, x: float = -1, y: float = -1, model_id: str = default_model) -> tuple:
        """PatchNCE explorer: the query at (x, y) (negative: the image centre) against every
        location of the translation, one heatmap per NCE layer."""
        img = read_image(image, max_pixels)
        x = img.width / 2 if x is None or float(x) < 0 else float(x)
        y = img.height / 2 if y is None or float(y) < 0 else float(y)
        m = cache.get(model_id)
        res = patch_similarity(m.generator, img, x, y, m.sampler)
        marked, patch = render_query(res)
        return marked, patch, upscale(res.translated, 256), render_heatmaps(res), res.summary()

    @guarded
    def model_info_fn(model_id: str) -> str:
        """Load a model (Hub id or folder) and describe it."""
        return cache.get(model_id).describe()

    def preset_fn(name: str) -> list:
        values = aug.preset_controls(name)
        return [values[k] for k in aug.CONTROL_NAMES]

    def select_fn(evt: gr.SelectData) -> tuple[int, int]:
        return int(evt.index[0]), int(evt.index[1])

    # ---------------------------------------------------------------- layout
    paper = aug.preset_controls("paper")
    with gr.Blocks(title="cut-hf: contrastive unpaired translation") as demo:
        gr.Markdown(
            "# cut-hf demo\nContrastive unpaired image-to-image translation — CUT / FastCUT "
            "([Park et al., 2020](https://arxiv.org/abs/2007.15651)) and the SimCLR ideas it grows from "
            "([Chen et al., 2020](https://arxiv.org/abs/2002.05709)). The default model is a small CUT "
            "generator shipped with the repository, trained on a synthetic *mini horse → zebra* dataset "
            "at 64 px: it adds stripes to horses like the examples, not to photographs."
        )
        with gr.Row():
            model_box = gr.Textbox(value=default_model, label="Model: Hugging Face Hub id or local folder", scale=4)
            load_btn = gr.Button("Load model", scale=1)
        model_info = gr.Markdown(loaded.describe())
        load_btn.click(model_info_fn, [model_box], [model_info], api_name="model_info")
        model_box.submit(model_info_fn, [model_box], [model_info], api_visibility="private")

        with gr.Tab("Translate"):
            with gr.Row():
                with gr.Column():
                    t_input = gr.Image(type="filepath", image_mode=None, label="Input image",
                                       sources=["upload", "clipboard"], format="png", elem_id="translate-input")
                    with gr.Row():
                        resolution = gr.Dropdown(list(RESOLUTIONS), value="original", allow_custom_value=True,
                                                 label="Resolution: original size, or shorter side in px")
                        precision = gr.Radio(precisions_available(), value="fp32", label="Precision",
                                             info=precision_note())
                    t_button = gr.Button("Translate", variant="primary", elem_id="translate-button")
                with gr.Column():
                    slider = gr.ImageSlider(type="pil", format="png", label="Before | after",
                                            elem_id="translate-slider")
                    t_info = gr.Markdown(elem_id="translate-info")
            t_button.click(translate_fn, [t_input, resolution, precision, model_box], [slider, t_info],
                           api_name="translate", preprocess=False)
            gr.Examples(horse_examples, inputs=[t_input], outputs=[slider, t_info],
                        fn=lambda image: translate_fn(image, "original", "fp32", default_model),
                        cache_examples=True, cache_mode="eager", preprocess=False, label="Examples (cached)")

        with gr.Tab("Augmentation explorer"):
            gr.Markdown("SimCLR's augmentation family *T(·)*: every view is a random resized crop, then a "
                        "flip, colour jitter, grayscale and blur, each taken with its probability. Two views of "
                        "one image are a **positive pair**; views of other images are **negatives**.")
            with gr.Row():
                with gr.Column(scale=1):
                    a_input = gr.Image(type="filepath", image_mode=None, label="Image", format="png",
                                       elem_id="augment-input")
                    preset = gr.Radio(["paper", "cifar"], value="paper", label="Preset (sets the controls)")
                    with gr.Accordion("Operations", open=True):
                        size = gr.Slider(8, 512, value=paper["size"], step=1, label="View size (px)")
                        with gr.Row():
                            crop = gr.Checkbox(paper["crop"], label="Random resized crop")
                            crop_min = gr.Slider(0.01, 1, value=paper["crop_scale_min"], label="crop area min")
                            crop_max = gr.Slider(0.01, 1, value=paper["crop_scale_max"], label="crop area max")
                        with gr.Row():
                            flip = gr.Checkbox(paper["flip"], label="Horizontal flip")
                            flip_p = gr.Slider(0, 1, value=paper["flip_p"], label="flip p")
                        with gr.Row():
                            jitter = gr.Checkbox(paper["jitter"], label="Colour jitter")
                            jitter_p = gr.Slider(0, 1, value=paper["jitter_p"], label="jitter p")
                            strength = gr.Slider(0, 2, value=paper["jitter_strength"], label="strength s")
                        with gr.Row():
                            gray = gr.Checkbox(paper["grayscale"], label="Grayscale")
                            gray_p = gr.Slider(0, 1, value=paper["grayscale_p"], label="grayscale p")
                        with gr.Row():
                            blur = gr.Checkbox(paper["blur"], label="Gaussian blur")
                            blur_p = gr.Slider(0, 1, value=paper["blur_p"], label="blur p")
                            sigma_min = gr.Slider(0.01, 5, value=paper["blur_sigma_min"], label="sigma min")
                            sigma_max = gr.Slider(0.01, 5, value=paper["blur_sigma_max"], label="sigma max")
                    seed = gr.Number(0, precision=0, label="Seed (same seed, same views)")
                    a_button = gr.Button("Draw two views", variant="primary", elem_id="augment-button")
                with gr.Column(scale=2):
                    boxes = gr.Image(label="Original with both crop boxes (1 orange, 2 cyan)", format="png")
                    with gr.Row():
                        view1 = gr.Image(label="View 1", format="png")
                        view2 = gr.Image(label="View 2", format="png", elem_id="augment-view2")
                    params_md = gr.Markdown()
                    with gr.Accordion("Sampled parameters as JSON", open=False):
                        params_json = gr.JSON()
            controls = [size, crop, crop_min, crop_max, flip, flip_p, jitter, jitter_p, strength, gray, gray_p,
                        blur, blur_p, sigma_min, sigma_max]
            preset.change(preset_fn, [preset], controls, api_visibility="private")
            a_button.click(augment_fn, [a_input, *controls, seed], [boxes, view1, view2, params_md, params_json],
                           api_name="augment", preprocess=False)
            gr.Examples(all_examples, inputs=[a_input], label="Examples", elem_id="augment-examples")

            gr.Markdown("### A batch through NT-Xent\nThe example images above, two views each (same controls "
                        "and seed): the 2N × 2N cosine-similarity matrix of their embeddings, and SimCLR's NT-Xent "
                        "loss. Rows and columns: view 1 of every image (orange), then view 2 (cyan).")
            with gr.Row():
                temperature = gr.Slider(0.01, 2, value=0.5, label="Temperature τ")
                encoder = gr.Radio(["pixels", "cut-encoder"], value="pixels", label="Embedding")
                b_button = gr.Button("Compute the matrix", variant="primary", elem_id="batch-button")
            matrix = gr.Image(label="Cosine similarity (blue −1, white 0, red +1; green: positives)", format="png",
                              elem_id="similarity-matrix")
            loss_md = gr.Markdown()
            b_button.click(augment_batch_fn, [*controls, seed, temperature, encoder, model_box], [matrix, loss_md],
                           api_name="augment_batch", preprocess=False)

        with gr.Tab("PatchNCE explorer"):
            gr.Markdown("**Click a point on the input.** For each NCE layer of the generator's encoder, the "
                        "heatmap shows the cosine similarity between the input's embedding at that point (the "
                        "query) and the translation's embedding at every location — through the trained "
                        "PatchSampler MLP when the model has one. PatchNCE trains the same place to win "
                        "(green cross: the query; yellow ring: the most similar location).")
            with gr.Row():
                with gr.Column():
                    p_input = gr.Image(type="filepath", image_mode=None, label="Input (click a point)", format="png",
                                       elem_id="patch-input")
                    with gr.Row():
                        px = gr.Number(-1, label="x (px; negative: centre)")
                        py = gr.Number(-1, label="y (px; negative: centre)")
                    p_button = gr.Button("Compare", variant="primary", elem_id="patch-button")
                with gr.Column():
                    marked = gr.Image(label="Query point", format="png")
                    patch = gr.Image(label="Query patch", format="png")
                with gr.Column():
                    translated = gr.Image(label="Translation (enlarged for display)", format="png")
            heatmaps = gr.Gallery(label="Similarity per NCE layer", columns=5, format="png", elem_id="patch-heatmaps")
            summary = gr.JSON(label="Numbers")
            p_inputs, p_outputs = [p_input, px, py, model_box], [marked, patch, translated, heatmaps, summary]
            p_button.click(patch_fn, p_inputs, p_outputs, api_name="patch_similarity", preprocess=False)
            p_input.select(select_fn, None, [px, py], api_visibility="private").then(
                patch_fn, p_inputs, p_outputs, api_visibility="private", preprocess=False)
            gr.Examples(horse_examples, inputs=[p_input], label="Examples", elem_id="patch-examples")
    return demo


# ------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="cut-hf demo app", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=str(SHIPPED_MODEL), help="Hub id or local folder of a CUT generator")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port (0: any free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs network)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger uploads (w x h)")
    p.add_argument("--tile-above", type=int, default=DEFAULT_TILE_ABOVE,
                   help="translate images with more pixels than this in tiles")
    p.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="largest upload, e.g. 25mb")
    p.add_argument("--concurrency", type=int, default=2, help="events that may run at the same time")
    p.add_argument("--queue-size", type=int, default=32, help="requests that may wait in the queue")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy shared CPU)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        demo = build_demo(args.model, max_pixels=args.max_pixels, tile_above=args.tile_above)
    except DemoError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
    demo.launch(server_name=args.host, server_port=args.port or None, share=args.share,
                max_file_size=args.max_file_size, show_error=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
