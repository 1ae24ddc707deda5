"""Colour: a palette as a Gaussian over RGB (its statistics, the distance the colour loss
takes, the palette transfer that gives the content target the painting's colours), and the
colour and strength controls shared by inference and per-image optimisation.

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


def color_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 3, H, W) -> the RGB mean (B, 3) and covariance (B, 3, 3) of each image's pixels, fp32."""
    with torch.autocast(image.device.type, enabled=False):
        f = image.float().flatten(2)  # (B, 3, H*W)
        mean = f.mean(2)
        d = f - mean.unsqueeze(2)
        return mean, torch.bmm(d, d.transpose(1, 2)) / f.shape[2]


def color_distance(image: torch.Tensor, mean: torch.Tensor, cov_sqrt: torch.Tensor) -> torch.Tensor:
    """Squared Wasserstein-2 distance between each image's colours and a target's, both taken as
    Gaussians (mean, covariance), averaged over the batch: |m1 - m2|^2 + tr(C1 + C2 -
    2 (C2^1/2 C1 C2^1/2)^1/2). cov_sqrt is the target's C2^1/2. Zero exactly when the image has
    the target's palette: the mean and covariance a linear colour transfer would give it."""
    m1, c1 = color_stats(image)
    cross = cov_sqrt @ c1 @ cov_sqrt  # (B, 3, 3), symmetric positive semi-definite
    # tr of a PSD matrix's square root = sum of its eigenvalues' roots (clamped: the root's slope
    # is infinite at 0, and rounding can make an eigenvalue slightly negative).
    root_trace = torch.linalg.eigvalsh(cross).clamp_min(1e-12).sqrt().sum(1)
    cov_term = c1.diagonal(dim1=1, dim2=2).sum(1) + (cov_sqrt @ cov_sqrt).trace() - 2 * root_trace
    return (((m1 - mean) ** 2).sum(1) + cov_term).mean()


def psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """The square root of a symmetric positive semi-definite matrix."""
    values, vectors = torch.linalg.eigh(matrix)
    return vectors @ torch.diag_embed(values.clamp_min(0).sqrt()) @ vectors.transpose(-1, -2)


def palette_transfer(images: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                     eps: float = 1e-4) -> torch.Tensor:
    """Each image (B, 3, H, W, 0..1) recoloured to a palette taken as a Gaussian over RGB (mean
    (3,), covariance (3, 3)): the linear map that moves its colours' mean and covariance onto the
    palette's with the least displacement (the optimal transport map between the two Gaussians,
    A = C1^-1/2 (C1^1/2 C2 C1^1/2)^1/2 C1^-1/2, symmetric, so no hue is rotated), clamped to 0..1.
    eps regularises a photo of few colours (a grey photo's covariance has rank 1)."""
    with torch.autocast(images.device.type, enabled=False):
        m1, c1 = color_stats(images)
        c1 = c1 + eps * torch.eye(3, device=images.device)
        root = psd_sqrt(c1)
        inv_root = torch.linalg.inv(root)
        a = inv_root @ psd_sqrt(root @ cov.float() @ root) @ inv_root  # (B, 3, 3)
        x = images.float().flatten(2) - m1.unsqueeze(2)
        y = (a @ x + mean.float().view(1, 3, 1)).clamp(0, 1)
        return y.view_as(images).to(images.dtype)
