"""Pretrained weights when the user has them, never a network call in a test: smp's ImageNet encoder weights and a
hub id as the LLM's base model go through their libraries' own loaders and the Hugging Face cache; offline and not
cached, each fails at once with one message saying what to download and where.

Every test runs against a Hugging Face cache in tmp_path and with every socket blocked (``guard``), so a test that
reached for the network would fail, not download.
"""

import json
import socket
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import constants

try:  # huggingface_hub 2.x: a registry fetched for its user agent on the first request
    from huggingface_hub.utils import _detect_agent
except ImportError:  # pragma: no cover - older huggingface_hub
    _detect_agent = None

import segcap.hub as hub
from llm.finetune import main as finetune
from llm.model import (
    ModelOptions,
    base_model_problems,
    is_hub_id,
    load_causal_lm,
    load_tokenizer,
    option_problems,
    pretrained_kwargs,
    resolve_base,
    tiny_config,
)
from llm.tokenizer import train_tokenizer
from segcap.cli import run
from segcap.errors import ConfigError
from segmentation.model import (
    SMP_WEIGHT_FILES,
    build_model,
    encoder_weights_problems,
    imagenet_source,
    load_segmenter,
)
from segmentation.train import main as train_segmenter
from tests.hub_cache import cache_imagenet as _cache_imagenet
from tests.hub_cache import encoder_state as _encoder_state
from tests.hub_cache import snapshot as _snapshot

