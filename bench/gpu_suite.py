"""All the GPU figures in one run, for a GPU lent for a few minutes: LLM LoRA/QLoRA, generation, segmentation, demo.

    python -m bench.gpu_suite --out results/ --budget-s 500              # on the GPU machine
    python -m bench.gpu_suite --quick --allow-cpu --out /tmp/gpu_suite   # the same script on tiny shapes, on CPU

Parts, in order (each in its own try/except and time budget; ``gpu_suite.json`` in ``--out`` is rewritten after every
measurement, so a run cut short keeps what it measured; progress lines go to stdout):

0. ``preflight``: versions, the GPU, java, free memory and disk; bitsandbytes' CUDA kernels on a small tensor. Stops
   the run at once (exit 3) when something every part needs is missing, so that a fix can be rerun quickly.
   Then the synthetic data the later parts need is written in the background (CPU only, while the GPU works on 2.).
1. ``tests``: ``pytest -m gpu`` on the CUDA tests.
2. ``llm``: ``bench.llm_qlora_gpu`` on a Llama-2-7B-shaped model with random weights (saved once in bf16, loaded
   for each mode): training tokens/s and peak memory at 16 x 128 and 4 x 512 tokens for nf4 + LoRA, bf16 LoRA and
   int8 + LoRA through ``llm.model``, beside the plain transformers + peft recipe; generation captions/s (greedy and
   3 beams, batch 32, prompts of about 100 tokens, 24 new tokens) with nf4 and bf16.
3. ``segmentation``: synthetic drone photos at the real set's 6000x4000 pixels: ``segmentation.train`` for a few
   epochs and ``segmentation.predict`` at the training scale and at 0.25, each timed.
4. ``demo``: ``python -m pipeline.run --config configs/pipeline/synthetic.yaml`` (what ``make demo`` runs) with the
   time left, each stage's seconds read from the run's stage stamps. Without ``java`` the score stage cannot run
   (pycocoevalcap's tokenizer and METEOR are Java), so the chain is timed up to ``captions``.

Run it from the repository root (it calls the entry points as ``python -m``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

import bench.llm_qlora_gpu as b
from segcap.resources import config_path

REPO = Path(__file__).resolve().parents[1]
DEMO_CONFIG = "configs/pipeline/synthetic.yaml"  # the clone's file, else the shipped one (segcap.resources)
DEMO_STAGES = ("data", "segmentation", "masks", "compositions", "llm", "oracle", "blind", "captions", "score", "report")

FULL = {
    "shape": "llama2-7b",
    # (recipe, quantize, generate?) in order of priority; a mode starts only with enough of the part's time left
    "modes": [("segcap", "nf4", True), ("segcap", "none", True), ("reference", "nf4", False),
              ("segcap", "int8", False), ("segcap_nonreentrant", "nf4", False), ("reference", "none", False),
              ("reference", "int8", False)],
    "train_shapes": [(16, 128), (4, 512)],
    "steps": {"nf4": (3, 5), "none": (3, 5), "int8": (1, 3)},  # (warm-up, timed)
    "generation": {"batch_size": 32, "prompt_len": 100, "new_tokens": 24, "beams": [1, 3], "repeats": 2},
    "mode_min_s": 45,  # start another mode only with this much of the LLM part's time left
    "real": {"images": 10, "size": (6000, 4000), "drone_scale": 25.0, "epochs": 3, "crops_per_image": 8,
             "batch_size": 16, "crop_size": 96, "predict_scales": [None, 0.25]},
    "demo_overrides": [],
    "shares": {"llm": 0.46, "segmentation": 0.55},  # parts end at these fractions of the budget; the demo gets the rest
}
QUICK = {
    "shape": "small",
    "modes": FULL["modes"],
    "train_shapes": [(4, 32), (2, 64)],
    "steps": {"nf4": (1, 2), "none": (1, 2), "int8": (1, 1)},
    "generation": {"batch_size": 4, "prompt_len": 16, "new_tokens": 4, "beams": [1, 3], "repeats": 1},
    "mode_min_s": 5,
    "real": {"images": 4, "size": (960, 640), "drone_scale": 4.0, "epochs": 1, "crops_per_image": 2,
             "batch_size": 8, "crop_size": 96, "predict_scales": [None]},
    "demo_overrides": ["--synthetic", "{seed: 0, drone_images: 16, caption_images: 60}",
                       "--segmentation", "{epochs: 1, eval_every: 1}", "--llm", "{epochs: 1}"],
    "shares": {"llm": 0.35, "segmentation": 0.55},
}


class Suite:
    """The results object, written to ``out/gpu_suite.json`` after every change, and the clock."""

    def __init__(self, out: Path, budget_s: float):
        self.out = out
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = out / "gpu_suite.json"
        self.t0 = time.perf_counter()
        self.budget_s = budget_s
        self.results: dict = {"bench": "gpu_suite", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                              "budget_s": budget_s, "command": " ".join([sys.executable, "-m", "bench.gpu_suite",
                                                                          *sys.argv[1:]]), "parts": {}}
        self.save()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self, until_share: float = 1.0) -> float:
        return self.budget_s * until_share - self.elapsed()

    def log(self, msg: str) -> None:
        print(f"[{self.elapsed():6.1f}s] {msg}", flush=True)

    def part(self, name: str) -> dict:
        return self.results["parts"].setdefault(name, {})

    def save(self) -> None:
        self.results["elapsed_s"] = round(self.elapsed(), 1)
        tmp = self.path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.results, indent=1, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def _error(e: BaseException) -> dict:
    return {"error": f"{type(e).__name__}: {e}"[:2000], "traceback": traceback.format_exc()[-4000:]}


def _env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", NO_ALBUMENTATIONS_UPDATE="1",
               TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    return env


def _run(cmd: list[str], timeout: float, log: Path) -> dict:
    """Run ``cmd`` (a new process group, killed whole at ``timeout``); wall seconds, return code, output tail."""
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill(proc)
            rc, timed_out = proc.returncode, True
    text = log.read_text(encoding="utf-8", errors="replace")
    return {"command": " ".join(cmd), "returncode": rc, "timed_out": timed_out,
            "wall_s": round(time.perf_counter() - t0, 1), "output_tail": text[-1500:]}


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


class Background:
    """A command running beside the suite (CPU work), with its wall time once it ends."""

    def __init__(self, name: str, cmd: list[str], log: Path):
        self.name, self.cmd, self.log = name, cmd, log
        self.t0 = time.perf_counter()
        self.f = open(log, "w", encoding="utf-8")
        self.f.write("$ " + " ".join(cmd) + "\n")
        self.f.flush()
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=self.f, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.wall_s: float | None = None

    def poll(self) -> int | None:
        rc = self.proc.poll()
        if rc is not None and self.wall_s is None:
            self.wall_s = round(time.perf_counter() - self.t0, 1)
            self.f.close()
        return rc

    def wait(self, timeout: float) -> dict:
        try:
            self.proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            _kill(self.proc)
        self.poll()
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return {"command": " ".join(self.cmd), "returncode": self.proc.returncode, "wall_s": self.wall_s,
                "output_tail": text[-800:]}


# ------------------------------------------------------------------------------------------------ 0. preflight
def preflight(suite: Suite, allow_cpu: bool) -> bool:
    """Record versions and the machine; False when the run cannot go on (a missing package every part needs)."""
    p = suite.part("preflight")
    p["python"] = sys.version.split()[0]
    p["platform"] = platform.platform()
    p["cpu_count"] = os.cpu_count()
    versions, missing = {}, []
    for mod, essential in (("torch", True), ("transformers", True), ("peft", True), ("accelerate", True),
                           ("bitsandbytes", True), ("segmentation_models_pytorch", True), ("timm", True),
                           ("albumentations", True), ("cv2", True), ("numpy", True), ("docstring_parser", True),
                           ("jsonschema", False), ("pycocoevalcap", False), ("safetensors", False)):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", "?")
        except Exception as e:  # an import that fails for any reason
            versions[mod] = f"missing ({type(e).__name__}: {e})"[:300]
            if essential:
                missing.append(mod)
    p["versions"] = versions
    p["java"] = shutil.which("java")
    for folder in ("/dev/shm", tempfile.gettempdir(), str(REPO)):
        try:
            p.setdefault("free_gib", {})[folder] = round(shutil.disk_usage(folder).free / 2**30, 1)
        except OSError:
            pass
    try:
        p["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        p["nvidia_smi"] = smi.stdout.strip() or smi.stderr.strip()[-300:]
    except (OSError, subprocess.TimeoutExpired) as e:
        p["nvidia_smi"] = f"unavailable ({e})"
    import torch

    p["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        prop = torch.cuda.get_device_properties(0)
        p.update(gpu=prop.name, gpu_memory_gib=round(prop.total_memory / 2**30, 1), cuda=torch.version.cuda,
                 capability=list(torch.cuda.get_device_capability(0)), bf16=torch.cuda.is_bf16_supported())
        if "bitsandbytes" not in missing:
            try:
                p["bitsandbytes_check"] = _bnb_check()
            except Exception as e:
                p["bitsandbytes_check"] = _error(e)
                missing.append("bitsandbytes (CUDA kernels)")
    elif not allow_cpu:
        missing.append("CUDA")
    p["missing"] = missing
    suite.log(f"preflight: gpu={p.get('gpu')} torch={versions.get('torch')} transformers={versions.get('transformers')} "
              f"peft={versions.get('peft')} bnb={versions.get('bitsandbytes')} java={p['java']} missing={missing}")
    suite.save()
    return not missing


def _bnb_check(device: str = "cuda") -> dict:
    """bitsandbytes' CUDA library: 4-bit and 8-bit layers on a small input, against bf16."""
    import bitsandbytes as bnb
    import torch

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128, bias=False, dtype=torch.bfloat16)
    x = torch.randn(8, 256, dtype=torch.bfloat16, device=device)
    ref = x @ lin.weight.to(device).T
    q4 = bnb.nn.Linear4bit(256, 128, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4")
    q4.weight = bnb.nn.Params4bit(lin.weight.data.clone(), requires_grad=False, quant_type="nf4")
    q4 = q4.to(device)
    q8 = bnb.nn.Linear8bitLt(256, 128, bias=False, has_fp16_weights=False)
    q8.weight = bnb.nn.Int8Params(lin.weight.data.clone().half(), requires_grad=False, has_fp16_weights=False)
    q8 = q8.to(device)
    with torch.no_grad():
        e4 = ((q4(x).float() - ref.float()).norm() / ref.float().norm()).item()
        e8 = ((q8(x.half()).float() - ref.float()).norm() / ref.float().norm()).item()
    lib = getattr(getattr(bnb, "cextension", None), "lib", None)
    return {"nf4_relative_error": round(e4, 4), "int8_relative_error": round(e8, 4),
            "library": str(getattr(lib, "_name", None) or getattr(getattr(lib, "_lib", None), "_name", None))}


# ------------------------------------------------------------------------------------------------ background data
def start_data(suite: Suite, cfg: dict, work: Path, quick: bool, parts: list[str]) -> dict[str, Background]:
    """Write the real-size drone photos and the demo's synthetic sets in the background (CPU only)."""
    jobs = {}
    r = cfg["real"]
    real = work / "real"
    if real.exists():
        shutil.rmtree(real)
    if "segmentation" in parts:
        jobs["real"] = Background("real", [sys.executable, "-m", "synthetic.generate", "--out", str(real),
                                           "--drone-images", str(r["images"]), "--caption-images", "0",
                                           "--drone-size", str(r["size"][0]), str(r["size"][1]),
                                           "--drone-scale", str(r["drone_scale"]), "--no-progress"],
                                  work / "gen_real.log")
    demo = demo_settings(quick, work)
    if "demo" in parts and not (Path(demo["data_root"]) / "rsicd" / "dataset_rsicd.json").is_file():
        cmd = [sys.executable, "-m", "synthetic.generate", "--out", demo["data_root"], "--no-progress"]
        for k, v in demo["synthetic"].items():
            cmd += [f"--{k.replace('_', '-')}", *([str(x) for x in v] if isinstance(v, list) else [str(v)])]
        jobs["demo"] = Background("demo", cmd, work / "gen_demo.log")
    suite.log(f"background data: {', '.join(jobs)}")
    return jobs


def demo_settings(quick: bool, work: Path) -> dict:
    """data_root, run_dir and synthetic options of the demo run (from its config; quick: small, under ``work``)."""

    cfg = yaml.safe_load(config_path(REPO / DEMO_CONFIG).read_text(encoding="utf-8"))
    # the run folder is the suite's own (a user's runs/demo is left alone); the data is the demo's, reused if present
    out = {"data_root": cfg.get("data_root", "data/synthetic"), "run_dir": str(work / "demo_run"),
           "synthetic": dict(cfg.get("synthetic") or {})}
    if quick:
        out.update(data_root=str(work / "demo_data"), synthetic={"seed": 0, "drone_images": 16, "caption_images": 60})
    return out


# ------------------------------------------------------------------------------------------------ 1. tests
def part_tests(suite: Suite, work: Path, timeout: float) -> None:
    p = suite.part("tests")
    suite.log("tests: pytest -m gpu")
    r = _run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/test_gpu.py",
              "tests/test_llm_train.py"], timeout, work / "pytest.log")
    lines = [ln for ln in r["output_tail"].splitlines() if ln.strip()]
    r["summary"] = lines[-1] if lines else ""
    p.update(r)
    suite.log(f"tests: rc={r['returncode']} {r['summary']} ({r['wall_s']} s)")
    suite.save()


