"""Transformers captioners: ``vit-gpt2`` (``VisionEncoderDecoderModel``, ViT encoder + GPT-2 decoder) and ``blip``
(``BlipForConditionalGeneration`` + ``BlipProcessor``).

Where the weights come from (``checkpoint``):

* ``vit-gpt2`` without a checkpoint: a tiny ViT + GPT-2 with random weights, built offline from ``tiny_model``
  (hidden_size 128, 2 layers, 4 heads, patch 16 by default) and the training captions. Its tokenizer is the word
  vocabulary of the CNN+LSTM (:class:`captioners.text.Vocabulary`, ``min_count``) as a ``tokenizers`` WordLevel model
  wrapped in ``PreTrainedTokenizerFast``: captions are learnt as their lowercase words, like the CNN+LSTM's, and the
  folder still loads with ``from_pretrained``.
* ``vit-gpt2`` with a checkpoint (a ``VisionEncoderDecoder`` folder or hub id such as
  ``nlpconnect/vit-gpt2-image-captioning``) and ``blip`` (a BLIP captioning folder or hub id such as
  ``Salesforce/blip-image-captioning-base``): loaded with ``from_pretrained``; a hub id comes from the Hugging Face
  cache with no network call when it is there, is downloaded when online, and offline it stops at once with one
  message saying what to download and where (:mod:`segcap.hub`).

Images are resized to the image processor's size with :func:`captioners.data.resize` and then go through the
processor (rescale, normalise), in training and in captioning alike. Training (:class:`HFJob`) runs the vision encoder
once per image and decodes all of the image's captions against its features.

What differs between the architectures (the classes that load a checkpoint, a caption's labels, the loss, the vision
encoder) is a subclass of :class:`HFCaptioner` each, named by :data:`captioners.registry.ARCHS`:
:class:`VitGpt2Captioner` and :class:`BlipCaptioner`.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import hf_hub_download
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoImageProcessor,
    AutoTokenizer,
    BertTokenizerFast,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    GPT2Config,
    PreTrainedTokenizerFast,
    VisionEncoderDecoderConfig,
    VisionEncoderDecoderModel,
    ViTConfig,
    ViTImageProcessor,
)
from transformers.modeling_outputs import BaseModelOutput

from aerialdata.captionset import CaptionImage
from captioners.base import Captioner, Job, flatten
from captioners.data import ImageStore, resize
from captioners.registry import ARCHS, MODEL_TYPES
from captioners.text import END, PAD, SPECIALS, START, UNK, Vocabulary, normalize
from segcap import hub
from segcap.errors import ConfigError, DataError

TINY_DEFAULTS = {"hidden_size": 128, "num_layers": 2, "num_heads": 4, "patch_size": 16, "intermediate_size": 256}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer_config.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
IGNORE = -100
TINY_LEARNING_RATE = 1e-3  # AdamW's default for a model built here (a checkpoint: its class's learning_rate)


# ------------------------------------------------------------------------------------------------ checkpoints
def is_hub_id(name: str) -> bool:
    """A hub id (``org/name``) rather than a local folder: not an existing path, shaped like an id."""
    return not Path(name).expanduser().exists() and hub.is_repo_id(name)


def _hub_missing(repo_id: str) -> list[str]:
    missing = [] if hub.cached_file(repo_id, "config.json") else ["config.json"]
    if not any(hub.cached_file(repo_id, f) for f in WEIGHT_FILES):
        missing.append("weights")
    if not any(hub.cached_file(repo_id, f) for f in PROCESSOR_FILES):
        missing.append("preprocessor_config.json")
    if not any(hub.cached_file(repo_id, f) for f in TOKENIZER_FILES):
        missing.append("tokenizer")
    return missing


def _hub_unavailable(option: str, repo_id: str, reason: str, missing: list[str]) -> str:
    complete = len(missing) == 4
    folder = "/models/" + repo_id.rsplit("/", 1)[-1]
    return (f"{option} {repo_id}: there is no local folder of that name, and the hub model {repo_id} is "
            + hub.offline_hint(repo_id, reason, missing="" if complete else ", ".join(missing))
            + f"; or download it to a folder (`hf download {repo_id} --local-dir {folder}`) and pass that folder")


def checkpoint_type(checkpoint: str | Path) -> str | None:
    """The ``model_type`` in a checkpoint's config.json (local folder, or a hub id's cached copy); None when there
    is no readable config.json."""
    name = str(checkpoint)
    path = hub.cached_file(name, "config.json") if is_hub_id(name) else Path(name).expanduser() / "config.json"
    if path is None or not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("model_type"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return None


def hub_checkpoint_type(repo_id: str, option: str = "model") -> str | None:
    """The ``model_type`` of a hub id: from the cache, else its config.json downloaded (online only; offline, a
    ConfigError saying what to download)."""
    found = checkpoint_type(repo_id)
    if found is not None:
        return found
    reason = hub.offline_reason()
    if reason is not None:
        raise ConfigError(_hub_unavailable(option, repo_id, reason, _hub_missing(repo_id)))
    try:
        hf_hub_download(repo_id, "config.json")
    except hub.DOWNLOAD_ERRORS as e:
        reason = f"{e.__class__.__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        raise ConfigError(_hub_unavailable(option, repo_id, reason, _hub_missing(repo_id))) from e
    return checkpoint_type(repo_id)


def checkpoint_problems(checkpoint: str | Path, arch: str, option: str = "checkpoint") -> list[str]:
    """Why ``checkpoint`` cannot be loaded as ``arch`` now (empty: it can)."""
    name, example = str(checkpoint), ARCHS[arch].example
    if is_hub_id(name):
        missing = _hub_missing(name)
        if missing:
            reason = hub.offline_reason()
            if reason is not None:
                return [_hub_unavailable(option, name, reason, missing)]
            return []  # online: transformers downloads it
    elif not Path(name).expanduser().is_dir():
        return [f"{option} {name} is not a folder; pass a local {arch} checkpoint folder (with config.json) or a hub "
                f"id such as {example}"]
    found = checkpoint_type(name)
    if found is None:
        return [f"{option} {name} has no readable config.json; it is not a Hugging Face checkpoint (a {arch} "
                f"checkpoint such as {example} is expected)"]
    if MODEL_TYPES.get(found) != arch:
        what = f"a {MODEL_TYPES[found]} checkpoint" if found in MODEL_TYPES else f"a {found!r} model"
        return [f"{option} {name} is {what}, not {arch} (config.json model_type {found!r}); pass a {arch} checkpoint "
                f"such as {example}, or --arch {MODEL_TYPES.get(found, arch)}"]
    return []


def _access(checkpoint: str) -> tuple[dict[str, Any], contextlib.AbstractContextManager]:
    """``from_pretrained`` kwargs and the context to call it in (no network call when everything is local)."""
    local = not is_hub_id(checkpoint) or not _hub_missing(checkpoint)
    return {"local_files_only": local}, (hub.cache_only() if local else contextlib.nullcontext())


def load_checkpoint(checkpoint: str | Path, arch: str, option: str = "checkpoint"):
    """(model, tokenizer, image processor) of a vit-gpt2 or blip checkpoint, checked first."""
    problems = checkpoint_problems(checkpoint, arch, option)
    if problems:
        raise ConfigError(problems)
    name = str(checkpoint)
    kwargs, ctx = _access(name)
    kind = ARCHS[arch].captioner
    try:
        with ctx:
            model, tokenizer, image_processor = kind.from_pretrained(name, **kwargs)
    except hub.DOWNLOAD_ERRORS as e:
        if is_hub_id(name):
            reason = f"transformers could not load it: {e.__class__.__name__}: {str(e).strip().splitlines()[0]}"
            raise ConfigError(_hub_unavailable(option, name, reason, _hub_missing(name))) from e
        raise DataError(f"{option} {name}: transformers could not load the {arch} checkpoint ({e}); the folder is "
                        "incomplete or damaged") from e
    if tokenizer.pad_token_id is None:  # GPT-2 has none: padding never carries loss, eos serves
        tokenizer.pad_token = tokenizer.eos_token
    kind.fix_generation_ids(model, tokenizer)
    return model, tokenizer, image_processor


# ------------------------------------------------------------------------------------------------ tiny models
def word_tokenizer(vocab: Vocabulary) -> PreTrainedTokenizerFast:
    """The word vocabulary as a transformers tokenizer (text is normalised to its words before encoding)."""
    tok = Tokenizer(models.WordLevel(vocab=dict(vocab.stoi), unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=START, eos_token=END,
                                   unk_token=UNK, model_max_length=512)


def tiny_problems(fields: Any) -> list[str]:
    """Everything wrong with a ``tiny_model`` mapping."""
    if fields is None:
        return []
    if not isinstance(fields, dict):
        return [f"tiny_model must be a mapping such as {{hidden_size: 128}} (got {fields!r})"]
    out = []
    unknown = sorted(set(fields) - set(TINY_DEFAULTS))
    if unknown:
        out.append(f"tiny_model: unknown key(s) {', '.join(unknown)}; valid: {', '.join(TINY_DEFAULTS)}")
    for k, v in fields.items():
        if k in TINY_DEFAULTS and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            out.append(f"tiny_model.{k} must be a positive integer (got {v!r})")
    f = {**TINY_DEFAULTS, **fields}
    if not out and f["hidden_size"] % f["num_heads"]:
        out.append(f"tiny_model.hidden_size {f['hidden_size']} must be a multiple of num_heads {f['num_heads']}")
    return out


def build_tiny_vit_gpt2(vocab: Vocabulary, image_size: int, fields: dict | None, max_length: int, seed: int = 0):
    """(model, tokenizer, image processor) of a tiny ViT + GPT-2 with random weights drawn from ``seed``."""
    f = {**TINY_DEFAULTS, **(fields or {})}
    if image_size % f["patch_size"]:
        raise ConfigError(f"image_size {image_size} must be a multiple of tiny_model.patch_size {f['patch_size']}")
    tokenizer = word_tokenizer(vocab)
    encoder = ViTConfig(image_size=image_size, patch_size=f["patch_size"], hidden_size=f["hidden_size"],
                        num_hidden_layers=f["num_layers"], num_attention_heads=f["num_heads"],
                        intermediate_size=f["intermediate_size"])
    decoder = GPT2Config(vocab_size=len(vocab), n_positions=max_length + 8, n_embd=f["hidden_size"],
                         n_layer=f["num_layers"], n_head=f["num_heads"], n_inner=f["intermediate_size"],
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, add_cross_attention=True, is_decoder=True)
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config)
    VitGpt2Captioner.fix_generation_ids(model, tokenizer)
    processor = ViTImageProcessor(do_resize=True, size={"height": image_size, "width": image_size},
                                  image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return model, tokenizer, processor


def tiny_blip_checkpoint(folder: str | Path, captions: list[str], image_size: int = 32, hidden_size: int = 32,
                         seed: int = 0) -> Path:
    """Write a tiny randomly initialised BLIP captioning checkpoint (model, BERT-style word tokenizer built from
    ``captions``, image processor) to ``folder``: a stand-in for Salesforce/blip-image-captioning-base in tests and
    benchmarks, made offline."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    words = Vocabulary.build(captions, min_count=1).itos[len(SPECIALS):]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(specials + words)}, do_lower_case=True,
                                  bos_token="[DEC]")
    heads = max(1, hidden_size // 16)
    text = {"vocab_size": len(tokenizer), "hidden_size": hidden_size, "encoder_hidden_size": hidden_size,
            "intermediate_size": 2 * hidden_size, "num_hidden_layers": 1, "num_attention_heads": heads,
            "max_position_embeddings": 64, "bos_token_id": tokenizer.convert_tokens_to_ids("[DEC]"),
            "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id,
            "eos_token_id": tokenizer.sep_token_id}
    vision = {"hidden_size": hidden_size, "intermediate_size": 2 * hidden_size, "num_hidden_layers": 1,
              "num_attention_heads": heads, "image_size": image_size, "patch_size": 8}
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision, projection_dim=hidden_size))
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    model.save_pretrained(str(folder))
    BlipProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(folder))
    return folder


