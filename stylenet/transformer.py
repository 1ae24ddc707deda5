"""The image transformation network of Johnson et al. 2016, with instance norm.

Reads top to bottom: building blocks first, then the net. Input and output are RGB images in
0..1 floats; any height and width work. Inside, the net works on pixels in 0..PIXEL_SCALE, as the
reference does: see TransformerNet.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvLayer(nn.Module):
    """Reflection padding + conv: padding by reflection instead of zeros avoids border artifacts."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm that can normalise with statistics given from outside.

    Normally each image is normalised with its own per-channel mean and variance. For tiled
    inference of a large image, `stats` can hold the (mean, var) of the whole image, so that every
    tile is normalised the same way and tiles agree where they meet.
    """

    def __init__(self, channels: int):
        super().__init__(channels, affine=True)
        self.stats: tuple[torch.Tensor, torch.Tensor] | None = None  # each (B, C, 1, 1)
        self.record: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stats is None and self.record is None:
            return super().forward(x)
        if self.stats is None:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
            self.record.append((mean, var))
        else:
            mean, var = self.stats
        x_hat = (x.float() - mean) * torch.rsqrt(var + self.eps)
        out = x_hat * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm with an identity skip (He et al. 2016; the paper's supplement)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3)
        self.in1 = InstanceNorm(channels)
        self.conv2 = ConvLayer(channels, channels, 3)
        self.in2 = InstanceNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.in1(self.conv1(x)))
        return x + self.in2(self.conv2(y))


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

    `channels` are the widths of the three encoder stages (32, 64, 128 in the paper); a smaller
    net for fast CPU inference is a config change: e.g. channels=[16, 32, 64], num_residual=3.
    `pixel_scale`: the pixel range the layers work in (see PIXEL_SCALE); part of the architecture.
    """

    def __init__(
        self,
        channels: tuple[int, int, int] = (32, 64, 128),
        num_residual: int = 5,
        pixel_scale: float = PIXEL_SCALE,
    ):
        super().__init__()
        c1, c2, c3 = channels
        self.channels = (c1, c2, c3)
        self.num_residual = num_residual
        self.pixel_scale = float(pixel_scale)
        # Encoder: (B, 3, H, W) -> (B, c3, H/4, W/4)
        self.conv1 = ConvLayer(3, c1, 9)
        self.in1 = InstanceNorm(c1)
        self.conv2 = ConvLayer(c1, c2, 3, stride=2)
        self.in2 = InstanceNorm(c2)
        self.conv3 = ConvLayer(c2, c3, 3, stride=2)
        self.in3 = InstanceNorm(c3)
        self.res = nn.Sequential(*[ResidualBlock(c3) for _ in range(num_residual)])
        # Decoder: (B, c3, H/4, W/4) -> (B, 3, H, W)
        self.up1 = UpsampleConv(c3, c2)
        self.in4 = InstanceNorm(c2)
        self.up2 = UpsampleConv(c2, c1)
        self.in5 = InstanceNorm(c1)
        self.conv_out = ConvLayer(c1, 3, 9)
        self._init_weights()

    def _init_weights(self) -> None:
        # PyTorch's default conv init (Kaiming uniform) as in the reference; norms start at
        # identity. Kept in one place so a different init is a one-line change.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                m.reset_parameters()
            elif isinstance(m, InstanceNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def config(self) -> dict:
        """The architecture settings a model file needs to rebuild this net."""
        return {"channels": list(self.channels), "num_residual": self.num_residual,
                "pixel_scale": self.pixel_scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        # Two stride-2 convs need sides divisible by 4: reflect-pad up, crop back at the end.
        pad_h, pad_w = -h % 4, -w % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x = x * self.pixel_scale  # (B, 3, H, W) in 0..pixel_scale
        y = F.relu(self.in1(self.conv1(x)))  # (B, c1, H, W)
        y = F.relu(self.in2(self.conv2(y)))  # (B, c2, H/2, W/2)
        y = F.relu(self.in3(self.conv3(y)))  # (B, c3, H/4, W/4)
        y = self.res(y)  # (B, c3, H/4, W/4)
        y = F.relu(self.in4(self.up1(y)))  # (B, c2, H/2, W/2)
        y = F.relu(self.in5(self.up2(y)))  # (B, c1, H, W)
        y = self.conv_out(y)  # (B, 3, H, W); no output activation, as in the reference
        return y[..., :h, :w] / self.pixel_scale

    def norms(self) -> list[InstanceNorm]:
        """The instance norms in the order forward() runs them (for whole-image statistics)."""
        return [m for m in self.modules() if isinstance(m, InstanceNorm)]
