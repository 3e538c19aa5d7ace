"""Fine-tune a causal LM to write a caption from an image's composition text.

The offline default (a tiny Llama trained from scratch with its own tokenizer, CPU-friendly)::

    python -m llm.finetune --config configs/llm/tiny.yaml \\
        --compositions runs/gt/compositions.jsonl --captions data/synthetic/rsicd/dataset_rsicd.json --out runs/llm/tiny

The "blind LM" baseline (same template without the composition text), LoRA, and 4-bit QLoRA on the tiny model::

    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/blind --prompt-mode blind

Compositions with scenes (a segmenter with a scene head): the ablation of what each half of the text gives::

    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/both --prompt-mode full
    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/composition --prompt-mode composition
    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/scene --prompt-mode scene
    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/lora --method lora
    python -m llm.finetune --config configs/llm/tiny.yaml ... --out runs/llm/qlora --method lora --quantize nf4

A real run (local Llama-2 checkpoint, QLoRA), on one or several GPUs::

    python -m llm.finetune --config configs/llm/llama2-7b-qlora.yaml --base-model /models/Llama-2-7b-hf \\
        --compositions runs/rsicd/compositions.jsonl --captions /data/RSICD/dataset_rsicd.json --out runs/llm/llama2
    accelerate launch --num_processes 2 -m llm.finetune --config configs/llm/llama2-7b-qlora.yaml ...
    torchrun --nproc_per_node 2 -m llm.finetune --config configs/llm/tiny.yaml ...   # also several CPU processes (gloo)

An interrupted run continues from its last epoch checkpoint with ``--resume`` (same command otherwise). Options,
inputs and the output folder are checked before anything is written: blank captions (empty, or no letter or digit)
are left out with a note on stderr, and a split left without any caption is refused (exit code 2). A fresh run that
fails before its first checkpoint removes what it wrote, so the next run is not refused.

The output folder loads with ``from_pretrained``: a full model (``config.json`` + weights) or a LoRA adapter
(``adapter_config.json`` records the base model path; the tiny base lives in ``base_model/``), the tokenizer beside
it, and ``segcap_llm.json`` (prompt template and mode, options, figures; written last, so its presence marks a
finished folder). Also ``loss.csv``/``loss.png`` (train and eval loss against step and epoch) and ``checkpoints/``.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from transformers import TrainerCallback
from transformers.trainer_utils import get_last_checkpoint

from aerialdata.captionset import CaptionDataset, is_blank, screen_blank_captions
from composition.schema import read_jsonl
from composition.text import PROMPT_VERSION
from llm.consensus import NGRAM_FILE, document_frequencies
from llm.curves import loss_rows, plot_loss, write_loss_csv
from llm.examples import (
    DEFAULT_INSTRUCTION,
    DEFAULT_TEMPLATE,
    CaptionExamples,
    CaptionsPerImage,
    PromptMode,
    PromptTemplate,
    build_image_examples,
    join_records,
    normalise_caption,
)
from llm.model import (
    BASE_DIR,
    META_FILE,
    ModelOptions,
    apply_method,
    compute_dtype,
    load_base,
    load_tokenizer,
    option_problems,
)
from llm.retrieval import INDEX_FILE, CompositionIndex
from llm.tokenizer import (
    CaptionCollator,
    TokenizedExamples,
    ensure_pad_token,
    tokenizer_problems,
    train_tokenizer,
)
from segcap.atomic import write_json
from segcap.cli import run
from segcap.errors import ConfigError, DataError, DatasetNotFoundError
from segcap.options import (
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    UnitFraction,
    checked,
    ungrouped,
)
from segcap.progress import Progress, is_terminal, quiet_library_bars
from segcap.training import OutputFolder, read_record

RUN_FILE = "run.json"  # the options of the run, written first: marks the folder as ours and lets --resume check them
# options that may change between a run and its --resume (where it runs and what it shows, not what it learns); every
# other option must be the one the run started with (segmentation.train keeps the same rule), except epochs, which
# may grow (a longer run: the schedule stretches to the new length from the step reached; run.json records it)
RESUME_FREE = ("out", "threads", "progress", "tensorboard", "eval_batch_size", "logging_steps", "save_total_limit",
               "resume", "overwrite")
RESUME_GROWS = ("epochs",)
# what a model folder holds, for whoever caches one (pipeline.run's fingerprints): 2 = the training compositions'
# index (retrieval.npz, every caption) is saved with every model, not only with retrieval prompts (2026-12-01)
OUTPUTS_VERSION = 2


def read_compositions(path: Path) -> list[dict]:
    """Composition records, validated by :mod:`composition.schema`."""

    return read_jsonl(path)


@checked
def main(
    compositions: Path,
    captions: Path,
    out: Path,
    model: ModelOptions = ModelOptions(),
    tokenizer: dict | None = None,
    prompt_mode: PromptMode = "full",
    instruction: str = DEFAULT_INSTRUCTION,
    prompt_template: str = DEFAULT_TEMPLATE,
    retrieval_k: NonNegativeInt = 0,
    retrieval_captions: PositiveInt = 1,
    captions_per_image: CaptionsPerImage = "all",
    lowercase: bool = True,
    train_split: Literal["train", "val", "test", "restval"] = "train",
    eval_split: Literal["val", "test", "train", "restval", "none"] = "val",
    allow_missing: bool = False,
    epochs: PositiveFloat = 10.0,
    batch_size: PositiveInt = 32,
    eval_batch_size: PositiveInt = 64,
    gradient_accumulation_steps: PositiveInt = 1,
    learning_rate: PositiveFloat = 1e-3,
    weight_decay: NonNegativeFloat = 0.0,
    warmup_ratio: UnitFraction = 0.05,
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial",
                          "inverse_sqrt"] = "cosine",
    max_length: PositiveInt = 512,
    group_by_length: bool = True,
    logging_steps: PositiveInt = 10,
    save_total_limit: PositiveInt = 2,
    save_checkpoints: bool = True,
    seed: int = 0,
    threads: PositiveInt | None = None,
    progress: bool = True,
    tensorboard: bool = False,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Fine-tune a causal LM on (composition prompt, caption) pairs; eval loss on the val split each epoch.

    The model's options are llm.model.ModelOptions' fields (base_model, quantize, method, lora_r...), given flat
    like the others: --base-model, base_model: in a config, main(base_model=...).

    Args:
        compositions: composition records (JSON Lines, segcap.composition/1 or /2) of the caption set's images.
        captions: caption set, Karpathy-split JSON (dataset_rsicd.json) or the folder holding it.
        out: output folder (model + tokenizer + segcap_llm.json, loss.csv, loss.png, checkpoints/).
        tokenizer: the tiny model's tokenizer (kind: bpe|word, vocab_size, min_frequency; set in the config file).
        prompt_mode: full (instruction + composition text, its scene line included when the records have scenes),
            composition (without the scene line), scene (the scene line only) or blind (no composition text).
        instruction: the instruction line of the prompt.
        prompt_template: prompt format with {instruction}, {composition} and {neighbours}; the caption follows it
            after a space.
        retrieval_k: retrieval-augmented prompts: the {neighbours} line carries the captions of the k training
            images whose compositions are closest (never the image itself); 0 = no retrieval. With prompt_mode blind
            it is the retrieval-only ablation.
        retrieval_captions: captions shown per neighbour (the ones its references agree on most first).
        captions_per_image: all (every caption a target), sample (one drawn per image each epoch), fixed (one, drawn once).
        lowercase: lowercase the target captions (COCO scoring is case-insensitive).
        train_split: caption-set split to train on.
        eval_split: caption-set split for the eval loss each epoch ("none" to skip).
        allow_missing: skip caption-set images without a composition instead of stopping.
        epochs: passes over all training examples.
        batch_size: examples per optimizer step per process (before gradient accumulation).
        eval_batch_size: examples per eval forward pass.
        gradient_accumulation_steps: batches accumulated per optimizer step.
        learning_rate: peak learning rate (AdamW).
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the steps with linear warm-up.
        lr_scheduler: learning-rate schedule after warm-up (transformers' SchedulerType names that need no extra
            arguments).
        max_length: longest example in tokens; longer prompts lose their start (never the caption).
        group_by_length: batch examples of similar length together (less padding; order still shuffled).
        logging_steps: optimizer steps between train-loss log entries.
        save_total_limit: epoch checkpoints kept in out/checkpoints (for --resume, which continues from the last).
        save_checkpoints: write a checkpoint each epoch (needed for --resume; off only for quick experiments).
        seed: seed of the tiny model's weights, caption sampling and data order.
        threads: torch CPU threads; empty: torch's default.
        progress: show progress: the Trainer's bar on a terminal, one line per epoch in a log.
        tensorboard: also log the train and eval loss and the learning rate to out/tensorboard (needs the
            tensorboard extra: pip install -e '.[tensorboard]').
        resume: continue an interrupted run in out from its last checkpoint.
        overwrite: replace an existing output folder made by an earlier run.
    """
    t0 = time.perf_counter()
    # 1. setup: options, data and training arguments, every problem found before anything is written
    job = setup(ungrouped(main, locals()), model)
    # 2. output folder: one writer at a time; created (or cleared with --overwrite) only now, its options recorded;
    #    a fresh run that fails before it has anything to keep (a checkpoint, the model) removes what it wrote
    saved = {"model": False}
    with job.folder.hold(job.options, job.state.is_main_process, job.state.wait_for_everyone,
                         has_checkpoint=lambda: saved["model"] or _last_checkpoint(job.out) is not None):
        if job.state.is_main_process:
            job.folder.write_record(job.options)
            (job.out / META_FILE).unlink(missing_ok=True)  # not finished until this run writes it again
        job.state.wait_for_everyone()
        # 3. build: the tokenizer (trained here for the tiny model) and the model (base, then full or LoRA)
        tok, model = build(job)
        # 4. fit: the Trainer, epochs over every example, eval loss and a checkpoint each epoch
        trainer, result = fit(job, tok, model)
        # 5. save: model or adapter + tokenizer, curves, then segcap_llm.json last
        save(job, trainer, result, tok, saved, t0)
    return job.out


