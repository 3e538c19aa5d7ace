"""Prompt/caption examples: compositions joined with a caption set, rendered through the prompt template.

A composition record (``segcap.composition/1`` or ``/2``, one JSON line per image) is joined with the caption set's image of the
same filename **stem** (``pond_12.jpg`` and ``pond_12.png`` both join ``pond_12``). Each of the image's captions is a
training target, except blank ones (no letter or digit); exact duplicate (prompt, caption) pairs are dropped, as the
seed did.

The prompt is the configured template (``{instruction}``, ``{composition}``, ``{neighbours}``) with the composition
text from :func:`composition.text.to_prompt`. ``prompt_mode="blind"`` renders the same template with the composition
text removed: the "blind LM" baseline, which shows how much of a score comes from the caption prior alone.

Records with scenes (a scene head on the segmenter) start their text with a scene line (``scene: airplane 93%, ...``).
The modes that take the text apart measure what each half gives (issue 23's ablation):

============  ==========================================================================================
mode          the ``{composition}`` placeholder holds
============  ==========================================================================================
full          the whole text: scene line (when the record has scenes) and the classes and relations
composition   the classes and relations only, without the scene line (for a record without scenes: as full)
scene         the scene line only (for a record without scenes: nothing, as blind)
blind         nothing
============  ==========================================================================================

With ``retrieval_k > 0`` the ``{neighbours}`` line carries the captions of the k training images whose compositions
are closest (:mod:`llm.retrieval`; an image is never its own neighbour), ``retrieval_captions`` per neighbour, after
``neighbours_label``: ``Similar images: a pond surrounded by trees . | many buildings are near a road .`` Blind with
retrieval is the retrieval-only ablation: what the neighbours alone give, without the composition text.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from aerialdata.captionset import CaptionDataset, is_blank
from composition.text import split_prompt, to_prompt
from llm.retrieval import CompositionIndex
from segcap.errors import ConfigError, DataError
from segcap.options import NonNegativeInt, PositiveInt, field_problems

PromptMode = Literal["full", "composition", "scene", "blind"]
CaptionsPerImage = Literal["all", "sample", "fixed"]

DEFAULT_INSTRUCTION = "Describe the aerial image whose segmentation is summarised below in one sentence."
DEFAULT_TEMPLATE = "{instruction}\n{composition}\n{neighbours}\nCaption:"
DEFAULT_NEIGHBOURS_LABEL = "Similar images:"
NEIGHBOUR_SEPARATOR = " | "
PLACEHOLDERS = ("instruction", "composition", "neighbours")


def _default_render(record: dict) -> str:
    """The composition text of ``record`` (imported lazily: :mod:`composition.text` owns the wording)."""

    return to_prompt(record)


def stem(name: str) -> str:
    """The join key of an image or record name: ``Path(name).stem``."""
    return Path(name).stem


@dataclass(frozen=True)
class PromptTemplate:
    """The prompt the LM reads: ``template`` with ``{instruction}``, ``{composition}`` and ``{neighbours}`` filled in.

    Blank lines are dropped after filling, so that the blind prompt (composition text removed) and a prompt without
    retrieval (``retrieval_k = 0``) have no hole. The caption follows the prompt after one space:
    ``"...Caption: a pond surrounded by trees ."``
    """

    instruction: str = DEFAULT_INSTRUCTION
    template: str = DEFAULT_TEMPLATE
    mode: PromptMode = "full"
    retrieval_k: NonNegativeInt = 0  # neighbours whose captions the prompt carries (0: none)
    retrieval_captions: PositiveInt = 1  # captions per neighbour, consensus first
    neighbours_label: str = DEFAULT_NEIGHBOURS_LABEL

    def problems(self) -> list[str]:
        """Everything wrong with this template (empty list when it is usable)."""
        out = field_problems(self)  # mode, retrieval_k, retrieval_captions
        try:
            names = {f[1] for f in string.Formatter().parse(self.template) if f[1] is not None}
        except ValueError as e:
            return out + [f"prompt_template {self.template!r} is not a valid format string ({e})"]
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            out.append(
                f"prompt_template uses unknown placeholder(s) {', '.join('{' + u + '}' for u in unknown)}; "
                f"allowed: {{instruction}}, {{composition}}, {{neighbours}}"
            )
        if isinstance(self.retrieval_k, int) and self.retrieval_k > 0 and "neighbours" not in names:
            out.append("retrieval_k > 0 but prompt_template lacks {neighbours}: the retrieved captions would not be "
                       "shown; add a {neighbours} line, e.g. \"{instruction}\\n{composition}\\n{neighbours}\\nCaption:\"")
        if "composition" not in names:
            out.append("prompt_template lacks {composition}: the model would never see the composition text")
        if not self.template.strip():
            out.append("prompt_template is empty")
        return out

    @property
    def retrieves(self) -> bool:
        return self.retrieval_k > 0

    def neighbours_text(self, captions: Sequence[Sequence[str]]) -> str:
        """The ``{neighbours}`` line: the label, then ``retrieval_captions`` captions of each neighbour, closest
        first, joined by `` | `` (empty without retrieval)."""
        if not self.retrieves:
            return ""
        shown = [normalise_caption(c) for caps in captions[: self.retrieval_k] for c in caps[: self.retrieval_captions]]
        return f"{self.neighbours_label} {NEIGHBOUR_SEPARATOR.join(shown)}".strip() if shown else ""

    def render_text(self, composition_text: str, neighbours: Sequence[Sequence[str]] = ()) -> str:
        """The prompt of one image: its composition text (as the mode says: all, without the scene line, the scene line
        only, or nothing) and its neighbours' captions."""
        scene, clauses = split_prompt(composition_text)
        text = {"full": composition_text, "composition": clauses, "scene": scene, "blind": ""}[self.mode]
        filled = self.template.format(instruction=self.instruction, composition=text,
                                      neighbours=self.neighbours_text(neighbours))
        return "\n".join(line.rstrip() for line in filled.split("\n") if line.strip())

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ImageExamples:
    """One image's prompt and its (deduplicated) target captions."""

    image: str  # the caption set's filename (the image_id of predictions)
    split: str
    prompt: str
    captions: list[str] = field(default_factory=list)


