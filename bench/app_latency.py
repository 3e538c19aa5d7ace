"""The web app's latency: one 224x224 image from upload to caption, the first one and the ones after it.

    python -m bench.app_latency                              # runs/demo's models, 8 test images, a browser if any
    python -m bench.app_latency --images 16 --no-browser --threads 2

Prints one JSON object. Each image is new to the app (another file of the caption set's test split, uploaded as
bytes), so nothing is served from the app's memo. Figures, in seconds:

- ``models_load_s``: the app's one-time model loading (``st.cache_resource`` keeps them for the process);
- ``first``: the page's first run (the models loaded again, as a fresh app process does, and the first demo image);
- per image, ``caption_s``: from the uploaded bytes to every caption (decode, segment, compose, the chain greedy and
  with beam search, the baselines, the end-to-end captioners when trained), as the page reports it under the
  captions; ``page_s``: the whole page's rerun in Streamlit's AppTest (captions, then the overlay drawing, the
  composition table, the edit tab), what a browser waits for before the last element arrives;
- ``browser_upload_to_caption_s`` (when Chromium is installed): a real server and headless Chromium on the same
  cores, from handing each file to the upload box to its caption line on the page (app/browser.py), after the page's
  first image: the first upload of the browser session, and the median and worst of the others.

``later`` gives the median and the worst over the uploads after the first image. The target is
``later.caption_s`` under 1 s on 2 CPU cores. Wall-clock figures: when other processes share the cores they are
pessimistic, so the load average before and after is printed too.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from app.browser import caption_in_browser, find_chromium, serve
from app.core import GREEDY, Models, Settings
from segcap.cli import run

TIMING = re.compile(r"segmented in ([\d.]+) s, captioned in ([\d.]+) s, ([\d.]+) s in all")


def page(**settings):
    from app.core import Settings
    from app.ui import render

    render(Settings(**settings))


def _summary(rows: list[dict]) -> dict:
    keys = [k for k in rows[0] if k.endswith("_s")]
    return {"images": len(rows), **{f"median_{k}": round(statistics.median(r[k] for r in rows), 3) for k in keys},
            **{f"max_{k}": round(max(r[k] for r in rows), 3) for k in keys}}


def main(segmentation: Path = Settings.segmentation, llm: Path = Settings.llm, run_dir: Path = Path("runs/demo"),
         images: int = 8, num_beams: int = 3, threads: int = 1, browser: bool = True) -> dict:
    """Measure the app's latency on one image at a time.

    Args:
        segmentation: segmentation checkpoint folder.
        llm: caption LM folder.
        run_dir: the pipeline run (nearest baseline, end-to-end captioners, caption set).
        images: how many images to upload one after another, after the page's first image.
        num_beams: the chain's beam search width, as the page's default.
        threads: torch threads of the app (python -m app --threads; 1 by default; 0: torch's default).
        browser: also measure in headless Chromium through a real server when Chromium is installed.
    """
    settings = Settings(Path(segmentation), Path(llm), Path(run_dir), None, num_beams, 1.0, threads)
    if settings.problems():
        out = {"bench": "app_latency", "skipped": "; ".join(settings.problems())}
        print(json.dumps(out, indent=2))
        return out
    load0 = os.getloadavg()
    t = time.perf_counter()
    probe = Models(settings)  # the same loading the page does once per process, timed alone
    load_s = time.perf_counter() - t
    files = probe.demo_images[: images + 1]
    del probe
    if len(files) < 2:
        out = {"bench": "app_latency", "skipped": "the run's caption set has fewer than 2 test images"}
        print(json.dumps(out, indent=2))
        return out

    kwargs = {"segmentation": settings.segmentation, "llm": settings.llm, "run_dir": settings.run_dir,
              "num_beams": num_beams, "threads": threads}
    at = AppTest.from_function(page, kwargs=kwargs, default_timeout=600)
    t = time.perf_counter()
    at.run()  # loads the models and captions the first demo image: the page as a user first sees it
    first_page_s = time.perf_counter() - t
    first = TIMING.search(at.tabs[0].caption[-1].value)
    rows = []
    for i, f in enumerate(files[1:]):
        at.sidebar.file_uploader[0].set_value((f"upload_{i}_{f.name}", f.read_bytes(), "image/jpeg"))
        t = time.perf_counter()
        at.run()
        page_s = time.perf_counter() - t
        if at.exception or at.error:
            raise RuntimeError(f"the page failed on {f}: {[e.value for e in (*at.exception, *at.error)]}")
        timing = TIMING.search(at.tabs[0].caption[-1].value)
        caption = dict(zip(*(at.tabs[0].table[0].value[c] for c in ("system", "caption")), strict=True))[GREEDY]
        rows.append({"image": f.name, "segment_s": float(timing.group(1)), "captions_s": float(timing.group(2)),
                     "caption_s": float(timing.group(3)), "page_s": round(page_s, 3), "caption": caption})
    out: dict = {"bench": "app_latency", "models": {"segmentation": str(segmentation), "llm": str(llm),
                                                    "run_dir": str(run_dir)},
                 "image_size": "224x224", "num_beams": num_beams, "models_load_s": round(load_s, 2),
                 "systems": list(dict(zip(*(at.tabs[0].table[0].value[c] for c in ("system", "caption")),
                                          strict=True))),
                 "first": {"image": files[0].name, "segment_s": float(first.group(1)),
                           "captions_s": float(first.group(2)), "caption_s": float(first.group(3)),
                           "page_s": round(first_page_s, 3), "note": "page_s includes loading the models"},
                 "later": _summary(rows), "later_captions": {r["image"]: r["caption"] for r in rows}}
    out["target_caption_s"] = 1.0
    out["meets_target"] = out["later"]["median_caption_s"] < 1.0

    if browser:
        binary = find_chromium()
        if binary is None:
            out["browser"] = "skipped: no Chromium on PATH"
        else:
            args = ["--segmentation", str(segmentation), "--llm", str(llm), "--run-dir", str(run_dir),
                    "--num-beams", str(num_beams), "--threads", str(threads)]
            with tempfile.TemporaryDirectory() as tmp, serve(args) as url:
                result = caption_in_browser(url, files[1:], Path(tmp) / "shot.png", binary)
            s = result["seconds"]
            out["browser_upload_to_caption_s"] = {
                "first": round(s[0], 3), "later_median": round(statistics.median(s[1:]), 3) if len(s) > 1 else None,
                "later_max": round(max(s[1:]), 3) if len(s) > 1 else None}

    out["machine"] = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                      "gpu": torch.cuda.is_available(), "torch_threads": torch.get_num_threads(),
                      "torch": torch.__version__, "load_avg_before": [round(v, 2) for v in load0],
                      "load_avg_after": [round(v, 2) for v in os.getloadavg()]}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":

    run(main)
