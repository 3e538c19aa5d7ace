"""llm: fine-tune smoke runs on the tiny fixture (full, LoRA, resume), loadable folders, greedy and beam generation,
4-bit QLoRA steps on CPU, two CPU processes (slow), and a CUDA QLoRA check (gpu)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aerialdata.captionset import CaptionDataset
from composition.schema import read_jsonl
from llm.finetune import main as finetune
from llm.generate import Captioner
from llm.generate import main as generate
from llm.model import ModelOptions, apply_method, fix_bnb_for_cpu, load_base
from llm.tokenizer import train_tokenizer
from segcap.errors import ConfigError, OutputExistsError

HERE = Path(__file__).resolve().parent
FIX = HERE / "data" / "llm"
REPO = HERE.parent
COMPOSITIONS = FIX / "compositions.jsonl"
CAPTIONS = FIX / "rsicd" / "dataset_rsicd.json"
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 128}
FAST = dict(compositions=COMPOSITIONS, captions=CAPTIONS, tiny_model=TINY, tokenizer={"kind": "word", "vocab_size": 200},
            batch_size=8, eval_batch_size=16, max_length=128, logging_steps=1, progress=False, threads=1)


def _records(split=None):

    recs = read_jsonl(COMPOSITIONS)
    if split is None:
        return recs
    names = [Path(it.filename).stem for it in CaptionDataset(CAPTIONS, split=split).items]
    by = {Path(r["image"]).stem: r for r in recs}
    return [by[n] for n in names]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """Full fine-tuning of the tiny model long enough to fit one caption per training image."""
    out = tmp_path_factory.mktemp("llm") / "full"
    finetune(out=out, epochs=40, learning_rate=1e-2, warmup_ratio=0.0, captions_per_image="fixed",
             save_checkpoints=False, **FAST)
    return out


def test_full_finetune_writes_a_loadable_folder(full_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llm.retrieval import INDEX_FILE, CompositionIndex

    for name in ("config.json", "model.safetensors", "tokenizer.json", "segcap_llm.json", "loss.csv", "loss.png",
                 "run.json", INDEX_FILE):
        assert (full_run / name).is_file(), name
    # every model keeps the training compositions' index with every caption (llm.generate's consensus pool)
    index = CompositionIndex.load(full_run / INDEX_FILE)
    assert len(index) > 0 and max(len(c) for c in index.captions) > 1
    meta = json.loads((full_run / "segcap_llm.json").read_text())
    assert meta["prompt"]["mode"] == "full" and meta["method"] == "full"
    assert meta["figures"]["train_examples"] == 8 and meta["figures"]["train_duplicates_dropped"] == 2
    assert len(meta["figures"]["eval_loss"]) == 40  # one eval per epoch
    assert meta["figures"]["steps"] == 40  # one batch of 8 images per epoch
    rows = (full_run / "loss.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,split,loss" and sum(",eval," in r for r in rows) == 40
    train = [float(r.rsplit(",", 1)[1]) for r in rows if ",train," in r]
    assert train[-1] < 0.2 * train[0]  # it fits the training captions

    model = AutoModelForCausalLM.from_pretrained(full_run, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(full_run, local_files_only=True)
    ids = torch.tensor([[tok.bos_token_id] + tok("Caption:", add_special_tokens=False)["input_ids"]])
    out = model.generate(input_ids=ids, max_new_tokens=5, do_sample=False, pad_token_id=tok.pad_token_id)
    assert out.shape[0] == 1 and out.shape[1] > ids.shape[1]


def test_greedy_and_beam_generation(full_run):

    cap = Captioner(full_run, batch_size=3, max_new_tokens=20)
    train = _records("train")
    refs = {Path(it.filename).stem: {" ".join(s.lower().split()).replace(" .", ".") for s in it.sentences}
            for it in CaptionDataset(CAPTIONS, split="train").items}
    greedy = cap.caption(train)
    beam = cap.caption(train, num_beams=3)
    assert len(greedy) == len(beam) == len(train) and all(greedy) and all(beam)
    # the model fitted its training captions: most greedy captions are one of the image's references
    # (pond_1 and pond_2 share a prompt, so one of them may get the other's caption)
    hits = sum(g in refs[Path(r["image"]).stem] for g, r in zip(greedy, train, strict=True))
    assert hits >= 6, list(zip(greedy, [r["image"] for r in train], strict=True))
    # batching and order do not change the captions
    assert cap.caption(train[::-1], batch_size=8)[::-1] == greedy


def test_generate_cli_writes_coco_results(full_run, tmp_path):
    out = tmp_path / "preds.json"
    generate(model=full_run, compositions=COMPOSITIONS, captions=CAPTIONS, split="test", out=out, num_beams=3,
             progress=False)
    preds = json.loads(out.read_text())
    assert [p["image_id"] for p in preds] == ["river_3.jpg", "forest_3.jpg"]
    assert all(isinstance(p["caption"], str) and p["caption"] for p in preds)
    with pytest.raises(OutputExistsError):
        generate(model=full_run, compositions=COMPOSITIONS, captions=CAPTIONS, out=out, progress=False)


def test_blind_mode_is_stored_and_used(tmp_path):
    out = tmp_path / "blind"
    finetune(out=out, epochs=1, prompt_mode="blind", **FAST)
    cap = Captioner(out)
    assert cap.meta["prompt"]["mode"] == "blind"
    a, b = _records("test")
    assert cap.prompt(a) == cap.prompt(b) == f"{cap.template.instruction}\nCaption:"


def test_tensorboard_logs_the_losses(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    finetune(out=out, epochs=2, tensorboard=True, save_checkpoints=False, **FAST)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/learning_rate", "eval/loss"} <= tags
    assert len(events.Scalars("eval/loss")) == 2  # one per epoch
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard"
                        else real_find_spec(name, *a))
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[tensorboard\]'"):
        finetune(out=tmp_path / "no_tb", epochs=1, tensorboard=True, **FAST)
    assert not (tmp_path / "no_tb").exists()  # refused before any work


def test_lora_finetune_adapter_folder_reloads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    finetune(out=out, epochs=2, method="lora", lora_target_modules=["q_proj", "v_proj"], learning_rate=1e-2, **FAST)
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert Path(adapter["base_model_name_or_path"]) == out / "base_model"
    assert sorted(adapter["target_modules"]) == ["q_proj", "v_proj"]
    assert not (out / "model.safetensors").exists()
    base = AutoModelForCausalLM.from_pretrained(adapter["base_model_name_or_path"], local_files_only=True)
    model = PeftModel.from_pretrained(base, out)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained (LoRA B starts at zero)
    caps = Captioner(out, max_new_tokens=8).caption(_records("test"), num_beams=2)
    assert len(caps) == 2


def test_resume_continues_and_checks_options(tmp_path):
    out = tmp_path / "run"
    finetune(out=out, epochs=1, **FAST)
    first = json.loads((out / "segcap_llm.json").read_text())["figures"]
    assert [p.name for p in (out / "checkpoints").glob("checkpoint-*")] == ["checkpoint-5"]
    with pytest.raises(OutputExistsError):
        finetune(out=out, epochs=2, **FAST)
    with pytest.raises(ConfigError, match="was trained with tiny_model"):
        finetune(out=out, epochs=2, resume=True, **{**FAST, "tiny_model": {**TINY, "num_hidden_layers": 2}})
    finetune(out=out, epochs=2, resume=True, **FAST)
    second = json.loads((out / "segcap_llm.json").read_text())["figures"]
    assert (first["steps"], second["steps"]) == (5, 10)  # continued from the epoch-1 checkpoint
    assert len(second["eval_loss"]) == 2 and second["eval_loss"][0] == pytest.approx(first["eval_loss"][0])
    # --overwrite starts again
    finetune(out=out, epochs=1, overwrite=True, **FAST)
    assert json.loads((out / "segcap_llm.json").read_text())["figures"]["steps"] == 5


def test_nf4_qlora_steps_on_cpu_change_the_lora_weights(tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    tok = train_tokenizer(["a pond among green trees .", "vegetation 70% center\nCaption:"], kind="word",
                          vocab_size=100)
    opts = ModelOptions(method="lora", quantize="nf4", tiny_model=TINY, lora_target_modules=("q_proj", "v_proj"),
                        lora_dropout=0.0)
    model = apply_method(load_base(opts, tok, tmp_path / "base"), opts)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and fix_bnb_for_cpu(model) == len(quantized)
    x = torch.randint(4, len(tok), (4, 16))
    model.eval()
    with torch.no_grad():  # an eval forward first: the case where gradients silently vanished without the fix
        model(input_ids=x)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert before and all("lora_" in n for n in before)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(3):
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]
    assert sorted(changed) == sorted(before)  # every LoRA A and B moved
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_nf4_finetune_cli_on_cpu(tmp_path):
    out = tmp_path / "qlora"
    finetune(out=out, epochs=2, method="lora", quantize="nf4", learning_rate=1e-2, **FAST)
    assert json.loads((out / "segcap_llm.json").read_text())["quantize"] == "nf4"
    assert len(Captioner(out, max_new_tokens=6).caption(_records("test"))) == 2


@pytest.mark.slow  # two torch processes (15 s): make test-slow; the default run stays well under 10 minutes
def test_two_cpu_processes_torchrun(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "llm.finetune",
           "--compositions", str(COMPOSITIONS), "--captions", str(CAPTIONS), "--out", str(out), "--epochs", "2",
           "--batch-size", "4", "--tiny-model", json.dumps(TINY), "--tokenizer", '{"kind": "word", "vocab_size": 200}',
           "--no-progress", "--threads", "1"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fig = json.loads((out / "segcap_llm.json").read_text())["figures"]
    assert fig["processes"] == 2
    assert fig["steps"] == 2 * 5  # 38 examples / (2 processes x 4) = 5 steps per epoch
    assert len(Captioner(out, max_new_tokens=6).caption(_records("test"))) == 2


@pytest.mark.gpu
def test_qlora_on_cuda_bf16(tmp_path):
    pytest.importorskip("bitsandbytes")
    tok = train_tokenizer(["a pond among green trees .", "vegetation 70% center\nCaption:"], kind="word",
                          vocab_size=100)
    opts = ModelOptions(method="lora", quantize="nf4", tiny_model=TINY, lora_dropout=0.0)
    model = apply_method(load_base(opts, tok, tmp_path / "base"), opts)
    assert next(model.parameters()).device.type == "cuda"
    x = torch.randint(4, len(tok), (4, 16), device="cuda")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):
        model(input_ids=x, labels=x).loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters() if p.requires_grad)