def normalise_caption(text: str, lowercase: bool = True) -> str:
    """One line, single spaces, optionally lowercased (COCO scoring is case-insensitive)."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def join_records(
    records: Sequence[dict],
    captions: CaptionDataset,
    splits: Iterable[str],
    source: str | Path = "compositions",
    allow_missing: bool = False,
) -> list[tuple[dict, object]]:
    """Pair each caption-set image of ``splits`` with its composition record (by filename stem), in caption-set order.

    Raises:
        DataError: a record names an image the caption set lacks, two records share a stem, or an image of
            ``splits`` has no record (unless ``allow_missing``, which skips those images). The message says how many,
            and names a few.
    """
    splits = list(splits)
    by_stem: dict[str, dict] = {}
    dupes: list[str] = []
    for i, rec in enumerate(records):
        name = rec.get("image") if isinstance(rec, dict) else None
        if not isinstance(name, str) or not name:
            raise DataError(f"{source}: record {i} has no 'image' name; expected segcap.composition/1 records")
        key = stem(name)
        if key in by_stem:
            dupes.append(name)
        by_stem[key] = rec
    if dupes:
        raise DataError(
            f"{source}: {len(dupes)} image stem(s) appear more than once, e.g. {_few(dupes)}; "
            "write one composition per image"
        )
    all_stems = {stem(it.filename) for it in captions.items}
    unknown = [rec["image"] for key, rec in by_stem.items() if key not in all_stems]
    if unknown:
        raise DataError(
            f"{source}: {len(unknown)} of {len(by_stem)} composition(s) name images that {captions.json_path} lacks, "
            f"e.g. {_few(unknown)}; the compositions and the caption set must come from the same images "
            "(joined by filename stem)"
        )
    pairs, missing = [], []
    for it in captions.items:
        if it.split not in splits:
            continue
        rec = by_stem.get(stem(it.filename))
        if rec is None:
            missing.append(it.filename)
        else:
            pairs.append((rec, it))
    if missing and not allow_missing:
        total = len(missing) + len(pairs)
        raise DataError(
            f"{source}: {len(missing)} of {total} {'/'.join(splits)} image(s) of {captions.json_path} have no "
            f"composition, e.g. {_few(missing)}; run composition.extract on every image of the caption set "
            "(or pass --allow-missing to skip them)"
        )
    if not pairs:
        raise DataError(f"{source}: no composition matches an image of split(s) {', '.join(splits)} in {captions.json_path}")
    return pairs


def _few(names: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(str(x) for x in list(names)[:n])
    return shown + (f" (and {len(names) - n} more)" if len(names) > n else "")


def build_image_examples(
    records: Sequence[dict],
    captions: CaptionDataset,
    split: str,
    template: PromptTemplate,
    lowercase: bool = True,
    render: Callable[[dict], str] | None = None,
    source: str | Path = "compositions",
    allow_missing: bool = False,
    index: CompositionIndex | None = None,
) -> tuple[list[ImageExamples], int]:
    """Per-image examples of one split, exact duplicate (prompt, caption) pairs dropped across the split.

    With a retrieving ``template``, ``index`` gives each image's neighbours (never the image itself).

    Blank captions (:func:`aerialdata.captionset.is_blank`) are no examples; an image without another caption is
    left out.

    Returns:
        (images, dropped): the images that keep at least one caption, and how many pairs were dropped as duplicates.
    """
    render = render or _default_render
    seen: set[tuple[str, str]] = set()
    out, dropped = [], 0
    pairs = join_records(records, captions, [split], source, allow_missing)
    if template.retrieves and index is None:
        raise ValueError("a retrieving prompt template needs the training images' CompositionIndex")
    near = index.neighbours([rec for rec, _ in pairs], template.retrieval_k) if template.retrieves else None
    for n, (rec, item) in enumerate(pairs):
        prompt = template.render_text(render(rec), [nb.captions for nb in near[n]] if near else ())
        kept = []
        for raw in item.sentences:
            cap = normalise_caption(raw, lowercase)
            if is_blank(cap):  # empty, or no letter or digit: llm.finetune notes them (and refuses a split of them)
                continue
            if (prompt, cap) in seen:
                dropped += 1
                continue
            seen.add((prompt, cap))
            kept.append(cap)
        if kept:
            out.append(ImageExamples(item.filename, item.split, prompt, kept))
    return out, dropped


class CaptionExamples:
    """(prompt, caption) pairs for training, from per-image examples.

    ``per_image="all"``: every kept caption is an example. ``"sample"``: one caption per image, drawn anew each
    epoch (call :meth:`set_epoch`). ``"fixed"``: one caption per image, drawn once from ``seed``.
    """

    def __init__(self, images: Sequence[ImageExamples], per_image: CaptionsPerImage = "all", seed: int = 0):
        if per_image not in ("all", "sample", "fixed"):
            raise ConfigError(f"captions_per_image {per_image!r} is not one of all, sample, fixed")
        self.images = list(images)
        self.per_image = per_image
        self.seed = seed
        self.epoch = 0
        if per_image == "all":
            self._index = [(i, j) for i, im in enumerate(self.images) for j in range(len(im.captions))]
        else:
            self._index = [(i, None) for i in range(len(self.images))]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, k: int) -> tuple[str, str]:
        i, j = self._index[k]
        im = self.images[i]
        if j is None:
            epoch = self.epoch if self.per_image == "sample" else 0
            j = random.Random(f"{self.seed}:{epoch}:{i}").randrange(len(im.captions))
        return im.prompt, im.captions[j]
