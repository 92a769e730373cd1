"""The demo as a real server on 127.0.0.1, driven by gradio_client through every API name.

One server (the shipped model, a small pixel limit so the oversize path is cheap to hit) serves
all tests of this module; bad inputs must come back as readable errors while the server keeps
serving.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "models" / "mini-horse2zebra" / "examples" / "testA_0000.png"
MAX_PIXELS = 300 * 300
TILE_ABOVE = 20_000  # the 64 px examples run whole, a 256 px translation in tiles
SHIPPED = ROOT / "models" / "mini-horse2zebra"
CONTROLS = ["size", "crop", "crop_scale_min", "crop_scale_max", "flip", "flip_p", "jitter", "jitter_p",
            "jitter_strength", "grayscale", "grayscale_p", "blur", "blur_p", "blur_sigma_min", "blur_sigma_max"]


@functools.cache
def load_app():  # app.py is a script, not part of the installed package: imported from its path
    spec = importlib.util.spec_from_file_location("cut_hf_app", ROOT / "app.py")
    spec.loader.exec_module(module := importlib.util.module_from_spec(spec))
    return module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(client, examples cache folder) of a running app offering the shipped model and a Hub id
    (never loaded: no Hub here); closed after the module."""
    from gradio_client import Client

    cache = tmp_path_factory.mktemp("examples-cache")
    demo = load_app().build_demo([str(SHIPPED), "someone/stalled"], max_pixels=MAX_PIXELS, tile_above=TILE_ABOVE,
                                 examples_cache=cache, load_timeout=2)
    demo.queue(default_concurrency_limit=2, max_size=16)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            max_file_size="1mb")
    try:
        client = Client(url, verbose=False)
        client.url = url
        yield client, Path(cache)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    (d / "notes.png").write_text("this is not an image")
    big = Image.fromarray(rng.integers(0, 255, (400, 400, 3), dtype=np.uint8))  # 160 kpx > MAX_PIXELS
    big.save(d / "big.png")
    Image.fromarray(rng.integers(0, 255, (1200, 1200, 3), dtype=np.uint8)).save(d / "huge_file.png")  # > 1 MB
    Image.open(EXAMPLE).convert("CMYK").save(d / "cmyk.jpg")
    return {p.stem: p for p in d.iterdir()}


def test_api_names_and_named_parameters(server) -> None:
    client, _ = server
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/translate", "/translate_video", "/augment", "/augment_batch", "/patch_similarity", "/model_info"} <= set(api)
    names = {k: [p["parameter_name"] for p in v["parameters"]] for k, v in api.items()}
    assert names["/augment"] == ["image", *CONTROLS, "seed"]
    assert names["/augment_batch"] == [*CONTROLS, "seed", "temperature", "embedding", "model"]
    assert names["/translate"] == ["image", "resolution", "precision", "model"]
    assert names["/translate_video"] == ["video", "resolution", "precision", "temporal", "model"]
    assert names["/patch_similarity"] == ["image", "x", "y", "model"] and names["/model_info"] == ["model"]
    assert not any(n.startswith("param_") for ns in names.values() for n in ns)


def test_page_and_api_show_no_server_paths(server) -> None:
    client, _ = server
    with urllib.request.urlopen(client.url + "config", timeout=30) as page:
        config = page.read().decode()
    api = str(client.view_api(print_info=False, return_format="dict"))
    for text in (config, api):
        assert str(ROOT) not in text and str(SHIPPED) not in text
    assert "mini-horse2zebra" in config and "someone/stalled" in config  # the allowlist, by display name
    assert "sincut-china2night" in config and "china.jpg" in config  # the shipped SinCUT and its photograph


def test_translate_with_defaults(server, files) -> None:
    from gradio_client import handle_file

    client, cache = server
    (before, after), info = client.predict(handle_file(str(EXAMPLE)), api_name="/translate")
    b, a = Image.open(before), Image.open(after)
    assert b.size == a.size == (64, 64)
    assert np.abs(np.asarray(a, float) - np.asarray(b.convert(a.mode), float)).mean() > 5  # it did something
    assert "64×64" in info and " s" in info
    # Options: shorter side 128 and bf16; a CMYK JPEG is converted, not refused.
    (before, after), info = client.predict(handle_file(str(files["cmyk"])), "128", "bf16", api_name="/translate")
    assert Image.open(after).size == (128, 128) and "bf16" in info
    # The example outputs were cached in the temporary folder given, not in the working directory.
    assert any(p.name == "log.csv" for p in cache.rglob("*")), "examples were not cached in the given folder"


