"""Neighbours by composition: the training images whose compositions are closest, and their captions.

The retrieval-augmented prompt (``retrieval_k > 0`` in :mod:`llm.finetune`, after SmallCap, Ramos et al. 2023) and the
nearest-neighbour baseline both read this index. A composition record becomes the vector of
:func:`composition.features.vector` (per class: share, log regions, centroid, log elongation, radius), standardised by
the training images' mean and standard deviation; neighbours are the closest in Euclidean distance. Each training
image keeps its captions ordered by consensus (:func:`consensus_order`: the one sharing most words with its siblings
first), so "one caption per neighbour" is the caption its references agree on.

Scenes. When the training records carry scenes (a scene head on the segmenter, ``segcap.composition/2``), each vector
gets one more column per scene name seen in them (:func:`composition.features.scene_vector`: the record's probability
of that scene, 0 when it does not list it). Those columns are not standardised but multiplied by
:func:`scene_weight` ``w = sqrt(sum of the variances of the standardised composition columns)`` (about the square root
of the number of composition features that vary), so that a change of scene from one certain class to another
(``|p - q|^2 = 2``, squared distance ``2 w^2``) weighs as much as the mean squared distance between two training
compositions (which is ``2 sum var``): as much as two unrelated images' compositions differ. A scene that moves 10
points of probability moves the distance as a tenth of that. Without scenes in the training records there are no
scene columns, and every vector and distance is what it was before scenes existed.

    index = CompositionIndex(["pond_1.jpg", ...], train_records, train_captions)
    index.neighbours([record], k=3, exclude=True)     # [[Neighbour(image, distance, captions), ...]]
    index.save(model_dir / "retrieval.npz"); CompositionIndex.load(model_dir / "retrieval.npz")

An image is never its own neighbour when ``exclude`` is on (matched by filename stem): a training prompt shows the
captions of *other* images, as the test prompts will.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from composition.features import PER_CLASS, scene_names, scene_vector, vector
from segcap.errors import DataError

INDEX_FILE = "retrieval.npz"  # in every model folder (llm.finetune): retrieval prompts and the consensus pool read it


def consensus_order(captions: Sequence[str]) -> list[str]:
    """``captions`` ordered by agreement with their siblings, highest first (ties keep the given order).

    Agreement of caption i: the sum over the others j of |words(i) & words(j)| / |words(i)| (bags of lowercased
    words), so the caption whose words the other references repeat comes first.
    """
    captions = list(captions)
    if len(captions) < 2:
        return captions
    bags = [Counter(c.lower().split()) for c in captions]

    def agreement(i: int) -> float:
        size = max(1, sum(bags[i].values()))
        return sum(sum((bags[i] & bags[j]).values()) / size for j in range(len(bags)) if j != i)

    scores = [agreement(i) for i in range(len(captions))]
    return [captions[i] for i in sorted(range(len(captions)), key=lambda i: (-scores[i], i))]


def _stem(name: str) -> str:
    return Path(name).stem


@dataclass(frozen=True)
class Neighbour:
    """One retrieved training image: its filename, standardised distance and captions (consensus first)."""

    image: str
    distance: float
    captions: list[str]


class CompositionIndex:
    """Training compositions as standardised vectors, with each image's captions in consensus order.

    Args:
        names: the training images' filenames (the caption set's), one per record.
        records: their composition records (segcap.composition/1 or /2; scenes, when they have them, count too).
        captions: their reference captions, one list per image.
        num_classes: length of the class table; a query's class id beyond it is an error (compositions of another
            class table). Default: the largest class id in ``records`` + 1, and a query's classes beyond it are left
            out, as no training image has them.
    """

    def __init__(self, names: Sequence[str], records: Sequence[dict], captions: Sequence[Sequence[str]],
                 num_classes: int | None = None):
        if not records:
            raise DataError("retrieval needs at least one training composition; the training split has none")
        if not len(names) == len(records) == len(captions):
            raise ValueError(f"{len(names)} names, {len(records)} records and {len(captions)} caption lists differ")
        self.strict = num_classes is not None
        self.num_classes = int(num_classes or 1 + max((c["id"] for r in records for c in r["classes"]), default=0))
        self.scenes = scene_names(records)
        raw = np.stack([self._vector(r) for r in records]).astype(np.float64)  # (N, F + S)
        self._setup(list(names), raw, [consensus_order(c) for c in captions], self.scenes)

    def _setup(self, names: list[str], raw: np.ndarray, captions: list[list[str]], scenes: Sequence[str] = ()) -> None:
        self.names, self.raw, self.captions, self.scenes = names, raw, captions, list(scenes)
        self.stems = np.array([_stem(n) for n in names])
        comp = raw[:, : raw.shape[1] - len(self.scenes)]  # (N, F) the composition columns
        self.mean, self.std = comp.mean(0), comp.std(0) + 1e-6
        self.scene_weight = scene_weight(comp, self.mean, self.std) if self.scenes else 0.0
        if self.scenes:  # (S,) scene columns: not standardised, times the weight
            self.mean = np.concatenate([self.mean, np.zeros(len(self.scenes))])
            self.std = np.concatenate([self.std, np.full(len(self.scenes), 1.0 / self.scene_weight)])
        self.x = (raw - self.mean) / self.std  # (N, F + S)
        self.sq = (self.x**2).sum(1)  # (N,)

    def _vector(self, record: dict) -> np.ndarray:
        if self.strict:  # composition.features says which record has an id outside the table
            comp = vector(record, self.num_classes)
        else:
            known = {**record, "classes": [c for c in record["classes"] if 0 <= c["id"] < self.num_classes]}
            comp = vector(known, self.num_classes)
        return np.concatenate([comp, scene_vector(record, self.scenes)]) if self.scenes else comp

    def __len__(self) -> int:
        return len(self.names)

    def distances(self, records: Sequence[dict]) -> np.ndarray:
        """(M, N) squared standardised distances of each query record to every training image."""
        q = (np.stack([self._vector(r) for r in records]) - self.mean) / self.std  # (M, F)
        # without an (M, N, F) tensor: |q|^2 - 2 q.x + |x|^2
        return np.maximum((q**2).sum(1)[:, None] - 2 * q @ self.x.T + self.sq[None, :], 0.0)

    def neighbours(self, records: Sequence[dict], k: int, exclude: bool = True,
                   batch: int = 1024) -> list[list[Neighbour]]:
        """The ``k`` closest training images of each record, closest first (ties: index order).

        With ``exclude``, a training image of the record's own filename stem is never returned.
        """
        out: list[list[Neighbour]] = []
        k = min(k, len(self) - (1 if exclude else 0))
        for start in range(0, len(records), batch):
            chunk = records[start : start + batch]
            d = self.distances(chunk)  # (m, N)
            if exclude:
                own = self.stems[None, :] == np.array([_stem(r.get("image", "")) for r in chunk])[:, None]
                d = np.where(own, np.inf, d)
            for row in d:
                idx = np.argsort(row, kind="stable")[:k] if k > 0 else []
                out.append([Neighbour(self.names[i], float(np.sqrt(row[i])), self.captions[i]) for i in idx])
        return out

    # ------------------------------------------------------------------ file
    def save(self, path: Path, captions_per_image: int | None = None) -> Path:
        """Write the index (names, raw vectors, captions: the first ``captions_per_image`` of each) to ``path``."""
        caps = [c[:captions_per_image] if captions_per_image else c for c in self.captions]
        width = max(1, max(len(c) for c in caps))
        table = np.array([c + [""] * (width - len(c)) for c in caps], dtype=str)  # (N, width)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp.npz")
        scenes = {"scenes": np.array(self.scenes, dtype=str)} if self.scenes else {}  # none: the file as before
        np.savez_compressed(tmp, names=np.array(self.names, dtype=str), raw=self.raw.astype(np.float32),
                            captions=table, num_classes=np.array(self.num_classes), per_class=np.array(PER_CLASS),
                            **scenes)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> CompositionIndex:
        """An index written by :meth:`save`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                names, raw, table = [str(n) for n in z["names"]], z["raw"].astype(np.float64), z["captions"]
                num_classes = int(z["num_classes"])
                scenes = [str(n) for n in z["scenes"]] if "scenes" in z.files else []
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{path}: not a retrieval index written by llm.finetune ({e}); train the model again") from e
        self = cls.__new__(cls)
        self.num_classes, self.strict = num_classes, False
        self._setup(names, raw, [[str(c) for c in row if str(c)] for row in table], scenes)
        return self


def scene_weight(comp: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """The factor of the scene columns: ``sqrt(sum of the variances of the standardised composition columns)`` of
    the training vectors ``comp`` (N, F), at least 1 (see the module docstring)."""
    return float(max(1.0, np.sqrt((((comp - mean) / std) ** 2).mean(0).sum())))
