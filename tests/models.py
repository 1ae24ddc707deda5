"""Small untrained model files for the inference tests."""

from __future__ import annotations

from pathlib import Path

import torch

from stylenet.model_file import save_model
from stylenet.transformer import TransformerNet


def save_tiny_model(path: Path, seed: int = 0, channels=(4, 8, 8), num_residual: int = 1,
                    style: str = "t", edge_kernel: int = 9) -> Path:
    """A random net whose output spans the image range. At initialisation the net's output is
    near 0 in pixel units (0..255), i.e. a black image, which hides colour, blending and tile
    errors; the last conv is scaled to give mid-grey with colour variation instead."""
    torch.manual_seed(seed)
    net = TransformerNet(channels=channels, num_residual=num_residual, edge_kernel=edge_kernel)
    with torch.no_grad():
        net.conv_out.conv.weight.mul_(net.pixel_scale / 2)
        net.conv_out.conv.bias.mul_(net.pixel_scale / 2).add_(net.pixel_scale / 2)
    return save_model(path, net, {"arch": net.config(), "style": {"name": style}})