def test_tiled_translation_counts_tiles_in_the_progress_bar(server, monkeypatch) -> None:
    """Every tile's progress reaches the client. Each tile is held (on an event, not a timer) until
    the client has seen its report, so the test does not depend on how fast a loaded machine polls."""
    from gradio_client import handle_file

    from cut_hf.demo import translation
    from cut_hf.translation import inference

    monkeypatch.setattr(inference, "DEFAULT_TILE", 128)  # a 256 px image in 3 x 3 tiles
    real = translation.translate
    shown = {i: threading.Event() for i in range(1, 10)}

    def held(*args, progress, **kwargs):  # the server thread waits for the client after each report
        def report(done: int, total: int) -> None:
            progress(done, total)
            shown[done].wait(120)

        return real(*args, progress=report, **kwargs)

    monkeypatch.setattr(translation, "translate", held)
    client, _ = server
    job = client.submit(handle_file(str(EXAMPLE)), "256", api_name="/translate")
    seen = set()
    deadline = time.monotonic() + 300
    while not job.done():
        assert time.monotonic() < deadline, f"no result; progress seen: {sorted(seen)}"
        for p in job.status().progress_data or []:
            seen.add((p.index, p.length, p.unit))
            if p.index in shown:
                shown[p.index].set()
        time.sleep(0.05)
    (_, after), info = job.result()
    assert "tiled (9 tiles" in info and Image.open(after).size == (256, 256)
    assert {(i, 9, "tiles") for i in range(1, 10)} <= seen, sorted(seen)


def test_bad_uploads_are_refused_and_the_server_keeps_serving(server, files) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    client, _ = server
    with pytest.raises(AppError, match="could not be read as an image"):
        client.predict(handle_file(str(files["notes"])), api_name="/translate")
    with pytest.raises(AppError, match="too large"):
        client.predict(handle_file(str(files["big"])), api_name="/translate")
    with pytest.raises(AppError, match="too large"):
        client.predict(handle_file(str(files["big"])), api_name="/patch_similarity")
    with pytest.raises(ValueError, match="exceeds the maximum file size"):  # over max_file_size: refused at upload
        client.predict(handle_file(str(files["huge_file"])), api_name="/translate")
    with pytest.raises(AppError, match="not a model of this app"):
        client.predict(handle_file(str(EXAMPLE)), "original", "fp32", "/no/such/model", api_name="/translate")
    with pytest.raises(AppError, match="resolution"):
        client.predict(handle_file(str(EXAMPLE)), "huge", api_name="/translate")
    (_, after), _ = client.predict(handle_file(str(EXAMPLE)), api_name="/translate")  # still serving
    assert Image.open(after).size == (64, 64)


def test_augment_endpoints(server) -> None:
    from gradio_client import handle_file

    client, _ = server
    boxes, v1, v2, table, params = client.predict(handle_file(str(EXAMPLE)), api_name="/augment")
    assert Image.open(v1).size == Image.open(v2).size == (224, 224)  # the paper preset by default
    assert Image.open(boxes).size == (64, 64) and "view 2" in table
    assert set(params) == {"view 1", "view 2"} and "crop (top, left, height, width)" in params["view 1"]
    matrix, text = client.predict(api_name="/augment_batch")
    assert "NT-Xent" in text and Image.open(matrix).width > 200


def test_patch_similarity_endpoint(server) -> None:
    from gradio_client import handle_file

    client, _ = server
    marked, patch, translated, gallery, summary = client.predict(handle_file(str(EXAMPLE)), 20, 40,
                                                                 api_name="/patch_similarity")
    assert summary["query_xy"] == [20, 40] and summary["embedding"] == "PatchSampler MLP"
    assert len(gallery) == len(summary["layers"]) == 5
    assert all("layer" in item["caption"] for item in gallery)
    assert Image.open(translated).size == (256, 256)  # the 64 px translation, enlarged 4x for display
    with pytest.raises(Exception, match="outside"):
        client.predict(handle_file(str(EXAMPLE)), 500, 5, api_name="/patch_similarity")