@dataclass
class _Job:
    """One fine-tuning run as :func:`setup` checked it: its options, data and training arguments."""

    options: dict[str, Any]  # main's arguments, JSON-ready (run.json, segcap_llm.json)
    opts: ModelOptions
    template: PromptTemplate
    tok_settings: dict
    data: _Examples
    args: Any  # transformers.TrainingArguments
    state: Any  # accelerate.PartialState
    bars: bool
    out: Path
    folder: OutputFolder


def setup(a: dict[str, Any], model: ModelOptions) -> _Job:
    """Check main's options ``a`` (flat; ``model`` is their group, :class:`ModelOptions`) every problem at once, the
    output folder, and read the data; the training arguments; nothing is written."""
    if a["threads"]:
        torch.set_num_threads(a["threads"])
    a["tiny_model"], a["tokenizer"] = _mapping("tiny_model", a["tiny_model"]), _mapping("tokenizer", a["tokenizer"])
    options = {k: (str(v) if isinstance(v, Path) else v) for k, v in a.items()}
    tok_settings = dict(a["tokenizer"] or {})
    opts = replace(model, base_model=str(model.base_model), tiny_model=dict(a["tiny_model"] or {}),
                   lora_target_modules=tuple(model.lora_target_modules))
    template = PromptTemplate(instruction=a["instruction"], template=a["prompt_template"], mode=a["prompt_mode"],
                              retrieval_k=a["retrieval_k"], retrieval_captions=a["retrieval_captions"])
    options["lora_target_modules"] = list(opts.lora_target_modules)

    # options: every problem at once, before any work
    problems = option_problems(opts) + template.problems()
    if opts.is_tiny:
        problems += tokenizer_problems(tok_settings)
    elif a["tokenizer"]:
        problems.append("tokenizer settings apply to the tiny model only; a checkpoint brings its own tokenizer")
    problems += _training_problems(a)
    problems += [f"{what} not found: {a[what]}" for what in ("compositions", "captions") if not Path(a[what]).exists()]
    if a["resume"] and a["overwrite"]:
        problems.append("--resume and --overwrite conflict: resume continues the run in --out, overwrite replaces it")
    if a["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        problems.append("--tensorboard needs the tensorboard package: pip install -e '.[tensorboard]' "
                        "(or leave --tensorboard off)")
    if problems:
        raise ConfigError(problems)

    out = Path(a["out"])
    folder = _output_folder(out, a["resume"], a["overwrite"])
    folder.check(options)  # writable, not clobbered, a --resume that can resume these options

    # data: compositions joined with the caption set, per split (read and checked before anything is written)
    data = _read_examples(Path(a["compositions"]), a["captions"], a["train_split"], a["eval_split"], template,
                          a["lowercase"], a["allow_missing"], a["captions_per_image"], a["seed"])

    # training arguments (transformers checks them too), before anything is written
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())  # cpu=True: several CPU processes use gloo
    if state.is_main_process:
        for note in data.notes:
            print(note, file=sys.stderr, flush=True)
    bars = a["progress"] and is_terminal()  # the Trainer's tqdm bar on a terminal; in a log, one line per epoch
    quiet_library_bars()  # in a log, no bar for each checkpoint's weight shards either
    args = _training_arguments(options, out, eval_on=data.eval_pairs is not None, bars=bars)
    return _Job(options, opts, template, tok_settings, data, args, state, bars, out, folder)


