"""Colour and strength controls shared by inference and per-image optimisation.

preserve_color follows Gatys et al. 2016, "Preserving Color in Neural Artistic Style Transfer"
(luminance-only transfer): keep the photo's chroma, take the stylized image's luminance.
"""

from __future__ import annotations

import torch

# ITU-R BT.601 full-range RGB <-> YCbCr (the JPEG convention), for images in 0..1.
_RGB_TO_YCBCR = torch.tensor(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]
)
_YCBCR_TO_RGB = torch.linalg.inv(_RGB_TO_YCBCR)
_OFFSET = torch.tensor([0.0, 0.5, 0.5])


def rgb_to_ycbcr(image: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in 0..1 -> YCbCr in 0..1."""
    m = _RGB_TO_YCBCR.to(image.device, image.dtype)
    out = torch.einsum("ij,...jhw->...ihw", m, image)
    return out + _OFFSET.to(image.device, image.dtype).view(3, 1, 1)


def ycbcr_to_rgb(image: torch.Tensor) -> torch.Tensor:
    m = _YCBCR_TO_RGB.to(image.device, image.dtype)
    return torch.einsum(
        "ij,...jhw->...ihw", m, image - _OFFSET.to(image.device, image.dtype).view(3, 1, 1)
    )


def preserve_color(photo: torch.Tensor, stylized: torch.Tensor) -> torch.Tensor:
    """The stylized image's luminance with the photo's chroma (Cb, Cr)."""
    y = rgb_to_ycbcr(stylized)[..., :1, :, :]
    cbcr = rgb_to_ycbcr(photo)[..., 1:, :, :]
    return ycbcr_to_rgb(torch.cat([y, cbcr], dim=-3)).clamp(0, 1)


def check_strength(strength: float) -> float:
    """strength as a float, or a ValueError naming the setting when it is outside 0..1."""
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength={strength}: use a value from 0 (photo) to 1 (full style)")
    return float(strength)


def blend(photo: torch.Tensor, stylized: torch.Tensor, strength: float) -> torch.Tensor:
    """strength 0 returns the photo, 1 the stylized image, values between mix linearly."""
    strength = check_strength(strength)
    if strength == 1.0:
        return stylized
    if strength == 0.0:
        return photo
    return torch.lerp(photo, stylized, strength)
