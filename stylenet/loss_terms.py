"""The perceptual losses' math as pure functions; stylenet.losses.PerceptualLoss weights them and
holds the style targets. The same functions serve training and per-image optimisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def gram_matrix(features: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrices, computed in fp32 (bf16 sums of H*W products lose
    too much precision). normalize: 'chw' divides by C*H*W (Johnson et al.), 'hw' by H*W."""
    b, c, h, w = features.shape
    # Autocast would run bmm in bf16/fp16 again despite the .float(): switch it off here.
    with torch.autocast(features.device.type, enabled=False):
        f = features.float()
        if f.is_contiguous(memory_format=torch.channels_last) and not f.is_contiguous():
            # NHWC (the loss network's layout on the CPU): (B, H*W, C) is a view, and the
            # gradient comes back in the layout of the other gradients it is added to (an NCHW
            # copy made them add up in a strided loop: 0.2 s of a 4 s CPU step at 256 px).
            f = f.permute(0, 2, 3, 1).reshape(b, h * w, c)
            gram = torch.bmm(f.transpose(1, 2), f)
        else:
            f = f.reshape(b, c, h * w)
            gram = torch.bmm(f, f.transpose(1, 2))
    if normalize == "chw":
        return gram / (c * h * w)
    if normalize == "hw":
        return gram / (h * w)
    raise ValueError(f"gram normalize={normalize!r}: use 'chw' or 'hw'")


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error between feature maps."""
    return F.mse_loss(features.float(), target.float())


def style_loss(
    grams: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    layer_weights: dict[str, float],
) -> torch.Tensor:
    """Weighted sum over layers of the MSE between Gram matrices; a (1, C, C) target is compared
    with every image of the batch."""
    total = 0.0
    for name, weight in layer_weights.items():
        g = grams[name]
        total = total + weight * F.mse_loss(g, targets[name].expand_as(g))
    return total


def sliced_wasserstein(features: torch.Tensor, target: torch.Tensor,
                       directions: torch.Tensor) -> torch.Tensor:
    """Sliced Wasserstein distance between each image's features and the painting's (Heitz et al.
    2021): both projected on the same unit directions, each projection sorted, the sorted values
    compared by MSE. It matches the whole distribution of the features, of which a Gram matrix is
    the second moment only. features: (B, C, H, W); target: (C, M) samples of the painting's
    features; directions: (C, K). The painting's quantiles are taken at the output's H*W points."""
    b, c, h, w = features.shape
    with torch.autocast(features.device.type, enabled=False):
        f = features.float().reshape(b, c, h * w).transpose(1, 2) @ directions  # (B, N, K)
        t = target.float().t() @ directions  # (M, K)
        f = f.sort(dim=1).values
        t = t.sort(dim=0).values
        n, m = f.shape[1], t.shape[0]
        if m != n:  # quantile (i + 1/2) / N: the painting's sorted sample at the same rank,
            # in integers (a float32 rank can fall just below its whole number)
            t = t[(2 * torch.arange(n, device=t.device) + 1) * m // (2 * n)]
        return F.mse_loss(f, t.unsqueeze(0).expand_as(f))


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (anisotropic TV)."""
    dh = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dw = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dh + dw


def split_tiles(features: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * rows * cols, C, H // rows, W // cols): the feature map cut into a
    grid of whole tiles (a remainder at the bottom and right is left out)."""
    b, c, h, w = features.shape
    th, tw = h // rows, w // cols
    f = features[..., : th * rows, : tw * cols].reshape(b, c, rows, th, cols, tw)
    return f.permute(0, 2, 4, 1, 3, 5).reshape(b * rows * cols, c, th, tw)