# ------------------------------------------------------------------------------------------------ 2. llm
def part_llm(suite: Suite, cfg: dict, until: float) -> None:
    import torch


    p = suite.part("llm")
    p["machine"] = b.machine()
    p["shape"] = cfg["shape"]
    p["shape_config"] = b.SHAPES[cfg["shape"]]
    p["lora"] = {"r": 16, "alpha": 32, "dropout": 0.05, "targets": list(b.TARGETS), "gradient_checkpointing": True}
    p["modes"] = []
    root = b.scratch_root(b.checkpoint_gib(cfg["shape"]) + 4)
    folder = Path(tempfile.mkdtemp(prefix="segcap-gpu-suite-", dir=root))
    try:
        suite.log(f"llm: building the {cfg['shape']} checkpoint in {folder}")
        p["checkpoint"] = b.build_checkpoint(cfg["shape"], folder)
        suite.log(f"llm: checkpoint {p['checkpoint']}")
        suite.save()
        for recipe, quantize, generate in cfg["modes"]:
            left = suite.left(until)
            if left < cfg["mode_min_s"]:
                p["modes"].append({"recipe": recipe, "quantize": quantize, "skipped": f"out of time ({left:.0f} s left)"})
                suite.log(f"llm: {recipe} {quantize} skipped: {left:.0f} s left")
                suite.save()
                continue
            m: dict = {"recipe": recipe, "quantize": quantize, "train": [], "generation": []}
            p["modes"].append(m)
            model = None
            t_mode = time.perf_counter()
            try:
                suite.log(f"llm: {recipe} {quantize}: loading")
                model, info = b.load_for_training(folder, quantize, recipe)
                m.update(info)
                suite.log(f"llm: {recipe} {quantize}: loaded in {info['load_s']} s, "
                          f"{info.get('memory_after_load_gib')} GiB, {info['trainable_parameters']:,} trainable")
                suite.save()
                warm, steps = cfg["steps"][quantize]
                for bs, seq in cfg["train_shapes"]:
                    try:
                        r = b.train_speed(model, bs, seq, steps=steps, warmup=warm)
                    except torch.cuda.OutOfMemoryError as e:
                        r = {"batch_size": bs, "seq_len": seq, **_error(e)}
                    m["train"].append(r)
                    suite.log(f"llm: {recipe} {quantize} {bs}x{seq}: {r.get('tokens_per_s')} tok/s, "
                              f"{r.get('s_per_step')} s/step, peak {r.get('peak_memory_allocated_gib')} GiB")
                    suite.save()
                if generate:
                    model = b.for_generation(model, quantize)
                    g = cfg["generation"]
                    for beams in g["beams"]:
                        if suite.left(until) < 10:
                            m["generation"].append({"num_beams": beams, "skipped": "out of time"})
                            continue
                        r = b.generation_speed(model, g["batch_size"], g["prompt_len"], g["new_tokens"], beams,
                                               repeats=g["repeats"])
                        m["generation"].append(r)
                        suite.log(f"llm: {recipe} {quantize} generation beams={beams}: {r['captions_per_s']} "
                                  f"captions/s ({r['s_per_batch']} s per batch of {r['batch_size']})")
                        suite.save()
            except Exception as e:
                m.update(_error(e))
                suite.log(f"llm: {recipe} {quantize} FAILED: {m['error'][:300]}")
            finally:
                del model
                b.release()
                m["wall_s"] = round(time.perf_counter() - t_mode, 1)
                suite.save()
    except Exception as e:
        p.update(_error(e))
        suite.log(f"llm: FAILED: {p['error'][:300]}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        suite.save()


# ------------------------------------------------------------------------------------------------ 3. segmentation
def part_segmentation(suite: Suite, cfg: dict, work: Path, job: Background | None, until: float, device: str) -> None:
    p = suite.part("segmentation_real_size")
    r = cfg["real"]
    p["settings"] = {"images": r["images"], "size": list(r["size"]), "drone_scale": r["drone_scale"],
                     "target_scale": round(1 / r["drone_scale"], 4), "epochs": r["epochs"],
                     "crops_per_image": r["crops_per_image"], "batch_size": r["batch_size"],
                     "crop_size": r["crop_size"], "device": device}
    try:
        if job is not None:
            suite.log("segmentation: waiting for the real-size photos")
            p["generate"] = job.wait(suite.left(until))
            suite.log(f"segmentation: photos written in {p['generate']['wall_s']} s (in the background)")
            if p["generate"]["returncode"] != 0:
                raise RuntimeError("synthetic.generate failed: " + p["generate"]["output_tail"][-500:])
        drone = work / "real" / "drone"
        ckpt = work / "seg_real"
        scale = 1 / r["drone_scale"]
        cmd = [sys.executable, "-m", "segmentation.train", "--data-root", str(drone), "--out", str(ckpt),
               "--target-scale", str(scale), "--crop-size", str(r["crop_size"]), "--crops-per-image",
               str(r["crops_per_image"]), "--batch-size", str(r["batch_size"]), "--epochs", str(r["epochs"]),
               "--eval-every", "1", "--cache-images", "--loss", "ce+dice", "--device", device, "--no-progress",
               "--overwrite"]
        suite.log("segmentation: training at real size")
        t = _run(cmd, suite.left(until) - 5, work / "seg_train.log")
        p["train"] = t
        metrics = ckpt / "metrics.json"
        if metrics.is_file():
            mj = json.loads(metrics.read_text())
            p["train"]["metrics"] = {k: mj.get(k) for k in ("best_epoch", "train", "history") if k in mj}
            p["train"]["val_miou"] = (mj.get("val") or {}).get("miou")
        suite.log(f"segmentation: train rc={t['returncode']} in {t['wall_s']} s")
        suite.save()
        if t["returncode"] != 0:
            return
        p["predict"] = []
        for s in r["predict_scales"]:
            s = scale if s is None else s
            cmd = [sys.executable, "-m", "segmentation.predict", "--checkpoint", str(ckpt), "--images",
                   str(drone / "original_images"), "--out", str(work / f"pred_{s}"), "--scale", str(s),
                   "--batch-size", "4", "--workers", "4", "--device", device, "--no-progress", "--overwrite"]
            suite.log(f"segmentation: predicting {r['images']} photos at scale {s}")
            q = _run(cmd, suite.left(until) - 2, work / f"seg_predict_{s}.log")
            q["scale"] = s
            q["images"] = r["images"]
            q["images_per_s_wall"] = round(r["images"] / q["wall_s"], 2) if q["returncode"] == 0 else None
            p["predict"].append(q)
            suite.log(f"segmentation: predict scale {s} rc={q['returncode']} in {q['wall_s']} s")
            suite.save()
    except Exception as e:
        p.update(_error(e))
        suite.log(f"segmentation: FAILED: {p['error'][:300]}")
    finally:
        suite.save()


# ------------------------------------------------------------------------------------------------ 4. demo
def part_demo(suite: Suite, cfg: dict, work: Path, job: Background | None, quick: bool) -> None:
    p = suite.part("demo")
    demo = demo_settings(quick, work)
    java = shutil.which("java")
    p["java"] = java
    p["data_root"], p["run_dir"] = demo["data_root"], demo["run_dir"]
    try:
        if job is not None:
            suite.log("demo: waiting for the synthetic sets")
            p["data_generated_in_background"] = job.wait(suite.left() - 30)
            suite.log(f"demo: synthetic sets written in {p['data_generated_in_background']['wall_s']} s (background)")
        run_dir = Path(demo["run_dir"])
        if run_dir.exists():
            shutil.rmtree(run_dir)
        base = [sys.executable, "-m", "pipeline.run", "--config", DEMO_CONFIG, "--run-dir", str(run_dir),
                "--no-progress"]
        if quick:
            base += ["--data-root", demo["data_root"], *cfg["demo_overrides"]]
        if java:  # it would run the score stage: time the chain up to captions, stage by stage
            runs = [[*base, "--only", s] for s in DEMO_STAGES[: DEMO_STAGES.index("captions") + 1]]
            p["how"] = "java found: stages data..captions one at a time (--only); score and report not run"
        else:
            runs = [base]
            p["how"] = ("no java on this machine: the whole chain, which stops at the score stage (pycocoevalcap's "
                        "tokenizer and METEOR need Java); stages data..captions timed")
        p["runs"] = []
        for i, cmd in enumerate(runs):
            left = suite.left() - 5
            if left < 5:
                p["runs"].append({"command": " ".join(cmd), "skipped": "out of time"})
                break
            suite.log(f"demo: {' '.join(cmd[2:])} ({left:.0f} s left)")
            r = _run(cmd, left, work / f"demo_{i}.log")
            p["runs"].append(r)
            p["stages"] = _stage_times(run_dir)
            suite.log(f"demo: rc={r['returncode']} timed_out={r['timed_out']} in {r['wall_s']} s; "
                      f"stages {p['stages']}")
            suite.save()
            if r["timed_out"]:
                break
        p["stages"] = _stage_times(run_dir)
        done = [s for s in p["stages"].values() if isinstance(s, (int, float))]
        p["stages_seconds_total"] = round(sum(done), 1)
    except Exception as e:
        p.update(_error(e))
        suite.log(f"demo: FAILED: {p['error'][:300]}")
    finally:
        suite.save()


def _stage_times(run_dir: Path) -> dict:
    """Seconds of each finished stage (from its stamp); 'started' for one that began and did not finish."""
    out = {}
    for s in DEMO_STAGES:
        stamp = run_dir / "stages" / f"{s}.json"
        if stamp.is_file():
            try:
                out[s] = json.loads(stamp.read_text()).get("seconds")
            except json.JSONDecodeError:
                out[s] = "unreadable stamp"
        elif (run_dir / "stages" / f"{s}.started.json").is_file():
            out[s] = "started, not finished"
    return out


# ------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "runs/gpu_suite"),
                    help="folder for gpu_suite.json (default: $OUT, else runs/gpu_suite)")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder)")
    ap.add_argument("--budget-s", type=float, default=500, help="wall-clock seconds for the whole run")
    ap.add_argument("--parts", nargs="+", default=["tests", "llm", "segmentation", "demo"],
                    choices=["tests", "llm", "segmentation", "demo"])
    ap.add_argument("--quick", action="store_true", help="tiny shapes and data (to check this script, e.g. on CPU)")
    ap.add_argument("--allow-cpu", action="store_true", help="run without CUDA (with --quick)")
    args = ap.parse_args(argv)
    os.chdir(REPO)
    cfg = QUICK if args.quick else FULL
    suite = Suite(args.out, args.budget_s)
    suite.results["quick"] = args.quick
    suite.results["settings"] = {k: v for k, v in cfg.items() if k != "shares"}
    work = args.work or Path(tempfile.mkdtemp(prefix="segcap-gpu-suite-work-"))
    work.mkdir(parents=True, exist_ok=True)
    suite.log(f"gpu_suite: budget {args.budget_s:.0f} s, parts {args.parts}, work {work}, out {args.out}")
    if not preflight(suite, args.allow_cpu):
        suite.log("preflight failed: stopping (see parts.preflight.missing)")
        suite.save()
        return 3
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    jobs = start_data(suite, cfg, work, args.quick, args.parts)
    if "tests" in args.parts:
        try:
            part_tests(suite, work, timeout=min(120, suite.left(cfg["shares"]["llm"]) / 3))
        except Exception as e:
            suite.part("tests").update(_error(e))
    if "llm" in args.parts:
        part_llm(suite, cfg, cfg["shares"]["llm"])
    for name, job in jobs.items():
        if job.poll() is not None:
            suite.log(f"background {name}: finished in {job.wall_s} s (rc {job.proc.returncode})")
    if "segmentation" in args.parts:
        part_segmentation(suite, cfg, work, jobs.get("real"), cfg["shares"]["segmentation"], device)
    if "demo" in args.parts:
        part_demo(suite, cfg, work, jobs.get("demo"), args.quick)
    for job in jobs.values():
        if job.poll() is None:
            _kill(job.proc)
            job.poll()
    suite.results["background"] = {n: {"wall_s": j.wall_s, "returncode": j.proc.returncode} for n, j in jobs.items()}
    suite.log("gpu_suite: done")
    suite.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
