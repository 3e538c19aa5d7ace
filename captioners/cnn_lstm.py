"""Show, Attend and Tell (Xu et al., 2015): a CNN's spatial feature map, an LSTM decoder with soft attention over it.

    image (S x S) --trunk (torchvision, cut at encoder_stride)--> (C, h, w)
      --adapter (always trained: conv 3x3 + BN + ReLU to D channels, average pool to at most grid x grid cells,
        conv 3x3 + BN + ReLU)--> L = g*g locations of D features
      --LSTM with soft attention, one word a step--> caption

Each step (nanoGPT-style shapes; B images, L locations, D features, H hidden, V words):

1. attention: e = w . tanh(W_f f + W_h h)  (B, L);  alpha = softmax(e)  (B, L)
2. context:   z = sigmoid(W_b h) * sum_l alpha_l f_l  (B, D)   (the paper's gating scalar, per feature here)
3. LSTM:      h, c = LSTMCell([embed(word), z], (h, c))  (B, H);  logits = W_o dropout(h)  (B, V)

The initial (h, c) come from the mean feature; the loss adds the paper's doubly stochastic term
``alpha_c * mean((1 - sum_t alpha_t)^2)``, which asks every location to be looked at about once over a caption.
Decoding is greedy or beam search (:func:`beam_search`; width 1 gives greedy's caption exactly). Trained by
captioners.train through :class:`CnnLstmJob` (a frozen trunk's features are computed once and cached).
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aerialdata.captionset import CaptionImage
from captioners.base import Captioner, Job, flatten
from captioners.data import CACHE_BYTES, ImageStore, resize
from captioners.encoders import (
    CALIBRATION_IMAGES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_trunk,
    calibrate_batchnorm,
    encoder_weights_problems,
)
from captioners.text import END_ID, PAD_ID, START_ID, UNK_ID, VOCAB_FILE, Vocabulary
from segcap.errors import DataError, one_line, weights_file_problem
from segcap.progress import Progress

WEIGHTS_FILE = "model.pt"
NEG = float("-inf")


@dataclass(frozen=True)
class CnnLstmOptions:
    """What rebuilds a CNN+LSTM (recorded in captioner.yaml)."""

    encoder: str = "mobilenet_v2"
    encoder_stride: int = 8
    image_size: int = 128
    attention_grid: int = 6
    feature_dim: int = 128
    embed_dim: int = 64
    hidden_dim: int = 256
    attention_dim: int = 64
    dropout: float = 0.5
    max_length: int = 30
    length_penalty: float = 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def pixels(images: list[np.ndarray] | np.ndarray, size: int) -> torch.Tensor:
    """Images (H, W, 3) uint8 RGB -> (B, 3, size, size) float, ImageNet-normalised."""
    arr = np.stack([resize(im, size) for im in images]) if isinstance(images, list) else images
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class AttentionDecoder(nn.Module):
    """The LSTM with soft attention (module docstring, steps 1-3)."""

    def __init__(self, vocab_size: int, feature_dim: int, embed_dim: int, hidden_dim: int, attention_dim: int,
                 dropout: float):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=PAD_ID)
        self.att_feat = nn.Linear(feature_dim, attention_dim)
        self.att_hidden = nn.Linear(hidden_dim, attention_dim)
        self.att_score = nn.Linear(attention_dim, 1)
        self.init_h = nn.Linear(feature_dim, hidden_dim)
        self.init_c = nn.Linear(feature_dim, hidden_dim)
        self.gate = nn.Linear(hidden_dim, feature_dim)
        self.lstm = nn.LSTMCell(embed_dim + feature_dim, hidden_dim)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def start(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(h, c, projected features) for features (B, L, D)."""
        mean = feats.mean(1)  # (B, D)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean)), self.att_feat(feats)

    def step(self, feats, proj, h, c, words):
        """One word for each row: returns logits (B, V), h, c and the attention weights (B, L)."""
        e = self.att_score(torch.tanh(proj + self.att_hidden(h).unsqueeze(1))).squeeze(-1)  # (B, L)
        alpha = torch.softmax(e, dim=1)  # (B, L)
        z = torch.sigmoid(self.gate(h)) * torch.bmm(alpha.unsqueeze(1), feats).squeeze(1)  # (B, D)
        h, c = self.lstm(torch.cat([self.embed(words), z], dim=1), (h, c))  # (B, H)
        return self.out(self.drop(h)), h, c, alpha

    def forward(self, feats: torch.Tensor, captions: torch.Tensor) -> tuple[torch.Tensor, int, torch.Tensor]:
        """Teacher forcing over captions (B, T) of ids (``<start>`` ... ``<end>``, ``<pad>`` after): returns the summed
        cross-entropy of every next word, the number of words predicted, and the attention each location received
        over the caption (B, L), in the order of ``captions``.

        Rows are sorted by length and step t runs only the rows still inside their caption (Show, Attend and Tell's
        own trick), so padding costs nothing.
        """
        steps = (captions != PAD_ID).sum(1) - 1  # (B,) words to predict per row
        order = steps.argsort(descending=True)
        feats, captions, steps = feats[order], captions[order], steps[order]
        h, c, proj = self.start(feats)
        b, n_loc = feats.shape[0], feats.shape[1]
        ce = feats.new_zeros(())
        seen = []
        for t in range(int(steps[0])):
            bt = int((steps > t).sum())  # rows still running: a prefix, as rows are sorted
            logits, h, c, alpha = self.step(feats[:bt], proj[:bt], h[:bt], c[:bt], captions[:bt, t])
            ce = ce + F.cross_entropy(logits, captions[:bt, t + 1], reduction="sum")
            seen.append(F.pad(alpha, (0, 0, 0, b - bt)))  # (B, L)
        attention = torch.stack(seen).sum(0) if seen else feats.new_zeros(b, n_loc)
        return ce, int(steps.sum()), attention[order.argsort()]