def test_model_info_answers_only_for_the_allowlist(server, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    client, _ = server
    info = client.predict("mini-horse2zebra", api_name="/model_info")
    assert "**mini-horse2zebra** — CUTGenerator (residual output" in info
    answers = set()
    for name in ("/etc", str(tmp_path / "missing"), "nobody/nothing-here", str(SHIPPED)):
        with pytest.raises(AppError, match="not a model of this app") as err:
            client.predict(name, api_name="/model_info")
        answers.add(str(err.value).split("' is not a model", 1)[1])
    assert len(answers) == 1, answers  # the same answer whatever exists on the server


def test_a_stalled_load_holds_up_no_translation(server, monkeypatch) -> None:
    """A Hub that never answers (HF_ENDPOINT at a silent socket): the load gives up after the
    app's load timeout, in its own queue, while translations keep being served."""
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    from huggingface_hub import constants

    client, _ = server
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setattr(constants, "ENDPOINT", url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        start = time.perf_counter()
        job = client.submit("someone/stalled", api_name="/model_info")
        time.sleep(0.3)
        (_, after), _ = client.predict(handle_file(str(EXAMPLE)), api_name="/translate")
        assert Image.open(after).size == (64, 64) and time.perf_counter() - start < 2  # not behind the load
        with pytest.raises(AppError, match="takes longer than 2 s|could not be reached"):  # app or Hub timeout
            job.result(timeout=30)
        assert time.perf_counter() - start < 15
    (_, after), _ = client.predict(handle_file(str(EXAMPLE)), api_name="/translate")  # the previous model
    assert Image.open(after).size == (64, 64)


def test_main_serves_the_shipped_model_offline(tmp_path: Path, monkeypatch) -> None:
    """`python app.py` (main() with no arguments but a port): the shipped model, offline, the
    example cache in a temporary folder. launch() is made non-blocking to test it in-process (it
    fetches the page while serving). The --port flag wins over GRADIO_SERVER_PORT; with no
    --host, launch() gets none (Gradio then reads GRADIO_SERVER_NAME)."""
    import gradio as gr

    app = load_app()

    launched = {}
    original = gr.Blocks.launch

    def launch(self, *args, **kwargs):
        launched["demo"], launched["kwargs"] = self, kwargs
        result = original(self, *args, **{**kwargs, "prevent_thread_lock": True, "quiet": True})
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            launched["status"] = page.status
        return result

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.delenv("GRADIO_EXAMPLES_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(free_port()))  # overridden by the flag
    monkeypatch.setenv("GRADIO_SERVER_NAME", "127.0.0.1")
    port = free_port()
    assert app.main(["--port", str(port)]) == 0
    try:
        assert launched["kwargs"]["server_name"] is None and launched["kwargs"]["max_file_size"] == "25mb"
        queue = launched["demo"]._queue
        assert queue.default_concurrency_limit == 2 and queue.max_size == 32  # the queue's limits
        assert launched["status"] == 200
        assert not (tmp_path / ".gradio").exists()  # examples were cached in a temporary folder
    finally:
        launched["demo"].close()


def test_bad_model_flag_is_one_line(capsys) -> None:
    app = load_app()
    assert app.main(["--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot load model") and "\n" not in err and "Traceback" not in err


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_app_removes_its_temporary_folders(tmp_path: Path, stop: signal.Signals) -> None:
    """`python app.py` as a Space runs it (host and port from GRADIO_SERVER_NAME/PORT), stopped by
    SIGTERM or Ctrl-C: its /tmp/cut-hf-examples-* folder is gone afterwards."""
    port = free_port()
    env = {**os.environ, "TMPDIR": str(tmp_path), "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    # A shell starts a background job (`pytest ... &`) with SIGINT ignored, and a child inherits that:
    # Python then installs no KeyboardInterrupt handler and Ctrl-C would never reach the app. Restore
    # Python's default handler in the child (as a terminal would have it) before running app.py.
    restore_sigint = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.Popen([sys.executable, "-c", restore_sigint, str(ROOT / "app.py"), "--threads", "1"], env=env,
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as page:
                    assert page.status == 200
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "the app did not start"
                time.sleep(0.5)
        assert list(tmp_path.glob("cut-hf-examples-*")), "the examples cache is not in TMPDIR"
        proc.send_signal(stop)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list(tmp_path.glob("cut-hf-examples-*"))


def test_translate_video_and_refuse_a_long_one(server, tmp_path) -> None:
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    from cut_hf.demo.video import EXAMPLE_CLIP
    from cut_hf.translation.video import video_info
    from tests.helpers import make_clip

    client, _ = server
    out, info = client.predict(handle_file(str(EXAMPLE_CLIP)), api_name="/translate_video")
    out = out["video"] if isinstance(out, dict) else out
    assert video_info(out)[:4] == (64, 64, 12, 36) and "36 frames" in info
    long = make_clip(tmp_path / "long.mp4", frames=24, fps=2, size=(16, 16), audio=False)  # 12 s
    with pytest.raises(AppError, match="'long.mp4' is 12.0 s long, over this app's limit of 10 s"):
        client.predict(handle_file(str(long)), api_name="/translate_video")
