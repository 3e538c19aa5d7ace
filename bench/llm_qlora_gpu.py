"""Benchmark: QLoRA training speed and memory of a Llama-2-7B-shaped model on one GPU (random weights, no download).

    python -m bench.llm_qlora_gpu                          # Llama-2-7B shape, batch 16 x 128 tokens, 10 timed steps
    python -m bench.llm_qlora_gpu --batch-size 8 --seq-len 256 --steps 20
    python -m bench.llm_qlora_gpu --shape small --allow-cpu   # checks the code path on CPU (tiny shape)

The model is built from Llama-2-7B's configuration with random weights in bf16, saved to a scratch folder and loaded
back through :func:`llm.model.load_causal_lm` with 4-bit NormalFloat quantization (double quantisation, bf16 compute),
exactly as ``llm.finetune --quantize nf4`` loads a checkpoint; then LoRA adapters (r 16 on q/k/v/o/gate/up/down, as
``configs/llm/llama2-7b-qlora.yaml``) via :func:`llm.model.apply_method`, gradient checkpointing on, AdamW, bf16
autocast. Prints one JSON object: tokens/s, seconds per step and peak GPU memory. Without CUDA it prints
``{"cuda_available": false, ...}`` and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from llm.model import ModelOptions, apply_method, load_causal_lm

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


def _machine() -> dict:
    m = {"processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
         "torch": torch.__version__, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        m.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda)
    try:
        import bitsandbytes

        m["bitsandbytes"] = bitsandbytes.__version__
    except ImportError:
        m["bitsandbytes"] = None
    return m


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--no-gradient-checkpointing", action="store_true")
    p.add_argument("--work-dir", type=Path, default=None, help="scratch folder for the random checkpoint")
    p.add_argument("--allow-cpu", action="store_true", help="run without CUDA (use with --shape small)")
    args = p.parse_args(argv)
    result: dict = {"bench": "llm_qlora_gpu", "machine": _machine(), "shape": args.shape,
                    "batch_size": args.batch_size, "seq_len": args.seq_len}
    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        result.update(skipped="CUDA is unavailable: run this on a machine with an NVIDIA GPU (bitsandbytes 4-bit)")
        print(json.dumps(result, indent=1))
        return result

    from transformers import LlamaConfig, LlamaForCausalLM


    work = args.work_dir or Path(tempfile.mkdtemp(prefix="segcap-qlora-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if cuda else "cpu")
    try:
        # 1. random Llama-2-7B-shaped weights in bf16, saved as a checkpoint folder
        t0 = time.perf_counter()
        cfg = LlamaConfig(**SHAPES[args.shape])
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(device):
                model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(default)
        n_params = sum(p.numel() for p in model.parameters())
        model.save_pretrained(work, max_shard_size="2GB")
        del model
        if cuda:
            torch.cuda.empty_cache()
        result["build_and_save_s"] = round(time.perf_counter() - t0, 1)

        # 2. load quantized (nf4, double quantisation, bf16 compute on CUDA) as llm.finetune does
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        model = load_causal_lm(work, "nf4", "auto")
        result["load_nf4_s"] = round(time.perf_counter() - t0, 1)
        if cuda:
            result["memory_after_load_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)

        # 3. LoRA adapters on every projection, gradient checkpointing
        opts = ModelOptions(base_model=str(work), method="lora", quantize="nf4", lora_r=args.lora_r,
                            lora_alpha=2 * args.lora_r, lora_dropout=0.05, lora_target_modules=TARGETS,
                            gradient_checkpointing=not args.no_gradient_checkpointing)
        model = apply_method(model, opts)
        model.config.use_cache = False
        trainable = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(trainable, lr=2e-4)
        gen = torch.Generator(device="cpu").manual_seed(0)

        # 4. train steps on random tokens: batch x seq_len, loss on every token
        def step() -> float:
            x = torch.randint(3, cfg.vocab_size, (args.batch_size, args.seq_len), generator=gen).to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = model(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        model.train()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = [step() for _ in range(args.steps)]
        if cuda:
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        tokens = args.batch_size * args.seq_len * args.steps
        result.update(
            parameters=n_params,
            trainable_parameters=sum(p.numel() for p in trainable),
            lora_r=args.lora_r,
            lora_targets=list(TARGETS),
            gradient_checkpointing=opts.gradient_checkpointing,
            timed_steps=args.steps,
            s_per_step=round(dt / args.steps, 3),
            tokens_per_s=round(tokens / dt, 1),
            loss_first_last=[round(losses[0], 4), round(losses[-1], 4)],
        )
        if cuda:
            result.update(peak_memory_allocated_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
                          peak_memory_reserved_gib=round(torch.cuda.max_memory_reserved() / 2**30, 2))
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
