"""Perceptual losses: one module that holds the weights and style targets (one painting, or
several for a net of many paintings); the pure functions live in stylenet/loss_terms.py.

The same module serves training (feed-forward net) and per-image optimisation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from stylenet.color import color_distance, color_stats, palette_transfer, psd_sqrt
from stylenet.loss_terms import (
    content_loss,
    gram_matrix,
    sliced_wasserstein,
    split_tiles,
    style_loss,
    total_variation,
)
from stylenet.multi import painting_settings
from stylenet.vgg import VGGFeatures, layer_names


class PerceptualLoss(nn.Module):
    """Content + style + total variation losses against a frozen VGG.

    style_layers maps layer name -> weight (0 switches a layer off); the style targets (Gram
    matrices of the style image, or with style_metric='sliced' samples of its feature vectors)
    are buffers set once by set_style() and saved with the module.

    paintings: for a net of several paintings (model=multi), one style config per painting; each
    may set its own content_weight, style_weight, tv_weight, style_layers (merged over the shared
    ones) and content_palette, and the shared settings stand for what it leaves out. The targets
    then hold one row per painting, and forward() takes the painting to compare with.
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
        style_tile: int | None = None,
        style_tile_layers: list[str] | tuple[str, ...] | None = None,
        paintings: list[Mapping[str, Any]] | None = None,
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
        shared_layers = style_layers
        # A layer weighted 0 is switched off: it need not be tapped (a config can drop a layer).
        style_layers = {name: w for name, w in style_layers.items() if w != 0}
        self.paintings = None
        if paintings:
            if style_metric == "sliced":
                raise ValueError("loss.style_metric=sliced trains one painting: use "
                                 "loss.style_metric=gram with model=multi")
            shared = {"content_weight": content_weight, "style_weight": style_weight,
                      "tv_weight": tv_weight, "content_palette": content_palette}
            self.paintings = [painting_settings(p, i, shared, shared_layers)
                              for i, p in enumerate(paintings)]
            # Every layer some painting weighs is tapped, and holds targets.
            style_layers = {n: 1.0 for p in self.paintings for n in p["style_layers"]}
        # The style-weight warmup's factor for a net of several paintings (the module sets it;
        # one painting's warmup sets style_weight itself).
        self.style_factor = 1.0
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
        if style_tile is not None and (style_tile < 8 or style_metric != "gram"):
            raise ValueError(f"loss.style_tile={style_tile}: null, or a tile side of at least 8 "
                             "px (e.g. 128) with loss.style_metric=gram")
        self.style_tile = style_tile  # each tile of the output held to the painting's Grams
        # the layers tiled (None: every style layer); the others keep one Gram per image
        self.style_tile_layers = None if style_tile_layers is None else list(style_tile_layers)
        if self.style_tile_layers is not None and (
                style_tile is None or not set(self.style_tile_layers) <= set(style_layers)):
            raise ValueError(f"loss.style_tile_layers={self.style_tile_layers}: style layers "
                             f"({list(style_layers)}) to tile, with loss.style_tile set (e.g. "
                             "loss.style_tile=128 'loss.style_tile_layers=[relu3_3,relu4_3]')")
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

    def settings(self, painting: int = 0) -> dict[str, Any]:
        """The weights, style layers and content_palette that painting `painting` is trained
        with (one painting: the module's own, as they are now)."""
        if self.paintings is None:
            return {"content_weight": self.content_weight, "style_weight": self.style_weight,
                    "tv_weight": self.tv_weight, "style_layers": self.style_layers,
                    "content_palette": self.content_palette}
        p = self.paintings[painting]
        return {**p, "style_weight": p["style_weight"] * self.style_factor}

    def _color(self, painting: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The painting's RGB mean (3,) and the square root of its covariance (3, 3)."""
        if self.paintings is None:
            return self.target_color_mean, self.target_color_cov_sqrt
        return self.target_color_mean[painting], self.target_color_cov_sqrt[painting]

    @torch.no_grad()
    def set_style(self, style: torch.Tensor | Sequence[torch.Tensor]) -> None:
        """style: (1, 3, H, W) RGB in 0..1; with several paintings, one such image each, in
        order (each at its own size)."""
        styles = list(style) if isinstance(style, list | tuple) else [style]
        count = 1 if self.paintings is None else len(self.paintings)
        if len(styles) != count:
            raise ValueError(f"set_style: {len(styles)} style images for {count} paintings")
        stats = [color_stats(s) for s in styles]
        mean = torch.cat([m for m, _ in stats])
        cov_sqrt = torch.stack([psd_sqrt(c[0]) for _, c in stats])
        if self.paintings is None:
            mean, cov_sqrt = mean[0], cov_sqrt[0]
        self.target_color_mean, self.target_color_cov_sqrt = mean, cov_sqrt
        style = styles[0]
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
        for i, scale in enumerate(self.style_scales):  # (N, C, C): one row per painting
            grams = [self._grams(s, scale) for s in styles]
            for name in self.style_layers:
                setattr(self, self._target_key(name, i), torch.cat([g[name] for g in grams]))

    def style_targets(self, scale_index: int = 0, painting: int = 0) -> dict[str, torch.Tensor]:
        """The targets at one scale: (1, C, C) Gram matrices of `painting` (or sliced samples)."""
        targets = {name: getattr(self, self._target_key(name, scale_index))
                   for name in self.style_layers}
        if self.paintings is None:
            return targets
        return {name: t[painting : painting + 1] for name, t in targets.items()}

    def style_term(self, output: torch.Tensor, feats: dict[str, torch.Tensor],
                   painting: int = 0) -> torch.Tensor:
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
        total, layers = 0.0, self.settings(painting)["style_layers"]
        for i, scale in enumerate(self.style_scales):
            grams = self._grams(output, scale, feats if i == 0 else None, self.style_tile)
            total = total + style_loss(grams, self.style_targets(i, painting), layers)
        return total

    def _grams(self, image: torch.Tensor, scale: float,
               feats: dict[str, torch.Tensor] | None = None,
               tile: int | None = None) -> dict[str, torch.Tensor]:
        """The style layers' Gram matrices of `image` at `scale` of its size (from `feats`, its
        features at that size, when they are already computed): (B, C, C), or with `tile`
        (B * tiles, C, C), one per tile x tile px tile of the image (whole tiles only), at
        style_tile_layers (all when None)."""
        if feats is None:
            image = self._downscaled(image, scale)
            feats = self.features(image, upto=self.deepest_style)
        if tile is not None:
            # tiles per side, the same image region at every layer's resolution
            rows, cols = (max(1, n // tile) for n in image.shape[-2:])
            tiled = self.style_tile_layers or self.style_layers
            feats = {n: split_tiles(feats[n], rows, cols) if n in tiled else feats[n]
                     for n in self.style_layers}
        return {n: gram_matrix(feats[n], self.gram_normalize) for n in self.style_layers}

    def content_image(self, photos: torch.Tensor, painting: int = 0) -> torch.Tensor:
        """The image whose features the content term compares the output with: the photos, or
        with content_palette the photos recoloured to the painting's palette (set_style() first)."""
        if not self.settings(painting)["content_palette"]:
            return photos
        mean, cov_sqrt = self._color(painting)
        return palette_transfer(photos, mean, cov_sqrt @ cov_sqrt)

    def forward(
        self,
        output: torch.Tensor,
        content: torch.Tensor | dict[str, torch.Tensor],
        painting: int = 0,
    ) -> dict[str, torch.Tensor]:
        """output: stylized images (B, 3, H, W); content: the photos, or their precomputed
        features; painting: which painting's targets and weights (several paintings). Returns
        the weighted terms and their sum under 'total'."""
        s = self.settings(painting)
        if not isinstance(content, dict):
            # The photo's features are a target: no graph, and no layer past the content tap
            # (relu2_2 is a third of VGG16's work up to relu4_3).
            with torch.no_grad():
                content = self.features(self.content_image(content, painting),
                                        upto=self.content_layer)
        feats = self.features(output, upto=self.deepest)
        terms = {
            "content": s["content_weight"]
            * content_loss(feats[self.content_layer], content[self.content_layer]),
            "style": s["style_weight"] * self.style_term(output, feats, painting),
        }
        terms["tv"] = s["tv_weight"] * total_variation(output.float())
        if self.color_weight:
            terms["color"] = self.color_weight * color_distance(output, *self._color(painting))
        terms["total"] = sum(terms.values())
        return terms
