#!/usr/bin/env python
"""cut-hf demo: translate images, explore SimCLR's augmentations, and see PatchNCE at work.

    python app.py                                  # offline, the small model shipped in models/
    python app.py --model user/horse2zebra         # offer a Hub id (or a save_pretrained folder) too
    python app.py --allow-any-model                # a local session: the model box loads any id or folder
    python app.py --cache-minutes 10               # keep uploads and results 10 minutes (default 60)

Each tab is an API endpoint with named parameters (``/translate``, ``/translate_video``, ``/augment``,
``/augment_batch``, ``/patch_similarity``; ``/model_info`` loads a model). ``cut_hf.demo`` does the work; this file lays
out the page and turns errors into messages. Without ``--host``/``--port``, Gradio reads
``GRADIO_SERVER_NAME``/``GRADIO_SERVER_PORT`` (a Hugging Face Space sets them), else 127.0.0.1:7860.
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import functools
import html
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # offline by default: no telemetry calls

import gradio as gr
from PIL import Image

from cut_hf.cli.help import HelpFormatter
from cut_hf.demo import augment_explorer as aug
from cut_hf.demo import texts
from cut_hf.demo.cache import DEFAULT_CACHE_MINUTES, delete_cache_setting, sweeper
from cut_hf.demo.catalog import SHIPPED_MODEL, SHIPPED_SINCUT, ModelCatalog, display_name
from cut_hf.demo.errors import DemoError
from cut_hf.demo.examples import example_images, sincut_photo
from cut_hf.demo.handlers import DEFAULT_LOAD_TIMEOUT, DemoHandlers, Upload
from cut_hf.demo.models import ModelCache
from cut_hf.demo.translation import DEFAULT_TILE_ABOVE, RESOLUTIONS, device_line, precision_note, precisions_available
from cut_hf.demo.uploads import UPLOAD_MAX_PIXELS, read_image
from cut_hf.demo.video import EXAMPLE_CLIP, VideoLimits
from cut_hf.perf import set_threads
from cut_hf.translation.video import TEMPORAL

log = logging.getLogger("cut_hf.app")

DEFAULT_MAX_FILE_SIZE = "25mb"
#: Model loads queue in a group of their own (one at a time), apart from the translations.
LOAD_EVENTS = {"concurrency_id": "model-load", "concurrency_limit": 1}
#: Video jobs too, one at a time: a clip is many images' work, and must not hold up the image tabs.
VIDEO_EVENTS = {"concurrency_id": "video", "concurrency_limit": 1}


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
        except Exception as err:  # the page gets a message, the log the traceback
            log.exception("handler %s failed", fn.__name__)
            raise gr.Error(f"something went wrong ({html.escape(type(err).__name__, quote=False)}); the server log has "
                           "the details", print_exception=False) from None

    return wrapper


# ------------------------------------------------------------------------------------------ tabs
def build_header(h: DemoHandlers, description: str) -> tuple[gr.Dropdown, gr.Markdown]:
    """Title and the model box; returns the box (an input of every tab) and the line describing the model."""
    gr.Markdown(texts.INTRO)
    label = "Model: Hugging Face Hub id, local folder or one of the list" if h.catalog.allow_any else "Model"
    with gr.Row():
        model_box = gr.Dropdown(list(h.catalog.choices), value=h.catalog.default, label=label, scale=4,
                                allow_custom_value=h.catalog.allow_any, elem_id="model-box")
        load_btn = gr.Button("Load model", scale=1)
    model_info = gr.Markdown(description)
    in_use = gr.State(h.catalog.default)  # this visitor's model: the box goes back to it when a load fails
    for trigger, api in ((load_btn.click, {"api_name": "model_info"}),
                         (model_box.select, {"api_visibility": "private"})):
        load = trigger(guarded(h.model_info), [model_box], [model_info], preprocess=False, **api, **LOAD_EVENTS)
        load.success(lambda name: name, [model_box], [in_use], api_visibility="private")
        load.failure(lambda name: name, [in_use], [model_box], api_visibility="private")
    return model_box, model_info


def build_translate_tab(h: DemoHandlers, model_box: gr.Dropdown, model_info: gr.Markdown, examples: list[str],
                        photos: list[list[str]]) -> None:
    """Upload, resolution and precision in; a before/after slider and a timing line out. ``examples``:
    translated with the default model (cached); ``photos``: (photograph, model name) rows, run on click."""

    def translate(image: Upload, resolution: str = "original", precision: str = "fp32", model: str | None = None,
                  progress: gr.Progress = gr.Progress()) -> tuple[tuple[Image.Image, Image.Image], str]:  # noqa: B008
        """Translate an image; returns (before, after) for the slider and a line of timing."""
        tiles = functools.partial(_tile_progress, progress)
        return h.translate(image, resolution, precision, model, tiles)

    with gr.Row():
        with gr.Column():
            t_input = gr.Image(type="filepath", image_mode=None, label="Input image", sources=["upload", "clipboard"],
                               format="png", elem_id="translate-input")
            with gr.Row():
                resolution = gr.Dropdown(list(RESOLUTIONS), value="original", allow_custom_value=True,
                                         label="Resolution: original size, or shorter side in px")
                precision = gr.Radio(precisions_available(), value="fp32", label="Precision", info=precision_note())
            t_button = gr.Button("Translate", variant="primary", elem_id="translate-button")
            gr.Markdown(device_line(), elem_id="translate-device")
        with gr.Column():
            slider = gr.ImageSlider(type="pil", format="png", label="Before | after", elem_id="translate-slider")
            t_info = gr.Markdown(elem_id="translate-info")
    t_button.click(guarded(translate), [t_input, resolution, precision, model_box], [slider, t_info],
                   api_name="translate", preprocess=False)
    gr.Examples(examples, inputs=[t_input], outputs=[slider, t_info], fn=guarded(lambda image: h.translate(image)),
                cache_examples=True, cache_mode="eager", preprocess=False, label="Examples (cached)")
    if photos:  # a real photograph for the SinCUT model (seconds on a CPU: not translated at startup)
        gr.Examples(photos, inputs=[t_input, model_box], outputs=[model_info], label="A photograph, day → night with "
                    "the SinCUT model (fixed noise seed: the same result every time)", elem_id="photo-examples",
                    fn=guarded(lambda image, model: h.model_info(model)), run_on_click=True, preprocess=False)


def build_video_tab(h: DemoHandlers, model_box: gr.Dropdown) -> None:
    """Upload a clip; the translation plays beside it, colour-stable by default."""
    gr.Markdown(texts.VIDEO.format(seconds=h.video_limits.seconds, pixels=h.video_limits.pixels))

    def translate_video(video: Upload, resolution: str = "original", precision: str = "fp32", temporal: str = "clip",
                        model: str | None = None,
                        progress: gr.Progress = gr.Progress()) -> tuple[str, str]:  # noqa: B008
        """Translate a video; returns the translated mp4 and a line of timing."""
        frames = functools.partial(_frame_progress, progress)
        return h.translate_video(video, resolution, precision, temporal, model, frames)

    with gr.Row():
        with gr.Column():
            v_input = gr.Video(label="Input video", sources=["upload"], elem_id="video-input")
            with gr.Row():
                resolution = gr.Dropdown(list(RESOLUTIONS), value="original", allow_custom_value=True,
                                         label="Resolution: original size, or shorter side in px")
                precision = gr.Radio(precisions_available(), value="fp32", label="Precision")
                temporal = gr.Radio(list(TEMPORAL), value="clip", label="Norm statistics")
            v_button = gr.Button("Translate video", variant="primary", elem_id="video-button")
        with gr.Column():
            v_output = gr.Video(label="Translated", elem_id="video-output")
            v_info = gr.Markdown(elem_id="video-info")
    v_button.click(guarded(translate_video), [v_input, resolution, precision, temporal, model_box], [v_output, v_info],
                   api_name="translate_video", preprocess=False, **VIDEO_EVENTS)
    if EXAMPLE_CLIP.is_file():
        gr.Examples([[str(EXAMPLE_CLIP)]], inputs=[v_input], label="Example (a horse crossing the demo's ground)")


def _frame_progress(progress: gr.Progress, done: int, total: int) -> None:
    """translate_video()'s progress callback -> the page's progress bar, counted in frames."""
    progress((done, total), desc="translating", unit="frames")


def _tile_progress(progress: gr.Progress, done: int, total: int) -> None:
    """translate()'s progress callback -> the page's progress bar, counted in tiles."""
    progress((done, total), desc="translating in tiles", unit="tiles")


def augment_controls() -> list[gr.components.Component]:
    """The explorer's controls in ``CONTROL_NAMES`` order. Each operation's checkbox and each
    slider have a line of their own, so their labels stay whole in the narrow column at any width."""
    paper = dataclasses.asdict(aug.AugmentControls.preset("paper"))
    controls = {"size": gr.Slider(8, 512, value=paper["size"], step=1, label="View size (px)")}
    operations = [
        ("crop", "Random resized crop", [("crop_scale_min", 0.01, 1, "crop area min"),
                                         ("crop_scale_max", 0.01, 1, "crop area max")]),
        ("flip", "Horizontal flip", [("flip_p", 0, 1, "flip p")]),
        ("jitter", "Colour jitter", [("jitter_p", 0, 1, "jitter p"), ("jitter_strength", 0, 2, "strength s")]),
        ("grayscale", "Grayscale", [("grayscale_p", 0, 1, "grayscale p")]),
        ("blur", "Gaussian blur", [("blur_p", 0, 1, "blur p"), ("blur_sigma_min", 0.01, 5, "sigma min"),
                                   ("blur_sigma_max", 0.01, 5, "sigma max")]),
    ]
    for name, label, sliders in operations:
        with gr.Group():
            controls[name] = gr.Checkbox(paper[name], label=label)
            for key, low, high, text in sliders:
                controls[key] = gr.Slider(low, high, value=paper[key], label=text)
    return [controls[k] for k in aug.CONTROL_NAMES]


def build_augment_tab(h: DemoHandlers, model_box: gr.Dropdown, examples: list[str]) -> None:
    """Two views of one image, then a batch of views through NT-Xent."""
    gr.Markdown(texts.AUGMENT)
    with gr.Row():
        with gr.Column(scale=1, min_width=360):
            a_input = gr.Image(type="filepath", image_mode=None, label="Image", format="png", elem_id="augment-input")
            preset = gr.Radio(["paper", "cifar"], value="paper", label="Preset (sets the controls)")
            with gr.Accordion("Operations", open=True, elem_id="augment-controls"):
                controls = augment_controls()
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
    preset.change(lambda name: list(dataclasses.astuple(aug.AugmentControls.preset(name))), [preset], controls,
                  api_visibility="private")
    a_button.click(guarded(aug.spell_out_controls(h.augment)), [a_input, *controls, seed],
                   [boxes, view1, view2, params_md, params_json], api_name="augment", preprocess=False)
    gr.Examples(examples, inputs=[a_input], label="Examples", elem_id="augment-examples")

    gr.Markdown(texts.BATCH)
    with gr.Row():
        temperature = gr.Slider(0.01, 2, value=0.5, label="Temperature τ")
        embedding = gr.Radio(["pixels", "cut-encoder"], value="pixels", label="Embedding")
        b_button = gr.Button("Compute the matrix", variant="primary", elem_id="batch-button")
    matrix = gr.Image(label="Cosine similarity (blue −1, white 0, red +1; green: positives)", format="png",
                      elem_id="similarity-matrix")
    loss_md = gr.Markdown()
    b_button.click(guarded(aug.spell_out_controls(h.augment_batch)),
                   [*controls, seed, temperature, embedding, model_box], [matrix, loss_md],
                   api_name="augment_batch", preprocess=False)


def build_patch_tab(h: DemoHandlers, model_box: gr.Dropdown, examples: list[str]) -> None:
    """Click a point: where its embedding lands in the translation, per NCE layer."""
    gr.Markdown(texts.PATCHNCE)
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
    heatmaps = gr.Gallery(label="Similarity per NCE layer", columns=5, height="fit-content", format="png",
                          elem_id="patch-heatmaps")
    summary = gr.JSON(label="Numbers")
    p_inputs, p_outputs = [p_input, px, py, model_box], [marked, patch, translated, heatmaps, summary]
    compare = guarded(h.patch_similarity)
    p_button.click(compare, p_inputs, p_outputs, api_name="patch_similarity", preprocess=False)
    p_input.select(_clicked_point, None, [px, py], api_visibility="private").then(
        compare, p_inputs, p_outputs, api_visibility="private", preprocess=False)
    gr.Examples(examples, inputs=[p_input], label="Examples", elem_id="patch-examples")


def _clicked_point(evt: gr.SelectData) -> tuple[int, int]:
    return int(evt.index[0]), int(evt.index[1])


# ------------------------------------------------------------------------------------------ page
def build_demo(
    models: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    *,
    allow_any_model: bool = False,
    max_pixels: int = UPLOAD_MAX_PIXELS,
    tile_above: int = DEFAULT_TILE_ABOVE,
    load_timeout: float = DEFAULT_LOAD_TIMEOUT,
    examples_cache: str | os.PathLike | None = None,
    cache: ModelCache | None = None,
    cache_minutes: float = DEFAULT_CACHE_MINUTES,
    video_limits: VideoLimits | None = None,
) -> gr.Blocks:
    """The Blocks app offering ``models`` (the first is the default) and the shipped model.

    Loads the default model (raises DemoError when it cannot); caches the example outputs under
    ``examples_cache`` (default: a fresh temporary folder, removed at exit; a stale cache is never shown).
    Uploads and results older than ``cache_minutes`` are deleted while it serves (0: kept until it stops).
    """
    models = [models] if isinstance(models, (str, os.PathLike)) else models
    catalog = ModelCatalog.from_flags(models, allow_any_model, shipped=(SHIPPED_MODEL, SHIPPED_SINCUT))
    h = DemoHandlers(catalog, cache or ModelCache(), max_pixels, tile_above, load_timeout,
                     video_limits=video_limits or VideoLimits())
    loaded = h.start()  # fail early with a readable message
    if examples_cache is None:
        examples_cache = tempfile.mkdtemp(prefix="cut-hf-examples-")
        atexit.register(shutil.rmtree, examples_cache, ignore_errors=True)
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(examples_cache)  # read by gr.Examples when created
    horse_examples = example_images()
    photos = []
    photo, sincut = sincut_photo(), display_name(SHIPPED_SINCUT)
    if photo is not None and catalog.choices.get(sincut) == str(SHIPPED_SINCUT):
        h.model_info(sincut)  # loaded now: picking its example must not need 'Load model' first
        photos.append([photo, sincut])
    all_examples = example_images(extra_dir=Path(examples_cache) / "photos")
    h.batch_images = [read_image(p) for p in all_examples]
    with gr.Blocks(title="cut-hf: contrastive unpaired translation",
                   delete_cache=delete_cache_setting(cache_minutes)) as demo:
        model_box, model_info = build_header(h, loaded.describe())
        with gr.Tab("Translate"):
            build_translate_tab(h, model_box, model_info, horse_examples, photos)
        with gr.Tab("Video"):
            build_video_tab(h, model_box)
        with gr.Tab("Augmentation explorer"):
            build_augment_tab(h, model_box, all_examples)
        with gr.Tab("PatchNCE explorer"):
            build_patch_tab(h, model_box, horse_examples)
    return demo


# ------------------------------------------------------------------------------------------- CLI
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="cut-hf demo app", formatter_class=HelpFormatter)
    p.add_argument("--model", action="append", default=None, metavar="ID_OR_FOLDER",
                   help=f"offer this Hub id or local folder (repeatable; the first is the default; the shipped "
                        f"{SHIPPED_MODEL.name} is always offered, and is the default without --model; so is the "
                        f"SinCUT {SHIPPED_SINCUT.name})")
    p.add_argument("--allow-any-model", action="store_true", help="the model box loads any Hub id or server folder "
                                                                  "(a local session only)")
    p.add_argument("--load-timeout", type=float, default=DEFAULT_LOAD_TIMEOUT, help="seconds a model load may take")
    p.add_argument("--host", help="address to listen on (0.0.0.0: all; None: $GRADIO_SERVER_NAME, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (None or 0: $GRADIO_SERVER_PORT, else 7860 or the next free one)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs network)")
    p.add_argument("--max-pixels", type=int, default=UPLOAD_MAX_PIXELS, help="refuse larger uploads (w x h)")
    p.add_argument("--max-video-seconds", type=float, default=VideoLimits().seconds, help="refuse longer videos")
    p.add_argument("--max-video-pixels", type=int, default=VideoLimits().pixels,
                   help="refuse videos with larger frames (w x h, after the chosen resolution)")
    p.add_argument("--tile-above", type=int, default=DEFAULT_TILE_ABOVE, help="larger images are translated in tiles")
    p.add_argument("--max-file-size", default=DEFAULT_MAX_FILE_SIZE, help="largest upload, e.g. 25mb")
    p.add_argument("--concurrency", type=int, default=2, help="events that may run at the same time")
    p.add_argument("--queue-size", type=int, default=32, help="requests that may wait in the queue")
    p.add_argument("--cache-minutes", type=float, default=DEFAULT_CACHE_MINUTES,
                   help="delete uploads and results older than this while serving (0: keep them until the app stops)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is faster on a busy shared CPU)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        set_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # as Ctrl-C: Gradio closes, the with cleans up
    with tempfile.TemporaryDirectory(prefix="cut-hf-examples-") as examples_cache:  # removed however we stop
        try:
            demo = build_demo(args.model, allow_any_model=args.allow_any_model, max_pixels=args.max_pixels,
                              tile_above=args.tile_above, load_timeout=args.load_timeout, examples_cache=examples_cache,
                              cache_minutes=args.cache_minutes,
                              video_limits=VideoLimits(args.max_video_seconds, args.max_video_pixels))
        except DemoError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        demo.queue(default_concurrency_limit=args.concurrency, max_size=args.queue_size)
        setting = delete_cache_setting(args.cache_minutes)
        # Gradio deletes old files; their hash-named folders, left empty, go on the same schedule.
        lifespan = {"lifespan": sweeper(gr.utils.get_upload_folder(), *setting)} if setting else {}
        try:  # no host or port unless a flag names one: launch() then reads GRADIO_SERVER_NAME/PORT
            demo.launch(server_name=args.host, server_port=args.port or None, share=args.share,
                        max_file_size=args.max_file_size, show_error=False, app_kwargs=lifespan)
        finally:  # a stop during startup: the server (and its example caching) ends before the folder goes
            demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
