"""A pipeline run's models on another caption set, untrained there: how they transfer (issue 23: UCM's models on RSICD).

    python -m bench.transfer --run-dir runs/ucm_imagenet --captions ../shared/real-samples/rsicd --out runs/transfer

Every image of the other set is captioned, whatever its split there (the models never saw it): the chain as
``pipeline.caption`` runs it (the run's segmenter, its scene head when it has one, its LLM; greedy and 3 beams) and
the run's CNN+LSTM when it trained one. The scores (BLEU-1..4, METEOR, ROUGE-L, CIDEr, and the set's own human
agreement) are printed as JSON and written to ``--out`` with the predictions. The other set's scene names are not the
run's (UCM's 21 classes against RSICD's 30), so the scene line there says which UCM class a photo looks like most.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aerialdata.captionset import CaptionDataset
from captioners.generate import main as generate_end_to_end
from evaluation.score import main as score
from pipeline.caption import main as caption
from segcap import atomic


def run(run_dir: Path, captions: Path, out: Path, scale: float = 1.0) -> dict:
    ds = CaptionDataset(captions)
    out.mkdir(parents=True, exist_ok=True)
    # the set as one split: every image is new to the run's models
    raw = json.loads(ds.json_path.read_text(encoding="utf-8"))
    for im in raw["images"]:
        im["split"] = "test"
    refs = out / "references"
    refs.mkdir(exist_ok=True)
    atomic.write_json(refs / ds.json_name, raw)
    link = refs / ds.images_dir
    if not link.exists():
        link.symlink_to((ds.root / ds.images_dir).resolve(), target_is_directory=True)
    images = [ds.image_path(it.filename) for it in ds]
    scenes = run_dir / "scenes"
    head = str(scenes) if (scenes / "scene_head.pt").is_file() else None
    predictions: dict[str, Path] = {}
    for name, beams in (("pipeline", 1), ("pipeline_beam3", 3)):
        results = caption(images=images, segmentation=run_dir / "segmentation", llm=run_dir / "llm" / "pipeline",
                          scale=scale, scene_head=head, num_beams=beams)
        predictions[name] = atomic.write_json(out / f"{name}.json", [
            {"image_id": Path(r["image"]).name, "caption": r["caption"]} for r in results])
    cnn = run_dir / "captioners" / "cnn_lstm"
    if (cnn / "model.pt").is_file():
        for name, beams in (("cnn_lstm", 1), ("cnn_lstm_beam3", 3)):
            predictions[name] = generate_end_to_end(model=cnn, captions=refs / ds.json_name, out=out / f"{name}.json",
                                                    split="test", num_beams=beams, progress=False, overwrite=True)
    scores = score(references=refs / ds.json_name, out=out / "scores", predictions=list(predictions.values()),
                   names=list(predictions), split="test", human=True, overwrite=True)
    return {"run_dir": str(run_dir), "captions": str(captions), "images": len(ds), "scene_head": head,
            "overall": scores.get("overall")}


def cli(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, required=True, help="a pipeline.run folder (segmentation/, llm/pipeline/)")
    ap.add_argument("--captions", type=Path, required=True, help="the other caption set (its root or JSON)")
    ap.add_argument("--out", type=Path, required=True, help="folder for the predictions and scores")
    ap.add_argument("--scale", type=float, default=1.0, help="resize factor before segmenting (ground resolution)")
    args = ap.parse_args(argv)
    if not (args.run_dir / "segmentation" / "model.pt").is_file() or not (args.run_dir / "llm" / "pipeline").is_dir():
        print(f"error: {args.run_dir} holds no segmentation/model.pt or llm/pipeline/; give a finished pipeline.run "
              "folder", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(run(args.run_dir, args.captions, args.out, args.scale), indent=1))


if __name__ == "__main__":
    cli()
