"""The web app in a real browser: python -m app serves tiny models on localhost, headless Chromium (through its
DevTools protocol, app/browser.py) opens the page, uploads a JPEG, waits for its caption and saves a screenshot.
Skips itself when Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from app.browser import caption_in_browser, find_chromium, serve
from tests.test_app import picture, tiny_lm, tiny_run, tiny_segmenter

CHROMIUM = find_chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")


@pytest.mark.slow  # a real browser and app server (35 s): make test-slow; test_app.py covers the page in-process
def test_upload_and_caption_in_headless_chromium(tmp_path):
    seg, lm, run = tiny_segmenter(tmp_path / "seg"), tiny_lm(tmp_path / "lm"), tiny_run(tmp_path)
    image = tmp_path / "my tile.jpg"
    Image.fromarray(picture(5, 96)).save(image, quality=92)
    log = tmp_path / "server.log"
    shot = tmp_path / "app.png"
    try:
        with serve(["--segmentation", str(seg), "--llm", str(lm), "--run-dir", str(run)], log=log) as url:
            result = caption_in_browser(url, image, shot, CHROMIUM, timeout=150)
    except (TimeoutError, RuntimeError) as e:
        pytest.fail(f"{e}\n--- server log ---\n{log.read_text()[-3000:] if log.exists() else ''}")
    text = result["text"]
    assert len(result["seconds"]) == 1 and "my tile.jpg: 96x96" in text and "chain (greedy)" in text and "nearest neighbour" in text
    assert "trained on synthetic scenes only" in text  # a photo from elsewhere under a synthetic-only segmenter
    assert "Traceback" not in text and "Error" not in text.split("Edit the composition")[0]
    with Image.open(shot) as im:
        assert im.size == (1500, 1300) and len(set(im.convert("L").resize((64, 64)).getdata())) > 20
    assert Path(shot).stat().st_size > 20_000
