"""Benchmark: LoRA / QLoRA training and generation speed and memory of a Llama-2-7B-shaped model on one GPU.

    python -m bench.llm_qlora_gpu                                  # nf4 + LoRA, batch 16 x 128 tokens, 10 timed steps
    python -m bench.llm_qlora_gpu --batch-size 4 --seq-len 512 --quantize int8
    python -m bench.llm_qlora_gpu --quantize none                  # bf16 LoRA, no quantisation
    python -m bench.llm_qlora_gpu --recipe reference               # plain transformers + peft defaults, to compare
    python -m bench.llm_qlora_gpu --generate                       # + captions/s, greedy and 3 beams, batch 32
    python -m bench.llm_qlora_gpu --shape small --allow-cpu        # checks the code path on CPU (tiny shape)

The model is built from Llama-2-7B's configuration with random weights in bf16 (no download), saved to a scratch
folder (``/dev/shm`` when it has room, else the temp folder; ``--model-dir`` keeps and reuses it) and loaded back:

* ``--recipe segcap`` (default): through :func:`llm.model.load_causal_lm` and :func:`llm.model.apply_method`, exactly
  as ``llm.finetune`` loads a checkpoint: ``nf4`` = 4-bit NormalFloat, double quantisation, bf16 compute (QLoRA);
  ``int8`` = bitsandbytes LLM.int8; ``none`` = bf16 weights (moved to the GPU after loading, as the Trainer does).
  LoRA adapters as ``configs/llm/llama2-7b-qlora.yaml`` (r 16, alpha 32, dropout 0.05 on q/k/v/o/gate/up/down),
  gradient checkpointing on.
* ``--recipe reference``: the plain recipe of the QLoRA examples, for comparison: ``AutoModelForCausalLM.from_pretrained
  (..., quantization_config=BitsAndBytesConfig(...), device_map="auto")``, ``peft.prepare_model_for_kbit_training``
  with its defaults, ``peft.get_peft_model`` with the same LoRA settings.
* ``--recipe segcap_nonreentrant``: ``segcap`` with non-reentrant activation checkpointing restored after
  ``prepare_model_for_kbit_training`` (which, called without checkpointing arguments, re-enables checkpointing with
  torch's reentrant default over the ``use_reentrant=False`` that ``apply_method`` set), to measure the difference.

Each training step: random tokens, batch x seq_len, loss on every token, bf16 autocast on CUDA, AdamW over the LoRA
weights. ``--generate`` then times greedy and beam-search captioning of the trained model (batch of left-padded
prompts of about ``--prompt-len`` tokens, exactly ``--new-tokens`` new tokens each, the generate call of
:class:`llm.generate.Captioner`), with the adapter merged into bf16 weights and unmerged on a quantized base, as
:func:`llm.model.load_trained` does. Prints one JSON object. Without CUDA (and without ``--allow-cpu``) it prints
``{"skipped": ...}`` and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from llm.model import ModelOptions, apply_method, fix_bnb_for_cpu, load_causal_lm, validate_options

SHAPES = {
    # meta-llama/Llama-2-7b-hf config.json
    "llama2-7b": dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                      bos_token_id=1, eos_token_id=2, tie_word_embeddings=False),
    # the same module names at a size that runs anywhere (to check this script)
    "small": dict(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=4, max_position_embeddings=512, bos_token_id=1, eos_token_id=2),
}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RECIPES = ("segcap", "reference", "segcap_nonreentrant")
QUANTIZE = ("nf4", "int8", "none")
BOS, EOS, PAD = 1, 2, 0
GIB = 2**30


def machine() -> dict:
    """What the figures were measured on."""
    m = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
         "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        m.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / GIB, 1), cuda=torch.version.cuda)
    for name in ("transformers", "peft", "accelerate", "bitsandbytes"):
        try:
            m[name] = __import__(name).__version__
        except ImportError:
            m[name] = None
    return m


def scratch_root(need_gib: float) -> Path:
    """``/dev/shm`` when it has ``need_gib`` free (a RAM disk: the fastest place for a throw-away checkpoint), else
    the temp folder."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and shutil.disk_usage(shm).free > need_gib * GIB and os.access(shm, os.W_OK):
            return shm
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def checkpoint_gib(shape: str) -> float:
    """Size of the shape's bf16 checkpoint in GiB."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(**SHAPES[shape])
    h, i, n, v = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.vocab_size
    return 2 * (2 * v * h + n * (4 * h * h + 3 * h * i)) / GIB


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def release() -> None:
    """Give back the memory of models that went out of scope."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_checkpoint(shape: str, folder: Path, device: str | torch.device | None = None) -> dict:
    """Random weights of ``shape`` in bf16, saved as a Hugging Face checkpoint folder; returns parameters and seconds.

    Built on ``device`` (default: CUDA when available) so that the initialisation is fast, then freed.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cfg = LlamaConfig(**SHAPES[shape])
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    n_params = sum(p.numel() for p in model.parameters())
    sync()
    built = time.perf_counter() - t0
    model.save_pretrained(folder, max_shard_size="2GB")
    del model
    release()
    return {"shape": shape, "parameters": n_params, "build_s": round(built, 1),
            "build_and_save_s": round(time.perf_counter() - t0, 1), "folder": str(folder),
            "checkpoint_gib": round(sum(f.stat().st_size for f in folder.glob("*.safetensors")) / GIB, 2)}


def lora_options(folder: Path, quantize: str, lora_r: int = 16, gradient_checkpointing: bool = True):
    """The :class:`llm.model.ModelOptions` of ``configs/llm/llama2-7b-qlora.yaml`` for the checkpoint ``folder``."""

    return ModelOptions(base_model=str(folder), method="lora", quantize=quantize, lora_r=lora_r,
                        lora_alpha=2 * lora_r, lora_dropout=0.05, lora_target_modules=TARGETS,
                        gradient_checkpointing=gradient_checkpointing)


def load_for_training(folder: Path, quantize: str = "nf4", recipe: str = "segcap", lora_r: int = 16,
                      gradient_checkpointing: bool = True) -> tuple[torch.nn.Module, dict]:
    """The checkpoint in ``folder`` loaded (quantized or not) with LoRA adapters, by ``recipe``; returns
    ``(model, info)`` with the load and preparation seconds and the memory the loaded model holds."""
    if quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)} (got {quantize!r})")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)} (got {recipe!r})")
    cuda = torch.cuda.is_available()
    release()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    if recipe in ("segcap", "segcap_nonreentrant"):
        opts = lora_options(folder, quantize, lora_r, gradient_checkpointing)
        validate_options(opts)
        model = load_causal_lm(folder, quantize, "auto")
        if quantize == "none" and cuda:
            model = model.to("cuda")  # what the Trainer and load_trained do with an unquantized model
        sync()
        loaded = time.perf_counter() - t0
        model = apply_method(model, opts)
        if recipe == "segcap_nonreentrant" and gradient_checkpointing:
            model.get_base_model().gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        compute = torch.bfloat16 if cuda else torch.float32
        kwargs: dict = {"device_map": "auto"}
        if quantize == "nf4":
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=compute)
        elif quantize == "int8":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            kwargs["dtype"] = compute
        model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
        sync()
        loaded = time.perf_counter() - t0
        if quantize != "none":
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
        elif gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model = get_peft_model(model, LoraConfig(r=lora_r, lora_alpha=2 * lora_r, lora_dropout=0.05,
                                                 target_modules=list(TARGETS), task_type="CAUSAL_LM"))
    if not cuda:  # bitsandbytes 4-bit on CPU: without this, gradients vanish after an eval forward (llm.model)
        fix_bnb_for_cpu(model)
    sync()
    info = {"recipe": recipe, "quantize": quantize, "load_s": round(loaded, 1),
            "load_and_prepare_s": round(time.perf_counter() - t0, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "lora_r": lora_r, "gradient_checkpointing": gradient_checkpointing,
            "device": str(_device(model))}
    if cuda:
        info.update(memory_after_load_gib=round(torch.cuda.memory_allocated() / GIB, 2),
                    peak_memory_while_loading_gib=round(torch.cuda.max_memory_allocated() / GIB, 2))
    return model, info


def _device(model: torch.nn.Module) -> torch.device:
    trainable = [p for p in model.parameters() if p.requires_grad]
    return (trainable or list(model.parameters()))[0].device


def _config(model: torch.nn.Module):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def train_speed(model: torch.nn.Module, batch_size: int, seq_len: int, steps: int = 5, warmup: int = 2,
                lr: float = 2e-4, seed: int = 0) -> dict:
    """Time ``warmup`` + ``steps`` optimizer steps on random tokens; tokens/s over the timed steps, peak memory.

    The AdamW state lives only inside this call, so calls with other shapes start alike.
    """
    device = _device(model)
    cuda = device.type == "cuda"
    vocab = _config(model).vocab_size
    _config(model).use_cache = False
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=lr)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    model.train()

    def step() -> float:
        x = torch.randint(3, vocab, (batch_size, seq_len), generator=gen).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    release()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() if cuda else 0
    times, losses = [], []
    try:
        for _ in range(warmup + steps):
            sync()
            t0 = time.perf_counter()
            losses.append(step())  # float() waits for the step
            sync()
            times.append(time.perf_counter() - t0)
    finally:
        opt.zero_grad(set_to_none=True)
        opt.state.clear()  # the AdamW moments go with this call
    timed = times[warmup:] or times
    dt = sum(timed)
    out = {"batch_size": batch_size, "seq_len": seq_len, "warmup_steps": warmup, "timed_steps": len(timed),
           "s_per_step": round(dt / len(timed), 3), "s_per_step_min": round(min(timed), 3),
           "first_step_s": round(times[0], 2),
           "tokens_per_s": round(batch_size * seq_len * len(timed) / dt, 1),
           "loss_first_last": [round(losses[0], 4), round(losses[-1], 4)],
           "finite_loss": all(v == v and abs(v) != float("inf") for v in losses)}
    if cuda:
        out.update(memory_before_gib=round(before / GIB, 2),
                   peak_memory_allocated_gib=round(torch.cuda.max_memory_allocated() / GIB, 2),
                   peak_memory_reserved_gib=round(torch.cuda.max_memory_reserved() / GIB, 2))
    release()
    return out


def for_generation(model: torch.nn.Module, quantize: str) -> torch.nn.Module:
    """The trained LoRA model as :func:`llm.model.load_trained` serves it: merged into unquantized weights, left
    unmerged on a quantized base; eval mode, KV cache on."""
    if quantize == "none" and hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.eval()
    _config(model).use_cache = True
    return model


@torch.inference_mode()
def generation_speed(model: torch.nn.Module, batch_size: int = 32, prompt_len: int = 100, new_tokens: int = 24,
                     num_beams: int = 1, repeats: int = 2, warmup: int = 1, seed: int = 0) -> dict:
    """Captions/s of greedy (``num_beams=1``) or beam-search generation of exactly ``new_tokens`` tokens after a
    batch of left-padded random prompts of ``prompt_len`` tokens and up to a quarter fewer (as Captioner pads them)."""
    device = _device(model)
    vocab = _config(model).vocab_size
    gen = torch.Generator(device="cpu").manual_seed(seed)
    lengths = prompt_len - torch.randint(0, max(1, prompt_len // 4), (batch_size,), generator=gen)
    n = int(lengths.max())
    x = torch.full((batch_size, n), PAD, dtype=torch.long)
    mask = torch.zeros((batch_size, n), dtype=torch.long)
    for r, k in enumerate(lengths.tolist()):
        x[r, n - k:] = torch.randint(3, vocab, (k,), generator=gen)
        x[r, n - k] = BOS
        mask[r, n - k:] = 1
    kwargs = dict(input_ids=x.to(device), attention_mask=mask.to(device), max_new_tokens=new_tokens,
                  min_new_tokens=new_tokens, num_beams=num_beams, do_sample=False, early_stopping=num_beams > 1,
                  eos_token_id=EOS, pad_token_id=PAD)
    cuda = device.type == "cuda"
    release()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for _ in range(warmup):
        model.generate(**kwargs)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        y = model.generate(**kwargs)
    sync()
    dt = time.perf_counter() - t0
    out = {"batch_size": batch_size, "num_beams": num_beams, "prompt_tokens_max": n,
           "prompt_tokens_mean": round(float(lengths.float().mean()), 1), "new_tokens": int(y.shape[1] - n),
           "repeats": repeats, "s_per_batch": round(dt / repeats, 3),
           "captions_per_s": round(batch_size * repeats / dt, 1),
           "new_tokens_per_s": round(batch_size * repeats * (y.shape[1] - n) / dt, 1)}
    if cuda:
        out["peak_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    p.add_argument("--quantize", choices=QUANTIZE, default="nf4", help="nf4 (QLoRA), int8, or none (bf16 LoRA)")
    p.add_argument("--recipe", choices=RECIPES, default="segcap",
                   help="segcap: llm.model's loading path; reference: plain transformers + peft defaults")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--generate", action="store_true", help="also time generation after training")
    p.add_argument("--gen-batch-size", type=int, default=32)
    p.add_argument("--prompt-len", type=int, default=100)
    p.add_argument("--new-tokens", type=int, default=24)
    p.add_argument("--beams", type=int, nargs="+", default=[1, 3])
    p.add_argument("--model-dir", type=Path, default=None,
                   help="checkpoint folder to reuse (built there when it has no config.json; kept afterwards)")
    p.add_argument("--work-dir", type=Path, default=None, help="alias of --model-dir (older name)")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (use with --shape small)")
    args = p.parse_args(argv)
    result: dict = {"bench": "llm_qlora_gpu", "machine": machine(), "shape": args.shape, "recipe": args.recipe,
                    "quantize": args.quantize, "batch_size": args.batch_size, "seq_len": args.seq_len}
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        result.update(skipped="CUDA is unavailable: run this on a machine with an NVIDIA GPU (bitsandbytes 4-bit)")
        print(json.dumps(result, indent=1))
        return result

    keep = args.model_dir or args.work_dir
    work = keep or Path(tempfile.mkdtemp(prefix="segcap-qlora-bench-", dir=scratch_root(checkpoint_gib(args.shape) + 4)))
    try:
        if not (work / "config.json").is_file():
            result["checkpoint"] = build_checkpoint(args.shape, work)
            result["build_and_save_s"] = result["checkpoint"]["build_and_save_s"]
        model, info = load_for_training(work, args.quantize, args.recipe, args.lora_r,
                                        not args.no_gradient_checkpointing)
        result.update(info)
        result["lora_targets"] = list(TARGETS)
        result.update(train_speed(model, args.batch_size, args.seq_len, args.steps, args.warmup))
        if args.generate:
            model = for_generation(model, args.quantize)
            result["generation"] = [generation_speed(model, args.gen_batch_size, args.prompt_len, args.new_tokens, b)
                                    for b in args.beams]
        del model
        release()
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
