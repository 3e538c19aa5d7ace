"""Scene head (issue 23): segmentation.scene fits it on a tiny caption set whose two categories differ by colour;
Segmenter.scenes, segmentation.predict's scenes.json, pipeline.caption's records and the pipeline's scenes stage."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from aerialdata.classes import load_class_table
from composition.schema import read_scenes
from pipeline import caption
from pipeline import run as prun
from pipeline.executor import fingerprint, run_stage
from pipeline.stages import STAGES
from pipeline.stages.base import hashed
from pipeline.stages.llm import LLM_STAGES
from segcap.cli import run
from segcap.errors import ConfigError
from segmentation import predict, scene
from segmentation.model import (
    CONFIG_FORMAT,
    SCENE_HEAD_FILES,
    build_model,
    default_architecture,
    load_segmenter,
)
from tests.test_provenance import caption_lm  # noqa: F401  (a fixture, used below)

SPLITS = {"train": 4, "val": 2, "test": 1}  # images per category and split
QUICK = dict(workers=0, threads=1, progress=False, l2=(1e-3, 1e-1))


def _checkpoint(folder: Path, seed: int = 0) -> Path:
    """A tiny untrained UNet saved as a checkpoint folder (the encoder's features still carry the colours)."""
    folder.mkdir(parents=True)
    table = load_class_table("aerial10")
    arch = {**default_architecture(), "decoder_channels": [16, 8, 8, 8, 8]}
    torch.manual_seed(seed)
    torch.save(build_model(arch, table.num_classes).state_dict(), folder / "model.pt")
    cfg = {"format": CONFIG_FORMAT, "architecture": arch, "classes": table.to_dict(), "input": {"drone_scale": 0.25}}
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "metrics.json").write_text("{}")
    return folder


