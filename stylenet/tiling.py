"""Images of any size: overlapping tiles, feathered blending, whole-image norm statistics.

activation_sizes() says when an untiled pass would make a tensor over INDEX_LIMIT.
"""

from __future__ import annotations

import logging

import torch
from torchvision.transforms.v2 import functional as TF

from stylenet.transformer import NormStats, TransformerNet
from stylenet.util import Heartbeat

log = logging.getLogger(__name__)

# CUDA kernels (reflection pad, nearest upsample, cuDNN convs) index tensors with 32-bit ints and
# refuse larger ones ("input tensor must fit into 32-bit index math"), whatever the free memory.
INDEX_LIMIT = 2**31 - 1
STATS = ("exact", "downscaled")


def activation_sizes(net: TransformerNet, h: int, w: int) -> dict[str, int]:
    """Elements of every tensor an untiled forward of one (3, h, w) image makes, by layer, from
    the net's widths and paddings. For the paper's widths the largest is the up2 input after
    reflection padding, 64 x (H+2) x (W+2), which passes INDEX_LIMIT near 5,800 px."""
    c1, c2, c3 = net.channels
    h, w = -(-h // 4) * 4, -(-w // 4) * 4  # forward() pads to multiples of 4 first

    def padded(layer, c: int, hh: int, ww: int) -> int:  # (c, hh, ww) after the layer's pad
        p = layer.conv.kernel_size[0] // 2
        return c * (hh + 2 * p) * (ww + 2 * p)

    h2, w2, h4, w4 = h // 2, w // 2, h // 4, w // 4
    return {
        "input": 3 * h * w,
        "conv1.pad": padded(net.conv1, 3, h, w), "conv1": c1 * h * w,
        "conv2.pad": padded(net.conv2, c1, h, w), "conv2": c2 * h2 * w2,
        "conv3.pad": padded(net.conv3, c2, h2, w2), "conv3": c3 * h4 * w4,
        "res.pad": max([padded(r.conv1, c3, h4, w4) for r in net.res], default=0),
        "up1.upsample": c3 * h2 * w2, "up1.pad": padded(net.up1.conv, c3, h2, w2),
        "up1": c2 * h2 * w2,
        "up2.upsample": c2 * h * w, "up2.pad": padded(net.up2.conv, c2, h, w), "up2": c1 * h * w,
        "conv_out.pad": padded(net.conv_out, c1, h, w), "conv_out": 3 * h * w,
    }


def largest_activation(net: TransformerNet, h: int, w: int) -> int:
    """Elements of the largest tensor of an untiled forward of one (3, h, w) image."""
    return max(activation_sizes(net, h, w).values())


def tile_starts(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, length) of tiles covering 0..size. Starts are multiples of 4 so that every tile
    sees the same stride-2 sampling grid as the whole image; the last tile absorbs the rest."""
    if size <= tile:
        return [(0, size)]
    step = tile - overlap
    starts = list(range(0, size - tile, step))
    last = (size - tile) // 4 * 4
    if last > starts[-1]:
        starts.append(last)
    return [(s, tile if s != starts[-1] else size - s) for s in starts]


def owned(tiles: list[tuple[int, int]]) -> list[tuple[int, int | None]]:
    """The part of each tile that counts for the statistics: from the middle of the overlap with
    the previous tile to the middle of the overlap with the next (multiples of 4, so they map
    exactly onto the half- and quarter-resolution maps); None: to the end, padding included,
    as in an untiled pass."""
    cuts = [0]
    for (s0, n0), (s1, _) in zip(tiles, tiles[1:], strict=False):
        cuts.append(((s1 + s0 + n0) // 2) // 4 * 4)
    return [(cuts[i] - s, cuts[i + 1] - s if i + 1 < len(tiles) else None)
            for i, (s, _) in enumerate(tiles)]


def feather(length: int, overlap: int, rise: bool, fall: bool) -> torch.Tensor:
    """1-D blend weights of a tile. Where a neighbour overlaps, the outer part of the overlap gets
    weight 0 (those pixels saw reflection padding instead of the real surroundings) and a short
    linear ramp in its middle hands over to the neighbour, so seams never show."""
    w = torch.ones(length)
    if overlap <= 0:
        return w
    ramp_len = max(1, overlap // 4)
    lead = (overlap - ramp_len) // 2
    edge = torch.cat([torch.zeros(lead), (torch.arange(ramp_len) + 0.5) / ramp_len])[:length]
    if rise:
        w[: len(edge)] = torch.minimum(w[: len(edge)], edge)
    if fall:
        w[length - len(edge) :] = torch.minimum(w[length - len(edge) :], edge.flip(0))
    return w


class Tiler:
    """Stylizes one image tile by tile with the whole image's instance-norm statistics.

    overlap: pixels shared by neighbouring tiles. stats: exact (measured tile by tile) or
    downscaled (one pass over a copy whose longer side is stats_size). batch_size: same-sized
    tiles per pass.
    """

    def __init__(self, net: TransformerNet, device: torch.device, dtype: torch.dtype,
                 overlap: int = 128, batch_size: int = 4, stats: str = "exact",
                 stats_size: int = 1024):
        if stats not in STATS:
            raise ValueError(f"stats={stats!r}: use exact or downscaled")
        if stats == "downscaled" and largest_activation(net, stats_size, stats_size) > INDEX_LIMIT:
            raise ValueError(f"stats_size={stats_size}: the measured copy would make tensors over "
                             "the 2^31 index limit of GPU kernels: use a smaller stats_size")
        self.net, self.device, self.dtype = net, device, dtype
        self.overlap = overlap // 4 * 4
        self.batch_size = batch_size
        self.stats = stats
        self.stats_size = stats_size

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype,
                              enabled=self.dtype != torch.float32)

    def _run(self, x: torch.Tensor, stats: list[NormStats]) -> torch.Tensor:
        """(B, 3, h, w) on the CPU -> stylized on the CPU (float32), with the given statistics."""
        with self._autocast():
            y = self.net(x.to(self.device), stats)
        return y.float().clamp(0, 1).cpu()

    def _norm_input(self, x: torch.Tensor, k: int, stats: list[NormStats]) -> torch.Tensor:
        """The input of norm k (on the device) for (1, 3, h, w), the norms before it normalising
        with `stats`; the rest of the pass is not run."""
        with self._autocast():
            return self.net(x.to(self.device), stats, upto=k)

    def tiles_per_pass(self, th: int, tw: int, tile: int) -> int:
        """batch_size, or fewer where a batch of th x tw tiles would pass INDEX_LIMIT."""
        largest = largest_activation(self.net, th, tw)
        if largest > INDEX_LIMIT:
            raise ValueError(f"tile={tile}: a {tw}x{th} tile makes tensors over the 2^31 index "
                             "limit of GPU kernels: use a smaller tile (or null)")
        return max(1, min(self.batch_size, INDEX_LIMIT // largest))

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """(1, 3, H, W) on the CPU -> stylized on the CPU, tile by tile."""
        _, _, h, w = x.shape
        out = torch.zeros(1, 3, h, w)
        weight = torch.zeros(1, 1, h, w)
        overlap = min(self.overlap, tile // 2 // 4 * 4)  # small tiles after repeated OOM
        ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        # Same-sized tiles go through the net together, batch_size (or fewer) at a time.
        groups: dict[tuple[int, int], list] = {}
        for y, th in ys:
            for x0, tw in xs:
                groups.setdefault((th, tw), []).append((y, th, x0, tw))
        per_pass = {size: self.tiles_per_pass(*size, tile) for size in groups}
        n = len(ys) * len(xs)
        # A large image takes minutes on the CPU: say so, and where it is, in logs and pipes too.
        passes = len(list(self.net.norms())) if self.stats == "exact" else 0
        log.info("tiling %dx%d in %d tiles of %d px (%s statistics%s)", w, h, n, tile, self.stats,
                 f": {passes} passes over the tiles, then the output" if passes else "")
        stats = self.exact_stats(x, ys, xs) if self.stats == "exact" else self.downscaled_stats(x)
        beat, done = Heartbeat(log, n), 0
        for size, group in groups.items():
            for i in range(0, len(group), per_pass[size]):
                chunk = group[i : i + per_pass[size]]
                crops = torch.cat([x[..., y : y + th, x0 : x0 + tw] for y, th, x0, tw in chunk])
                for (y, th, x0, tw), styled in zip(chunk, self._run(crops, stats), strict=True):
                    wy = feather(th, overlap, y > 0, y + th < h)
                    wx = feather(tw, overlap, x0 > 0, x0 + tw < w)
                    wt = wy[:, None] * wx[None, :]
                    out[0, :, y : y + th, x0 : x0 + tw] += styled * wt
                    weight[0, 0, y : y + th, x0 : x0 + tw] += wt
                done += len(chunk)
                beat(done, "tiling %dx%d: output tile %d/%d", w, h, done, n)
        return out / weight

    def exact_stats(self, x: torch.Tensor, ys: list, xs: list) -> list[NormStats]:
        """Exact (mean, var) of every instance norm for (1, 3, H, W), tile by tile with bounded
        memory: norm k is measured in one pass over the tiles, with norms before it already
        given their exact statistics. Each pixel is counted once, from the tile where it lies
        farthest from the tile's border (overlap/2 >= the receptive field), so the sums equal
        those of an untiled pass. Costs about len(norms)/2 forward passes."""
        spans = [(y, th, oy, x0, tw, ox) for (y, th), oy in zip(ys, owned(ys), strict=True)
                 for (x0, tw), ox in zip(xs, owned(xs), strict=True)]
        stats: list[NormStats] = []
        norms = list(self.net.norms())
        beat = Heartbeat(log, len(norms) * len(spans))
        for k, norm in enumerate(norms):
            # sum and sum of squares per channel, on the device where the features are
            sums = torch.zeros(2, norm.num_features, dtype=torch.float64, device=self.device)
            count = 0
            for i, (y, th, (y0, y1), x0, tw, (x1, x2)) in enumerate(spans, start=1):
                beat(k * len(spans) + i, "tiling: statistics pass %d/%d, tile %d/%d", k + 1,
                     len(norms), i, len(spans))
                feat = self._norm_input(x[..., y : y + th, x0 : x0 + tw], k, stats).double()
                f = -(-th // 4) * 4 // feat.shape[-2]  # padded tile side / map side: 1, 2 or 4
                part = feat[0, :, y0 // f : None if y1 is None else y1 // f,
                            x1 // f : None if x2 is None else x2 // f]
                sums[0] += part.sum((1, 2))
                sums[1] += part.square().sum((1, 2))
                count += part[0].numel()
            mean = sums[0] / count
            var = (sums[1] / count - mean.square()).clamp_min(0)
            stats.append((mean.float().view(1, -1, 1, 1), var.float().view(1, -1, 1, 1)))
        return stats

    def downscaled_stats(self, x: torch.Tensor) -> list[NormStats]:
        """(mean, var) of every instance norm for (1, 3, H, W) from one pass over a copy whose
        longer side is at most stats_size: exact for small images, an estimate for large ones
        (cheaper than exact_stats, but the style drifts from the untiled result)."""
        h, w = x.shape[-2:]
        scale = min(1.0, self.stats_size / max(h, w))
        if scale < 1:
            x = TF.resize(x, [max(4, round(h * scale)), max(4, round(w * scale))], antialias=True)
        stats = []

        def measure(norm, args):  # the norm's input, as the copy's own pass normalises it
            var, mean = torch.var_mean(args[0].float(), dim=(2, 3), keepdim=True, correction=0)
            stats.append((mean, var))

        hooks = [norm.register_forward_pre_hook(measure) for norm in self.net.norms()]
        try:
            with self._autocast():
                self.net(x.to(self.device))
        finally:
            for hook in hooks:
                hook.remove()
        return stats
