"""The web app (app/), used as a person uses it, headless with Streamlit's AppTest: the page on a demo image,
uploads in several formats, bad uploads, the sidebar's controls, every edit of the composition, the batch tab with its
downloads, the end-to-end captioners' column, and models that cannot load. Tiny models: an untrained small UNet and a
one-layer caption LM trained for one epoch on the LLM fixture (a few seconds); a tiny caption set of 12 images.

The browser test (a real server and headless Chromium) is tests/test_app_browser.py.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from streamlit.testing.v1 import AppTest

from aerialdata.classes import load_class_table
from aerialdata.sources import SYNTHETIC_MARKER
from app import __main__ as launcher
from app import core
from app.core import GREEDY, NEAREST, POOL, TEMPLATE, Settings, beam_name
from app.edits import (
    add_relation,
    drop_relation,
    drop_scene,
    remove_class,
    set_percent,
    set_position,
    set_regions,
    set_scene,
)
from app.ui import ANOTHER_SCENE
from captioners import train
from composition.schema import problems, read_jsonl
from llm.finetune import main as finetune
from segcap.errors import ConfigError, DataError
from segmentation.model import CONFIG_FORMAT, build_model

TESTS = Path(__file__).resolve().parent
LLM_DATA = TESTS / "data" / "llm"
TIMEOUT = 120  # the first run of a test process imports torch and transformers and loads the models


# ---------------------------------------------------------------------------------------------------- fixtures
def tiny_segmenter(folder: Path) -> Path:
    """An untrained small UNet checkpoint (aerial10) that says it saw synthetic scenes only."""
    folder.mkdir(parents=True)
    table = load_class_table("aerial10")
    arch = {"decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(0)
    torch.save(build_model(arch, table.num_classes).state_dict(), folder / "model.pt")
    (folder / "config.yaml").write_text(yaml.safe_dump({
        "format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"drone_scale": 0.25},
        "trained_on": [{"source": "drone", "root": "data/synthetic/drone", "gsd": 0.25, "synthetic": True,
                        "images": 4}]}))
    return folder


def tiny_lm(folder: Path) -> Path:
    """A one-layer caption LM, one epoch on the LLM fixture."""
    finetune(out=folder, compositions=LLM_DATA / "compositions.jsonl",
             captions=LLM_DATA / "rsicd" / "dataset_rsicd.json",
             tiny_model={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                         "num_key_value_heads": 2, "max_position_embeddings": 128},
             tokenizer={"kind": "word", "vocab_size": 200}, epochs=1, batch_size=8, max_length=128,
             save_checkpoints=False, progress=False, threads=1)
    return folder


def picture(seed: int, size: int = 64) -> np.ndarray:
    """A seeded aerial-looking picture: green with a blue pond and a grey road."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = (60, 140, 50)
    yy, xx = np.mgrid[:size, :size]
    cx, cy, r = rng.integers(16, size - 16, 2).tolist() + [int(rng.integers(6, 14))]
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = (30, 70, 170)
    img[:, int(rng.integers(0, size - 6)):][:, :5] = (120, 120, 120)
    return np.clip(img.astype(int) + rng.integers(-12, 12, img.shape), 0, 255).astype(np.uint8)


def tiny_run(root: Path) -> Path:
    """A pipeline run folder as the app reads it: the caption set (12 JPEGs, synthetic marker) named in
    stages/data.json, and compositions/predicted.jsonl for the nearest-neighbour baseline."""
    captions = root / "rsicd"
    (captions / "RSICD_images").mkdir(parents=True)
    shutil.copy(LLM_DATA / "rsicd" / "dataset_rsicd.json", captions / "dataset_rsicd.json")
    (captions / SYNTHETIC_MARKER).write_text("{}")
    names = [im["filename"] for im in json.loads((captions / "dataset_rsicd.json").read_text())["images"]]
    for i, name in enumerate(names):
        Image.fromarray(picture(i)).save(captions / "RSICD_images" / name, quality=90)
    run = root / "run"
    (run / "compositions").mkdir(parents=True)
    (run / "stages").mkdir()
    shutil.copy(LLM_DATA / "compositions.jsonl", run / "compositions" / "predicted.jsonl")
    (run / "stages" / "data.json").write_text(json.dumps({"result": {"captions": str(captions / "dataset_rsicd.json")}}))
    return run


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    """Settings keyword arguments of tiny models and a tiny run."""
    root = tmp_path_factory.mktemp("app")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and the machine is shared
    out = {"segmentation": tiny_segmenter(root / "seg"), "llm": tiny_lm(root / "lm"), "run_dir": tiny_run(root)}
    yield out
    torch.set_num_threads(before)