def build(job: _Job):
    """The tokenizer (trained on the training text for the tiny model, the checkpoint's otherwise; saved into out
    first, reused by --resume) and the model: the base (built or loaded, quantized or not), then full or LoRA."""
    from transformers import AutoTokenizer

    out, opts, state = job.out, job.opts, job.state
    with state.main_process_first():
        if (out / "tokenizer.json").is_file() and job.options["resume"]:
            tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
        elif opts.is_tiny:
            images = job.data.train_images
            texts = [im.prompt for im in images] + [c for im in images for c in im.captions]
            tok = train_tokenizer(texts, **job.tok_settings)
        else:
            tok = load_tokenizer(opts.base_model)  # a folder, or a hub id through transformers' cache
        ensure_pad_token(tok)
        if state.is_main_process:
            tok.save_pretrained(str(out))
    with state.main_process_first():
        model = load_base(opts, tok, out / BASE_DIR, job.options["seed"])
    return tok, apply_method(model, opts)


def fit(job: _Job, tok, model):
    """The Trainer over every example (from the last checkpoint with --resume): eval loss and a checkpoint each
    epoch. Returns the trainer and its result."""
    from transformers import PrinterCallback, Trainer

    o, data, out, state = job.options, job.data, job.out, job.state
    train_ds = TokenizedExamples(data.train_pairs, tok, o["max_length"])
    eval_ds = TokenizedExamples(data.eval_pairs, tok, o["max_length"]) if data.eval_pairs else None
    trainer = Trainer(
        model=model,
        args=job.args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        data_collator=CaptionCollator(tok.pad_token_id),
        processing_class=tok,
        callbacks=[_EpochCallback(train_ds), _CurvesCallback(out),
                   *([_EpochLines()] if o["progress"] and not job.bars else []),
                   *([_tensorboard(out)] if o["tensorboard"] and state.is_main_process else [])],
    )
    if not job.bars:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict; _EpochLines says what matters
    if state.is_main_process:
        n_train, n_all = _parameters(model)
        print(
            f"examples: train {len(data.train_pairs)} ({len(data.train_images)} images, {data.train_dropped} duplicate "
            f"pairs dropped, captions_per_image={o['captions_per_image']}), eval "
            f"{len(data.eval_pairs) if data.eval_pairs else 0} ({len(data.eval_images)} images); parameters: "
            f"{n_train:,} trainable of {n_all:,}; {state.num_processes} process(es) on {state.device}",
            flush=True,
        )
    last = _last_checkpoint(out) if o["resume"] else None  # there is one: the folder's check saw it
    return trainer, trainer.train(resume_from_checkpoint=last)


