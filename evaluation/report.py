"""Score several systems (and the human ceiling) overall and per category; write scores.json, scores.md, scores.png.

Everything is scored in one :class:`evaluation.metrics.CocoScorer` session: one PTB tokenizer pass over all captions,
one METEOR JVM. Each (system, subset) is scored as its own corpus, as COCO evaluation would score that subset alone:
BLEU and METEOR aggregate over the subset, and CIDEr's IDF comes from the subset's references (so a per-category
CIDEr is what the seed's "parks only" run measured, and is not comparable with the overall CIDEr).

    from evaluation.report import write_report
    write_report("runs/x/scores", {"llm": preds, "nearest": nn_preds}, refs, categories, human=True)
"""

from __future__ import annotations

import datetime as _dt
import time
from collections import Counter
from pathlib import Path

import numpy as np

from evaluation.metrics import (
    METRIC_KEYS,
    SPICE_KEY,
    CocoScorer,
    average_rounds,
    human_rounds,
    scorer_versions,
)
from segcap.atomic import atomic_path, check_writable, write_json, write_text
from segcap.errors import ConfigError, DataError

HUMAN = "human"
OVERALL = "overall"
REPORT_FILES = ("scores.json", "scores.md", "scores.png")
DISPLAY = {
    "Bleu_1": "BLEU-1",
    "Bleu_2": "BLEU-2",
    "Bleu_3": "BLEU-3",
    "Bleu_4": "BLEU-4",
    "METEOR": "METEOR",
    "ROUGE_L": "ROUGE-L",
    "CIDEr": "CIDEr",
    "SPICE": "SPICE",
}


def _subsets(refs: dict[str, list[str]], categories: dict[str, str] | None, per_category: bool) -> dict[str, list[str]]:
    """overall -> all images; then each category (sorted) -> its images, when there are two categories or more."""
    subsets = {OVERALL: list(refs)}
    if per_category and categories:
        by_cat: dict[str, list[str]] = {}
        for img in refs:
            by_cat.setdefault(categories.get(img, "unknown"), []).append(img)
        if len(by_cat) > 1:
            subsets.update({c: by_cat[c] for c in sorted(by_cat)})
    return subsets


