"""The demo in a real browser: headless Chromium opens the page, uploads an image, presses
Translate, waits for the before/after slider and saves a screenshot.

Chromium is driven through the Chrome DevTools Protocol over its websocket with the small
standard-library client below (no Playwright/Selenium, no browser download). The test is skipped
when Debian's ``chromium`` is not installed (``.ci/run`` installs it).

Run as a script to refresh the README screenshots of all three tabs::

    python tests/test_app_browser.py --screenshots docs/
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXAMPLE = ROOT / "models" / "mini-horse2zebra" / "examples" / "testA_0000.png"
CLIP = ROOT / "models" / "mini-horse2zebra" / "examples" / "horse_crossing.mp4"


# ------------------------------------------------------------------------- a tiny CDP client
class WebSocket:
    """Just enough of RFC 6455 for the DevTools protocol: text frames, fragmentation, ping/close."""

    def __init__(self, host: str, port: int, path: str, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("websocket handshake: connection closed")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("websocket closed")
            buf += chunk
        return buf

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)  # clients must mask every frame
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def send(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(n)  # servers do not mask
            if opcode == 0x9:  # ping -> pong
                self._send_frame(0xA, payload)
                continue
            if opcode == 0x8:
                raise ConnectionError("websocket closed by the browser")
            if opcode in (0x0, 0x1, 0x2):
                message += payload
                if b0 & 0x80:  # FIN
                    return message.decode()

    def close(self) -> None:
        try:
            self._send_frame(0x8, b"")
        finally:
            self.sock.close()


class Browser:
    """Headless Chromium with one page, driven over CDP (flattened target sessions)."""

    def __init__(self, width: int = 1280, height: int = 1000) -> None:
        self.width, self.height = width, height
        self.profile = tempfile.mkdtemp(prefix="cut-hf-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-extensions",
             "--disable-dev-shm-usage", f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("chromium did not start (no DevToolsActivePort)")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        self.ws = WebSocket("127.0.0.1", int(port), path)
        self._id = 0
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "DOM"):
            self.call(f"{domain}.enable", session=True)
        self.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def call(self, method: str, session: bool = False, **params: Any) -> dict:
        """Send one command and return its result (events in between are ignored)."""
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session:
            msg["sessionId"] = self.session
        self.ws.send(json.dumps(msg))
        while True:
            reply = json.loads(self.ws.recv())
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def js(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"javascript error: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.js(expression)
            if value:
                return value
            time.sleep(0.25)
        raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what or expression}")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", session=True, url=url)

    def upload(self, selector: str, path: str | Path, attempts: int = 10) -> None:
        """Put ``path`` into the file input ``selector`` (as a user's file dialog would).

        Node ids die when the page re-renders between the lookup and the call (the app is still
        hydrating), so the lookup is retried a few times."""
        for attempt in range(attempts):
            root = self.call("DOM.getDocument", session=True, depth=-1, pierce=True)["root"]["nodeId"]
            node = self.call("DOM.querySelector", session=True, nodeId=root, selector=selector)["nodeId"]
            try:
                if not node:
                    raise RuntimeError(f"no element matches {selector!r}")
                self.call("DOM.setFileInputFiles", session=True, nodeId=node, files=[str(path)])
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                time.sleep(0.5)

    def screenshot(self, path: str | Path, full_page: bool = False) -> Path:
        """A PNG of the viewport, or of the whole page (the viewport stretched to its height)."""
        if full_page:
            height = int(self.js("Math.ceil(document.documentElement.scrollHeight)"))
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=height,
                      deviceScaleFactor=1, mobile=False)
            time.sleep(0.5)
        data = self.call("Page.captureScreenshot", session=True, format="png", captureBeyondViewport=False)["data"]
        if full_page:
            self.call("Emulation.setDeviceMetricsOverride", session=True, width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            try:
                self.ws.close()
            except OSError:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


# ------------------------------------------------------------------------------- the app side
def start_app(**kwargs: Any) -> tuple[Any, str]:
    """The demo on 127.0.0.1 at a free port, in this process; returns (blocks, url)."""
    spec = importlib.util.spec_from_file_location("cut_hf_app", ROOT / "app.py")  # a script, not a package module
    spec.loader.exec_module(app := importlib.util.module_from_spec(spec))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = app.build_demo(**kwargs)
    demo.queue(default_concurrency_limit=2)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                            max_file_size="5mb")
    return demo, url


APP_READY = "!!document.querySelector('#translate-input input[type=file]')"
SLIDER_DONE = ("(() => { const imgs = [...document.querySelectorAll('#translate-slider img')];"
               " const info = document.querySelector('#translate-info');"
               " return imgs.length >= 2 && imgs.every(i => i.complete && i.naturalWidth > 0)"
               " && !!info && /\\d s/.test(info.innerText) ? info.innerText : ''; })()")


def translate_in_browser(browser: Browser, url: str, image: Path, shot: Path) -> str:
    """Open the page, upload ``image``, press Translate, wait for the slider; returns the timing line."""
    browser.goto(url)
    browser.wait_for(APP_READY, 60, "the app to load")
    browser.upload("#translate-input input[type=file]", image)
    browser.wait_for("!!document.querySelector('#translate-input img')", 30, "the upload preview")
    browser.js("document.querySelector('#translate-button').click()")
    info = browser.wait_for(SLIDER_DONE, 60, "the before/after slider")
    time.sleep(0.5)  # let the slider finish its layout before the picture
    browser.screenshot(shot)
    return info


#: JS: the translated video has loaded a frame and the timing line is there (its text, else '').
VIDEO_DONE = ("(() => { const v = document.querySelector('#video-output video');"
              " const info = document.querySelector('#video-info');"
              " return !!v && v.readyState >= 2 && v.videoWidth > 0 && !!info && /frames/.test(info.innerText)"
              " ? info.innerText : ''; })()")


def translate_video_in_browser(browser: Browser, url: str, clip: Path, shot: Path) -> str:
    """Open the Video tab, upload ``clip``, press Translate video, wait for the result; both players are
    paused half way (the horse in view) for the picture; returns the timing line."""
    browser.goto(url)
    browser.wait_for(APP_READY, 60, "the app to load")
    click_tab(browser, "Video")
    browser.upload("#video-input input[type=file]", clip)
    browser.wait_for("!!document.querySelector('#video-input video')", 30, "the upload's player")
    browser.js("document.querySelector('#video-button').click()")
    info = browser.wait_for(VIDEO_DONE, 120, "the translated video")
    browser.js("document.querySelectorAll('#video-input video, #video-output video').forEach(v => { v.pause();"
               " v.currentTime = 1.4; })")
    browser.wait_for("[...document.querySelectorAll('#video-input video, #video-output video')]"
                     ".every(v => !v.seeking && v.readyState >= 2)", 30, "both players at the same frame")
    time.sleep(0.5)
    browser.screenshot(shot)
    return info


def translate_photo_in_browser(browser: Browser, url: str, shot: Path) -> str:
    """Pick the photograph example (it sets the SinCUT model too), press Translate, wait for the slider."""
    browser.goto(url)
    browser.wait_for(APP_READY, 60, "the app to load")
    browser.wait_for("!!document.querySelector('#photo-examples tbody tr')", 30, "the photograph example")
    chosen = "document.querySelector('#model-box input').value === 'sincut-china2night'"
    for _ in range(10):  # a click before the page has hydrated does nothing: click until the model box follows
        browser.js("document.querySelector('#photo-examples tbody tr').click()")
        time.sleep(1.0)
        if browser.js(chosen):
            break
    browser.wait_for(chosen + " && !!document.querySelector('#translate-input img')", 30, "the photograph")
    time.sleep(1.0)
    browser.js("document.querySelector('#translate-button').click()")
    info = browser.wait_for(SLIDER_DONE.replace("/\\d s/", "/640×427/"), 180, "the night photograph")
    time.sleep(0.5)
    browser.screenshot(shot)
    return info


# ------------------------------------------------------------------------------------- tests
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_translate_in_headless_chromium(tmp_path: Path) -> None:
    from PIL import Image

    demo, url = start_app(examples_cache=tmp_path / "examples")
    browser = None
    try:
        browser = Browser()
        info = translate_in_browser(browser, url, EXAMPLE, tmp_path / "translate.png")
        assert "64×64" in info  # the output size line of the shipped 64 px example
        shot = Image.open(tmp_path / "translate.png")
        assert shot.size == (1280, 1000)
        # The slider shows two real pictures (not a blank or an error box).
        sizes = browser.js("[...document.querySelectorAll('#translate-slider img')].map(i => i.naturalWidth)")
        assert len(sizes) >= 2 and all(s == 64 for s in sizes[:2])
        assert not browser.js("!!document.querySelector('.toast-body.error')"), "an error toast is shown"
    finally:
        if browser is not None:
            browser.close()
        demo.close()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_video_tab_in_headless_chromium(tmp_path: Path) -> None:
    demo, url = start_app(examples_cache=tmp_path / "examples")
    browser = None
    try:
        browser = Browser()
        info = translate_video_in_browser(browser, url, CLIP, tmp_path / "video.png")
        assert "36 frames" in info and "64×64 px at 12 fps" in info
        assert browser.js("document.querySelector('#video-output video').videoWidth") == 64  # the browser plays it
        assert not browser.js("!!document.querySelector('.toast-body.error')"), "an error toast is shown"
    finally:
        if browser is not None:
            browser.close()
        demo.close()


#: JS: the texts among ``selector``'s matches that do not fit: wrapped onto a second line, or cut
#: (by the element or its parent, e.g. an ellipsis or a squeezed column).
CUT_TEXTS = ("(sel => [...document.querySelectorAll(sel)].filter(el => {"
             " const range = document.createRange(); range.selectNodeContents(el);"
             " const lines = new Set([...range.getClientRects()].map(r => Math.round(r.top))).size;"
             " const clipped = e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1;"
             " return lines > 1 || clipped(el) || clipped(el.parentElement); }).map(el => el.innerText))")


def click_tab(browser: Browser, name: str) -> None:
    browser.js(f"[...document.querySelectorAll('button[role=tab]')].find(b => b.innerText.includes('{name}')).click()")
    time.sleep(1.0)


def set_width(browser: Browser, width: int) -> None:
    browser.width = width
    browser.call("Emulation.setDeviceMetricsOverride", session=True, width=width, height=browser.height,
                 deviceScaleFactor=1, mobile=False)
    time.sleep(1.0)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_model_box_labels_and_captions(tmp_path: Path, hub_offline) -> None:
    """The page shows no server path; a model that fails to load leaves the box on the model in
    use; at 1280 and 1920 px the Augmentation explorer's checkbox and slider labels and the
    PatchNCE heatmap captions are whole."""
    demo, url = start_app(models=[str(EXAMPLE.parents[1]), "someone/unreachable"], examples_cache=tmp_path / "ex")
    browser = None
    try:
        browser = Browser(1280, 900)
        browser.goto(url)
        browser.wait_for(APP_READY, 60, "the app to load")
        assert str(ROOT) not in browser.js("document.body.innerHTML")
        browser.js("document.querySelector('#model-box input').focus()")  # open the list, pick the other model
        browser.js("document.querySelector('#model-box input').click()")
        browser.wait_for("!!document.querySelector('li[aria-label=\"someone/unreachable\"]')", 10, "the model list")
        browser.js("document.querySelector('li[aria-label=\"someone/unreachable\"]')"
                   ".dispatchEvent(new MouseEvent('mousedown', {bubbles: true}))")
        error = browser.wait_for("[...document.querySelectorAll('.toast-body.error')].map(e => e.innerText).join()",
                                 30, "the load error")
        assert "cannot load model 'someone/unreachable'" in error
        browser.wait_for("document.querySelector('#model-box input').value === 'mini-horse2zebra'", 10,
                         "the box back on the model in use")
        click_tab(browser, "PatchNCE explorer")
        browser.wait_for("document.querySelectorAll('#patch-examples button.gallery-item').length > 0", 30)
        browser.js("document.querySelectorAll('#patch-examples button.gallery-item')[0].click()")
        browser.wait_for(_has_image("patch-input"), 30, "the example in the input")
        browser.js("document.querySelector('#patch-button').click()")
        browser.wait_for(_has_image("patch-heatmaps"), 60, "the heatmaps")
        for width in (1280, 1920):
            set_width(browser, width)
            click_tab(browser, "PatchNCE explorer")
            captions = browser.js("[...document.querySelectorAll('#patch-heatmaps .caption-label')].length")
            assert captions == 5 and browser.js(f"{CUT_TEXTS}('#patch-heatmaps .caption-label')") == [], width
            click_tab(browser, "Augmentation explorer")
            labels = "#augment-controls .label-text, #augment-controls [data-testid=block-info]"
            assert browser.js(f"[...document.querySelectorAll('{labels}')].length") == 15  # 5 checkboxes, 10 sliders
            assert browser.js(f"{CUT_TEXTS}('{labels}')") == [], width
    finally:
        if browser is not None:
            browser.close()
        demo.close()


# ------------------------------------------------------------------------- docs screenshots
def _has_image(elem_id: str) -> str:
    """JS: the component ``elem_id`` shows at least one loaded picture."""
    return (f"[...document.querySelectorAll('#{elem_id} img')].some(i => i.complete && i.naturalWidth > 0)")


def take_screenshots(out_dir: Path, width: int = 1400) -> None:
    """The four tabs after one action each, as docs/app_{translate,video,augment,patchnce}.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    demo, url = start_app()
    browser = Browser(width, 1250)
    try:
        print(translate_in_browser(browser, url, EXAMPLE, out_dir / "app_translate.png"))
        print(translate_video_in_browser(browser, url, CLIP, out_dir / "app_video.png"))
        print(translate_photo_in_browser(browser, url, out_dir / "app_sincut.png"))

        def click(selector: str) -> None:
            browser.js(f"document.querySelector('{selector}').click()")

        click_tab(browser, "Augmentation explorer")
        browser.wait_for("document.querySelectorAll('#augment-examples button.gallery-item').length > 4", 30)
        browser.js("document.querySelectorAll('#augment-examples button.gallery-item')[4].click()")  # the cat
        browser.wait_for(_has_image("augment-input"), 30, "the example in the input")
        click("#augment-button")
        browser.wait_for(_has_image("augment-view2"), 60, "the two views")
        click("#batch-button")
        browser.wait_for(_has_image("similarity-matrix"), 90, "the similarity matrix")
        time.sleep(0.5)
        browser.screenshot(out_dir / "app_augment.png", full_page=True)

        click_tab(browser, "PatchNCE explorer")
        browser.wait_for("document.querySelectorAll('#patch-examples button.gallery-item').length > 0", 30)
        browser.js("document.querySelectorAll('#patch-examples button.gallery-item')[0].click()")
        browser.wait_for(_has_image("patch-input"), 30, "the example in the input")
        # A real click on the horse's body (at 45% across, 45% down the picture) fires the select event.
        rect = browser.js("(() => { const r = document.querySelector('#patch-input img').getBoundingClientRect();"
                          " return [r.left, r.top, r.width, r.height]; })()")
        x, y = rect[0] + 0.45 * rect[2], rect[1] + 0.45 * rect[3]
        for kind in ("mousePressed", "mouseReleased"):
            browser.call("Input.dispatchMouseEvent", session=True, type=kind, x=x, y=y, button="left", clickCount=1)
        browser.wait_for(_has_image("patch-heatmaps"), 60, "the heatmaps")
        time.sleep(0.5)
        browser.screenshot(out_dir / "app_patchnce.png", full_page=True)
    finally:
        browser.close()
        demo.close()


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="save screenshots of the demo's four tabs")
    parser.add_argument("--screenshots", default="docs", help="output folder")
    parser.add_argument("--width", type=int, default=1400, help="browser window width (px)")
    cli = parser.parse_args()
    take_screenshots(Path(cli.screenshots), cli.width)