def save(job: _Job, trainer, result, tok, saved: dict, t0: float) -> None:
    """The model or adapter with the tokenizer; main process: loss curves, the consensus n-grams and composition
    index, then segcap_llm.json last (its presence marks a finished folder)."""
    o, data, out, state, opts = job.options, job.data, job.out, job.state, job.opts
    trainer.save_model(str(out))
    saved["model"] = True
    if state.is_main_process:
        tok.save_pretrained(str(out))
        rows = loss_rows(trainer.state.log_history)
        write_loss_csv(out / "loss.csv", rows)
        plot_loss(out / "loss.png", rows, title=f"caption LM fine-tuning ({opts.method}, {o['prompt_mode']} prompt)")
        evals = [r["loss"] for r in rows if r["split"] == "eval"]
        write_json(out / NGRAM_FILE, document_frequencies(data.train_refs))  # for consensus decoding
        data.index.save(out / INDEX_FILE)  # every caption: a consensus pool counts them all
        n_train, n_all = _parameters(trainer.model)
        meta = {
            "format": "segcap.llm/1",
            "prompt": job.template.to_dict(),
            "composition_text_version": PROMPT_VERSION,
            "lowercase": o["lowercase"],
            "max_length": o["max_length"],
            "base_model": BASE_DIR if (out / BASE_DIR / "config.json").is_file() else opts.base_model,
            "method": opts.method,
            "quantize": opts.quantize,
            "options": o,
            "figures": {
                "train_examples": len(data.train_pairs),
                "train_images": len(data.train_images),
                "train_duplicates_dropped": data.train_dropped,
                "eval_examples": len(data.eval_pairs) if data.eval_pairs else 0,
                "eval_duplicates_dropped": data.eval_dropped,
                "trainable_parameters": n_train,
                "parameters": n_all,
                "vocab_size": len(tok),
                "steps": trainer.state.global_step,
                "epochs": float(trainer.state.epoch or 0),
                "final_train_loss": float(result.training_loss),
                "eval_loss": evals,
                "train_seconds": round(float(result.metrics.get("train_runtime", 0.0)), 1),
                "total_seconds": round(time.perf_counter() - t0, 1),
                "processes": state.num_processes,
                "device": str(state.device),
            },
        }
        write_json(out / META_FILE, meta)
        print(
            f"saved {out} ({meta['figures']['steps']} steps, {meta['figures']['train_seconds']} s training, "
            f"final eval loss {evals[-1] if evals else float('nan'):.4f})",
            flush=True,
        )
    state.wait_for_everyone()


