"""The demo as a real server on 127.0.0.1, driven by gradio_client through every API name.

One server (the shipped model, a small pixel limit so the oversize path is cheap to hit) serves
all tests of this module; bad inputs must come back as readable errors while the server keeps
serving.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "models" / "mini-horse2zebra" / "examples" / "testA_0000.png"
MAX_PIXELS = 300 * 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(client, examples cache folder) of a running app; closed after the module."""
    from gradio_client import Client

    sys.path.insert(0, str(ROOT))
    import app

    cache = tmp_path_factory.mktemp("examples-cache")
    demo = app.build_demo(max_pixels=MAX_PIXELS, examples_cache=cache)
    demo.queue(default_concurrency_limit=2, max_size=16)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True,
                            max_file_size="1mb")
    try:
        yield Client(url, verbose=False), Path(cache)
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


def test_api_names(server) -> None:
    client, _ = server
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/translate", "/augment", "/augment_batch", "/patch_similarity", "/model_info"} <= names


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
    with pytest.raises(AppError, match="cannot load model"):
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


def test_model_info(server) -> None:
    client, _ = server
    assert "CUTGenerator" in client.predict(str(ROOT / "models" / "mini-horse2zebra"), api_name="/model_info")
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="HF_HUB_OFFLINE|not a local folder|does not exist"):
        client.predict("nobody/nothing-here", api_name="/model_info")


def test_main_serves_the_shipped_model_offline(tmp_path: Path, monkeypatch) -> None:
    """`python app.py` (main() with no arguments but a port): the shipped model, offline, the
    example cache in a temporary folder. launch() is made non-blocking to test it in-process."""
    import urllib.request

    import gradio as gr

    sys.path.insert(0, str(ROOT))
    import app

    launched = {}
    original = gr.Blocks.launch

    def launch(self, *args, **kwargs):
        launched["demo"], launched["kwargs"] = self, kwargs
        return original(self, *args, **{**kwargs, "prevent_thread_lock": True, "quiet": True})

    monkeypatch.setattr(gr.Blocks, "launch", launch)
    monkeypatch.delenv("GRADIO_EXAMPLES_CACHE", raising=False)
    monkeypatch.chdir(tmp_path)
    port = free_port()
    assert app.main(["--port", str(port)]) == 0
    try:
        assert launched["kwargs"]["server_name"] == "127.0.0.1" and launched["kwargs"]["max_file_size"] == "25mb"
        queue = launched["demo"]._queue
        assert queue.default_concurrency_limit == 2 and queue.max_size == 32  # the queue's limits
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as page:
            assert page.status == 200
        assert not (tmp_path / ".gradio").exists()  # examples were cached in a temporary folder
    finally:
        launched["demo"].close()


def test_bad_model_flag_is_one_line(capsys) -> None:
    sys.path.insert(0, str(ROOT))
    import app

    assert app.main(["--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: cannot load model") and "\n" not in err and "Traceback" not in err
