"""The image transformation network of Johnson et al. 2016, with instance norm (stylenet/norm.py;
conditional for a net of several paintings).

Reads top to bottom: building blocks first, then the net. Input and output are RGB images in
0..1 floats; any height and width work. Inside, the net works on pixels in 0..PIXEL_SCALE, as the
reference does: see TransformerNet.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.norm import InstanceNorm, NormStats, Style


class ConvLayer(nn.Module):
    """Reflection padding + conv: padding by reflection instead of zeros avoids border artifacts."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm with an identity skip (He et al. 2016; the paper's supplement)."""

    def __init__(self, channels: int, num_styles: int = 0):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = InstanceNorm(channels, num_styles)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = InstanceNorm(channels, num_styles)

    def forward(self, x: torch.Tensor, s1: NormStats | None = None,
                s2: NormStats | None = None, upto: int | None = None,
                style: Style | None = None) -> torch.Tensor:
        """s1, s2: statistics for in1, in2 (None: the input's own). upto=0 or 1: return the
        input of in1 or in2 instead (see TransformerNet.forward)."""
        y = self.conv1(x)
        if upto == 0:
            return y
        y = F.relu(self.in1(y, s1, style))
        y = self.conv2(y)
        if upto == 1:
            return y
        return x + self.in2(y, s2, style)


class UpsampleConv(nn.Module):
    """Nearest x2 upsampling then conv, instead of a transposed conv: no checkerboard artifacts
    (Odena et al. 2016), as in the well-known PyTorch reference."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3):
        super().__init__()
        self.conv = ConvLayer(c_in, c_out, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# The reference network reads and writes pixels in 0..255. With no output activation, the last
# conv's Adam steps (lr 1e-3) are a fixed size in the net's output units: at 0..255 they are 255x
# smaller relative to the image than at 0..1, and at initialisation the output is near-black
# noise instead of noise with std ~0.34 around zero. Trained at 0..1, the net learns colour blobs
# and loses the photo's subject (benchmarks/NOTES.md, "Pixel scale"). So the net multiplies its
# 0..1 input by this and divides its output by it.
PIXEL_SCALE = 255.0
# Model files written before the pixel scale was part of the architecture were trained at 0..1.
LEGACY_PIXEL_SCALE = 1.0


class TransformerNet(nn.Module):
    """9x9 conv -> two stride-2 convs -> residual blocks -> two upsample convs -> 9x9 conv.

    channels: widths of the three encoder stages (paper: 32, 64, 128). pixel_scale: the pixel
    range the layers work in (see PIXEL_SCALE). edge_kernel: kernel of the first and last convs
    (paper: 9). start_grey: initialise the last conv's bias so the untrained net outputs mid-grey.
    num_styles: 0 for one painting (plain instance norm); N for N paintings sharing the convs,
    each a row of every norm's scale and shift (conditional instance norm).
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (32, 64, 128),
        num_residual: int = 5,
        pixel_scale: float = PIXEL_SCALE,
        edge_kernel: int = 9,
        start_grey: bool = False,
        num_styles: int = 0,
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.channels = (c1, c2, c3)
        self.num_residual = num_residual
        self.pixel_scale = float(pixel_scale)
        self.edge_kernel = int(edge_kernel)
        self.num_styles = n = int(num_styles)
        # Encoder: (B, 3, H, W) -> (B, c3, H/4, W/4)
        self.conv1 = ConvLayer(3, c1, edge_kernel)
        self.in1 = InstanceNorm(c1, n)
        self.conv2 = ConvLayer(c1, c2, 3, stride=2)
        self.in2 = InstanceNorm(c2, n)
        self.conv3 = ConvLayer(c2, c3, 3, stride=2)
        self.in3 = InstanceNorm(c3, n)
        self.res = nn.Sequential(*[ResidualBlock(c3, n) for _ in range(num_residual)])
        # Decoder: (B, c3, H/4, W/4) -> (B, 3, H, W)
        self.up1 = UpsampleConv(c3, c2)
        self.in4 = InstanceNorm(c2, n)
        self.up2 = UpsampleConv(c2, c1)
        self.in5 = InstanceNorm(c1, n)
        self.conv_out = ConvLayer(c1, 3, edge_kernel)
        self._init_weights(start_grey)

    def _init_weights(self, start_grey: bool = False) -> None:
        # PyTorch's default conv init (Kaiming uniform) as in the reference; norms start at
        # identity. Kept in one place so a different init is a one-line change.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, InstanceNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if start_grey:  # output ~0.5 (in 0..1) at step 0: no steps spent climbing out of black
            nn.init.constant_(self.conv_out.conv.bias, 0.5 * self.pixel_scale)

    def config(self) -> dict:
        """The architecture settings a model file needs to rebuild this net (num_styles only for
        a net of several paintings, so that one painting's files stay as they were)."""
        arch = {"channels": list(self.channels), "num_residual": self.num_residual,
                "pixel_scale": self.pixel_scale, "edge_kernel": self.edge_kernel}
        return {**arch, "num_styles": self.num_styles} if self.num_styles else arch

    def forward(self, x: torch.Tensor, stats: Sequence[NormStats | None] = (),
                upto: int | None = None, style: Style | None = None) -> torch.Tensor:
        """(B, 3, H, W) in 0..1 -> stylized (B, 3, H, W).

        For tiling a large image: `stats` gives (mean, var), or None, for the first norms in
        norms() order, replacing the image's own statistics; `upto=k` returns the input of norm
        k instead of the output (the norms before it use `stats`) and skips the rest. style: the
        painting(s) of a net of several (see Style); required there, refused otherwise."""
        s = list(stats) + [None] * (2 * len(self.res) + 5 - len(stats))  # one per norm
        h, w = x.shape[-2:]
        # Two stride-2 convs need sides divisible by 4: reflect-pad up, crop back at the end.
        pad_h, pad_w = -h % 4, -w % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x = x * self.pixel_scale  # (B, 3, H, W) in 0..pixel_scale
        y = self.conv1(x)  # (B, c1, H, W)
        if upto == 0:
            return y
        y = F.relu(self.in1(y, s[0], style))
        y = self.conv2(y)  # (B, c2, H/2, W/2)
        if upto == 1:
            return y
        y = F.relu(self.in2(y, s[1], style))
        y = self.conv3(y)  # (B, c3, H/4, W/4)
        if upto == 2:
            return y
        y = F.relu(self.in3(y, s[2], style))
        for i, block in enumerate(self.res):  # (B, c3, H/4, W/4); norms 3 + 2i and 4 + 2i
            k = 3 + 2 * i
            if upto in (k, k + 1):
                return block(y, s[k], s[k + 1], upto - k, style)
            y = block(y, s[k], s[k + 1], style=style)
        y = self.up1(y)  # (B, c2, H/2, W/2)
        if upto == len(s) - 2:
            return y
        y = F.relu(self.in4(y, s[-2], style))
        y = self.up2(y)  # (B, c1, H, W)
        if upto == len(s) - 1:
            return y
        y = F.relu(self.in5(y, s[-1], style))
        y = self.conv_out(y)  # (B, 3, H, W); no output activation, as in the reference
        return y[..., :h, :w] / self.pixel_scale

    def norms(self) -> list[InstanceNorm]:
        """The instance norms in the order forward() runs them: the order of its stats and of
        upto."""
        return [m for m in self.modules() if isinstance(m, InstanceNorm)]