def _parameters(model) -> tuple[int, int]:
    """(trainable, all) parameter counts."""
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


@dataclass
class _Examples:
    """The training data of one run: per-image examples of each split, their (prompt, caption) pairs, and the
    training images' captions and composition index (saved with the model)."""

    train_images: list
    train_dropped: int
    eval_images: list
    eval_dropped: int
    train_pairs: CaptionExamples
    eval_pairs: CaptionExamples | None
    train_refs: list[list[str]]
    index: CompositionIndex
    notes: list[str]  # what was left out of the caption set (blank captions), for stderr


def _read_examples(compositions: Path, captions: Path, train_split: str, eval_split: str, template: PromptTemplate,
                   lowercase: bool, allow_missing: bool, captions_per_image: str, seed: int) -> _Examples:
    """Compositions joined with the caption set, per split (read and checked before anything is written)."""
    records = read_compositions(compositions)
    capset = CaptionDataset(captions)
    if not any(it.split == train_split for it in capset.items):
        raise DatasetNotFoundError(f"{capset.json_path}: no images in split {train_split!r}; check --train-split")
    # blank captions (no letter or digit) are no examples: noted; a split with no caption left is refused
    notes, problems = [], []
    for split in (train_split, eval_split):
        items = [it for it in capset.items if it.split == split]
        if items:
            option = "--train-split" if split == train_split else "--eval-split (or none)"
            _, note, problem = screen_blank_captions(items, f"{capset.json_path}, {split} split", option)
            notes += [note] if note else []
            problems += [problem] if problem else []
    if problems:
        raise DataError(problems[0] if len(problems) == 1 else
                        f"{len(problems)} problems with the caption set:\n" + "\n".join(f"  - {p}" for p in problems))
    train_joined = [(rec, it) for rec, it in join_records(records, capset, [train_split], compositions, allow_missing)
                    if not all(is_blank(c) for c in it.sentences)]
    train_refs = [[c for c in (normalise_caption(c, lowercase) for c in it.sentences) if not is_blank(c)]
                  for _, it in train_joined]
    if not train_joined:  # every image with a caption lacks its composition (--allow-missing)
        raise DataError(f"{compositions} and {capset.json_path}: no training example in split {train_split!r}: no "
                        "image has both a composition and a caption; check that both come from the same images")
    # the training images' compositions and captions: retrieval prompts show *other* images' captions; saved with
    # every model for llm.generate's consensus pool
    index = CompositionIndex([it.filename for _, it in train_joined], [r for r, _ in train_joined], train_refs)
    train_images, train_dropped = build_image_examples(
        records, capset, train_split, template, lowercase, source=compositions, allow_missing=allow_missing, index=index
    )
    eval_images, eval_dropped = [], 0
    if eval_split != "none" and any(it.split == eval_split for it in capset.items):
        eval_images, eval_dropped = build_image_examples(
            records, capset, eval_split, template, lowercase, source=compositions, allow_missing=allow_missing,
            index=index,
        )
    return _Examples(train_images, train_dropped, eval_images, eval_dropped,
                     CaptionExamples(train_images, captions_per_image, seed),
                     CaptionExamples(eval_images, "all", seed) if eval_images else None, train_refs, index, notes)