# ------------------------------------------------------------------------------------------------ text and pixels
class HFText:
    """How captions become labels for one model: word-normalised for the tiny vit-gpt2, raw text otherwise."""

    def __init__(self, arch: str, tokenizer, words: bool, max_length: int):
        self.arch, self.tokenizer, self.words, self.max_length = arch, tokenizer, words, max_length
        self.label_ids = ARCHS[arch].captioner.label_ids

    def labels(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input ids, labels) (N, T), padded; labels are -100 on padding; a caption's ids are its tokens as the
        architecture's ``label_ids`` frames them."""
        tok = self.tokenizer
        rows = []
        for c in captions:
            text = normalize(c) if self.words else " ".join(c.split())
            rows.append(self.label_ids(tok, tok(text, add_special_tokens=False)["input_ids"][: self.max_length]))
        n = max(len(r) for r in rows)
        ids = torch.full((len(rows), n), tok.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), n), IGNORE, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            labels[i, : len(r)] = torch.tensor(r)
        return ids, labels


def processor_size(image_processor) -> int | None:
    """The square size the image processor resizes to, when it has one."""
    size = getattr(image_processor, "size", None)
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    if get("height") and get("height") == get("width"):
        return int(get("height"))
    return None


def pixel_values(image_processor, images: list[np.ndarray] | np.ndarray, size: int | None) -> torch.Tensor:
    """Images -> the model's pixel values: resized to ``size`` first (when known), then the processor."""
    batch = [resize(im, size) if size else im for im in images]
    batch = [im if im.flags.writeable else im.copy() for im in batch]  # torch warns on read-only arrays
    return image_processor(images=batch, return_tensors="pt")["pixel_values"]