def macs_per_pixel(net: nn.Module, size: int = 256) -> float:
    """Multiply-adds of one forward pass per input pixel, counted on a size x size image."""
    total = 0

    def count(conv, args, out):
        nonlocal total
        kh, kw = conv.kernel_size
        total += out.numel() // out.shape[0] * conv.in_channels // conv.groups * kh * kw

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, 3, size, size), style=0 if getattr(net, "num_styles", 0) else None)
    finally:
        for hook in hooks:
            hook.remove()
    return total / size**2


if __name__ == "__main__":  # python -m stylenet.transformer --macs
    import argparse
    from pathlib import Path

    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser(description="multiply-adds per pixel of each model=... net")
    parser.add_argument("--macs", action="store_true", help="(the default and only report)")
    parser.parse_args()
    configs = Path(__file__).resolve().parents[1] / "configs" / "model"
    base = OmegaConf.load(configs / "stylenet.yaml").net
    for path in sorted(configs.glob("*.yaml")):
        net_cfg = OmegaConf.merge(base, OmegaConf.load(path).get("net", {}))
        kernel = net_cfg.get("edge_kernel", 9)
        net = TransformerNet(tuple(net_cfg.channels), net_cfg.num_residual, edge_kernel=kernel)
        params = sum(p.numel() for p in net.parameters())
        print(f"model={path.stem:<10} channels={list(net_cfg.channels)!s:<14} "
              f"blocks={net_cfg.num_residual} edge={kernel}x{kernel}  "
              f"{macs_per_pixel(net) / 1e3:6.1f}k multiply-adds per pixel, "
              f"{params / 1e6:.2f}M parameters")