def _training_arguments(o: dict[str, Any], out: Path, eval_on: bool, bars: bool):
    """transformers' TrainingArguments from main's options ``o``; a combination it refuses is a ConfigError."""
    from transformers import TrainingArguments

    dtype, cuda = compute_dtype(o["precision"]), torch.cuda.is_available()
    try:
        return TrainingArguments(
            output_dir=str(out / "checkpoints"),
            num_train_epochs=o["epochs"],
            per_device_train_batch_size=o["batch_size"],
            per_device_eval_batch_size=o["eval_batch_size"],
            gradient_accumulation_steps=o["gradient_accumulation_steps"],
            learning_rate=o["learning_rate"],
            weight_decay=o["weight_decay"],
            warmup_steps=o["warmup_ratio"],
            lr_scheduler_type=o["lr_scheduler"],
            eval_strategy="epoch" if eval_on else "no",
            save_strategy="epoch" if o["save_checkpoints"] else "no",
            save_total_limit=o["save_total_limit"],
            logging_strategy="steps",
            logging_steps=o["logging_steps"],
            logging_first_step=True,
            bf16=dtype == torch.bfloat16 and (cuda or o["precision"] == "bf16"),
            fp16=dtype == torch.float16,
            seed=o["seed"],
            data_seed=o["seed"],
            report_to="none",
            disable_tqdm=not bars,
            remove_unused_columns=False,
            train_sampling_strategy="group_by_length" if o["group_by_length"] else "random",
            ddp_find_unused_parameters=False,
            dataloader_num_workers=0,
            use_cpu=not cuda,
            save_only_model=False,
        )
    except ValueError as e:  # a combination transformers refuses
        raise ConfigError(f"training options refused by transformers: {e}") from e


def _mapping(name: str, value: Any) -> dict | None:
    """A mapping option: from the config file as is, or from the command line as YAML/JSON text."""
    if value is None or isinstance(value, dict):
        return value

    try:
        parsed = yaml.safe_load(str(value))
    except yaml.YAMLError as e:
        raise ConfigError(f"--{name.replace('_', '-')}: not a YAML/JSON mapping ({e})") from e
    if not isinstance(parsed, dict):
        raise ConfigError(f"--{name.replace('_', '-')} must be a mapping, e.g. '{{hidden_size: 128}}' (got {value!r})")
    return parsed


def _training_problems(a: dict[str, Any]) -> list[str]:
    """The rules between training options (each option's own type and bounds are checked by :func:`checked`)."""
    out = []
    if math.isinf(a["epochs"]):
        out.append("epochs is infinite; give a number of passes over the training examples")
    if a["train_split"] == a["eval_split"]:
        out.append(f"train_split and eval_split are both {a['train_split']!r}; the eval loss needs held-out images")
    return out