def page(**settings):
    """The page as python -m app serves it, with these Settings."""
    from app.core import Settings
    from app.ui import render

    render(Settings(**settings))


@pytest.fixture(autouse=True)
def keep_main_module():
    """AppTest puts its own script in sys.modules["__main__"] (a temporary file) and leaves it there; later tests that
    start spawn worker pools (composition.extract --workers) would then have every worker fail to import __main__ and
    the pool respawn them forever. Put the real one back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


def start(settings: dict) -> AppTest:
    at = AppTest.from_function(page, kwargs=settings, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def captions_of(at: AppTest) -> dict[str, str]:
    """The Caption tab's table: system -> caption."""
    table = at.tabs[0].table[0].value
    return dict(zip(table["system"], table["caption"], strict=True))


def messages(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def by_label(widgets, label: str):
    found = [w for w in widgets if w.label == label]
    assert found, f"no widget {label!r}: {[w.label for w in widgets]}"
    return found[0]


def upload(at: AppTest, *files: tuple[str, bytes]) -> AppTest:
    at.sidebar.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---------------------------------------------------------------------------------------------------- the page
def test_page_shows_a_demo_image_with_every_system_and_its_references(models):
    at = start(models)
    assert not messages(at)
    pick = at.sidebar.selectbox[0]
    assert pick.label == "Image" and pick.value == "demo: river_3.jpg"  # the caption set's test images
    assert pick.options == ["demo: river_3.jpg", "demo: forest_3.jpg"]
    caps = captions_of(at)
    assert list(caps) == [GREEDY, beam_name(3), POOL, NEAREST, TEMPLATE] and all(caps.values())
    refs = at.tabs[0].table[1].value["reference"].tolist()
    assert len(refs) == 5 and all(refs)
    assert not at.warning  # a synthetic image under a synthetic-only segmenter: nothing to warn about
    assert len(at.tabs[0].image) == 1  # the overlay
    table = at.tabs[0].dataframe[0].value
    assert abs(table["percent"].sum() - 100.0) < 0.05 and {"class", "position", "regions", "centre"} <= set(table)
    record = json.loads(at.tabs[0].json[0].value)
    assert record["schema"] == "segcap.composition/2" and "scenes" not in record and not problems(record)
    assert at.tabs[0].code[0].value == core.to_prompt(record)  # the prompt text the LM read
    download = at.tabs[0].download_button[0]
    assert download.label == "Download the composition (JSON)"

    pick.set_value("demo: forest_3.jpg").run()
    assert not at.exception and at.tabs[0].code[0].value != core.to_prompt(record)


@pytest.mark.parametrize("fmt", ["png_rgba", "tiff_16bit", "grey_jpeg", "webp"])
def test_uploads_in_other_formats_are_captioned_with_the_synthetic_only_notice(models, fmt):
    rgb = picture(7, 48)
    data = {"png_rgba": lambda: encode(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "PNG"),
            "tiff_16bit": lambda: encode_16bit(rgb[..., 1]),
            "grey_jpeg": lambda: encode(rgb[..., 0], "JPEG"),
            "webp": lambda: encode(rgb, "WEBP")}[fmt]()
    at = upload(start(models), (f"mine.{fmt.split('_')[-1]}", data))
    assert at.sidebar.selectbox[0].value == f"mine.{fmt.split('_')[-1]}"  # the upload is shown first
    assert not messages(at) and captions_of(at)[GREEDY]
    notes = [w.value for w in at.warning]  # a real photo under a synthetic-only segmenter: say so
    assert len(notes) == 1 and "trained on synthetic scenes only" in notes[0]
    assert "48x48" in at.tabs[0].caption[-1].value


def encode_16bit(grey: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(grey.astype(np.uint16) * 250).save(buf, format="TIFF")
    return buf.getvalue()


def test_an_uploaded_demo_image_shows_its_references_without_the_notice(models):
    captions = json.loads((models["run_dir"] / "stages" / "data.json").read_text())["result"]["captions"]
    image = Path(captions).parent / "RSICD_images" / "pond_3.jpg"
    at = upload(start(models), ("pond_3.jpg", image.read_bytes()))
    assert len(at.tabs[0].table[1].value) == 5 and not at.warning
    # the same name with other bytes is another picture: no references
    at = upload(start(models), ("pond_3.jpg", encode(picture(99), "JPEG")))
    assert len(at.tabs[0].table) == 1


def test_bad_uploads_are_messages_and_the_app_goes_on(models):
    good = encode(picture(3), "JPEG")
    huge = io.BytesIO()
    Image.new("1", (6000, 5000)).save(huge, format="PNG")  # 30 MP in a few KB
    bomb = io.BytesIO()
    Image.new("1", (15000, 15000)).save(bomb, format="PNG")  # beyond PIL's decompression-bomb guard
    bad = {"notes.txt": b"not an image at all", "empty.jpg": b"", "truncated.jpg": good[: len(good) // 2],
           "huge.png": huge.getvalue(), "bomb.png": bomb.getvalue()}
    expect = {"notes.txt": "not a readable image", "empty.jpg": "not a readable image",
              "truncated.jpg": "not a readable image", "huge.png": "6000x5000 (30 MP) at scale 1 is more than",
              "bomb.png": "more than segcap reads"}
    at = start(models)
    for name, data in bad.items():
        upload(at, (name, data))
        found = messages(at)
        assert len(found) == 1 and found[0].startswith(f"{name}: ") and expect[name] in found[0], found
        assert "/tmp" not in found[0] and "segcap_app_" not in found[0]  # the user's name, not the temporary file
    upload(at, ("fine.jpg", good))
    assert not messages(at) and captions_of(at)[GREEDY]


def test_the_pool_column_needs_the_models_index(models, tmp_path):
    """A caption LM folder from before llm.finetune saved the training compositions' index with every model: the
    page leaves the consensus pool out instead of failing."""
    old = tmp_path / "lm"
    shutil.copytree(models["llm"], old)
    (old / "retrieval.npz").unlink()
    at = start({**models, "llm": old})
    assert list(captions_of(at)) == [GREEDY, beam_name(3), NEAREST, TEMPLATE] and not messages(at)


def test_beams_control_changes_the_beam_column(models):
    at = start(models)
    beams = by_label(at.sidebar.number_input, "Beams of the chain's beam search")
    beams.set_value(1).run()
    assert list(captions_of(at)) == [GREEDY, POOL, NEAREST, TEMPLATE]
    by_label(at.sidebar.number_input, "Beams of the chain's beam search").set_value(2).run()
    assert beam_name(2) in captions_of(at)


def test_scale_control_segments_at_that_scale(models):
    at = start(models)
    by_label(at.sidebar.number_input, "Scale before segmenting").set_value(0.5).run()
    assert not at.exception and not messages(at)
    assert "64x64" in at.tabs[0].caption[-1].value  # the record keeps the image's own size
    record = json.loads(at.tabs[0].json[0].value)
    assert (record["width"], record["height"]) == (64, 64)


def test_models_that_cannot_load_are_a_message(models, tmp_path):
    at = start({**models, "segmentation": tmp_path / "nowhere"})
    assert len(messages(at)) == 1 and "could not be loaded" in messages(at)[0] and "no model.pt" in messages(at)[0]


def test_end_to_end_captioners_appear_when_their_folders_exist(models, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(models["run_dir"], run)
    (run / "captioners" / "cnn_lstm").mkdir(parents=True)
    (run / "captioners" / "broken").mkdir()
    loaded = []

    class Fake:
        def __init__(self, folder):
            loaded.append(Path(folder).name)

        def caption(self, images, num_beams=1):
            assert images[0].dtype == np.uint8 and images[0].shape[2] == 3 and num_beams == 1
            return [f"a picture of {images[0].shape[1]}x{images[0].shape[0]} pixels"]

    def load(folder):
        if Path(folder).name == "broken":
            raise RuntimeError("no weights here")
        return Fake(folder)

    monkeypatch.setattr(core, "load_captioner", load)
    at = start({**models, "run_dir": run})
    assert captions_of(at)["cnn_lstm (end-to-end)"] == "a picture of 64x64 pixels" and loaded == ["cnn_lstm"]
    notes = " ".join(c.value for c in at.sidebar.caption)
    assert "end-to-end captioner broken left out: RuntimeError: no weights here" in notes


def test_a_trained_end_to_end_captioner_through_its_own_loader(models, tmp_path):
    """The real captioners package: a tiny CNN+LSTM, one epoch on the tiny set."""
    run = tmp_path / "run"
    shutil.copytree(models["run_dir"], run)
    captions = json.loads((run / "stages" / "data.json").read_text())["result"]["captions"]
    train.main(captions=Path(captions), out=run / "captioners" / "cnn_lstm", image_size=32, feature_dim=16,
               embed_dim=16, hidden_dim=32, attention_dim=16, min_count=1, epochs=1, batch_size=8, val_split="none",
               select="last", threads=1, progress=False)
    at = start({**models, "run_dir": run})
    assert isinstance(captions_of(at)["cnn_lstm (end-to-end)"], str)
    assert not [c.value for c in at.sidebar.caption if "end-to-end" in c.value]


# ---------------------------------------------------------------------------------------------------- edits
def edited(at: AppTest) -> dict:
    """The edited record of the image shown (the JSON box keeps what the user typed until it is valid)."""
    image = at.tabs[1].text_area[0].key.split(":")[1]
    return at.session_state["edits"][image]["record"]


def edit_table(at: AppTest) -> dict[str, tuple[str, str]]:
    t = at.tabs[1].table[0].value
    return {s: (o, e) for s, o, e in zip(t["system"], t["original"], t["edited"], strict=True)}


def test_every_edit_control_changes_the_record_and_recaptions_it(models):
    at = start(models)
    tab = lambda: at.tabs[1]  # noqa: E731 - the tab as drawn by the latest run
    record = edited(at)
    assert edit_table(at)[GREEDY][0] == edit_table(at)[GREEDY][1]  # nothing edited yet: the same captions
    names = [c["name"] for c in record["classes"]]
    assert len(names) >= 3, names

    # percent, position and regions of one class
    name = names[1]
    by_label(tab().selectbox, "class").set_value(name).run()
    by_label(tab().number_input, "percent").set_value(60.0)
    by_label(tab().selectbox, "position").set_value("bottom right")
    by_label(tab().number_input, "regions").set_value(7)
    [b_ for b_ in tab().button if b_.label == "Apply to the class"][0].click().run()
    assert not at.exception and not messages(at)
    rec = edited(at)
    c = next(c for c in rec["classes"] if c["name"] == name)
    assert (c["percent"], c["position"], c["regions"], c["centroid"]) == (60.0, "bottom right", 7, [0.8333, 0.8333])
    assert rec["classes"][0]["name"] == name and not problems(rec)
    assert f"{name} 60% bottom right, 7 regions" in tab().code[1].value  # the edited prompt
    assert tab().code[0].value == at.tabs[0].code[0].value  # the original prompt, unchanged

    # remove a class: gone from the record, its relations too, the rest rescaled
    gone = rec["classes"][-1]["name"]
    by_label(tab().selectbox, "class").set_value(gone).run()
    [b for b in tab().button if b.label == "Remove the class"][0].click().run()
    rec = edited(at)
    assert gone not in [c["name"] for c in rec["classes"]] and not problems(rec)
    assert all(gone not in (r["subject"], r["object"]) for r in rec["relations"])

    # add a relation, then drop it
    a, b = rec["classes"][0]["name"], rec["classes"][1]["name"]
    by_label(tab().selectbox, "subject").set_value(b)
    by_label(tab().selectbox, "object").set_value(a)
    [s for s in tab().selectbox if s.label == "relation" and "left of" in s.options][0].set_value("left of")
    [b_ for b_ in tab().button if b_.label == "Add the relation"][0].click().run()
    rec = edited(at)
    assert rec["relations"][-1] == {"subject": b, "relation": "left of", "object": a}
    assert f"{b} left of {a}" in tab().code[1].value
    n = len(rec["relations"])
    choice = [s for s in tab().selectbox if s.label == "relation" and s.options[0].startswith("1.")][0]
    choice.set_value(choice.options[-1])
    [b_ for b_ in tab().button if b_.label == "Drop the relation"][0].click().run()
    assert len(edited(at)["relations"]) == n - 1 and f"{b} left of {a}" not in tab().code[1].value

    # a wrong edit is a message and leaves the record as it was
    by_label(tab().selectbox, "subject").set_value(a)
    by_label(tab().selectbox, "object").set_value(a)
    [b_ for b_ in tab().button if b_.label == "Add the relation"][0].click().run()
    assert not at.exception and any("two different classes" in m for m in messages(at))

    # the JSON itself: a valid record is taken, a broken one is a message
    rec = edited(at)
    rec["classes"][0]["regions"] = 42
    tab().text_area[0].set_value(json.dumps(rec))
    [b_ for b_ in tab().button if b_.label == "Apply the JSON"][0].click().run()
    assert edited(at)["classes"][0]["regions"] == 42 and not messages(at)
    tab().text_area[0].set_value('{"schema": "segcap.composition/1"')
    [b_ for b_ in tab().button if b_.label == "Apply the JSON"][0].click().run()
    assert any(m.startswith("not valid JSON") for m in messages(at)) and edited(at)["classes"][0]["regions"] == 42
    tab().text_area[0].set_value(json.dumps({**rec, "classes": rec["classes"][:1]}))  # percents no longer sum to 100
    [b_ for b_ in tab().button if b_.label == "Apply the JSON"][0].click().run()
    assert any("not a valid composition record" in m for m in messages(at))

    tab().text_area[0].set_value(json.dumps({**rec, "classes": [{**rec["classes"][0], "id": 42}, *rec["classes"][1:]]}))
    [b_ for b_ in tab().button if b_.label == "Apply the JSON"][0].click().run()  # valid, but no model knows id 42
    assert not at.exception and any("could not be captioned" in m and "class id 42" in m for m in messages(at))
    assert [b_ for b_ in tab().button if b_.label == "Apply the JSON"]  # the tab is still there to fix it
    tab().text_area[0].set_value(json.dumps(rec))
    [b_ for b_ in tab().button if b_.label == "Apply the JSON"][0].click().run()
    assert not messages(at) and edited(at) == rec

    # the edited captions come from the edited record: the template says what it reads
    assert edit_table(at)[TEMPLATE][1] == core.template_caption(edited(at))
    assert [d.label for d in tab().download_button] == ["Download the edited composition (JSON)"]

    # back to the segmented composition
    [b_ for b_ in tab().button if b_.label == "Back to the segmented composition"][0].click().run()
    assert edited(at) == record and tab().code[0].value == tab().code[1].value


def button(tab, label: str):
    return [b for b in tab.button if b.label == label][0]


def test_the_scene_can_be_set_changed_and_dropped(models):
    """The demo's segmenter has no scene head: its records have no scenes, and the Edit tab can give them one (the
    prompt and the captions follow), change its probability, add a second, and drop them again."""
    at = start(models)
    tab = lambda: at.tabs[1]  # noqa: E731 - the tab as drawn by the latest run
    record = edited(at)
    assert "scenes" not in record and by_label(tab().selectbox, "scene").options == [ANOTHER_SCENE]
    assert not [b for b in tab().button if b.label == "Drop the scene"]

    tab().text_input[0].set_value("pond")
    by_label(tab().number_input, "probability").set_value(0.8)
    button(tab(), "Set the scene").click().run()
    assert not at.exception and not messages(at)
    rec = edited(at)
    assert rec["scenes"] == [{"name": "pond", "probability": 0.8}] and rec["schema"] == "segcap.composition/2"
    assert not problems(rec) and rec["classes"] == record["classes"]
    assert tab().code[1].value == "scene: pond 80%\n" + tab().code[0].value  # the edited prompt: the scene first
    assert edit_table(at)[TEMPLATE][1] == core.template_caption(rec) and all(c for _, c in edit_table(at).values())

    # a second scene: the first makes room for it; then the first's probability changed in place
    assert by_label(tab().selectbox, "scene").options == ["pond", ANOTHER_SCENE]
    by_label(tab().selectbox, "scene").set_value(ANOTHER_SCENE).run()
    tab().text_input[0].set_value("river")
    by_label(tab().number_input, "probability").set_value(0.5)
    button(tab(), "Set the scene").click().run()
    assert edited(at)["scenes"] == [{"name": "river", "probability": 0.5}, {"name": "pond", "probability": 0.5}]
    by_label(tab().selectbox, "scene").set_value("pond").run()
    assert by_label(tab().number_input, "probability").value == 0.5
    by_label(tab().number_input, "probability").set_value(0.3)
    button(tab(), "Set the scene").click().run()
    assert edited(at)["scenes"] == [{"name": "river", "probability": 0.5}, {"name": "pond", "probability": 0.3}]
    assert tab().code[1].value.startswith("scene: river 50%, pond 30%\n")

    # a scene without a name is a message; dropping both gives the record without scenes back
    by_label(tab().selectbox, "scene").set_value(ANOTHER_SCENE).run()
    tab().text_input[0].set_value("  ")
    button(tab(), "Set the scene").click().run()
    assert any("a scene needs a name" in m for m in messages(at)) and len(edited(at)["scenes"]) == 2
    for name in ("river", "pond"):
        by_label(tab().selectbox, "scene").set_value(name).run()
        button(tab(), "Drop the scene").click().run()
    assert not messages(at) and edited(at) == record and tab().code[1].value == tab().code[0].value


def test_scene_edits_keep_a_valid_record():
    rec = read_jsonl(LLM_DATA / "compositions.jsonl")[0]  # a /1 record: a scene makes it /2
    out = set_scene(rec, "airplane", 0.9)
    assert out["scenes"] == [{"name": "airplane", "probability": 0.9}] and out["schema"] == "segcap.composition/2"
    assert "scenes" not in rec and not problems(out)
    out = set_scene(out, "runway", 0.6)  # airplane shrinks to the 0.4 left
    assert out["scenes"] == [{"name": "runway", "probability": 0.6}, {"name": "airplane", "probability": 0.4}]
    for i in range(3):
        out = set_scene(out, f"s{i}", 0.0)
    assert len(out["scenes"]) == 5 and not problems(out)
    assert [s["name"] for s in set_scene(out, "s9", 0.0)["scenes"]][2:] == ["s9", "s2", "s1"]  # the last, s0, goes
    out = {**out, "scenes": [{"name": f"s{i}", "probability": 0.1} for i in range(5)]}  # a sixth at 0 would go at once
    for bad in (lambda: set_scene(out, "s9", 0.0), lambda: set_scene(out, "x", 1.5), lambda: set_scene(out, "", 0.5),
                lambda: drop_scene(out, "lava"), lambda: drop_scene(rec, "airplane")):
        with pytest.raises(DataError):
            bad()
    assert drop_scene(set_scene(rec, "airplane", 0.9), "airplane") == {**rec, "schema": "segcap.composition/2"}


def test_edits_keep_a_valid_record():
    records = read_jsonl(LLM_DATA / "compositions.jsonl")
    rec = max(records, key=lambda r: len(r["classes"]))
    names = [c["name"] for c in rec["classes"]]
    out = remove_class(rec, names[0])
    assert names[0] not in [c["name"] for c in out["classes"]] and not problems(out)
    assert rec["classes"][0]["name"] == names[0]  # the input is left as it was
    out = set_percent(rec, names[-1], 99.9 - 0.1 * (len(names) - 2))
    assert out["classes"][0]["name"] == names[-1] and all(c["percent"] >= 0.1 for c in out["classes"])
    assert sum(c["percent"] for c in out["classes"]) == pytest.approx(100.0)
    out = set_position(rec, names[0], "top left")
    assert out["classes"][0]["center"] == [0.1667, 0.1667]
    assert set_regions(rec, names[0], 5)["classes"][0]["regions"] == 5
    out = add_relation(rec, names[1], "above left of", names[0])
    assert drop_relation(out, len(out["relations"]) - 1) == rec
    for bad in (lambda: set_percent(rec, names[0], 0.0), lambda: set_percent(rec, names[0], 100.0),
                lambda: set_position(rec, names[0], "middle"), lambda: set_regions(rec, names[0], 0),
                lambda: add_relation(rec, names[0], "beside", names[1]), lambda: drop_relation(rec, 99),
                lambda: remove_class(rec, "lava"), lambda: add_relation(out, names[1], "above left of", names[0])):
        with pytest.raises(DataError):
            bad()
    single = {**rec, "classes": [{**rec["classes"][0], "percent": 100.0}], "relations": []}
    with pytest.raises(DataError, match="only class"):
        remove_class(single, single["classes"][0]["name"])
    with pytest.raises(DataError, match="only class"):
        set_percent(single, single["classes"][0]["name"], 50.0)


# ---------------------------------------------------------------------------------------------------- batch
def test_batch_tab_captions_uploads_a_folder_and_the_demo_images(models, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(2):
        Image.fromarray(picture(20 + i)).save(folder / f"tile_{i}.png")
    (folder / "readme.txt").write_text("not an image")
    at = start(models)
    tab = at.tabs[2]
    tab.file_uploader[0].set_value([("a.jpg", encode(picture(30), "JPEG"), "image/jpeg"),
                                    ("broken.jpg", b"\xff\xd8\xff garbage", "image/jpeg")])
    tab.text_input[0].set_value(str(folder))
    tab.checkbox[0].check()
    tab.button[0].click().run()
    assert not at.exception
    tab = at.tabs[2]
    rows = tab.dataframe[0].value
    assert rows["image"].tolist() == ["a.jpg", "tile_0.png", "tile_1.png", "river_3.jpg", "forest_3.jpg"]
    assert {GREEDY, beam_name(3), POOL, NEAREST, TEMPLATE, "prompt"} <= set(rows) and rows[GREEDY].map(bool).all()
    assert [w.value for w in tab.warning] == [
        "broken.jpg: not a readable image (UnidentifiedImageError: cannot identify image file 'broken.jpg'); "
        "re-export it as JPEG or PNG"]
    assert tab.progress[0].value == 100
    csv_button, json_button = tab.download_button
    assert (csv_button.label, json_button.label) == ("Download the captions (CSV)",
                                                      "Download the captions and compositions (JSON)")
    # the files the buttons hand out
    table = list(csv.DictReader(io.StringIO(core.rows_csv(at.session_state["batch"]["rows"]))))
    assert [r["image"] for r in table] == rows["image"].tolist()
    results = json.loads(at.session_state["batch"]["json"])
    assert results[0]["caption"] == results[0]["captions"][GREEDY] and not problems(results[0]["composition"])

    # a folder that is not there, or nothing at all: a message
    at.tabs[2].text_input[0].set_value(str(tmp_path / "nowhere"))
    at.tabs[2].checkbox[0].uncheck()
    at.tabs[2].file_uploader[0].clear()
    at.tabs[2].button[0].click().run()
    assert [w.value for w in at.tabs[2].warning] == [f"{tmp_path / 'nowhere'}: not a folder on this machine"]
    assert not at.tabs[2].dataframe


# ---------------------------------------------------------------------------------------------------- launcher
def test_launcher_checks_the_folders_before_starting(tmp_path):
    with pytest.raises(ConfigError) as e:
        launcher.main(segmentation=tmp_path / "seg", llm=tmp_path / "lm", run_dir=tmp_path / "run")
    text = str(e.value)
    for part in ("--segmentation", "--llm", "--run-dir"):
        assert part in text
    with pytest.raises(ConfigError, match=r"port 0 is invalid; expected an integer >= 1 and <= 65535"):
        launcher.main(segmentation=tmp_path / "seg", port=0)  # the bounds first, as for the flags
    assert Settings(num_beams=0, threads=0).problems()[:2] == [
        "app settings: num_beams 0 is invalid; expected an integer >= 1 (default: 3)",
        "app settings: threads 0 is invalid; expected an integer >= 1 or null (default: 1)"]


def test_launcher_command_serves_the_page_offline():
    cmd = launcher.command(Settings(run_dir=None, num_beams=2), port=8600)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("app/page.py")
    assert "--browser.gatherUsageStats" in cmd and cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    page_args = cmd[cmd.index("--") + 1:]
    assert page_args[page_args.index("--run-dir") + 1] == "null" and "--captions" not in page_args
    from segcap.cli import parse

    assert Settings(**parse(Settings, page_args)) == Settings(run_dir=None, num_beams=2)
