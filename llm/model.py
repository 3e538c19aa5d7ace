"""Base models for captioning: the tiny default, a local or hub Hugging Face checkpoint, 4-bit/8-bit or not, full or LoRA.

* ``base_model="tiny"``: a small :class:`~transformers.LlamaForCausalLM` built from the ``tiny_model`` mapping of
  ``configs/llm/tiny.yaml`` (any :class:`~transformers.LlamaConfig` field), with the vocabulary of a tokenizer trained
  on the training text (:mod:`llm.tokenizer`).
* ``base_model=/path/to/Llama-2-7b-hf``: a local checkpoint and its tokenizer, loaded with ``local_files_only=True``.
* ``base_model=meta-llama/Llama-2-7b-hf``: a hub id (any ``name`` or ``org/name`` that is not a local path), model
  and tokenizer through transformers' ``from_pretrained`` with the id. Cache first (:mod:`segcap.hub`): when its
  config, weights and tokenizer are in the Hugging Face cache they load from there with no network call; else, when
  online, transformers downloads them into that cache; else (``HF_HUB_OFFLINE=1``, or no answer from the hub within
  3 s) :func:`validate_options` says what to download and where, before any work. Gated models (Llama-2) also need
  an accepted licence and ``hf auth login`` (or ``HF_TOKEN``).
* ``quantize``: ``none`` | ``nf4`` (QLoRA: 4-bit NormalFloat, double quantisation, bf16 compute on CUDA) | ``int8``
  (bitsandbytes LLM.int8). Quantized models train LoRA adapters only (``peft.prepare_model_for_kbit_training``).
* ``method``: ``full`` (every weight) | ``lora`` (rank, alpha, dropout and target modules from the config).

:func:`validate_options` checks all of this before any work and raises one :class:`~segcap.errors.ConfigError`
listing every problem.

bitsandbytes 4-bit on CPU (measured with bitsandbytes 0.50): every quantized Linear's ``out_features`` must be a
multiple of 32, and after an eval/no-grad forward the packed weights are repacked for an AVX512-bf16 kernel through
which gradients silently vanish. :func:`fix_bnb_for_cpu` sets ``support_avx512bf16_for_cpu = False`` on every
``Linear4bit`` after loading, which fixes both; :func:`validate_options` rejects dimensions that are not multiples of 32.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from segcap import hub
from segcap.errors import ConfigError, DataError
from segcap.options import Group, PositiveInt, UnitFraction, field_problems

Quantize = Literal["none", "nf4", "int8"]
Method = Literal["full", "lora"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]

META_FILE = "segcap_llm.json"  # written last: its presence marks a finished model folder
BASE_DIR = "base_model"  # the tiny base model saved beside a LoRA adapter
QUANT_MULTIPLE = 32  # bitsandbytes 4-bit on CPU: quantized out_features must be multiples of 32

TINY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 192,
    "intermediate_size": 512,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 6,
    "max_position_embeddings": 512,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
_NOT_CONFIG_FIELDS = {"vocab_size", "bos_token_id", "eos_token_id", "pad_token_id"}  # come from the tokenizer
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")  # any one: transformers can build the tokenizer


@dataclass(frozen=True)
class ModelOptions(Group):
    """Model: the base model, its quantization and how it is fine-tuned (one place, validated together).

    Attributes:
        base_model: "tiny" (built from tiny_model, tokenizer trained here), a local Hugging Face checkpoint folder,
            or a hub id such as meta-llama/Llama-2-7b-hf (transformers' cache, or a download when online; offline
            and not cached, it stops at once saying what to download).
        tiny_model: LlamaConfig fields of the tiny model (hidden_size, num_hidden_layers, ...; set in the config
            file); empty: the defaults.
        quantize: load the base in 4-bit NormalFloat (nf4, QLoRA), 8-bit (int8) or not at all (none).
        method: fine-tune every weight (full) or LoRA adapters (lora; required with nf4/int8).
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (scale = alpha / r).
        lora_dropout: dropout on the LoRA input.
        lora_target_modules: names of the linear modules that get adapters.
        precision: auto (bf16 on CUDA when supported, else fp32), fp32, bf16 or fp16 (CUDA only).
        gradient_checkpointing: trade compute for memory (large models).
    """

    base_model: str = "tiny"
    tiny_model: dict | None = None
    quantize: Quantize = "none"
    method: Method = "full"
    lora_r: PositiveInt = 16
    lora_alpha: PositiveInt = 32
    lora_dropout: UnitFraction = 0.05
    lora_target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj")
    precision: Precision = "auto"
    gradient_checkpointing: bool = False

    @property
    def is_tiny(self) -> bool:
        return self.base_model == "tiny"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["lora_target_modules"] = list(self.lora_target_modules)
        return d


# ------------------------------------------------------------------------------------------------ configs
def tiny_config(fields: dict | None, tokenizer: PreTrainedTokenizerBase | None = None, vocab_size: int = 64) -> LlamaConfig:
    """LlamaConfig of the tiny model: defaults, then ``fields``; vocabulary and special ids from ``tokenizer``.

    The vocabulary is rounded up to a multiple of 64 (so every Linear's out_features is a multiple of 32).
    """
    cfg = {**TINY_DEFAULTS, **(fields or {})}
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        cfg.update(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
        )
    cfg["vocab_size"] = int(math.ceil(vocab_size / 64) * 64)
    return LlamaConfig(**cfg)


def tiny_config_problems(fields: Any, quantize: str = "none") -> list[str]:
    """Everything wrong with the ``tiny_model`` mapping (unknown fields, heads that do not divide, 4-bit dims)."""
    if fields is None:
        fields = {}
    if not isinstance(fields, dict):
        return [f"tiny_model must be a mapping of LlamaConfig fields, got {type(fields).__name__}"]
    out = []
    valid = set(LlamaConfig().to_dict()) - _NOT_CONFIG_FIELDS
    unknown = sorted(set(fields) - valid)
    if unknown:
        out.append(
            f"tiny_model: unknown LlamaConfig field(s) {', '.join(unknown)}; e.g. hidden_size, intermediate_size, "
            "num_hidden_layers, num_attention_heads, num_key_value_heads, max_position_embeddings"
        )
    given = sorted(set(fields) & _NOT_CONFIG_FIELDS)
    if given:
        out.append(f"tiny_model: {', '.join(given)} come(s) from the trained tokenizer; remove from the config")
    cfg = {**TINY_DEFAULTS, **{k: v for k, v in fields.items() if k in valid}}
    ints = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "max_position_embeddings")
    bad = [k for k in ints if not isinstance(cfg.get(k), int) or cfg[k] < 1]
    if bad:
        return out + [f"tiny_model: {k} must be a positive integer (got {cfg.get(k)!r})" for k in bad]
    h, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    if h % nh:
        out.append(f"tiny_model: hidden_size {h} is not divisible by num_attention_heads {nh}")
    if nh % nkv:
        out.append(f"tiny_model: num_attention_heads {nh} is not divisible by num_key_value_heads {nkv}")
    if quantize == "nf4" and h % nh == 0:
        head_dim = cfg.get("head_dim") or h // nh
        dims = {"hidden_size": h, "intermediate_size": cfg["intermediate_size"],
                "num_attention_heads x head_dim": nh * head_dim,
                "num_key_value_heads x head_dim": nkv * head_dim}
        odd = [f"{k} = {v}" for k, v in dims.items() if v % QUANT_MULTIPLE]
        if odd:
            out.append(
                f"tiny_model: with quantize nf4 every quantized layer's width must be a multiple of {QUANT_MULTIPLE} "
                f"(bitsandbytes 4-bit); not so: {', '.join(odd)}"
            )
    return out


def linear_module_names(opts: ModelOptions) -> dict[str, torch.nn.Linear]:
    """Full name -> Linear module of the base model, built on the meta device (no memory, no weights read)."""
    if opts.is_tiny:
        cfg = tiny_config(opts.tiny_model)
    else:
        from transformers import AutoConfig

        kwargs = pretrained_kwargs(opts.base_model)
        with hub_access(kwargs):
            cfg = AutoConfig.from_pretrained(opts.base_model, **kwargs)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


# ------------------------------------------------------------------------------------------------ hub ids
def is_hub_id(base_model: str | Path) -> bool:
    """True when ``base_model`` is to be loaded by hub id: not ``tiny``, not an existing path, shaped like an id."""
    name = str(base_model)
    return name != "tiny" and not Path(name).expanduser().exists() and hub.is_repo_id(name)


def hub_missing(repo_id: str) -> list[str]:
    """What of ``repo_id`` (its main revision) the Hugging Face cache lacks: config.json, weights, tokenizer."""
    out = [] if hub.cached_file(repo_id, "config.json") else ["config.json"]
    have_weights = False
    for name in WEIGHT_FILES:
        path = hub.cached_file(repo_id, name)
        if path is None:
            continue
        if name.endswith(".index.json"):
            try:
                shards = set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values())
            except (OSError, KeyError, AttributeError, json.JSONDecodeError):
                continue
            if not all(hub.cached_file(repo_id, shard) for shard in shards):
                continue
        have_weights = True
        break
    if not have_weights:
        out.append("weights")
    if not any(hub.cached_file(repo_id, name) for name in TOKENIZER_FILES):
        out.append("tokenizer")
    return out


def _hub_unavailable(repo_id: str, reason: str, missing: list[str]) -> str:
    complete = len(missing) == 3
    folder = "/models/" + repo_id.rsplit("/", 1)[-1]
    return (
        f"base_model {repo_id}: there is no local folder of that name, and the hub model {repo_id} is "
        + hub.offline_hint(repo_id, reason, missing="" if complete else ", ".join(missing))
        + f"; or download it to a folder (`hf download {repo_id} --local-dir {folder}`) and pass --base-model "
        f"{folder}. Gated models (e.g. meta-llama's) need their licence accepted on "
        f"{hub.repo_page(repo_id)} and `hf auth login` first"
    )


def base_model_problems(base_model: str | Path) -> list[str]:
    """Why ``base_model`` cannot be loaded now (empty: it can). ``tiny``: nothing to check here. A local folder: it
    must hold config.json. A hub id: its files must be cached, or the hub reachable (see :mod:`segcap.hub`)."""
    name = str(base_model)
    if name == "tiny":
        return []
    if is_hub_id(name):
        missing = hub_missing(name)
        if not missing:
            return []
        reason = hub.offline_reason()
        return [] if reason is None else [_hub_unavailable(name, reason, missing)]
    p = Path(name).expanduser()
    if not p.is_dir():
        return [
            f"base_model {name} is not a folder; pass 'tiny', the path of a local Hugging Face checkpoint (a folder "
            "with config.json, the weights and the tokenizer), or a hub id such as meta-llama/Llama-2-7b-hf"
        ]
    if not (p / "config.json").is_file():
        return [f"base_model {p} has no config.json; it is not a Hugging Face checkpoint folder"]
    return []


def pretrained_kwargs(base_model: str | Path) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a checkpoint folder or hub id, after checking it can be had.

    A local folder, or a hub id whose files are all cached: ``local_files_only=True``, and :func:`hub_access` makes
    no network call. A hub id not fully cached: transformers may download (the hub answered); offline, a
    :class:`ConfigError` says what to fetch.
    """
    if not is_hub_id(base_model):
        return {"local_files_only": True}
    problems = base_model_problems(base_model)
    if problems:
        raise ConfigError(problems)
    return {"local_files_only": not hub_missing(str(base_model))}


def hub_access(kwargs: dict[str, Any]) -> contextlib.AbstractContextManager:
    """The context to call ``from_pretrained`` in: :func:`segcap.hub.cache_only` when nothing is to be downloaded."""
    return hub.cache_only() if kwargs.get("local_files_only") else contextlib.nullcontext()


def _load_failed(repo_id: str | Path, what: str, e: Exception) -> ConfigError:
    """A library error while fetching a hub id (gated, not found, network gone mid-way) as one ConfigError."""
    detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
    reason = f"transformers could not load its {what}: {e.__class__.__name__}: {detail}"
    return ConfigError(_hub_unavailable(str(repo_id), reason, hub_missing(str(repo_id))))


def load_tokenizer(base_model: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a checkpoint folder or hub id (from the cache, or downloaded when online)."""
    from transformers import AutoTokenizer

    kwargs = pretrained_kwargs(base_model)
    try:
        with hub_access(kwargs):
            return AutoTokenizer.from_pretrained(str(base_model), **kwargs)
    except hub.DOWNLOAD_ERRORS as e:
        if not is_hub_id(base_model):
            raise
        raise _load_failed(base_model, "tokenizer", e) from e


# ------------------------------------------------------------------------------------------------ validation
def option_problems(opts: ModelOptions, cuda: bool | None = None) -> list[str]:
    """Every problem with ``opts`` (empty when they are usable together)."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    out = field_problems(opts)  # choices and bounds (quantize, method, precision, lora_r, lora_alpha, lora_dropout)
    if opts.quantize in ("nf4", "int8") and opts.method == "full":
        out.append(
            f"quantize {opts.quantize} needs --method lora: quantized weights cannot be fine-tuned directly "
            "(QLoRA trains LoRA adapters on a frozen quantized base)"
        )
    if opts.precision == "fp16" and not cuda:
        out.append("precision fp16 needs CUDA (mixed fp16 training is not supported on CPU); use fp32 or bf16")
    if opts.method == "lora" and not opts.lora_target_modules:
        out.append("lora_target_modules is empty; name at least one module, e.g. q_proj v_proj")

    base_ok = True
    if opts.is_tiny:
        found = tiny_config_problems(opts.tiny_model, opts.quantize)
        out += found
        base_ok = not found
    else:
        found = base_model_problems(opts.base_model)
        out += found
        base_ok = not found
        if opts.tiny_model:
            out.append("tiny_model is set but base_model is a checkpoint path; remove tiny_model or use --base-model tiny")

    if base_ok:
        try:
            linears = linear_module_names(opts)
        except Exception as e:  # an unreadable config.json, or an architecture transformers does not know
            out.append(f"base_model {opts.base_model}: cannot build the model from its config ({e})")
            linears = None
        if linears is not None:
            leaf = {n.rsplit(".", 1)[-1] for n in linears}
            if opts.method == "lora" and opts.lora_target_modules and list(opts.lora_target_modules) != ["all-linear"]:
                unknown = [t for t in opts.lora_target_modules if t not in leaf]
                if unknown:
                    out.append(
                        f"lora_target_modules: unknown module name(s) {', '.join(unknown)}; the model's linear "
                        f"modules are {', '.join(sorted(leaf))} (or use all-linear)"
                    )
            if opts.quantize == "nf4" and not cuda and not opts.is_tiny:
                odd = sorted({n.rsplit(".", 1)[-1] for n, m in linears.items()
                              if n != "lm_head" and m.out_features % QUANT_MULTIPLE})
                if odd:
                    out.append(
                        f"quantize nf4 on CPU needs out_features multiples of {QUANT_MULTIPLE}; these modules are "
                        f"not: {', '.join(odd)}"
                    )
    return out


def validate_options(opts: ModelOptions, cuda: bool | None = None) -> None:
    """Raise one :class:`ConfigError` listing every problem with ``opts``."""
    problems = option_problems(opts, cuda)
    if problems:
        raise ConfigError(problems)


# ------------------------------------------------------------------------------------------------ loading
def compute_dtype(precision: str = "auto") -> torch.dtype:
    """The weights/compute dtype: bf16 on CUDA when supported under ``auto``, else fp32."""
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def quantization_config(quantize: str, dtype: torch.dtype):
    """The :class:`~transformers.BitsAndBytesConfig` of ``quantize`` (None for ``none``)."""
    if quantize == "none":
        return None
    from transformers import BitsAndBytesConfig

    if quantize == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def fix_bnb_for_cpu(model: torch.nn.Module) -> int:
    """Turn off the AVX512-bf16 repacking of every bitsandbytes ``Linear4bit`` (see module docstring); return count."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def device_map() -> dict[str, Any]:
    """Everything on this process's device (quantized models must be placed at load time)."""
    if torch.cuda.is_available():
        from accelerate import PartialState

        return {"": PartialState().local_process_index}
    return {"": "cpu"}


def load_causal_lm(path: str | Path, quantize: str = "none", precision: str = "auto") -> torch.nn.Module:
    """A causal LM from a local folder or a hub id (cache, or download when online), quantized at load time when
    asked (CPU 4-bit fix applied)."""
    from transformers import AutoModelForCausalLM

    dtype = compute_dtype(precision)
    q = quantization_config(quantize, dtype)
    kwargs: dict[str, Any] = {**pretrained_kwargs(path), "dtype": dtype}
    if q is not None:
        kwargs.update(quantization_config=q, device_map=device_map())
    try:
        with hub_access(kwargs):
            model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except hub.DOWNLOAD_ERRORS as e:
        if not is_hub_id(path):
            raise
        raise _load_failed(path, "model", e) from e
    if not torch.cuda.is_available():
        fix_bnb_for_cpu(model)
    return model


def build_tiny(fields: dict | None, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> LlamaForCausalLM:
    """The tiny Llama with random weights drawn from ``seed`` (the same on every process)."""
    cfg = tiny_config(fields, tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def load_base(opts: ModelOptions, tokenizer: PreTrainedTokenizerBase, base_dir: Path | None, seed: int = 0):
    """The base model for training.

    Tiny: built from the config; when it is to be quantized or carry LoRA adapters, saved (full precision) to
    ``base_dir`` first and loaded back from there, quantized at load as any checkpoint would be; the adapter folder
    records that path. A checkpoint path: loaded from the folder; a hub id: from the cache, or downloaded when online.
    """
    if opts.is_tiny:
        if opts.method == "full":
            return build_tiny(opts.tiny_model, tokenizer, seed)
        if base_dir is None:
            raise ValueError("a tiny LoRA base needs a folder to live in")
        if not (base_dir / "config.json").is_file():
            build_tiny(opts.tiny_model, tokenizer, seed).save_pretrained(base_dir)
        return load_causal_lm(base_dir, opts.quantize, opts.precision)
    return load_causal_lm(opts.base_model, opts.quantize, opts.precision)


def apply_method(model: torch.nn.Module, opts: ModelOptions) -> torch.nn.Module:
    """Full fine-tuning: the model as is. LoRA: a PEFT model (quantized bases prepared for k-bit training first)."""
    if opts.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if opts.method == "full":
        return model
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if opts.quantize != "none":
        # peft switches checkpointing back to torch's reentrant mode here; say so explicitly (torch warns otherwise):
        # on an H200 it was faster than non-reentrant at the same memory (docs/gpu/README.md)
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=opts.gradient_checkpointing,
                                                gradient_checkpointing_kwargs={"use_reentrant": True})
        if not torch.cuda.is_available():
            fix_bnb_for_cpu(model)
    targets = list(opts.lora_target_modules)
    lcfg = LoraConfig(
        r=opts.lora_r,
        lora_alpha=opts.lora_alpha,
        lora_dropout=opts.lora_dropout,
        target_modules=targets[0] if targets == ["all-linear"] else targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lcfg)


# ------------------------------------------------------------------------------------------------ trained folders
def read_meta(model_dir: str | Path) -> dict:
    """The ``segcap_llm.json`` of a trained model folder, with a clear error when the folder is not one."""
    model_dir = Path(model_dir)
    meta_path = model_dir / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"{model_dir} is not a finished segcap LM folder (no {META_FILE}); train one with "
            "`python -m llm.finetune ... --out DIR` (an interrupted run resumes with --resume)"
        )
    try:
        return json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{meta_path}: not valid JSON ({e}); retrain or restore the folder") from e


def resolve_base(model_dir: Path, meta: dict) -> Path | str:
    """Where an adapter's base model lives: the tiny base beside it, else the recorded checkpoint path or hub id."""
    local = model_dir / BASE_DIR
    if (local / "config.json").is_file():
        return local
    cands = [c for c in (meta.get("base_model"), _adapter_base(model_dir)) if c]
    for cand in cands:
        if Path(cand).is_dir():
            return Path(cand)
    for cand in cands:
        if is_hub_id(cand):
            return cand  # loaded through the cache (load_causal_lm says what to download when offline)
    raise DataError(
        f"{model_dir}: the adapter's base model {meta.get('base_model')!r} is not a folder here; "
        "copy the base checkpoint there or edit base_model_name_or_path in adapter_config.json"
    )


def _adapter_base(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def load_trained(model_dir: str | Path, quantize: str | None = None, precision: str = "auto"):
    """(model, tokenizer, meta) of a trained folder, ready for generation (LoRA merged when the base is not quantized).

    Args:
        model_dir: the ``--out`` folder of :mod:`llm.finetune`.
        quantize: load the base quantized this way; None = as it was trained.
        precision: weights dtype (``auto``: bf16 on CUDA, fp32 on CPU).
    """
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    meta = read_meta(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    quantize = meta.get("quantize", "none") if quantize is None else quantize
    if (model_dir / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(resolve_base(model_dir, meta), quantize, precision)
        model = PeftModel.from_pretrained(base, str(model_dir), is_trainable=False)
        if quantize == "none":
            model = model.merge_and_unload()
    else:
        model = load_causal_lm(model_dir, quantize if quantize != "none" else "none", precision)
    if not torch.cuda.is_available():
        fix_bnb_for_cpu(model)
    if quantize == "none" and torch.cuda.is_available():
        model = model.to("cuda")
    model.eval()
    return model, tokenizer, meta