def _output_folder(out: Path, resume: bool, overwrite: bool) -> OutputFolder:
    """The output folder under the one training protocol (:mod:`segcap.training`): the whole folder is this tool's
    (any file refuses a fresh run without --overwrite; --overwrite deletes only a folder with run.json); --resume
    from the Trainer's last checkpoint with the options of run.json, but :data:`RESUME_FREE` (``epochs`` may grow)."""
    return OutputFolder(Path(out), "LLM output folder", "output folder", "llm.finetune", resume, overwrite,
                        saved=_saved_options, free=RESUME_FREE, grows=RESUME_GROWS, marker=(RUN_FILE,))


def _saved_options(out: Path) -> dict | str:
    """The options of the run to resume (run.json), or why there is nothing to resume."""
    run_file = out / RUN_FILE
    if not run_file.is_file():
        return f"(no {RUN_FILE})"
    if _last_checkpoint(out) is None:
        return ("(no checkpoint in checkpoints/: the run stopped before its first epoch ended, or ran with "
                "--no-save-checkpoints)")
    return read_record(run_file)


def _last_checkpoint(out: Path) -> str | None:
    return get_last_checkpoint(str(out / "checkpoints")) if (out / "checkpoints").is_dir() else None


def _tensorboard(out: Path) -> TrainerCallback:
    """transformers' TensorBoard reporting (what ``report_to="tensorboard"`` adds), writing to out/tensorboard:
    TrainingArguments has no logging directory any more, and the callback would otherwise pick
    out/checkpoints/runs/<date>_<host>, or read an environment variable."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(out / "tensorboard")))


class _EpochCallback(TrainerCallback):
    """Tell the dataset which epoch it is (one caption sampled per image per epoch)."""

    def __init__(self, dataset: TokenizedExamples):
        self.dataset = dataset

    def on_epoch_begin(self, args, state, control, **kw):
        self.dataset.set_epoch(int(math.floor(state.epoch or 0)))


class _CurvesCallback(TrainerCallback):
    """Rewrite loss.csv / loss.png after each evaluation, so a long run can be watched."""

    def __init__(self, out: Path):
        self.out = out

    def on_evaluate(self, args, state, control, **kw):
        if state.is_world_process_zero:
            rows = loss_rows(state.log_history)
            write_loss_csv(self.out / "loss.csv", rows)
            plot_loss(self.out / "loss.png", rows)


class _EpochLines(TrainerCallback):
    """Where stderr is no terminal (the Trainer's bar is off): one line per epoch, written when its evaluation is done.

    ``epoch 2/6: 15 step in 3.1 s, train loss 2.301, eval loss 2.104`` (train loss: the mean of the losses logged
    during the epoch, else the last one logged; eval loss only where an eval split is set).
    """

    def __init__(self):
        self.bar: Progress | None = None
        self.losses: list[float] = []

    def on_epoch_begin(self, args, state, control, **kw):
        if state.is_world_process_zero:
            epoch = int(math.floor(state.epoch or 0)) + 1
            self.bar = Progress(desc=f"epoch {epoch}/{math.ceil(args.num_train_epochs)}", unit="step")
            self.losses = []

    def on_step_end(self, args, state, control, **kw):
        if self.bar is not None:
            self.bar.update()

    def on_log(self, args, state, control, logs=None, **kw):
        if self.bar is not None and logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))

    def on_epoch_end(self, args, state, control, **kw):
        if self.bar is None:
            return
        logged = self.losses or [float(r["loss"]) for r in state.log_history if "loss" in r][-1:]
        if logged:
            self.bar.set_postfix(**{"train loss": sum(logged) / len(logged)})
        if not control.should_evaluate:  # else the line waits for the eval loss, logged after this
            self._close()

    def on_evaluate(self, args, state, control, metrics=None, **kw):
        if self.bar is not None and "eval_loss" in (metrics or {}):
            self.bar.set_postfix(**{"eval loss": float(metrics["eval_loss"])})
        self._close()

    def _close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


if __name__ == "__main__":
    run(main)
