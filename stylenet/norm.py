"""Instance norm for the transformer: statistics given by the caller (tiling), and conditional
instance norm (Dumoulin et al. 2017): one row of scale and shift per painting, the convolutions of
the net shared."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# (mean, var) of one instance norm's input, each (B, C, 1, 1): given to normalise a tile of a
# large image with the whole image's statistics.
NormStats = tuple[torch.Tensor, torch.Tensor]


# Which painting(s) a net of several paintings applies: an index for the whole batch, a (B,)
# index tensor (one painting per image), or weights over the paintings, (N,) or (B, N), that mix
# their norm scales and shifts (a blend; the weights are used as given).
Style = int | torch.Tensor


class InstanceNorm(nn.InstanceNorm2d):
    """Affine instance norm that can normalise with statistics given by the caller.

    Normally each image is normalised with its own per-channel mean and variance. For tiled
    inference of a large image, `stats` holds the (mean, var) of the whole image, so that every
    tile is normalised the same way and tiles agree where they meet.

    num_styles > 0 makes it a conditional instance norm (Dumoulin et al. 2017): weight and bias
    are (num_styles, C) tables, one row per painting, and forward() takes `style` to pick or mix
    rows. freeze_rows() splits the last rows off as the only trainable parameters (a painting
    added to a trained net); the state dict still holds one table per name.
    """

    def __init__(self, channels: int, num_styles: int = 0):
        super().__init__(channels, affine=True)
        self.num_styles = num_styles
        self.weight_added = self.bias_added = None  # rows trained apart, see freeze_rows()
        if num_styles:
            self.weight = nn.Parameter(torch.ones(num_styles, channels))
            self.bias = nn.Parameter(torch.zeros(num_styles, channels))

    def tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (num_styles, C) scale and shift tables."""
        if self.weight_added is None:
            return self.weight, self.bias
        return torch.cat([self.weight, self.weight_added]), torch.cat([self.bias, self.bias_added])

    def rows(self, style: Style) -> tuple[torch.Tensor, torch.Tensor]:
        """The scale and shift `style` selects: (C,) for one painting, else (B or 1, C)."""
        weight, bias = self.tables()
        if isinstance(style, int):
            return weight[style], bias[style]
        if not style.is_floating_point():  # one painting per image
            return weight[style], bias[style]
        w = style.to(weight.dtype).reshape(-1, self.num_styles)
        return w @ weight, w @ bias

    def forward(self, x: torch.Tensor, stats: NormStats | None = None,
                style: Style | None = None) -> torch.Tensor:
        if not self.num_styles:
            if style is not None:
                raise ValueError("style= given to a net of one painting: leave it out")
            weight, bias = self.weight, self.bias
            if stats is None:
                return super().forward(x)
        else:
            if style is None:
                raise ValueError(f"a net of {self.num_styles} paintings needs style= (an index, "
                                 "indices per image or weights over the paintings)")
            weight, bias = self.rows(style)
            if stats is None and weight.dim() == 1:  # the same kernel as the plain norm's
                return F.instance_norm(x, weight=weight, bias=bias, eps=self.eps)
        if stats is None:
            var, mean = torch.var_mean(x.float(), dim=(2, 3), keepdim=True, correction=0)
        else:
            mean, var = stats
        x_hat = (x.float() - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1, 1, 1) if weight.dim() == 1 else (*weight.shape, 1, 1)
        out = x_hat * weight.reshape(shape) + bias.reshape(shape)
        return out.to(x.dtype)

    def freeze_rows(self, keep: int) -> None:
        """Train only the rows from `keep` on: the first `keep` rows become frozen parameters
        and the rest separate trainable ones, so an optimizer given the trainable parameters
        never sees the frozen rows."""
        weight, bias = self.tables()
        self.weight = nn.Parameter(weight[:keep].detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(bias[:keep].detach().clone(), requires_grad=False)
        self.weight_added = nn.Parameter(weight[keep:].detach().clone())
        self.bias_added = nn.Parameter(bias[keep:].detach().clone())

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.weight_added is not None:  # one table per name, as a net of N paintings has
            for name in ("weight", "bias"):
                added = destination.pop(prefix + name + "_added")
                destination[prefix + name] = torch.cat([destination[prefix + name], added])

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if self.weight_added is not None:  # split the table as freeze_rows() did
            keep = self.weight.shape[0]
            for name in ("weight", "bias"):
                table = state_dict.get(prefix + name)
                if table is not None:
                    state_dict[prefix + name] = table[:keep]
                    state_dict[prefix + name + "_added"] = table[keep:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