def _caption_set(root: Path, named: bool = True) -> Path:
    """Reddish and greenish 32x32 photos (noise on top) in the RSICD layout; ``named``: the category is in the file
    name (``red_3.png``), else the names are bare numbers (every category reads ``unknown``)."""
    rng = np.random.default_rng(0)
    (root / "RSICD_images").mkdir(parents=True)
    images, n = [], 0
    for split, count in SPLITS.items():
        for cat, colour in (("red", (170, 60, 50)), ("green", (60, 150, 70))):
            for _ in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (32, 32, 3)), 0, 255).astype(np.uint8)
                name = f"{cat}_{n}.png" if named else f"{n:05d}.png"
                Image.fromarray(pixels).save(root / "RSICD_images" / name)
                images.append({"filename": name, "imgid": n, "split": split,
                               "sentences": [{"raw": f"a {cat} scene", "tokens": [], "imgid": n, "sentid": n}]})
                n += 1
    (root / "dataset_rsicd.json").write_text(json.dumps({"images": images, "dataset": "rsicd"}))
    return root


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(checkpoint with a scene head in its folder, caption set, the head's description)."""
    root = tmp_path_factory.mktemp("scene")
    ckpt, caps = _checkpoint(root / "ckpt"), _caption_set(root / "rsicd")
    info = scene.main(checkpoint=ckpt, captions=caps, **QUICK)
    return ckpt, caps, info


def test_fit_writes_the_head_beside_the_checkpoint(fitted):
    ckpt, caps, info = fitted
    for name in (*SCENE_HEAD_FILES, scene.FIGURE, scene.CACHE):
        assert (ckpt / name).is_file(), name
    on_disk = json.loads((ckpt / "scene_head.json").read_text())
    assert on_disk == json.loads(json.dumps(info))
    assert on_disk["schema"] == "segcap.scene_head/1" and on_disk["classes"] == ["green", "red"]
    assert on_disk["features"]["strides"] == [16, 32] and on_disk["features"]["colour"] is True
    assert on_disk["features"]["dim"] == 96 + 1280 + 6
    m = on_disk["metrics"]
    assert m["train_accuracy"] == 1.0 and m["val_accuracy"] == 1.0 and m["test_accuracy"] == 1.0
    assert m["per_class_val_accuracy"] == {"green": 1.0, "red": 1.0}
    assert on_disk["trained_on"]["counts"] == {"train": 8, "val": 4, "test": 2}
    assert on_disk["fit"]["l2"] in (1e-3, 1e-1) and len(on_disk["fit"]["grid"]) == 2
    assert set(torch.load(ckpt / "scene_head.pt", weights_only=True)) == {"mean", "std", "linear.weight",
                                                                          "linear.bias"}


def test_segmenter_scenes(fitted):
    ckpt, caps, _ = fitted
    seg = load_segmenter(ckpt, device="cpu")  # auto: the head in the checkpoint folder
    red = np.asarray(Image.open(caps / "RSICD_images" / "red_0.png").convert("RGB"))
    green = np.asarray(Image.open(caps / "RSICD_images" / "green_4.png").convert("RGB"))
    red_big = np.ascontiguousarray(np.repeat(np.repeat(red, 2, 0), 3, 1))  # another size, another batch
    tops = seg.scenes([red, green, red_big])
    assert [t[0]["name"] for t in tops] == ["red", "green", "red"]
    for t in tops:
        assert [s["name"] for s in t] in (["red", "green"], ["green", "red"])  # 2 classes: the top 2
        assert t[0]["probability"] >= t[1]["probability"] and t[0]["probability"] > 0.5
        assert all(round(s["probability"], 3) == s["probability"] for s in t)
    assert seg.scenes([]) == []
    assert load_segmenter(ckpt, device="cpu", scene_head=None).scenes([red]) is None


def test_predict_writes_scenes_json_and_resumes(fitted, tmp_path):
    ckpt, caps, _ = fitted
    out = tmp_path / "masks"
    s = predict.main(checkpoint=ckpt, images=caps / "RSICD_images", out=out, workers=0, progress=False)
    doc = json.loads((out / "scenes.json").read_text())
    stems = sorted(p.stem for p in out.glob("*.png"))
    assert s["written"] == 14 and s["scenes"] == str(out / "scenes.json")
    assert doc["schema"] == "segcap.scenes/1" and doc["classes"] == ["green", "red"]
    assert sorted(doc["images"]) == stems
    assert all(v[0]["name"] == k.split("_")[0] for k, v in doc["images"].items())
    assert read_scenes(out / "scenes.json") == doc["images"]  # what composition.extract reads
    # a rerun keeps the masks and computes only the scenes it lacks
    (out / "scenes.json").write_text(json.dumps({**doc, "images": {k: doc["images"][k] for k in stems[:3]}}))
    s = predict.main(checkpoint=ckpt, images=caps / "RSICD_images", out=out, workers=0, progress=False)
    assert s["written"] == 0 and s["skipped_existing"] == 14
    assert json.loads((out / "scenes.json").read_text()) == doc
    # no head: no scenes.json, and an earlier one is removed (compositions must not read another head's scenes)
    run(predict.main, ["--checkpoint", str(ckpt), "--images", str(caps / "RSICD_images"), "--out", str(out),
                       "--scene-head", "null", "--workers", "0", "--no-progress"])
    assert not (out / "scenes.json").exists()


def test_head_in_another_folder_and_of_another_checkpoint(fitted, tmp_path, capsys):
    ckpt, caps, _ = fitted
    heads = tmp_path / "heads"
    scene.main(checkpoint=ckpt, captions=caps, out=heads, **QUICK)  # the cache there is new: features again
    out = tmp_path / "masks"
    predict.main(checkpoint=ckpt, images=caps / "RSICD_images", out=out, scene_head=str(heads), workers=0,
                 progress=False)
    assert json.loads((out / "scenes.json").read_text())["head"]["folder"] == str(heads)
    other = _checkpoint(tmp_path / "other", seed=1)  # another encoder: the head's features mean nothing there
    with pytest.raises(ConfigError, match="another model.pt"):
        load_segmenter(other, device="cpu", scene_head=heads)
    shutil.copy(heads / "scene_head.pt", other / "scene_head.pt")
    shutil.copy(heads / "scene_head.json", other / "scene_head.json")
    assert load_segmenter(other, device="cpu").scene_head is None  # auto: left out, with a note
    assert "scene head left out" in capsys.readouterr().err


def test_head_with_an_encoder_of_its_own(fitted, tmp_path):
    """--encoder-weights: the features come from those weights, saved with the head; any checkpoint can use it."""
    ckpt, caps, _ = fitted
    weights = tmp_path / "encoder.pth"
    torch.manual_seed(2)
    torch.save(build_model(default_architecture(), 2).encoder.state_dict(), weights)
    info = scene.main(checkpoint=ckpt, captions=caps, out=tmp_path / "own", encoder_weights=weights, **QUICK)
    assert info["features"]["own_encoder"] and info["metrics"]["val_accuracy"] == 1.0
    assert any(k.startswith("encoder.") for k in torch.load(tmp_path / "own" / "scene_head.pt", weights_only=True))
    seg = load_segmenter(_checkpoint(tmp_path / "other", seed=1), device="cpu", scene_head=tmp_path / "own")
    red = np.asarray(Image.open(caps / "RSICD_images" / "red_0.png").convert("RGB"))
    assert seg.scenes([red])[0][0]["name"] == "red"


def test_refusals_exit_2(fitted, tmp_path, capsys):
    ckpt, caps, _ = fitted
    with pytest.raises(SystemExit) as e:  # a head is there already
        run(scene.main, ["--checkpoint", str(ckpt), "--captions", str(caps), "--workers", "0", "--no-progress"])
    assert e.value.code == 2
    assert "already exists" in capsys.readouterr().err
    bare = _caption_set(tmp_path / "bare", named=False)
    with pytest.raises(SystemExit) as e:  # no categories: every image reads unknown
        run(scene.main, ["--checkpoint", str(ckpt), "--captions", str(bare), "--out", str(tmp_path / "h"),
                         "--workers", "0", "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert scene.NEEDS_CATEGORIES in err and "unknown" in err
    assert not (tmp_path / "h").exists()


def test_one_image_caption_records_carry_the_scenes(fitted, caption_lm, tmp_path):  # noqa: F811
    ckpt, caps, _ = fitted
    images = [caps / "RSICD_images" / "red_0.png", caps / "RSICD_images" / "green_4.png"]
    results = caption.main(images=images, segmentation=ckpt, llm=caption_lm)
    assert [r["composition"]["scenes"][0]["name"] for r in results] == ["red", "green"]
    results = caption.main(images=images, segmentation=ckpt, llm=caption_lm, scene_head=None)
    assert all("scenes" not in r["composition"] for r in results)



def test_pipeline_scenes_stage(fitted, tmp_path, run_options):
    ckpt, caps, _ = fitted
    given = tmp_path / "given"
    shutil.copytree(ckpt, given, ignore=shutil.ignore_patterns("scene_head*", scene.CACHE))
    common = dict(segmentation_checkpoint=given, captions_root=caps, generate=False)
    # off (the default): the stage writes nothing; masks' fingerprint is what it was before the option existed
    off = prun.make_run(**run_options(**common))
    assert run_stage(off, "scenes", True, []) == {"status": "not asked for"}
    before = json.dumps({"stage": "masks", "options": {"caption_scale": 1.0},
                         "upstream": {"data": None, "segmentation": None}}, sort_keys=True, default=str)
    assert fingerprint(off, "masks") == hashlib.sha256(before.encode()).hexdigest()[:16]
    commands: list[str] = []
    run_stage(off, "masks", True, commands)
    assert "--scene-head null" in commands[0] and not (off.layout.masks / "scenes.json").exists()
    # on: the head goes to run_dir/scenes (the given checkpoint's folder stays as it was), masks read it
    on = prun.make_run(**run_options(**common, scene_head=True))
    assert fingerprint(on, "masks") != fingerprint(off, "masks")
    commands = []
    result = run_stage(on, "scenes", True, commands)
    assert result["val_accuracy"] == 1.0 and commands[0].startswith("python -m segmentation.scene")
    assert (on.layout.scenes / "scene_head.pt").is_file() and not (given / "scene_head.pt").exists()
    run_stage(on, "masks", True, [])
    assert read_scenes(on.layout.masks / "scenes.json")["red_0"][0]["name"] == "red"
    # scene_encoder pretrained: the weights the segmenter started from (none recorded here: refused, then named)
    pre = prun.make_run(**run_options(**common, scene_head=True, scene_encoder="pretrained"))
    assert fingerprint(pre, "scenes") != fingerprint(on, "scenes")
    with pytest.raises(ConfigError, match="started from random weights"):
        run_stage(pre, "scenes", True, [])
    weights = tmp_path / "encoder.pth"
    torch.save(build_model(default_architecture(), 2).encoder.state_dict(), weights)
    cfg = yaml.safe_load((given / "config.yaml").read_text())
    (given / "config.yaml").write_text(yaml.safe_dump({**cfg, "training": {"encoder_weights": str(weights)}}))
    commands = []
    assert run_stage(pre, "scenes", True, commands)["val_accuracy"] == 1.0
    assert f"--encoder-weights {weights}" in commands[0]
    assert json.loads((pre.layout.scenes / "scene_head.json").read_text())["features"]["own_encoder"]


def test_scene_ablation_stages_only_count_when_asked_for(fitted, tmp_path, run_options):
    ckpt, caps, _ = fitted
    common = dict(segmentation_checkpoint=ckpt, captions_root=caps, generate=False)
    plain = prun.make_run(**run_options(**common))
    # not asked for: they train nothing, and the captions and report fingerprints read as before they existed
    for stage in ("scene_only", "composition_only"):
        assert run_stage(plain, stage, True, []) == {"status": "not asked for"}
    upstream = [u for u in STAGES["captions"].reads() if u not in ("scene_only", "composition_only")]
    before = json.dumps({"stage": "captions", "options": hashed(STAGES["captions"].options(plain)),
                         "upstream": {u: None for u in upstream}}, sort_keys=True, default=str)
    assert fingerprint(plain, "captions") == hashlib.sha256(before.encode()).hexdigest()[:16]
    asked = prun.make_run(**run_options(**common, systems=("pipeline", "pipeline_scene",
                                                                   "pipeline_composition")))
    assert STAGES["scene_only"].active(asked) and STAGES["composition_only"].active(asked)
    assert LLM_STAGES["scene_only"].prompt_mode == "scene"
    assert LLM_STAGES["composition_only"].prompt_mode == "composition"
    assert asked.layout.llm(LLM_STAGES["scene_only"].folder).name == "pipeline_scene"


def test_pipeline_refuses_a_scene_head_without_categories_before_any_stage(tmp_path, run_options):
    caps = tmp_path / "caps"
    (caps / "RSICD_images").mkdir(parents=True)
    images = [{"filename": f"field_{i}.jpg", "imgid": i, "split": "train", "sentences": [{"raw": "a field ."}]}
              for i in range(4)]
    (caps / "dataset_rsicd.json").write_text(json.dumps({"images": images}))
    opts = run_options(captions_root=caps, generate=False, scene_head=True)
    with pytest.raises(ConfigError, match="scene_head: scene head needs scene categories"):
        prun.make_run(**opts)
    assert prun.make_run(**{**opts, "scene_head": False}).scene_head is False


def test_views_fit_on_every_view_and_judge_by_their_mean(fitted, tmp_path):
    """--views 8: the head is fitted on the 8 views of each training image (the counts stay images), records its
    views, and Segmenter.scenes reads the mean of the views' pools: what encoder_pools(views=8) gives."""
    from segmentation.model import dihedral, scene_features

    ckpt, caps, _ = fitted
    out = tmp_path / "head8"
    info = scene.main(checkpoint=ckpt, captions=caps, out=out, views=8, **QUICK)
    assert info["features"]["views"] == 8 and info["trained_on"]["counts"] == {"train": 8, "val": 4, "test": 2}
    assert (out / scene.CACHE).is_file() and (out / "scene_features.view7.npz").is_file()
    assert info["metrics"]["val_accuracy"] == 1.0
    img = np.arange(2 * 3 * 3).reshape(2, 3, 3)
    assert len({dihedral(img, k).tobytes() for k in range(8)}) == 8  # 8 distinct views of an asymmetric image
    assert (dihedral(img, 0) == img).all() and (dihedral(dihedral(img, 1), 3) == img).all()
    seg = load_segmenter(ckpt, device="cpu", scene_head=str(out))
    red = np.array(Image.open(caps / "RSICD_images" / "red_0.png").convert("RGB"))
    red[:8] = 0  # not symmetric: its views differ
    pools = seg.encoder_pools([red], views=8)
    each = [seg.encoder_pools([dihedral(red, k)]) for k in range(8)]
    assert np.allclose(pools["s32"], np.mean([e["s32"] for e in each], axis=0), atol=1e-6)
    assert seg.scenes([red]) == seg.scene_head.top(scene_features(pools, seg.scene_head.features))
    with pytest.raises(ConfigError, match="views 3 is invalid; expected one of 1, 4, 8"):
        scene.main(checkpoint=ckpt, captions=caps, out=tmp_path / "bad", views=3, **QUICK)
    assert not (tmp_path / "bad").exists()


def test_predict_reads_the_heads_cached_features_and_gives_the_same_scenes(fitted, tmp_path, monkeypatch):
    """segmentation.predict takes the scenes of images the head's fit cached from that cache (no encoder pass for
    them), and they equal what the encoder gives; a cache of another scale is not read."""
    from segmentation.model import Segmenter

    ckpt, caps, _ = fitted
    head = tmp_path / "head"
    scene.main(checkpoint=ckpt, captions=caps, out=head, views=4, **QUICK)
    with_cache = tmp_path / "a"
    calls = []
    real = Segmenter.scenes
    monkeypatch.setattr(Segmenter, "scenes", lambda self, images, **kw: calls.append(len(images)) or real(
        self, images, **kw))
    predict.main(checkpoint=ckpt, images=caps / "RSICD_images", out=with_cache, scene_head=str(head), workers=0,
                 progress=False)
    assert calls == []  # every image was in the cache
    assert scene.cached_scenes(load_segmenter(ckpt, device="cpu", scene_head=str(head)).scene_head, ["red_0.png"],
                               scale=0.5) == {}  # another scale: not this cache's features
    for name in (scene.CACHE, "scene_features.view1.npz", "scene_features.view2.npz", "scene_features.view3.npz"):
        (head / name).unlink()
    without = tmp_path / "b"
    predict.main(checkpoint=ckpt, images=caps / "RSICD_images", out=without, scene_head=str(head), workers=0,
                 progress=False)
    assert sum(calls) == 14
    a, b = (json.loads((d / "scenes.json").read_text())["images"] for d in (with_cache, without))
    assert a.keys() == b.keys()
    for k in a:
        assert [s["name"] for s in a[k]] == [s["name"] for s in b[k]]
        assert all(abs(x["probability"] - y["probability"]) <= 0.001 for x, y in zip(a[k], b[k], strict=True))
