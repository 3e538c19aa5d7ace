"""``report.md`` of a pipeline run: results beside baselines and the human ceiling, then how each stage did."""

from __future__ import annotations

import json
import os
import platform
import textwrap
import time
from pathlib import Path

import numpy as np

from aerialdata.captionset import CaptionDataset
from aerialdata.images import read_mask, read_rgb
from composition.evidence import evidence, evidence_md, load_caption_words
from composition.health import DOMINANT_IMAGES, DOMINANT_PERCENT, FEW_ORDERS, MIN_IMAGES, flags_text, health
from composition.schema import read_jsonl
from composition.text import to_prompt
from pipeline.layout import Layout, read_json
from pipeline.stages import STAGES
from pipeline.stages.llm import LLM_STAGES
from pipeline.systems import end_to_end, notes
from segcap import atomic
from segcap.errors import DataError

METRICS = ("Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def results_rows(layout: Layout) -> list[str]:
    """The results as a plain-text table (the console summary), headed by the split that was scored."""
    scores = read_json(layout.scores_json)
    if not scores:
        return []
    width = max(16, *(len(n) + 1 for n in scores["systems"]))  # a long name never runs into the first figure
    lines = [f"scores on the {_split(scores)} split of {layout.references}", "",
             f"{'system':<{width}}" + "".join(f"{m:>9}" for m in METRICS)]
    for name in scores["systems"]:
        s = scores["overall"][name]
        lines.append(f"{name:<{width}}" + "".join(f"{s.get(m, float('nan')):>9.3f}" for m in METRICS))
    lines += ["", *ratios(scores)]
    return lines


def ratios(scores: dict) -> list[str]:
    """The demo's targets, measured: pipeline CIDEr against the oracle's and the blind LM's."""
    o = scores.get("overall", {})
    cider = {k: v.get("CIDEr") for k, v in o.items()}
    out = []
    if cider.get("pipeline") is not None and cider.get("oracle"):
        out.append(f"pipeline CIDEr / oracle CIDEr = {cider['pipeline'] / cider['oracle']:.2f} (target >= 0.90)")
    if cider.get("pipeline") is not None and cider.get("blind"):
        out.append(f"pipeline CIDEr / blind CIDEr = {cider['pipeline'] / cider['blind']:.2f} (target >= 2)")
    chain = {k: v for k, v in cider.items() if k.startswith("pipeline") and v is not None}
    if chain and cider.get("nearest"):  # the chain at its best against the lookups it has to beat
        best = max(chain, key=chain.get)
        out.append(f"best chain system ({best}) CIDEr / nearest CIDEr = {chain[best] / cider['nearest']:.2f} "
                   "(target >= 1.05)")
        if cider.get("nearest_consensus"):
            out.append(f"best chain system ({best}) CIDEr / nearest_consensus CIDEr = "
                       f"{chain[best] / cider['nearest_consensus']:.2f}")
    if cider.get("pipeline_pool") is not None and cider.get("nearest_consensus"):  # the same votes without the LLM
        r = cider["pipeline_pool"] / cider["nearest_consensus"]
        out.append(f"pipeline_pool CIDEr / nearest_consensus CIDEr = {r:.2f} (the same neighbours' captions; " + (
            "clearly above 1: the LLM reading the composition picks better among them)" if r >= 1.05 else
            "not clearly above 1: what the LLM reading the composition adds to the neighbours' votes is small here)"))
    if cider.get("rag_only") is not None and cider.get("pipeline_rag"):
        r = cider["rag_only"] / cider["pipeline_rag"]
        out.append(f"rag_only CIDEr / pipeline_rag CIDEr = {r:.2f} (" + (
            "clearly below 1: the composition text adds to the neighbours' captions)" if r < 0.95 else
            "not clearly below 1: given the neighbours' captions, the composition text adds little here)"))
    if chain and cider.get("class_oracle"):  # against the true class's usual caption: a scene classifier's ceiling
        best = max(chain, key=chain.get)
        out.append(f"best chain system ({best}) CIDEr / class_oracle CIDEr = {chain[best] / cider['class_oracle']:.2f} "
                   "(against the ceiling of a scene classifier)")
    if cider.get("nearest") is not None and cider.get("image_nearest"):
        out.append(f"nearest CIDEr / image_nearest CIDEr = {cider['nearest'] / cider['image_nearest']:.2f} (the same "
                   "lookup: composition vector against the CNN+LSTM's image features)")
    if cider.get("cnn_lstm") is not None and cider.get("image_nearest"):
        out.append(f"cnn_lstm CIDEr / image_nearest CIDEr = {cider['cnn_lstm'] / cider['image_nearest']:.2f} (the "
                   "decoder against a lookup in its own encoder's space)")
    for name in end_to_end():  # the chain against a model that captions the pixels directly, both decodings alike
        for chain, other in (("pipeline", name), *((k, f"{name}{k[8:]}") for k in cider if k.startswith("pipeline_"))):
            if cider.get(chain) is not None and cider.get(other):
                out.append(f"{chain} CIDEr / {other} CIDEr = {cider[chain] / cider[other]:.2f} "
                           "(the chain against pixels -> caption)")
    return out


def _results_md(scores: dict) -> list[str]:
    metrics = scores["metrics"]
    head = "| system | " + " | ".join(metrics) + " | what it is |"
    lines = [head, "|" + "---|" * (len(metrics) + 2)]
    for name in scores["systems"]:
        s = scores["overall"][name]
        base, _, beams = name.partition("_beam")
        note = f"as {base}, beam search ({beams} beams)" if beams else notes().get(name, "")
        lines.append(f"| {name} | " + " | ".join(f"{s.get(m, float('nan')):.3f}" for m in metrics) + f" | {note} |")
    return lines


def per_class_md(scores: dict) -> list[str]:
    """The per-category CIDEr of every system as a markdown table: one row per category (with its image count), one
    column per system, the best system of each row in bold (human aside; none when all are equal); [] without
    categories."""
    per = scores.get("per_category") or {}
    if not per:
        return []
    cols = list(scores["systems"])
    lines = ["| category | images | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for cat, entry in per.items():
        cider = {c: (entry.get("scores", {}).get(c) or {}).get("CIDEr") for c in cols}
        found = [v for c, v in cider.items() if c != "human" and isinstance(v, (int, float))]
        best = max(found) if len(set(found)) > 1 else None  # nothing in bold when all are equal
        cells = ["n/a" if not isinstance(v, (int, float)) else f"**{v:.2f}**" if c != "human" and v == best
                 else f"{v:.2f}" for c, v in cider.items()]
        lines.append(f"| {cat} | {entry.get('images', '')} | " + " | ".join(cells) + " |")
    return lines


def _minutes(value) -> str:
    return f"{value:.1f}" if isinstance(value, (int, float)) else "?"


def _rel(path: Path, start: Path) -> str:
    return os.path.relpath(path, start)


def _split(scores: dict) -> str:
    return (scores.get("metadata") or {}).get("split") or "?"


def composition_health(path: Path) -> dict:
    return health(read_jsonl(path)) if path.is_file() else {}


def health_line(layout: Layout) -> str | None:
    """One line when the predicted compositions are flagged degenerate (composition.health), with the exact masks'
    flags beside them; None when they are not, or cannot be read (the report stage, which reads them too, says why)."""
    try:
        predicted = composition_health(layout.predicted)
        if not predicted.get("flags"):
            return None
        truth = composition_health(layout.truth)
    except DataError:
        return None
    beside = f"exact masks: {flags_text(truth)}" if truth else "no exact masks to compare"
    return (f"warning: the predicted compositions look degenerate: {flags_text(predicted)}. {beside[0].upper()}"
            f"{beside[1:]}. Captions from them can say little (report.md, Composition health)")


def write_examples(layout: Layout, split: str, path: Path, n: int = 4) -> Path | None:
    """A figure of images of the scored split: image | predicted mask | prompt text and captions."""
    import matplotlib.pyplot as plt

    systems = read_json(layout.systems_json)
    if not systems:
        return None
    preds = {name: {p["image_id"]: p["caption"] for p in json.loads(Path(f).read_text())} for name, f in systems.items()}
    records = {Path(r["image"]).stem: r for r in read_jsonl(layout.predicted)}
    test = CaptionDataset(layout.references, split=split, images_dir=layout.images_dir)
    # one image per category, spread over the split
    seen, chosen = set(), []
    for it in test:
        if it.category not in seen:
            seen.add(it.category)
            chosen.append(it)
    chosen = chosen[:n]
    table = layout.class_table()
    texts = []
    for it in chosen:
        rec = records.get(Path(it.filename).stem)
        text = [textwrap.shorten(f"composition: {to_prompt(rec) if rec else '?'}", 330, placeholder=" ..."), ""]
        for name in systems:
            text.append(textwrap.shorten(f"{name}: {preds[name].get(it.filename, '')}", 140, placeholder=" ..."))
        text.append(f"reference: {it.sentences[0]}")
        texts.append("\n".join(textwrap.fill(t, 78, subsequent_indent="    ") for t in text))
    lines = max(t.count("\n") + 1 for t in texts)
    row_inches = max(4.1, 0.16 * lines + 0.5)  # every caption, wrapped, fits beside its image
    fig, axes = plt.subplots(len(chosen), 3, figsize=(15, row_inches * len(chosen) + 0.6),
                             gridspec_kw={"width_ratios": [1, 1, 2.3]})
    axes = np.atleast_2d(axes)
    for row, it, text in zip(axes, chosen, texts, strict=True):
        img = read_rgb(test.image_path(it.filename))
        mask = read_mask(layout.masks / f"{Path(it.filename).stem}.png")
        row[0].imshow(img)
        row[0].set_title(it.filename, fontsize=10)
        row[1].imshow(table.colors[np.minimum(mask, table.num_classes - 1)])
        row[1].set_title("predicted mask", fontsize=10)
        row[2].text(0, 1, text, va="top", ha="left", fontsize=9, family="monospace", transform=row[2].transAxes)
        for ax in row:
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=table.colors[i] / 255) for i in range(table.num_classes)]
    fig.legend(handles, table.names, loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 0.99))  # 0.6 in at the bottom for the legend
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path