def hf_loss(arch: str, model, pixels: torch.Tensor, owner: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(mean cross-entropy per token, summed cross-entropy, tokens) of captions ``ids``/``labels`` (N, T) whose image
    is ``owner`` (N,) in ``pixels`` (B, 3, S, S): the vision encoder runs once per image."""
    logits, target = ARCHS[arch].captioner.logits(model, pixels, owner, ids, labels)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=IGNORE,
                         reduction="sum")
    n = int((target != IGNORE).sum())
    return ce / max(n, 1), ce.detach(), n


# ------------------------------------------------------------------------------------------------ captioner
class HFCaptioner(Captioner):
    """A transformers captioner: its model, tokenizer and image processor, captioning with ``generate``. Each
    architecture is a subclass saying how its checkpoint loads and how it learns (:class:`HFJob`)."""

    learning_rate = 5e-5  # AdamW's default when fine-tuning a checkpoint
    tiny: Any = None  # (vocab, image_size, tiny_model, max_length, seed) -> (model, tokenizer, image processor)

    @staticmethod
    def from_pretrained(name: str, **kwargs) -> tuple[Any, Any, Any]:
        """(model, tokenizer, image processor) of a checkpoint folder or hub id."""
        raise NotImplementedError

    @staticmethod
    def fix_generation_ids(model, tokenizer) -> None:
        """Set the generation ids a checkpoint leaves unset."""

    @staticmethod
    def label_ids(tokenizer, ids: list[int]) -> list[int]:
        """A caption's token ids as its decoder learns them."""
        raise NotImplementedError

    @staticmethod
    def vision(model) -> torch.nn.Module:
        """The vision encoder (the part freeze_encoder freezes)."""
        raise NotImplementedError

    @staticmethod
    def logits(model, pixels: torch.Tensor, owner: torch.Tensor, ids: torch.Tensor, labels: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, T, V), targets (N, T)) of captions whose image is ``owner`` (N,) in ``pixels`` (B, 3, S, S),
        the vision encoder run once per image."""
        raise NotImplementedError

    def __init__(self, arch: str, model, tokenizer, image_processor, folder: str | Path, device: torch.device,
                 max_length: int = 30, words: bool = False):
        super().__init__(folder, device, max_length)
        self.arch = arch
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.size = processor_size(image_processor)
        self.words = words

    @classmethod
    def load(cls, checkpoint: str | Path, device: torch.device, options: dict | None = None,
             option: str = "model") -> HFCaptioner:
        options = options or {}
        model, tokenizer, image_processor = load_checkpoint(checkpoint, cls.arch, option)
        return cls(cls.arch, model, tokenizer, image_processor, checkpoint, device,
                   int(options.get("max_length", 30)), bool(options.get("word_tokenizer", False)))

    @property
    def module(self) -> torch.nn.Module:
        return self.model

    def _caption_batch(self, images, num_beams, max_length):
        x = pixel_values(self.image_processor, images, self.size).to(self.device, self.model.dtype)
        kwargs: dict[str, Any] = {"num_beams": num_beams, "do_sample": False, "max_new_tokens": max_length,
                                  "min_new_tokens": 1, "max_length": None}  # a caption has at least one token
        if num_beams > 1:
            kwargs["early_stopping"] = True
        ids = self.model.generate(pixel_values=x, **kwargs)
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]


class VitGpt2Captioner(HFCaptioner):
    """ViT encoder + GPT-2 decoder (VisionEncoderDecoderModel): a checkpoint, or the tiny model built here."""

    arch = "vit-gpt2"
    tiny = staticmethod(build_tiny_vit_gpt2)

    @staticmethod
    def from_pretrained(name, **kwargs):
        return (VisionEncoderDecoderModel.from_pretrained(name, **kwargs), AutoTokenizer.from_pretrained(name, **kwargs),
                AutoImageProcessor.from_pretrained(name, **kwargs))

    @staticmethod
    def fix_generation_ids(model, tokenizer):
        cfg, gen = model.config, model.generation_config
        if cfg.decoder_start_token_id is None:
            cfg.decoder_start_token_id = tokenizer.bos_token_id
        if cfg.pad_token_id is None:
            cfg.pad_token_id = tokenizer.pad_token_id
        if cfg.eos_token_id is None:
            cfg.eos_token_id = tokenizer.eos_token_id
        for key in ("decoder_start_token_id", "pad_token_id", "eos_token_id"):
            if getattr(gen, key, None) is None:
                setattr(gen, key, getattr(cfg, key))

    @staticmethod
    def label_ids(tokenizer, ids):
        return [*ids, tokenizer.eos_token_id]  # the model shifts them right behind decoder_start_token_id

    @staticmethod
    def vision(model):
        return model.encoder

    @staticmethod
    def logits(model, pixels, owner, ids, labels):
        hidden = model.encoder(pixel_values=pixels).last_hidden_state  # (B, P, E)
        valid = (labels != IGNORE).long()
        mask = torch.cat([torch.ones_like(valid[:, :1]), valid[:, :-1]], 1)  # the decoder reads labels shifted right
        out = model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden[owner]), labels=labels,
                    decoder_attention_mask=mask)
        return out.logits, labels  # (N, T, V)


class BlipCaptioner(HFCaptioner):
    """BLIP (BlipForConditionalGeneration + BlipProcessor), from a checkpoint."""

    arch = "blip"
    learning_rate = 2e-5

    @staticmethod
    def from_pretrained(name, **kwargs):
        processor = BlipProcessor.from_pretrained(name, **kwargs)
        model = BlipForConditionalGeneration.from_pretrained(name, **kwargs)
        return model, processor.tokenizer, processor.image_processor

    @staticmethod
    def label_ids(tokenizer, ids):
        return [tokenizer.bos_token_id, *ids, tokenizer.sep_token_id]  # [DEC] ... [SEP], as BLIP's decoder learns

    @staticmethod
    def vision(model):
        return model.vision_model

    @staticmethod
    def logits(model, pixels, owner, ids, labels):
        embeds = model.vision_model(pixel_values=pixels).last_hidden_state  # (B, P, E)
        mask = (labels != IGNORE).long()
        logits = model.text_decoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=embeds[owner],
                                    return_dict=True).logits[:, :-1]  # (N, T-1, V): the decoder shifts by one itself
        return logits, labels[:, 1:]


# ------------------------------------------------------------------------------------------------ training
class HFJob(Job):
    """captioners.train's vit-gpt2 and blip: a checkpoint fine-tuned (its vision encoder frozen or not), or the tiny
    model built from the training captions."""

    @classmethod
    def problems(cls, o, defaults):
        arch = ARCHS[o["arch"]]
        if o["checkpoint"] is None:
            if arch.needs_checkpoint:
                return [f"arch {arch.name} needs a checkpoint: a local {arch.name} checkpoint folder or a hub id such "
                        f"as {arch.example} (`hf download` it first where offline)"]
            out = tiny_problems(o["tiny_model"])
            patch = {**{"patch_size": 16}, **(o["tiny_model"] or {})}.get("patch_size", 16)
            if isinstance(patch, int) and patch > 0 and o["image_size"] % patch:
                out.append(f"image_size {o['image_size']} must be a multiple of tiny_model.patch_size {patch}")
            return out
        out = []
        if o["tiny_model"] is not None and "tiny_model" in arch.option_names:
            out.append("tiny_model applies when no checkpoint is given; a checkpoint brings its own sizes")
        if o["image_size"] != defaults["image_size"]:
            out.append(f"image_size applies to a model built here; a {arch.name} checkpoint brings its own image "
                       "processor (remove image_size)")
        return out + checkpoint_problems(o["checkpoint"], arch.name)

    @classmethod
    def builds_vocabulary(cls, o):
        return o["checkpoint"] is None

    @classmethod
    def learning_rate(cls, o):
        return TINY_LEARNING_RATE if o["checkpoint"] is None else ARCHS[o["arch"]].captioner.learning_rate

    def __init__(self, o: dict[str, Any], train: list[CaptionImage], device: torch.device):
        self.arch, self.device, self.checkpoint = o["arch"], device, o["checkpoint"]
        kind = ARCHS[self.arch].captioner
        self.max_length = o["max_length"]
        self.vocab: Vocabulary | None = None
        if self.checkpoint is None:  # the tiny model, its word tokenizer built from the training captions
            self.vocab = Vocabulary.build((s for it in train for s in it.sentences), o["min_count"])
            model, self.tokenizer, self.processor = kind.tiny(self.vocab, o["image_size"], o["tiny_model"],
                                                              self.max_length, o["seed"])
        else:
            model, self.tokenizer, self.processor = load_checkpoint(self.checkpoint, self.arch)
        self.module = self.model = model.to(device)
        self.model.config.use_cache = False
        self.freeze = o["freeze_encoder"]
        if self.freeze:
            kind.vision(self.model).requires_grad_(False)
        self.size = processor_size(self.processor) or o["image_size"]
        self.text = HFText(self.arch, self.tokenizer, self.vocab is not None, self.max_length)
        self.items: dict[str, list[CaptionImage]] = {}
        self.images: dict[str, ImageStore] = {}

    def describe(self) -> str:
        source = self.checkpoint or "tiny, random weights"
        return (f"{source}, {self.size} px, tokenizer of {len(self.tokenizer)} tokens"
                + (", vision encoder frozen" if self.freeze else ""))

    def prepare(self, ds, train, val, progress):
        for split, items in (("train", train), ("val", val)):
            self.items[split] = items
            self.images[split] = ImageStore(ds, items, self.size)

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def loss(self, split, batch):
        owner, caps = flatten(self.items[split], batch)
        x = self.processor(images=list(self.images[split].get(batch)), return_tensors="pt")["pixel_values"]
        ids, labels = self.text.labels(caps)
        return hf_loss(self.arch, self.model, x.to(self.device, self.model.dtype),
                       torch.tensor(owner, device=self.device), ids.to(self.device), labels.to(self.device))

    def save(self, folder):
        self.model.config.use_cache = True
        self.model.save_pretrained(str(folder))
        self.tokenizer.save_pretrained(str(folder))
        self.processor.save_pretrained(str(folder))

    def options(self):
        return {"checkpoint": self.checkpoint, "image_size": self.size, "max_length": self.max_length,
                "word_tokenizer": self.vocab is not None, "freeze_encoder": self.freeze,
                **({"min_count": self.vocab.min_count} if self.vocab is not None else {})}

    def figures(self, val):
        out: dict[str, Any] = {"tokenizer_size": len(self.tokenizer)}
        if self.vocab is not None:
            out["val_unknown_word_rate"] = round(self.vocab.unknown_rate(s for it in val for s in it.sentences), 4)
        return out
