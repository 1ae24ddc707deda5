"""Inference API: `Stylizer(model_file)` turns photos into stylized images; infer.py wraps it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from stylenet.export import load_model
from stylenet.image import ImageError, load_tensor, save_atomic, to_pil

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device} but CUDA is not available here: use device=cpu or auto")
    return torch.device(device)


class Stylizer:
    """A trained model ready to stylize. Images are (3, H, W) or (B, 3, H, W) floats in 0..1."""

    def __init__(self, model: str | Path, device: str = "auto", precision: str = "fp32"):
        if precision not in DTYPES:
            raise ValueError(f"precision={precision!r}: use one of {sorted(DTYPES)}")
        self.device = pick_device(device)
        self.net, self.meta = load_model(model)
        self.net.to(self.device)
        self.dtype = DTYPES[precision]

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        single = image.dim() == 3
        x = (image.unsqueeze(0) if single else image).to(self.device)
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            y = self.net(x)
        y = y.float().clamp(0, 1).cpu()
        return y[0] if single else y

    def stylize_file(self, src: str | Path, dst: str | Path, overwrite: bool = False, quality: int = 95) -> Path:
        src, dst = Path(src), Path(dst)
        if dst.exists() and dst.resolve() == src.resolve() and not overwrite:
            raise ImageError(f"{dst}: output would overwrite the input: choose another output or set overwrite=true")
        if dst.exists() and not overwrite:
            raise ImageError(f"{dst}: exists: choose another output or set overwrite=true")
        out = self(load_tensor(src))
        return save_atomic(to_pil(out), dst, quality=quality)