def scenes_md(layout: Layout) -> list[str]:
    """The scene head's figures (stage scenes): classes, accuracy on the caption set's splits, its confusion matrix."""
    head = read_json(layout.scenes / "scene_head.json")
    if not head:
        return []
    m = head.get("metrics") or {}
    acc = ", ".join(f"{split} {m[f'{split}_accuracy']:.3f}" for split in ("train", "val", "test")
                    if isinstance(m.get(f"{split}_accuracy"), (int, float)))
    feats = head.get("features") or {}
    out = ["## Scenes", "",
           f"A linear scene head on the segmenter's encoder ({feats.get('encoder', '?')}, pooled at strides "
           f"{feats.get('strides')}{' + colour' if feats.get('colour') else ''}), trained on the caption set's training "
           f"split over its {len(head.get('classes', []))} categories"
           + (f", on {feats['views']} views of each photo (rotations and mirror images; each photo judged by the mean "
              "of its views)" if (feats.get("views") or 1) > 1 else "") + "; the val split chose its L2 strength. Accuracy: "
           f"{acc}. Each record's top scenes go into its prompt.", ""]
    if (layout.scenes / "scene_head.png").is_file():
        out += [f"![scene head confusion]({_rel(layout.scenes / 'scene_head.png', layout.run_dir)})", ""]
    return out