HERE = Path(__file__).resolve().parent
LLM_FIX = HERE / "data" / "llm"
DRONE = HERE / "data" / "drone"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the fake hub repository's one revision
HUB_ID = "segcap-tests/tiny-llama"
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "max_position_embeddings": 128}


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(autouse=True)
def guard(monkeypatch):
    """Block every connection and name lookup; the list records what was attempted (it must stay empty)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    if _detect_agent is not None:  # start each test without the user-agent registry, so a fetch would show
        monkeypatch.setattr(_detect_agent, "_registry", None)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", "/nonexistent/agent_harnesses.json")
    hub._probe.cache_clear()
    yield attempts
    hub._probe.cache_clear()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache that huggingface_hub, smp and transformers all read."""
    folder = tmp_path / "hf-cache"
    folder.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(folder))
    return folder


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    """No offline flag (what a user without the Makefile has); whether the hub answers is up to each test."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def _same_encoder(model, state) -> bool:
    own = model.encoder.state_dict()
    return all(torch.equal(own[k], v) for k, v in state.items() if v.is_floating_point())


# ------------------------------------------------------------------------------------------------ detection
def test_offline_flag_and_the_probe(monkeypatch, online, guard):
    assert hub.offline_flag() is None
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert hub.offline_flag() == "TRANSFORMERS_OFFLINE=1" and "TRANSFORMERS_OFFLINE=1 is set" in hub.offline_reason()
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    # no flag: one request to the endpoint, which the blocked network refuses at once
    t0 = time.perf_counter()
    assert hub.offline_reason() == f"{constants.ENDPOINT} did not answer within 3 s"
    assert time.perf_counter() - t0 < hub.PROBE_TIMEOUT + 1
    tried = len(guard)
    assert tried >= 1  # the probe is the only thing that tries, and once per process
    assert hub.offline_reason() is not None and len(guard) == tried
    guard.clear()


@pytest.mark.parametrize(("name", "hub_id"), [("tiny", False), ("meta-llama/Llama-2-7b-hf", True), ("gpt2", True),
                                              ("/models/Llama-2-7b-hf", False), ("./llama", False),
                                              ("a/b/c", False), ("org/bad--name", False)])
def test_what_counts_as_a_hub_id(name, hub_id):
    assert is_hub_id(name) is hub_id


def test_an_existing_relative_folder_is_a_folder(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/model")
    assert base_model_problems("org/model") == ["base_model org/model has no config.json; it is not a Hugging Face "
                                                "checkpoint folder"]


# ------------------------------------------------------------------------------------------------ smp ImageNet weights
@pytest.mark.parametrize("flag", ["offline", "online"])
def test_cached_imagenet_weights_load_without_network(flag, cache, request, guard, monkeypatch):
    request.getfixturevalue(flag)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT: pytest.fail("probed the hub"))
    state = _cache_imagenet(cache)
    assert encoder_weights_problems("imagenet") == []
    for weights in ("imagenet", Path("imagenet")):  # jsonargparse hands the option over as a Path
        model = build_model({}, 10, weights)
        assert _same_encoder(model, state)
    assert guard == []


def test_imagenet_offline_and_not_cached_fails_at_once(cache, offline, guard):
    repo, rev = imagenet_source()
    assert (repo, rev) == ("smp-hub/mobilenet_v2.imagenet", "e67aa804e17f7b404b629127eabbd224c4e0690b")
    t0 = time.perf_counter()
    (msg,) = encoder_weights_problems("imagenet")
    assert time.perf_counter() - t0 < 1
    for part in ("encoder_weights imagenet", f"not in the Hugging Face cache {cache}", "HF_HUB_OFFLINE=1 is set",
                 f"hf download {repo} {' '.join(SMP_WEIGHT_FILES)} --revision {rev}",
                 "models--smp-hub--mobilenet_v2.imagenet folder", "unset HF_HUB_OFFLINE",
                 f"https://huggingface.co/{repo}/resolve/{rev}/model.safetensors", "--encoder-weights",
                 "leave encoder_weights empty"):
        assert part in msg, part
    with pytest.raises(ConfigError) as e:
        build_model({}, 10, "imagenet")
    assert str(e.value) == msg
    assert guard == []


def test_imagenet_unreachable_hub_fails_at_once(cache, online, guard):
    (msg,) = encoder_weights_problems("imagenet")
    assert "(https://huggingface.co did not answer within 3 s)" in msg and "unset HF_HUB_OFFLINE" not in msg
    guard.clear()  # the probe's refused attempt


def test_imagenet_online_goes_through_smp_loader(cache, online, monkeypatch):
    """Online and not cached: smp downloads (here a stand-in for hf_hub_download fills the cache) and loads."""
    import segmentation_models_pytorch.encoders as smp_encoders

    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT: True)
    assert encoder_weights_problems("imagenet") == []
    calls = []
    stage = cache.parent / "remote"
    stage.mkdir()
    state = _cache_imagenet(stage)  # what the hub would serve
    served = next(stage.glob("models--*/snapshots/*"))

    def download(repo_id, filename, revision=None, **kwargs):
        calls.append((repo_id, filename, revision))
        return str(served / filename)

    monkeypatch.setattr(smp_encoders, "hf_hub_download", download)
    model = build_model({}, 10, "imagenet")
    repo, rev = imagenet_source()
    assert calls == [(repo, "config.json", rev), (repo, "model.safetensors", rev)]
    assert _same_encoder(model, state)

    def broken(*args, **kwargs):
        from huggingface_hub.errors import LocalEntryNotFoundError

        raise LocalEntryNotFoundError("connection dropped")

    monkeypatch.setattr(smp_encoders, "hf_hub_download", broken)
    with pytest.raises(ConfigError, match="LocalEntryNotFoundError: connection dropped"):
        build_model({}, 10, "imagenet")


def test_segmentation_train_imagenet_offline_exits_2_before_any_work(cache, offline, tmp_path, capsys, guard):
    args = ["--data-root", str(DRONE), "--target-scale", "0.5", "--encoder-weights", "imagenet",
            "--out", str(tmp_path / "seg"), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        run(train_segmenter, args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: encoder_weights imagenet: smp's ImageNet weights of mobilenet_v2")
    assert "hf download smp-hub/mobilenet_v2.imagenet" in err and "Traceback" not in err
    assert not (tmp_path / "seg").exists() and guard == []


def test_segmentation_train_starts_from_cached_imagenet_weights(cache, offline, tmp_path, guard, monkeypatch):
    """A one-step run whose network starts from the cached encoder (checked on the model smp built)."""
    import segmentation.train as train

    state = _cache_imagenet(cache)
    seen = []

    def spy(architecture, num_classes, encoder_weights=None):
        model = build_model(architecture, num_classes, encoder_weights)
        seen.append((str(encoder_weights), _same_encoder(model, state)))
        return model

    monkeypatch.setattr(train, "build_model", spy)
    train.main(data_root=DRONE, target_scale=0.5, crop_size=32, batch_size=2, epochs=1, max_steps=1, samples=0,
               threads=1, progress=False, encoder_weights=Path("imagenet"), out=tmp_path / "seg")
    assert seen[0] == ("imagenet", True)
    assert load_segmenter(tmp_path / "seg", device="cpu").table.num_classes == 10
    assert guard == []


@pytest.mark.parametrize("kind", ["safetensors", "pth", "unet"])
def test_local_encoder_files_still_work(kind, tmp_path):
    from safetensors.torch import save_file

    state = _encoder_state(3)
    path = tmp_path / f"weights.{ 'safetensors' if kind == 'safetensors' else 'pth'}"
    if kind == "safetensors":  # smp's model.safetensors, downloaded by hand
        save_file(state, str(path))
    elif kind == "pth":  # torchvision's mobilenet_v2: its classifier is dropped
        torch.save({**state, "classifier.1.weight": torch.zeros(1000, 1280)}, path)
    else:  # a whole UNet's state dict
        torch.save({f"encoder.{k}": v for k, v in state.items()} | {"decoder.x": torch.zeros(1)}, path)
    assert encoder_weights_problems(path) == []
    assert _same_encoder(build_model({}, 10, path), state)


def test_missing_or_unreadable_encoder_file(tmp_path):
    (msg,) = encoder_weights_problems(tmp_path / "nope.pth")
    assert msg.startswith(f"encoder_weights {tmp_path / 'nope.pth'}: no such file; pass imagenet")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="bad.safetensors: not a readable state dict"):
        build_model({}, 10, bad)
    assert encoder_weights_problems(None) == []


# ------------------------------------------------------------------------------------------------ LLM hub ids
def _cache_llm(cache: Path, repo_id: str = HUB_ID):
    """A tiny Llama and its tokenizer in the cache under ``repo_id`` (refs/main -> one snapshot), as a download leaves."""
    from transformers import LlamaForCausalLM

    snap = _snapshot(cache, repo_id, COMMIT, ref="main")
    tok = train_tokenizer(["a pond surrounded by trees", "many cars are parked beside the road"], kind="word",
                          vocab_size=64)
    torch.manual_seed(5)
    model = LlamaForCausalLM(tiny_config(TINY, tok))
    model.save_pretrained(snap)
    tok.save_pretrained(snap)
    return model, tok


@pytest.mark.parametrize("flag", ["offline", "online"])
def test_cached_hub_model_loads_without_network(flag, cache, request, guard, monkeypatch):
    request.getfixturevalue(flag)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT: pytest.fail("probed the hub"))
    model, tok = _cache_llm(cache)
    opts = ModelOptions(base_model=HUB_ID, method="lora", lora_target_modules=("q_proj", "v_proj"))
    assert option_problems(opts, cuda=False) == []
    assert pretrained_kwargs(HUB_ID) == {"local_files_only": True}
    assert load_tokenizer(HUB_ID).get_vocab() == tok.get_vocab()
    loaded = load_causal_lm(HUB_ID, precision="fp32")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    assert guard == []


def test_hub_id_offline_not_cached_exits_2_before_any_work(cache, offline, tmp_path, capsys, guard):
    args = ["--compositions", str(LLM_FIX / "compositions.jsonl"), "--captions", str(LLM_FIX / "rsicd"),
            "--out", str(tmp_path / "o"), "--base-model", "meta-llama/Llama-2-7b-hf", "--method", "lora",
            "--quantize", "nf4"]
    t0 = time.perf_counter()
    with pytest.raises(SystemExit) as e:
        run(finetune, args)
    assert e.value.code == 2 and time.perf_counter() - t0 < 10
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err  # one message, one line
    for part in ("error: base_model meta-llama/Llama-2-7b-hf: there is no local folder of that name",
                 f"not in the Hugging Face cache {cache}", "HF_HUB_OFFLINE=1 is set",
                 "hf download meta-llama/Llama-2-7b-hf", "models--meta-llama--Llama-2-7b-hf folder",
                 "--local-dir /models/Llama-2-7b-hf", "--base-model /models/Llama-2-7b-hf", "hf auth login"):
        assert part in err, part
    assert not (tmp_path / "o").exists()
    assert guard == []


def test_partly_cached_hub_model_names_what_is_missing(cache, offline):
    _cache_llm(cache)
    snap = next(cache.glob("models--*/snapshots/*"))
    (snap / "model.safetensors").unlink()
    (msg,) = base_model_problems(HUB_ID)
    assert f"not (all) in the Hugging Face cache {cache} (missing: weights)" in msg


def test_hub_id_online_and_not_cached_is_left_to_transformers(cache, online, monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT: True)
    assert base_model_problems(HUB_ID) == []
    assert pretrained_kwargs(HUB_ID) == {"local_files_only": False}  # transformers may download into the cache
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=hub.PROBE_TIMEOUT: False)
    (msg,) = base_model_problems(HUB_ID)
    assert "did not answer within 3 s" in msg
    with pytest.raises(ConfigError):
        load_tokenizer(HUB_ID)


def test_lora_on_a_cached_hub_model_trains_and_reloads(cache, offline, tmp_path, guard):
    """The whole route: fine-tune LoRA on a hub id from the cache, then generation finds the base by that id."""
    from llm.generate import Captioner
    from llm.model import read_meta

    _cache_llm(cache)
    out = tmp_path / "lora"
    finetune(compositions=LLM_FIX / "compositions.jsonl", captions=LLM_FIX / "rsicd", out=out, base_model=HUB_ID,
             method="lora", lora_target_modules=["q_proj", "v_proj"], epochs=1, batch_size=8, max_length=64,
             save_checkpoints=False, progress=False, threads=1, eval_split="none")
    meta = read_meta(out)
    assert meta["base_model"] == HUB_ID
    assert resolve_base(out, meta) == HUB_ID
    captions = Captioner(out).caption([json.loads((LLM_FIX / "compositions.jsonl").read_text().splitlines()[0])],
                                      max_new_tokens=4)
    assert len(captions) == 1
    assert guard == []