def compute_scores(
    systems: dict[str, dict[str, str]],
    refs: dict[str, list[str]],
    categories: dict[str, str] | None = None,
    human: bool = True,
    per_category: bool = True,
    tokenize: bool = True,
    spice: bool = False,
    scorer: CocoScorer | None = None,
    progress: bool = False,
) -> dict:
    """Scores of every system (and ``human``) overall and per category, as the ``scores.json`` object.

    Args:
        systems: system name -> {image: caption} covering every image of ``refs``.
        refs: image -> reference captions (the scored split).
        categories: image -> category, for the per-category section (None: overall only).
        human: add the human-agreement ceiling as a column named ``human``.
        per_category: score each category on its own too.
        tokenize: PTB-tokenize (COCO evaluation); False scores the strings as they are.
        spice: try SPICE too (reported unavailable with the reason when it cannot run).
        scorer: an open :class:`CocoScorer` to reuse; one is opened and closed otherwise.
        progress: progress bar over the scoring jobs.
    """
    if not systems and not human:
        raise ConfigError("nothing to score: give at least one predictions file, or --human")
    if HUMAN in systems and human:
        raise ConfigError(f"system name {HUMAN!r} is reserved for the human ceiling; rename that system (--names)")
    for name, preds in systems.items():
        missing = [k for k in refs if k not in preds]
        if missing:
            raise DataError(f"system {name!r} has no caption for {len(missing)} image(s), e.g. {', '.join(missing[:3])}")
    t0 = time.perf_counter()
    subsets = _subsets(refs, categories, per_category)

    # 1. one job per (system, subset); human: one job per leave-one-out round and subset
    jobs, index = [], []
    for name, preds in systems.items():
        for sub, ids in subsets.items():
            jobs.append(({i: preds[i] for i in ids}, {i: refs[i] for i in ids}))
            index.append((name, sub))
    human_skipped: list[str] = []
    if human:
        for sub, ids in subsets.items():
            try:
                rounds = human_rounds({i: refs[i] for i in ids})
            except DataError:
                if sub == OVERALL:
                    raise
                human_skipped.append(sub)
                continue
            jobs.extend(rounds)
            index.extend([(HUMAN, sub)] * len(rounds))

    # 2. score everything in one session (one tokenizer pass, one METEOR JVM)
    metrics = ("bleu", "meteor", "rouge", "cider") + (("spice",) if spice else ())
    own = scorer is None
    scorer = scorer or CocoScorer(metrics, tokenize=tokenize)
    try:
        results = scorer.score_many(jobs, progress=progress, tokenize=tokenize)
    finally:
        if own:
            scorer.close()

    # 3. gather: average the human rounds
    gathered: dict[tuple[str, str], list[dict[str, float]]] = {}
    for key, res in zip(index, results, strict=True):
        gathered.setdefault(key, []).append(res)
    columns = list(systems) + ([HUMAN] if human else [])
    overall = {name: average_rounds(gathered[(name, OVERALL)]) for name in columns}
    per_cat = {}
    for sub, ids in subsets.items():
        if sub == OVERALL:
            continue
        per_cat[sub] = {
            "images": len(ids),
            "scores": {name: average_rounds(gathered[(name, sub)]) for name in columns if (name, sub) in gathered},
        }
    n_refs = [len(v) for v in refs.values()]
    metric_keys = list(METRIC_KEYS) + ([SPICE_KEY] if any(SPICE_KEY in s for s in overall.values()) else [])
    return {
        "schema": "segcap.scores/1",
        "metrics": metric_keys,
        "systems": columns,
        "overall": overall,
        "per_category": per_cat,
        "metadata": {
            "images": len(refs),
            "refs_per_image": {"min": min(n_refs), "max": max(n_refs), "mean": round(sum(n_refs) / len(n_refs), 3)},
            "categories": {c: n for c, n in sorted(Counter((categories or {}).get(i, "unknown") for i in refs).items())}
            if categories
            else {},
            "tokenize": tokenize,
            "human": (
                {
                    "method": "leave-one-out: round k scores reference k of each image against the other references; "
                    "mean over rounds",
                    "rounds": sum(1 for k in index if k == (HUMAN, OVERALL)),
                    "categories_without_ceiling": human_skipped,
                }
                if human
                else None
            ),
            "spice": scorer.spice_status if spice else "not requested",
            "scorers": scorer_versions(java=scorer.tokenize or "meteor" in scorer.metrics),
            "seconds": round(time.perf_counter() - t0, 3),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }


# ---------------------------------------------------------------------------------------------- markdown
def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _metric_table(scores: dict[str, dict[str, float]], columns: list[str], metrics: list[str]) -> list[str]:
    """Rows = metrics, columns = systems; the best system (not human) of each row in bold."""
    lines = ["| metric | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for m in metrics:
        vals = {c: scores.get(c, {}).get(m) for c in columns}
        system_vals = [v for c, v in vals.items() if c != HUMAN and v is not None]
        best = max(system_vals) if len(system_vals) > 1 else None
        cells = [f"**{_fmt(v)}**" if best is not None and v == best else _fmt(v) for v in vals.values()]
        lines.append(f"| {DISPLAY.get(m, m)} | " + " | ".join(cells) + " |")
    return lines


def render_markdown(scores: dict, title: str = "Caption scores") -> str:
    """The ``scores.md`` text: overall table, per-category CIDEr table, then each category's full table."""
    md = scores["metadata"]
    cols, metrics = scores["systems"], scores["metrics"]
    systems_only = [c for c in cols if c != HUMAN]
    rp = md["refs_per_image"]
    refs_txt = str(rp["min"]) if rp["min"] == rp["max"] else f"{rp['min']}-{rp['max']} (mean {rp['mean']})"
    where = f"split **{md['split']}**" if md.get("split") else "the given references"
    if md.get("category"):
        where += f", category **{md['category']}** only"
    lines = [
        f"# {title}",
        "",
        f"{where}: {md['images']} images, {refs_txt} references per image. "
        f"Scored with pycocoevalcap {md['scorers'].get('pycocoevalcap', '?')} "
        f"({'PTB tokenizer, ' if md['tokenize'] else 'no tokenization, '}BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr), "
        "as COCO caption evaluation computes them." + (" Best system of each row in bold." if len(systems_only) > 1 else ""),
    ]
    if md.get("human"):
        lines += [
            "",
            f"`{HUMAN}`: the human-agreement ceiling, each reference scored against the other references of its image "
            f"(leave-one-out, mean of {md['human']['rounds']} rounds).",
        ]
    if md.get("spice") not in (None, "not requested", "ok"):
        lines += ["", f"SPICE: {md['spice']}"]
    if md.get("predictions"):
        lines += ["", "Systems: " + "; ".join(f"`{n}` = {p}" for n, p in md["predictions"].items())]
    lines += ["", f"## Overall ({md['images']} images)", ""] + _metric_table(scores["overall"], cols, metrics)
    per = scores["per_category"]
    if per:
        lines += [
            "",
            "## Per category: CIDEr",
            "",
            "Each category scored on its own (CIDEr's IDF from that category's references, as a one-category test "
            "set would give).",
            "",
            "| category | images | " + " | ".join(cols) + " |",
            "| --- | ---: |" + " ---: |" * len(cols),
        ]
        for cat, entry in per.items():
            cells = [_fmt(entry["scores"].get(c, {}).get("CIDEr")) for c in cols]
            lines.append(f"| {cat} | {entry['images']} | " + " | ".join(cells) + " |")
        lines += ["", "## Per category: all metrics"]
        for cat, entry in per.items():
            lines += ["", f"### {cat} ({entry['images']} images)", ""]
            lines += _metric_table(entry["scores"], cols, metrics)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- chart
def render_chart(scores: dict, path: str | Path) -> Path:
    """Grouped bar chart: metrics x systems (CIDEr on its own axis), and per-category CIDEr when there are categories."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = scores["systems"]
    unit_metrics = [m for m in scores["metrics"] if m != "CIDEr"]
    per = scores["per_category"]
    systems = [c for c in cols if c != HUMAN]
    # one colour per system: tab10 up to 10, tab20 (paired shades) up to 20, then a continuous map
    cmap = plt.get_cmap("tab10" if len(systems) <= 10 else "tab20" if len(systems) <= 20 else "turbo")
    colors = {c: cmap(i if len(systems) <= 20 else i / max(1, len(systems) - 1)) for i, c in enumerate(systems)}
    colors[HUMAN] = (0.6, 0.6, 0.6, 1.0)

    def bars(ax, groups: list[str], value, ylabel: str, label_values: bool, ticks: list[str] | None = None):
        n = len(cols)
        width = 0.8 / n
        x = np.arange(len(groups))
        for j, c in enumerate(cols):
            vals = [value(g, c) for g in groups]
            pos = x + (j - (n - 1) / 2) * width
            rects = ax.bar(
                pos, [v if v is not None else 0 for v in vals], width, label=c, color=colors[c],
                hatch="//" if c == HUMAN else None, edgecolor="white" if c != HUMAN else "black", linewidth=0.5,
            )
            if label_values and len(groups) * n <= 40:
                ax.bar_label(rects, labels=[f"{v:.2f}" if v is not None else "" for v in vals], fontsize=6, rotation=90, padding=2)
        ax.set_xticks(x, ticks or [DISPLAY.get(g, g) for g in groups], rotation=0 if len(groups) <= 8 else 45,
                      ha="center" if len(groups) <= 8 else "right")
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)

    rows = 2 if per else 1
    width = min(18.0, max(9.0, 0.13 * len(per) * len(cols) + 4))  # wider for many categories x systems, capped
    fig = plt.figure(figsize=(width, 4.4 * rows), layout="constrained")
    grid = fig.add_gridspec(rows, 2, width_ratios=[len(unit_metrics), 1.6])
    ax1 = fig.add_subplot(grid[0, 0])
    bars(ax1, unit_metrics, lambda m, c: scores["overall"][c].get(m), "score", True)
    ax1.set_ylim(0, 1.12)
    ax1.set_title(f"Overall ({scores['metadata']['images']} images)")
    ax2 = fig.add_subplot(grid[0, 1])
    bars(ax2, ["CIDEr"], lambda m, c: scores["overall"][c].get(m), "CIDEr", True)
    top = max([scores["overall"][c].get("CIDEr", 0) for c in cols] + [0.1])
    ax2.set_ylim(0, top * 1.25)
    ax2.set_title("CIDEr (own scale)")
    handles, labels = ax1.get_legend_handles_labels()
    ax1.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(cols), 4))
    if per:
        ax3 = fig.add_subplot(grid[1, :])
        cats = list(per)
        ticks = [f"{g} ({per[g]['images']})" for g in cats]
        bars(ax3, cats, lambda g, c: per[g]["scores"].get(c, {}).get("CIDEr"), "CIDEr", False, ticks)
        ax3.set_title("CIDEr per category (images), each category scored on its own")
    split = scores["metadata"].get("split")
    fig.suptitle("Caption scores" + (f", split {split}" if split else ""), fontsize=12)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------------------------------------- files
def check_report_writable(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse (OutputExistsError) when ``out_dir`` already holds a report and ``overwrite`` is false."""
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite, what="scores folder", folder=True)  # a folder, writable, on a disk with room
    for name in REPORT_FILES:
        check_writable(out_dir / name, overwrite, what="scores file")
    return out_dir


def write_report(
    out_dir: str | Path,
    systems: dict[str, dict[str, str]],
    refs: dict[str, list[str]],
    categories: dict[str, str] | None = None,
    human: bool = True,
    overwrite: bool = False,
    metadata: dict | None = None,
    tokenize: bool = True,
    spice: bool = False,
    per_category: bool = True,
    scorer: CocoScorer | None = None,
    progress: bool = False,
) -> dict:
    """Score ``systems`` and write ``scores.json``, ``scores.md`` and ``scores.png`` (each atomically) in ``out_dir``.

    Args:
        out_dir: folder for the three files (created; existing scores are kept unless ``overwrite``).
        systems: name -> {image: caption}; one column each, in this order.
        refs: image -> reference captions.
        categories: image -> category (per-category sections), or None.
        human: add the human-agreement ceiling column.
        overwrite: replace existing scores files.
        metadata: extra metadata for ``scores.json`` (e.g. split, references path, predictions paths).
        tokenize: PTB-tokenize (COCO); False scores the strings as given.
        spice: try SPICE (reported unavailable with the reason when it cannot run).
        per_category: also score each category alone.
        scorer: an open :class:`evaluation.metrics.CocoScorer` to reuse.
        progress: progress bar over the scoring jobs.

    Returns:
        the ``scores.json`` object.
    """
    out_dir = check_report_writable(out_dir, overwrite)
    scores = compute_scores(systems, refs, categories, human, per_category, tokenize, spice, scorer, progress)
    scores["metadata"].update(metadata or {})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "scores.json", scores)
    write_text(out_dir / "scores.md", render_markdown(scores))
    render_chart(scores, out_dir / "scores.png")
    return scores