def evidence_section(layout: Layout) -> list[str]:
    """Per scene class, what the predicted compositions hold beside what the captions name (composition.evidence)."""
    if not layout.predicted.is_file() or not layout.references.is_file():
        return []
    try:
        ds = CaptionDataset(layout.references, images_dir=layout.images_dir)
        figures = evidence(read_jsonl(layout.predicted), ds.references(), ds.categories(), load_caption_words())
    except (DataError, OSError):
        return []
    table = evidence_md(figures)
    if not table or len(figures["classes"]) < 2:
        return []
    return ["## What the segmenter sees, beside what the captions say", "",
            "Over every image of the caption set: the mean share of each group in the predicted compositions, and the "
            "share of captions that name it (caption words to groups: configs/classes/caption_words.yaml).", "",
            *table, ""]


def write_report(layout: Layout) -> Path:
    """Write ``report.md`` (and ``examples.png``) from the run folder: scores, checkpoint metrics, stamps."""
    rd = layout.run_dir
    scores = read_json(layout.scores_json)
    split = layout.scored_split()
    stamps = {s: layout.read_stamp(s) for s in STAGES if layout.stamp(s).is_file()}
    lines = [f"# segcap run: {rd.name}", "",
             f"Machine: {machine()}. Written {time.strftime('%Y-%m-%d %H:%M')}.", "",
             f"Caption set: `{layout.references}`" + (f", split `{split}`" if split else "")
             + (f", {scores['metadata']['images']} images" if scores.get("metadata", {}).get("images") else "")
             + ".", ""]
    warning = health_line(layout)
    if warning:
        lines += [f"**{warning[0].upper()}{warning[1:]}**", ""]

    # 1. results
    if scores:
        lines += [f"## Captions on the {_split(scores)} split", "", *_results_md(scores), ""]
        lines += [f"- {r}" for r in ratios(scores)] + [""]
        if (rd / "scores" / "scores.png").is_file():
            lines += ["![scores](scores/scores.png)", ""]
        oracle = ((stamps.get("captions", {}).get("result") or {}).get("references") or {}).get("class_oracle") or {}
        if oracle.get("degenerate"):
            lines += [f"class_oracle here: {oracle['degenerate']} (its {oracle.get('categories')} "
                      f"categor{'y is' if oracle.get('categories') == 1 else 'ies are'} no scene classes).", ""]
        per_class = per_class_md(scores)
        if per_class:
            lines += ["### CIDEr per class", "",
                      "Each class scored on its own (CIDEr's IDF from that class's references, as a test set of that "
                      "class alone would give; not comparable with the overall CIDEr). Best system of each row in "
                      "bold.", "", *per_class, ""]
        lines += ["Per-category scores, every metric: [scores/scores.md](scores/scores.md).", ""]
    ex = write_examples(layout, split, layout.examples) if split else None
    if ex:
        lines += ["## Examples", "", "![examples](examples.png)", ""]

    # 2. segmentation
    seg = read_json(layout.checkpoint / "metrics.json")
    if seg:
        lines += ["## Segmentation", ""]
        val, cap, train = seg.get("val", {}), seg.get("captions") or {}, seg.get("train", {})
        if isinstance(val.get("miou"), (int, float)):
            lines.append(f"- val mIoU on the segmentation sources' val split: {val['miou']:.3f} (pixel accuracy {val['pixel_accuracy']:.3f}), "
                         f"best epoch {seg.get('best_epoch')}, {_minutes(train.get('train_minutes'))} min of training")
        if isinstance(cap.get("miou"), (int, float)):
            lines.append(f"- mIoU on the caption set's {cap.get('split', 'test')} split, after the scale gap "
                         f"(the figure that matters): {cap['miou']:.3f} (pixel accuracy {cap['pixel_accuracy']:.3f})")
        res = seg.get("resolution") or {}
        below = (res.get("val") or {}).get("below_resolution")
        if below and isinstance(res.get("val_miou_resolved_classes"), (int, float)):
            lines.append(f"- below the resolution at the training scale (mostly one pixel wide, IoU near 0): "
                         f"{', '.join(below)}; val mIoU without them: {res['val_miou_resolved_classes']:.3f}")
        per = cap.get("per_class_iou") or val.get("per_class_iou") or {}
        if isinstance(per, dict) and per:
            lines.append("- per-class IoU" + (" (caption set)" if cap else "") + ": " + ", ".join(
                f"{k} {v:.2f}" for k, v in per.items() if isinstance(v, (int, float))))
        lines.append("")
        for png in sorted(layout.checkpoint.glob("*.png")):
            lines += [f"![{png.stem}]({_rel(png, rd)})", ""]

    # 3. compositions
    rows = []
    for name, path in (("predicted masks", layout.predicted), ("exact masks", layout.truth)):
        h = composition_health(path)
        if h:
            rows.append((name, h))
    if rows:
        keys = [k for k in rows[0][1] if k != "flags"]
        lines += ["## Composition health", "",
                  "A segmenter that sees one class everywhere gives the LLM nothing to say (the seed: 266 distinct "
                  "prompts for 1,092 images, every one starting with artificial surface). Flagged: one class "
                  f"covering >= {DOMINANT_PERCENT:.0f}% of the image in >= {100 * DOMINANT_IMAGES:.0f}% of the images; "
                  f"fewer than {FEW_ORDERS:g} effective class orders (exp of their entropy); from {MIN_IMAGES} images "
                  "on. A flag the exact masks share is the data's, not the segmenter's.", "",
                  "| compositions of | " + " | ".join(keys) + " | flags |", "|" + "---|" * (len(keys) + 2)]
        for name, h in rows:
            lines.append(f"| {name} | " + " | ".join(str(h.get(k, "")) for k in keys) + f" | {flags_text(h)} |")
        lines.append("")
    lines += scenes_md(layout) + evidence_section(layout)

    # 4. language models
    llm_rows = []
    for name in (spec.folder for spec in LLM_STAGES.values()):
        folder = layout.llm(name)
        retrieval = (read_json(folder / "segcap_llm.json").get("prompt") or {}).get("retrieval_k")
        if retrieval:
            llm_rows.append(f"- {name}: retrieval-augmented prompts, the captions of the {retrieval} training images "
                            "with the closest compositions (never the image itself)")
        for png in sorted(folder.glob("*.png")):
            llm_rows.append(f"![{name} {png.stem}]({_rel(png, rd)})")
    if llm_rows:
        lines += ["## Language models", "", *llm_rows, ""]

    # 5. end-to-end captioners: what the chain is compared with
    e2e = []
    for name in end_to_end():
        folder = layout.captioner(name)
        m = read_json(folder / "metrics.json")
        if not m:
            continue
        e2e.append(f"- {name}: {m.get('arch')}, {m.get('train_images')} training images, "
                   f"{m.get('trainable_parameters', 0):,} trained parameters of {m.get('parameters', 0):,}, "
                   f"epoch {m.get('selected_epoch')} kept (val loss {m.get('best_val_loss') or float('nan'):.3f}), "
                   f"{m.get('total_seconds')} s on {m.get('device')}")
        e2e += [f"  ![{name} {png.stem}]({_rel(png, rd)})" for png in sorted(folder.glob("*.png"))]
    if e2e:
        lines += ["## End-to-end captioners", "",
                  "Models that caption the pixels directly, trained on the same captions and split as the chain; "
                  "they need no masks, and give no composition to check.", "", *e2e, ""]

    # 6. how it ran
    lines += ["## Stages", "", "| stage | seconds | commands |", "|---|---|---|"]
    for stage, st in stamps.items():
        cmds = "<br>".join(f"`{c}`" for c in st.get("commands", []))
        lines.append(f"| {stage} | {st.get('seconds', '')} | {cmds} |")
    lines.append("")
    return atomic.write_text(layout.report, "\n".join(lines))