class CnnLstm(nn.Module):
    """Trunk + adapter + attention decoder. ``encoder_weights`` only matters when the model is first built."""

    def __init__(self, opts: CnnLstmOptions, vocab_size: int, encoder_weights: str | Path | None = None):
        super().__init__()
        self.opts = opts
        self.trunk, channels, self.weights_source = build_trunk(opts.encoder, opts.encoder_stride, encoder_weights)
        d = opts.feature_dim
        self.reduce = nn.Sequential(nn.Conv2d(channels, d, 3, padding=1, bias=False), nn.BatchNorm2d(d),
                                    nn.ReLU(inplace=True))
        self.adapter = nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), nn.BatchNorm2d(d),
                                     nn.ReLU(inplace=True))
        self.decoder = AttentionDecoder(vocab_size, d, opts.embed_dim, opts.hidden_dim, opts.attention_dim,
                                        opts.dropout)

    def features(self, trunk_map: torch.Tensor) -> torch.Tensor:
        """Trunk map (B, C, h, w) -> attention features (B, L, D): conv at the trunk's resolution, average pool
        down to at most ``attention_grid`` cells a side, conv again."""
        f = self.reduce(trunk_map)  # (B, D, h, w)
        g = self.opts.attention_grid
        if f.shape[-1] > g or f.shape[-2] > g:
            f = F.adaptive_avg_pool2d(f, (min(g, f.shape[-2]), min(g, f.shape[-1])))
        return self.adapter(f).flatten(2).transpose(1, 2)  # (B, L, D)

    def loss(self, feats: torch.Tensor, captions: torch.Tensor, alpha_c: float = 1.0
             ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(loss to minimise, summed cross-entropy of the words, number of words) for captions (B, T) of ids."""
        ce, n, attention = self.decoder(feats, captions)
        reg = ((1.0 - attention) ** 2).mean()  # doubly stochastic attention: each location looked at about once
        return ce / max(n, 1) + alpha_c * reg, ce.detach(), n


@torch.no_grad()
def greedy(decoder: AttentionDecoder, feats: torch.Tensor, max_length: int) -> list[list[int]]:
    """The most probable word each step until ``<end>`` (at most ``max_length`` words)."""
    b = feats.shape[0]
    h, c, proj = decoder.start(feats)
    words = torch.full((b,), START_ID, dtype=torch.long, device=feats.device)
    out = torch.empty((b, 0), dtype=torch.long, device=feats.device)
    ended = torch.zeros(b, dtype=torch.bool, device=feats.device)
    for t in range(max_length + 1):
        logits, h, c, _ = decoder.step(feats, proj, h, c, words)
        logp = _word_logp(logits, last=t == max_length, first=t == 0)
        words = logp.argmax(-1)
        out = torch.cat([out, words.unsqueeze(1)], 1)
        ended |= words == END_ID
        if bool(ended.all()):
            break
    return [_until_end(row) for row in out.tolist()]


@torch.no_grad()
def beam_search(decoder: AttentionDecoder, feats: torch.Tensor, width: int, max_length: int,
                length_penalty: float = 1.0) -> list[list[int]]:
    """Beam search of ``width`` per image, all images at once.

    Every step each live beam is extended by every word and the ``width`` best (sum of log-probabilities) are kept;
    a beam that ends with ``<end>`` is set aside, and an image is done when ``width`` beams have ended. The caption is
    the ended beam with the best score / length ** ``length_penalty``. Width 1 is greedy decoding.
    """
    b, k = feats.shape[0], width
    feats = feats.repeat_interleave(k, 0)  # (B*k, L, D)
    h, c, proj = decoder.start(feats)
    words = torch.full((b * k,), START_ID, dtype=torch.long, device=feats.device)
    scores = torch.full((b, k), NEG, device=feats.device)
    scores[:, 0] = 0.0  # one live beam at the start
    seqs = torch.empty((b, k, 0), dtype=torch.long, device=feats.device)  # (B, k, t)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    count = torch.zeros(b, dtype=torch.long, device=feats.device)  # ended beams per image
    done = torch.zeros(b, dtype=torch.bool, device=feats.device)
    base = (torch.arange(b, device=feats.device) * k).unsqueeze(1)  # (B, 1)
    for t in range(max_length + 1):
        logits, h, c, _ = decoder.step(feats, proj, h, c, words)
        logp = _word_logp(logits, last=t == max_length, first=t == 0)  # (B*k, V)
        v = logp.shape[-1]
        cand = (scores.unsqueeze(-1) + logp.view(b, k, v)).view(b, k * v)  # (B, k*V)
        top, idx = cand.topk(k, dim=1)  # (B, k)
        beam, word = idx // v, idx % v
        seqs = torch.cat([seqs.gather(1, beam.unsqueeze(-1).expand(-1, -1, t)), word.unsqueeze(-1)], -1)
        flat = (beam + base).view(-1)
        h, c = h[flat], c[flat]
        scores = top.clone()
        ended = (word == END_ID) & torch.isfinite(top) & ~done.unsqueeze(1)  # (B, k)
        if bool(ended.any()):
            for i, j in ended.nonzero().tolist():
                finished[i].append((float(top[i, j]) / (t + 1) ** length_penalty, seqs[i, j, :-1].tolist()))
            count += ended.sum(1)
        scores[word == END_ID] = NEG  # an ended beam is not extended
        done |= (count >= k) | ~torch.isfinite(scores).any(1)
        if bool(done.all()):
            break
        words = word.view(-1)
    return [max(f, key=lambda s: s[0])[1] if f else _until_end(seqs[i, 0].tolist()) for i, f in enumerate(finished)]


def _word_logp(logits: torch.Tensor, last: bool, first: bool = False) -> torch.Tensor:
    """Log-probabilities of the next word: never ``<pad>``, ``<start>`` or ``<unk>`` (which would not be written);
    not ``<end>`` as the first word (a caption has at least one); only ``<end>`` after the last word."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    logp[:, PAD_ID] = NEG
    logp[:, START_ID] = NEG
    logp[:, UNK_ID] = NEG
    if first:
        logp[:, END_ID] = NEG
    if last:
        keep = logp[:, END_ID].clone()
        logp.fill_(NEG)
        logp[:, END_ID] = keep
    return logp


def _until_end(ids: list[int]) -> list[int]:
    return ids[: ids.index(END_ID)] if END_ID in ids else ids


class CnnLstmCaptioner(Captioner):
    """A trained CNN+LSTM (model.pt + vocab.json + captioner.yaml)."""

    arch = "cnn-lstm"

    def __init__(self, model: CnnLstm, vocab: Vocabulary, folder: str | Path, device: torch.device):
        super().__init__(folder, device, model.opts.max_length)
        self.model = model.to(device).eval()
        self.vocab = vocab

    @classmethod
    def load(cls, folder: str | Path, device: torch.device, options: dict | None = None) -> CnnLstmCaptioner:
        folder, options = Path(folder), options or {}
        known = CnnLstmOptions.__dataclass_fields__
        opts = CnnLstmOptions(**{k: v for k, v in options.items() if k in known})
        vocab = Vocabulary.load(folder / VOCAB_FILE)
        model = CnnLstm(opts, len(vocab))
        path = folder / WEIGHTS_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except FileNotFoundError as e:
            raise DataError(f"{path}: weights not found; the model folder is incomplete: copy the whole folder "
                            "again, or train it again (python -m captioners.train)") from e
        except (RuntimeError, OSError, ValueError, EOFError, KeyError, pickle.UnpicklingError) as e:
            raise DataError(f"{path}: not a readable weights file: {weights_file_problem(e, path.stat().st_size)}; "
                            "copy the model folder again, or train it again (python -m captioners.train)") from e
        try:
            model.load_state_dict(state)
        except (RuntimeError, ValueError, TypeError, AttributeError) as e:
            raise DataError(f"{path}: the weights do not fit the cnn-lstm that captioner.yaml describes "
                            f"({one_line(e)}); keep the model.pt and captioner.yaml of one training run together, "
                            "or train it again") from e
        return cls(model, vocab, folder, device)

    @property
    def module(self) -> nn.Module:
        return self.model

    def encode(self, images: list[np.ndarray]) -> torch.Tensor:
        """Attention features (B, L, D) of images."""
        x = pixels(images, self.model.opts.image_size).to(self.device)
        return self.model.features(self.model.trunk(x))

    def _caption_batch(self, images, num_beams, max_length):
        feats = self.encode(images)
        if num_beams == 1:
            ids = greedy(self.model.decoder, feats, max_length)
        else:
            ids = beam_search(self.model.decoder, feats, num_beams, max_length, self.model.opts.length_penalty)
        return [self.vocab.decode(row) for row in ids]


class CnnLstmJob(Job):
    """captioners.train's cnn-lstm: the trunk frozen (its features cached once, random BatchNorm statistics estimated
    on the training images first) or trained, the adapter and the decoder trained with the attention term."""

    freeze_encoder = True  # training the backbone is slow on CPU
    loss_name = "cross-entropy per word"

    @classmethod
    def problems(cls, o, defaults):
        out = encoder_weights_problems(o["encoder"], o["encoder_weights"])  # encoder and grid: main's types
        if o["image_size"] // o["encoder_stride"] < 1:
            out.append(f"image_size {o['image_size']} is smaller than encoder_stride {o['encoder_stride']}")
        return out

    @classmethod
    def builds_vocabulary(cls, o):
        return True

    @classmethod
    def learning_rate(cls, o):
        return 4e-3

    def __init__(self, o: dict, train: list[CaptionImage], device: torch.device):
        self.device, self.freeze, self.alpha_c = device, o["freeze_encoder"], o["alpha_c"]
        self.opts = CnnLstmOptions(**{k: o[k] for k in CnnLstmOptions.__dataclass_fields__ if k in o})
        self.vocab = Vocabulary.build((s for it in train for s in it.sentences), o["min_count"])
        self.module = self.model = CnnLstm(self.opts, len(self.vocab), o["encoder_weights"]).to(device)
        if self.freeze:
            self.model.trunk.requires_grad_(False)
        self.items: dict[str, list[CaptionImage]] = {}
        self.images: dict[str, ImageStore] = {}
        self.features: dict[str, torch.Tensor] = {}  # (N, C, h, w) half floats: the frozen trunk's output
        self.ids: dict[str, list[list[list[int]]]] = {}
        self.calibrated = 0

    def describe(self) -> str:
        mode = "frozen, features cached" if self.freeze else "trained"
        return (f"{self.opts.encoder} trunk to stride {self.opts.encoder_stride} ({self.model.weights_source} "
                f"weights, {mode}), {self.opts.image_size} px, vocabulary {len(self.vocab)} words")

    def prepare(self, ds, train, val, progress):
        size = self.opts.image_size
        for split, items in (("train", train), ("val", val)):
            self.items[split] = items
            self.ids[split] = [[self.vocab.encode(s, self.opts.max_length) for s in it.sentences] for it in items]
            # a frozen trunk reads each image once (for its features) and keeps none of them
            self.images[split] = ImageStore(ds, items, size, max_bytes=0 if self.freeze else CACHE_BYTES)
        if self.model.weights_source == "random":  # random BatchNorm statistics: estimate them on the images
            batches = (self._pixels(x) for x in self.images["train"].chunks(stop=CALIBRATION_IMAGES))
            self.calibrated = calibrate_batchnorm(self.model.trunk, batches)
        if self.freeze:  # the trunk never changes: its features once, for every image
            self.model.trunk.eval()
            for split in ("train", "val"):
                parts = []
                with torch.no_grad(), Progress(total=len(self.items[split]), desc=f"features ({split})",
                                               unit="image", enabled=progress and bool(self.items[split])) as bar:
                    for x in self.images[split].chunks():
                        parts.append(self.model.trunk(self._pixels(x)).half().cpu())
                        bar.update(len(x))
                self.features[split] = torch.cat(parts) if parts else torch.empty(0)

    def _pixels(self, images: np.ndarray) -> torch.Tensor:
        return pixels(images, self.opts.image_size).to(self.device)

    def train(self, mode: bool) -> None:
        self.model.train(mode)
        if self.freeze:
            self.model.trunk.eval()

    def loss(self, split, batch):
        owner, _ = flatten(self.items[split], batch)
        if self.freeze:
            trunk_map = self.features[split][batch].to(self.device).float()
        else:
            trunk_map = self.model.trunk(self._pixels(self.images[split].get(batch)))
        feats = self.model.features(trunk_map)[torch.tensor(owner, device=self.device)]  # (N, L, D)
        seqs = [s for i in batch for s in self.ids[split][i]]
        caps = torch.full((len(seqs), max(map(len, seqs))), PAD_ID, dtype=torch.long)
        for r, s in enumerate(seqs):
            caps[r, : len(s)] = torch.tensor(s)
        return self.model.loss(feats, caps.to(self.device), self.alpha_c)

    def save(self, folder):
        torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        self.vocab.save(folder / VOCAB_FILE)

    def options(self):
        return {**self.opts.to_dict(), "encoder_weights": self.model.weights_source,
                "freeze_encoder": self.freeze, "min_count": self.vocab.min_count}

    def figures(self, val):
        return {"vocab_size": len(self.vocab), "batchnorm_calibration_images": self.calibrated,
                "val_unknown_word_rate": round(self.vocab.unknown_rate(s for it in val for s in it.sentences), 4)}
