"""Perceptual losses: pure functions first, then one module that holds the style targets.

The same functions serve training (feed-forward net) and per-image optimisation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.color import color_distance, color_stats, palette_transfer, psd_sqrt
from stylenet.vgg import VGGFeatures, layer_names


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


class PerceptualLoss(nn.Module):
    """Content + style + total variation losses against a frozen VGG.

    style_layers maps layer name -> weight (0 switches a layer off); the style targets (Gram
    matrices of the style image, or with style_metric='sliced' samples of its feature vectors)
    are buffers set once by set_style() and saved with the module.
    """

    def __init__(
        self,
        vgg: VGGFeatures,
        content_layer: str = "relu2_2",
        style_layers: dict[str, float] | None = None,
        content_weight: float = 1e5,
        style_weight: float = 1e10,
        tv_weight: float = 0.0,
        feature_scale: float = 1.0,
        gram_normalize: str = "chw",
        style_scales: list[float] | tuple[float, ...] = (1.0,),
        color_weight: float = 0.0,
        style_metric: str = "gram",
        sliced_samples: int = 16384,
        sliced_directions: int | None = None,
        content_palette: bool = False,
    ):
        super().__init__()
        if style_layers is not None and not isinstance(style_layers, Mapping):
            # Unquoted in bash, {relu1_2:1,relu2_2:1} is brace-expanded into two overrides.
            raise ValueError(
                f"loss.style_layers={style_layers} is not a mapping of layer -> weight: quote "
                "it, or bash splits the braces: 'loss.style_layers={relu1_2:1,relu2_2:1,"
                "relu3_3:0,relu4_3:0}' (it merges into the defaults; weight 0 switches a layer "
                "off)"
            )
        style_layers = dict(
            style_layers or {n: 1.0 for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")}
        )
        for name, value in [("content_weight", content_weight), ("style_weight", style_weight),
                            ("tv_weight", tv_weight), ("color_weight", color_weight)]:
            if value < 0:
                raise ValueError(f"{name}={value:g} is negative (style.{name}, or loss.{name} in "
                                 "optimize.py): loss weights must be >= 0")
        for name, value in style_layers.items():
            if value < 0:
                raise ValueError(f"loss.style_layers.{name}={value:g} is negative: weights must "
                                 "be >= 0 (0 switches a layer off)")
        # A layer weighted 0 is switched off: it need not be tapped (a config can drop a layer).
        style_layers = {name: w for name, w in style_layers.items() if w != 0}
        known = layer_names(vgg.arch)
        for key, name in [("loss.content_layer", content_layer),
                          *[("loss.style_layers", n) for n in style_layers]]:
            if name not in known:
                close = [k for k in known if k.startswith(str(name)[:4])][:6] or known[:6]
                raise ValueError(f"{key}: unknown VGG layer {name!r}: use one of {close} (names "
                                 "like relu3_3: block 3, layer 3)")
            if name not in vgg.layers:
                raise ValueError(f"{key}={name} is not tapped: add it to loss.vgg.layers "
                                 f"({vgg.layers})")
        self.vgg = vgg
        self.content_layer, self.style_layers = content_layer, style_layers
        self.content_weight, self.style_weight, self.tv_weight = (content_weight, style_weight,
                                                                   tv_weight)
        # Multiplies every feature map: brings a loss network whose activations live on another
        # scale (Caffe weights take 0..255 input) to the scale the loss weights were tuned for.
        self.feature_scale = feature_scale
        self.gram_normalize = gram_normalize
        # The painting's palette as a Gaussian over RGB, for the colour term (color_weight > 0).
        self.color_weight = color_weight
        self.register_buffer("target_color_mean", torch.zeros(3), persistent=False)
        self.register_buffer("target_color_cov_sqrt", torch.zeros(3, 3), persistent=False)
        # The content target is the photo recoloured to the painting's palette, not the photo:
        # the content term then asks for the photo's structure in the painting's colours, and
        # the style term is left the brushwork (content_image()).
        self.content_palette = content_palette
        scales = [float(s) for s in style_scales]
        if not scales or scales[0] != 1.0 or any(not 0 < s < 1 for s in scales[1:]):
            raise ValueError(
                f"loss.style_scales={list(style_scales)}: start with 1.0, then the smaller "
                "scales in (0, 1) at which the output and the painting are also compared, "
                "e.g. [1.0, 0.5]"
            )
        self.style_scales = scales
        if style_metric not in ("gram", "sliced"):
            raise ValueError(f"loss.style_metric={style_metric!r}: use 'gram' (Gram matrices, "
                             "Johnson et al.) or 'sliced' (sliced Wasserstein, Heitz et al.)")
        if style_metric == "sliced" and len(scales) > 1:
            raise ValueError("loss.style_metric=sliced compares one scale: set "
                             "loss.style_scales=[1.0]")
        self.style_metric, self.sliced_samples = style_metric, sliced_samples
        # Random directions per layer per call (None: as many as the layer has channels). Sorting
        # is most of the metric's cost, and it grows with the directions.
        self.sliced_directions = sliced_directions
        # The deepest tap any term reads: the loss network stops there.
        order = layer_names(vgg.arch)
        self.deepest = max([content_layer, *style_layers], key=order.index)
        self.deepest_style = max(style_layers, key=order.index) if style_layers else None
        for i in range(len(scales)):
            for name in style_layers:
                self.register_buffer(self._target_key(name, i), torch.empty(0))

    @staticmethod
    def _target_key(name: str, scale_index: int) -> str:
        # Scale 1 keeps its plain name (`target_relu1_2`), as saved before there were scales.
        return f"target_{name}" if scale_index == 0 else f"target_{name}_scale{scale_index}"

    def _downscaled(self, image: torch.Tensor, scale: float) -> torch.Tensor:
        """The image at `scale` of its size, antialiased (a smaller copy, not a subsampling)."""
        if scale == 1.0:
            return image
        return F.interpolate(image, scale_factor=scale, mode="bilinear", antialias=True,
                             align_corners=False, recompute_scale_factor=False)

    def features(self, image: torch.Tensor, upto: str | None = None) -> dict[str, torch.Tensor]:
        feats = self.vgg(image, upto)
        if self.feature_scale != 1.0:
            feats = {k: v * self.feature_scale for k, v in feats.items()}
        return feats

    @torch.no_grad()
    def set_style(self, style: torch.Tensor) -> None:
        """style: (1, 3, H, W) RGB in 0..1."""
        mean, cov = color_stats(style)
        self.target_color_mean, self.target_color_cov_sqrt = mean[0], psd_sqrt(cov[0])
        if self.style_metric == "sliced":
            # A fixed random subset of the painting's feature vectors at each layer (all of them
            # where there are fewer): the samples whose projections are sorted at every step.
            feats = self.features(style, upto=self.deepest_style)
            generator = torch.Generator().manual_seed(0)
            for name in self.style_layers:
                f = feats[name][0].flatten(1).float()
                if f.shape[1] > self.sliced_samples:
                    keep = torch.randperm(f.shape[1], generator=generator)[:self.sliced_samples]
                    f = f[:, keep.to(f.device)]
                setattr(self, self._target_key(name, 0), f)
            return
        for i, scale in enumerate(self.style_scales):
            for name, gram in self._grams(style, scale).items():
                setattr(self, self._target_key(name, i), gram)

    def style_targets(self, scale_index: int = 0) -> dict[str, torch.Tensor]:
        return {name: getattr(self, self._target_key(name, scale_index))
                for name in self.style_layers}

    def style_term(self, output: torch.Tensor, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        """The unweighted style loss of `output` (whose features at scale 1 are `feats`): the
        Gram loss at each of style_scales (the output and the painting resized alike), summed;
        or with style_metric='sliced' the sliced Wasserstein distance at each layer."""
        if self.style_metric == "sliced":
            total, targets = 0.0, self.style_targets()
            for name, weight in self.style_layers.items():
                c = feats[name].shape[1]
                k = min(c, self.sliced_directions or c)
                # New random directions at every call, as in Heitz et al.: over the steps every
                # direction of the feature space is matched.
                directions = F.normalize(torch.randn(c, k, device=output.device), dim=0)
                total = total + weight * sliced_wasserstein(
                    feats[name], targets[name], directions)
            return total
        total = 0.0
        for i, scale in enumerate(self.style_scales):
            grams = self._grams(output, scale, feats if i == 0 else None)
            total = total + style_loss(grams, self.style_targets(i), self.style_layers)
        return total

    def _grams(self, image: torch.Tensor, scale: float,
               feats: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """The style layers' Gram matrices of `image` at `scale` of its size (from `feats`, its
        features at that size, when they are already computed)."""
        if feats is None:
            feats = self.features(self._downscaled(image, scale), upto=self.deepest_style)
        return {n: gram_matrix(feats[n], self.gram_normalize) for n in self.style_layers}

    def content_image(self, photos: torch.Tensor) -> torch.Tensor:
        """The image whose features the content term compares the output with: the photos, or
        with content_palette the photos recoloured to the painting's palette (set_style() first)."""
        if not self.content_palette:
            return photos
        cov_sqrt = self.target_color_cov_sqrt
        return palette_transfer(photos, self.target_color_mean, cov_sqrt @ cov_sqrt)

    def forward(
        self,
        output: torch.Tensor,
        content: torch.Tensor | dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """output: stylized images (B, 3, H, W); content: the photos, or their precomputed
        features. Returns the weighted terms and their sum under 'total'."""
        if not isinstance(content, dict):
            # The photo's features are a target: no graph, and no layer past the content tap
            # (relu2_2 is a third of VGG16's work up to relu4_3).
            with torch.no_grad():
                content = self.features(self.content_image(content), upto=self.content_layer)
        feats = self.features(output, upto=self.deepest)
        terms = {
            "content": self.content_weight
            * content_loss(feats[self.content_layer], content[self.content_layer]),
            "style": self.style_weight * self.style_term(output, feats),
        }
        terms["tv"] = self.tv_weight * total_variation(output.float())
        if self.color_weight:
            terms["color"] = self.color_weight * color_distance(
                output, self.target_color_mean, self.target_color_cov_sqrt)
        terms["total"] = sum(terms.values())
        return terms
