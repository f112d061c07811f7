"""Headless Chromium for tests: a session-wide Selenium driver, a static file server on 127.0.0.1 and
pixel polling, so tests can look at what Neuroglancer's own client (or any page we serve) draws.

Use: ``from browser import chromium, serve_folder, wait_for_pixel, neuroglancer_viewer`` in a test module
(importing the fixture registers it). Browser tests FAIL when ``CI=true`` and Chromium is missing, and skip
with the reason otherwise. No fixed sleeps: poll screenshots until the expected colour shows or time runs out.
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("SYCONN_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("SYCONN_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--enable-unsafe-swiftshader", "--hide-scrollbars",
         "--force-device-scale-factor=1")


def chromium_missing() -> str | None:
    """Why a browser test cannot run here, or None."""
    for exe in (CHROMIUM, CHROMEDRIVER):
        if not (Path(exe).exists() or shutil.which(exe)):
            return f"{exe} not installed (apt-get install chromium chromium-driver)"
    return None


def require_chromium() -> None:
    """Fail under CI (the browser is part of the test environment there), skip elsewhere."""
    why = chromium_missing()
    if why is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {why}")
    pytest.skip(why)


def chromium_driver(window_size=(900, 700)):
    """A new headless Chromium driven by Selenium, with the project's flags; the caller quits it."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={window_size[0]},{window_size[1]}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@pytest.fixture(scope="session")
def chromium():
    """One headless Chromium per test session (per xdist worker); tests reuse it page by page."""
    driver = chromium_driver()
    yield driver
    driver.quit()


class _Server:
    """A tornado static file server on 127.0.0.1 (random port) in a daemon thread with its own event loop.

    Answers with ``Access-Control-Allow-Origin: *`` and honours Range requests (Neuroglancer needs both).
    """

    def __init__(self, root: Path):
        import tornado.web

        from syconn_ng.serve.app import StatETag

        class Handler(StatETag, tornado.web.StaticFileHandler):
            def set_default_headers(self):
                self.set_header("Access-Control-Allow-Origin", "*")
                self.set_header("Access-Control-Expose-Headers", "Content-Range")

            def set_extra_headers(self, path):
                self.set_header("Cache-Control", "no-store")

        self.root = Path(root)
        ready = threading.Event()

        def run():
            asyncio.set_event_loop(asyncio.new_event_loop())
            app = tornado.web.Application([(r"/(.*)", Handler, {"path": str(self.root), "default_filename": "index.html"})])
            server = app.listen(0, address="127.0.0.1")
            self.port = next(iter(server._sockets.values())).getsockname()[1]
            self.loop = asyncio.get_event_loop()
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True, name=f"static:{root}")
        self.thread.start()
        if not ready.wait(10):
            raise RuntimeError("static server did not start")
        self.url = f"http://127.0.0.1:{self.port}"


_servers: dict[Path, _Server] = {}


def serve_folder(path) -> str:
    """URL (``http://127.0.0.1:PORT``) of a static server for `path`; one server per folder per process."""
    root = Path(path).resolve()
    if root not in _servers:
        _servers[root] = _Server(root)
    return _servers[root].url


def neuroglancer_viewer():
    """A `neuroglancer.Viewer` served from 127.0.0.1 (the package's bundled client, offline).

    The bundled client is the Python-integration build: it takes its state from this server, not from a
    URL hash, so open `viewer.get_viewer_url()` in the driver and set the state with `viewer.txn()`.
    """
    import neuroglancer

    neuroglancer.set_server_bind_address("127.0.0.1")
    return neuroglancer.Viewer()


def panel_centre(driver, timeout: float = 30.0) -> tuple[float, float]:
    """Page coordinates of the centre of Neuroglancer's first data panel (where `position` is drawn),
    once the page has laid it out."""
    deadline = time.monotonic() + timeout
    while True:
        r = driver.execute_script(
            "const p = document.querySelector('.neuroglancer-rendered-data-panel');"
            "if (!p) return null; const r = p.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];")
        if r and r[2] > 0 and r[3] > 0:
            return r[0] + r[2] / 2, r[1] + r[3] / 2
        if time.monotonic() > deadline:
            raise AssertionError("no Neuroglancer data panel on the page")
        time.sleep(0.1)  # polling interval


def screenshot(driver) -> np.ndarray:
    """(H, W, 3) uint8 RGB of the page as shown."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB"))


def wait_for_pixel(driver, x: int, y: int, rgb, timeout: float = 60.0, *, tolerance: int = 6, radius: int = 0) -> np.ndarray:
    """Poll screenshots until the pixel at (x, y) (page pixels; any within `radius`) is `rgb` ± `tolerance`.

    Returns the screenshot that matched; raises AssertionError with the colours last seen otherwise.
    """
    want = np.asarray(rgb, dtype=np.int32)
    deadline = time.monotonic() + timeout
    while True:
        img = screenshot(driver)
        patch = img[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1].reshape(-1, 3).astype(np.int32)
        if len(patch) and np.any(np.all(np.abs(patch - want) <= tolerance, axis=1)):
            return img
        if time.monotonic() > deadline:
            seen = img[y, x].tolist() if 0 <= y < img.shape[0] and 0 <= x < img.shape[1] else "outside the page"
            raise AssertionError(f"pixel ({x}, {y}) is {seen}, expected {list(rgb)} ± {tolerance} within {timeout} s")
        time.sleep(0.2)  # polling interval, not a wait for the data


def chroma_pixels(img: np.ndarray, rgb, *, tolerance: float = 0.08, min_level: int = 40) -> int:
    """Pixels whose colour is `rgb` (0..1) up to brightness (a lit mesh is the colour times its shading)."""
    level = img.max(axis=2).astype(np.float64)
    lit = level >= min_level
    norm = img[lit].astype(np.float64) / level[lit, None]
    want = np.asarray(rgb, dtype=np.float64) / max(rgb)
    return int(np.all(np.abs(norm - want) <= tolerance, axis=1).sum())


def wait_for_chroma(driver, rgb, *, at_least: int, absent=None, timeout: float = 60.0) -> np.ndarray:
    """Poll screenshots until at least `at_least` pixels have the chroma of `rgb` and none that of `absent`."""
    deadline = time.monotonic() + timeout
    while True:
        img = screenshot(driver)
        n = chroma_pixels(img, rgb)
        other = chroma_pixels(img, absent) if absent is not None else 0
        if n >= at_least and other == 0:
            return img
        if time.monotonic() > deadline:
            raise AssertionError(f"{n} pixels of colour {rgb} (wanted {at_least}), {other} of {absent} (wanted 0)")
        time.sleep(0.2)  # polling interval


def wait_for_text(driver, text: str, timeout: float = 30.0) -> None:
    """Poll until the page's text contains `text`."""
    deadline = time.monotonic() + timeout
    while text not in driver.execute_script("return document.body.innerText"):
        if time.monotonic() > deadline:
            raise AssertionError(f"the page never showed {text!r}")
        time.sleep(0.2)  # polling interval
