"""Drive the running app in headless Chromium through its DevTools protocol: open the page, upload an image, wait for
its caption, save a screenshot. The browser test uses it, and so does the README's screenshot::

    python -m app.browser --image data/synthetic/rsicd/RSICD_images/pond_3.jpg --out docs/app.png
    python -m app.browser --image a.tif --out shot.png -- --segmentation DIR --llm DIR   # options of python -m app

Needs Chromium (Debian: ``apt-get install chromium``) and ``websocket-client`` (the ``dev`` extra); no Playwright
or Selenium. As root, Chromium runs with ``--no-sandbox``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import websocket

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium (or Chrome) binary on PATH, or None."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


@contextlib.contextmanager
def serve(app_args: list[str], port: int | None = None, timeout: float = 120.0, log: Path | None = None
          ) -> Iterator[str]:
    """``python -m app`` on localhost with ``app_args``; yields its URL once it answers, stops it after."""
    port = port or free_port()
    out = open(log, "w") if log else subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-m", "app", *app_args, "--port", str(port), "--address", "127.0.0.1"],
                            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"python -m app exited with {proc.returncode}" + (f"; see {log}" if log else ""))
            try:
                if _get(f"{url}/_stcore/health").strip() == "ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"python -m app did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)  # the launcher and the streamlit server it started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        if log:
            out.close()


class Chromium:
    """A headless Chromium and one page, spoken to over the DevTools protocol (synchronous, one call at a time)."""

    def __init__(self, binary: str, width: int = 1500, height: int = 1300, timeout: float = 30.0):
        self.profile = tempfile.mkdtemp(prefix="segcap_chromium_")
        port = free_port()
        args = [binary, "--headless=new", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--remote-debugging-port={port}", f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        pages = []
        while not pages:
            try:
                pages = [t for t in json.loads(_get(f"http://127.0.0.1:{port}/json/list")) if t["type"] == "page"]
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.close()
                    raise RuntimeError(f"{binary} did not start its DevTools endpoint") from None
                time.sleep(0.2)
        self.ws = websocket.create_connection(pages[0]["webSocketDebuggerUrl"], timeout=timeout,
                                              suppress_origin=True)
        self.next_id = 0
        self.send("Page.enable")
        self.send("Runtime.enable")
        self.send("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def send(self, method: str, **params) -> dict:
        """Call one DevTools method and return its result (events that arrive meanwhile are dropped)."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def goto(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 60.0, what: str = "") -> None:
        """Wait until the JavaScript ``expression`` is true in the page."""
        deadline = time.monotonic() + timeout
        while not self.evaluate(expression):
            if time.monotonic() > deadline:
                text = (self.evaluate("document.body ? document.body.innerText : ''") or "")[-1500:]
                raise TimeoutError(f"waited {timeout:.0f} s for {what or expression}; the page says:\n{text}")
            time.sleep(0.05)

    def click(self, expression: str) -> None:
        """Click, as a mouse does, the middle of the element that the JavaScript ``expression`` returns."""
        self.wait_for(f"!!({expression})", what=f"something to click: {expression}")
        box = self.evaluate(f"(() => {{ const r = ({expression}).getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        if not box:
            raise RuntimeError(f"nothing to click: {expression}")
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)

    def upload(self, selector: str, files: list[Path]) -> None:
        """Put ``files`` in the page's first ``<input type=file>`` matching ``selector`` (as a user picking them)."""
        found = self.send("Runtime.evaluate", expression=f"document.querySelector({json.dumps(selector)})")
        target = found.get("result", {}).get("objectId")
        if not target:
            raise RuntimeError(f"no {selector} in the page")
        self.send("DOM.setFileInputFiles", objectId=target, files=[str(Path(f).resolve()) for f in files])

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        Path(path).write_bytes(base64.b64decode(data))
        return Path(path)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ws.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 15)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        shutil.rmtree(self.profile, ignore_errors=True)


UPLOAD_INPUT = 'section[data-testid="stSidebar"] input[type="file"]'
# the page's run finished and drawn: the overlay image is there, no element is left from the run before (stale) and no
# placeholder (a table or code still loading) is left
DRAWN = ("document.querySelector('[data-testid=\"stImage\"] img') !== null && "
         "document.querySelectorAll('[data-stale=\"true\"]').length === 0 && "
         "document.querySelectorAll('[data-testid=\"stSkeleton\"]').length === 0")


def tab(title: str) -> str:
    """JavaScript for the page's tab called ``title`` (for :meth:`Chromium.click`)."""
    return f"Array.from(document.querySelectorAll('[role=tab]')).find(e => e.innerText.trim() === {json.dumps(title)})"


def caption_in_browser(url: str, images: Path | list[Path], out: Path, binary: str, timeout: float = 120.0,
                       width: int = 1500, height: int = 1300) -> dict:
    """Open the app at ``url``, upload each of ``images`` in turn (as a user adding files), wait for each one's
    caption, and save a screenshot of the last to ``out``.

    Returns ``seconds``: for each image, from handing the file to the upload box to its caption line on the page;
    and ``text``: the page's text at the end."""
    images = [images] if isinstance(images, Path) else list(images)
    browser = Chromium(binary, width=width, height=height)
    try:
        browser.goto(url)
        browser.wait_for(f"document.querySelector({json.dumps(UPLOAD_INPUT)}) !== null", timeout, "the upload box")
        browser.wait_for("document.body.innerText.includes('chain (greedy)')", timeout, "the first caption")
        browser.wait_for(DRAWN, timeout, "the first page")
        seconds = []
        for image in images:
            start = time.monotonic()
            browser.upload(UPLOAD_INPUT, [image])
            done = f"{image.name}: "  # the line under the captions, written once the image is captioned
            browser.wait_for(f"document.body.innerText.includes({json.dumps(done)})", timeout,
                             f"the caption of {image}")
            seconds.append(time.monotonic() - start)
            browser.wait_for(DRAWN, timeout, "the overlay and the tables")
        time.sleep(0.5)
        browser.screenshot(out)
        return {"seconds": seconds, "text": browser.evaluate("document.body.innerText")}
    finally:
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, required=True, help="the image to upload")
    ap.add_argument("--out", type=Path, required=True, help="the screenshot PNG to write")
    ap.add_argument("--width", type=int, default=1500)
    ap.add_argument("--height", type=int, default=1300)
    ap.add_argument("app_args", nargs="*", help="options of python -m app, after --")
    args = ap.parse_args()
    binary = find_chromium()
    if binary is None:
        sys.exit("error: no Chromium on PATH; install it (Debian: apt-get install chromium)")
    with serve(args.app_args) as url:
        result = caption_in_browser(url, args.image, args.out, binary, width=args.width, height=args.height)
    print(json.dumps({"screenshot": str(args.out), "upload_to_caption_s": round(result["seconds"][0], 2)}))


if __name__ == "__main__":
    main()
