"""Inference API: `Stylizer(model_file)` turns photos into stylized images; infer.py wraps it.

Images of any size: an image too large for the device is cut into overlapping tiles that are
blended with feathered weights. Instance norm would normalise each tile with its own statistics
and the style would shift from tile to tile, so every tile is normalised with the statistics of
the whole image: measured exactly tile by tile (default), or from a pass over a downscaled copy.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, ImageOps
from torchvision.transforms.v2 import functional as TF

from stylenet.color import blend, preserve_color
from stylenet.export import load_model
from stylenet.image import ImageError, open_rgb, save_atomic, to_pil

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
OUTPUT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
ALPHA_EXTENSIONS = (".png", ".webp")  # JPEG has no alpha channel
DEFAULT_TILE = 1024  # tile side chosen when an image does not fit and no tile= was given
MIN_TILE = 128  # below this, halving on out-of-memory stops and the error is reported
# CUDA kernels (reflection pad, nearest upsample, cuDNN convs) index tensors with 32-bit ints and
# refuse larger ones ("input tensor must fit into 32-bit index math"), whatever the free memory.
INDEX_LIMIT = 2**31 - 1


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device={device}: CUDA is not available here: use device=cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device={device!r}: use auto, cpu or cuda")
    return torch.device(device)


def pick_dtype(precision: str, device: torch.device) -> torch.dtype:
    """auto: half precision on a GPU (bf16 where supported: no fp16 overflow), fp32 on the CPU,
    where half precision is slower."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision not in DTYPES:
        raise ValueError(f"precision={precision!r}: use auto or one of {sorted(DTYPES)}")
    return DTYPES[precision]


def activation_sizes(net, h: int, w: int) -> dict[str, int]:
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


def largest_activation(net, h: int, w: int) -> int:
    """Elements of the largest tensor of an untiled forward of one (3, h, w) image."""
    return max(activation_sizes(net, h, w).values())


def is_oom(e: BaseException) -> bool:
    # The CPU allocator raises a plain RuntimeError when malloc fails.
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)


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


class _Stop(Exception):
    """Ends a forward pass once the norm being measured has seen its input."""


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


@dataclass
class Photo:
    """An image as read from disk: upright RGB, plus what is reattached on save."""

    rgb: torch.Tensor  # (3, H, W) in 0..1
    alpha: Image.Image | None = None  # the "A" band, same size as rgb
    exif: bytes | None = None  # orientation reset to 1: the pixels are already upright
    icc: bytes | None = None  # colour profile, so the output is interpreted like the input


def read_photo(path: str | Path, max_size: int | None = None) -> Photo:
    """Any image file -> Photo. 16-bit and greyscale inputs are rescaled by open_rgb; alpha is
    read separately because open_rgb composites it away (the RGB then sits on white)."""
    path = Path(path)
    img = open_rgb(path)  # raises ImageError with the file name for unreadable files
    with Image.open(path) as raw:
        exif = raw.getexif()
        icc = raw.info.get("icc_profile")
        alpha = None
        if raw.mode in ("RGBA", "LA", "PA") or "transparency" in raw.info:
            alpha = ImageOps.exif_transpose(raw).convert("RGBA").getchannel("A")
    exif_bytes = None
    if exif:
        exif[0x0112] = 1  # Orientation: the pixels were turned upright above
        exif_bytes = exif.tobytes()
    if max_size and max(img.size) > max_size:
        img = ImageOps.contain(img, (max_size, max_size), Image.Resampling.LANCZOS)
        if alpha is not None:
            alpha = alpha.resize(img.size, Image.Resampling.LANCZOS)
    rgb = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return Photo(rgb, alpha, exif_bytes, icc)


def check_output(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_EXTENSIONS:
        raise ImageError(f"{path}: unknown image extension: use .jpg, .png or .webp for output=...")
    return path


def check_overwrite(dst: Path, overwrite: bool, src: Path | None = None) -> None:
    """Refuse to replace an existing file unless asked, saying so when it is the input itself."""
    if dst.exists() and not overwrite:
        same = src is not None and dst.resolve() == Path(src).resolve()
        what = "would overwrite the input" if same else "exists"
        raise ImageError(f"output={dst}: {what}: choose another output or set overwrite=true")


def write_photo(photo: Photo, path: str | Path, quality: int = 95) -> Path:
    """Save atomically; alpha, EXIF and colour profile are kept where the format holds them.
    A failed write (full disk, no permission) leaves nothing behind and names the file."""
    path = check_output(path)
    img = to_pil(photo.rgb)
    ext = path.suffix.lower()
    if photo.alpha is not None and ext in ALPHA_EXTENSIONS:
        img.putalpha(photo.alpha)
    kwargs = {} if ext == ".png" else {"quality": int(quality)}
    if photo.exif:
        kwargs["exif"] = photo.exif
    if photo.icc:
        kwargs["icc_profile"] = photo.icc
    try:
        return save_atomic(img, path, **kwargs)
    except OSError as e:
        hint = "free some disk space" if e.errno == errno.ENOSPC else "check the folder"
        raise ImageError(
            f"{path}: could not write ({os.strerror(e.errno) if e.errno else e}): "
            f"{hint} or choose another output=..."
        ) from None


class Stylizer:
    """A trained model ready to stylize. Images are (3, H, W) or (B, 3, H, W) floats in 0..1.

    tile: None tiles only when an image does not fit (estimated up front, or on out-of-memory);
    a number always tiles at that side length. overlap: pixels shared by neighbouring tiles; the
    default 128 covers the receptive field of the paper's network (about 109 px), so a tile's
    kept pixels never see its border and tiled output equals untiled output.
    stats: how tiles get the whole image's instance-norm statistics: exact (measured tile by
    tile, about len(norms)/2 extra passes; tiled output equals untiled) or downscaled (one pass
    over a copy whose longer side is stats_size; faster, the style drifts a little).
    """

    def __init__(
        self,
        model: str | Path,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 4,
        tile: int | None = None,
        overlap: int = 128,
        stats: str = "exact",
        stats_size: int = 1024,
        max_size: int | None = None,
        preserve_color: bool = False,
        strength: float = 1.0,
    ):
        if not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength={strength}: use a value from 0 (photo) to 1 (full style)")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use 1 or more")
        if tile is not None and tile < 16:
            raise ValueError(f"tile={tile}: use at least 16 (pixels), or null for automatic tiling")
        if tile is not None and not 0 <= overlap <= tile // 2:
            raise ValueError(f"overlap={overlap}: use 0..{tile // 2} (half of tile={tile})")
        if stats not in ("exact", "downscaled"):
            raise ValueError(f"stats={stats!r}: use exact or downscaled")
        if max_size is not None and max_size < 16:
            raise ValueError(f"max_size={max_size}: use at least 16 (pixels), or null")
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.net, self.meta = load_model(model)
        self.net.to(self.device)
        self.batch_size = int(batch_size)
        # Multiples of 4 keep tiles on the network's stride-4 grid (see tile_starts).
        self.tile = None if tile is None else max(16, tile // 4 * 4)
        self.overlap = overlap // 4 * 4
        self.stats = stats
        self.stats_size = stats_size
        self.max_size = max_size
        self.preserve_color = bool(preserve_color)
        self.strength = float(strength)

    # -- the network -----------------------------------------------------------------------

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) on CPU -> stylized on CPU (float32), in the chosen precision."""
        x = x.to(self.device)
        use_autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=use_autocast):
            y = self.net(x)
        return y.float().clamp(0, 1).cpu()

    def _fits(self, h: int, w: int, batch: int = 1) -> bool:
        """Whether an untiled pass should fit: about four float32 maps of the first conv's
        width at full resolution are alive at once, against half of the free memory."""
        need = 4 * 4 * self.net.channels[0] * h * w * batch
        if self.device.type == "cuda":
            free = torch.cuda.mem_get_info(self.device)[0]
        else:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return need < free / 2

    def exact_stats(self, x: torch.Tensor, ys: list, xs: list) -> list[tuple]:
        """Exact (mean, var) of every instance norm for (1, 3, H, W), tile by tile with bounded
        memory: norm k is measured in one pass over the tiles, with norms before it already
        given their exact statistics. Each pixel is counted once, from the tile where it lies
        farthest from the tile's border (overlap/2 >= the receptive field), so the sums equal
        those of an untiled pass. Costs about len(norms)/2 forward passes."""
        norms = self.net.norms()
        stats: list[tuple[torch.Tensor, torch.Tensor]] = []
        spans = [(y, th, oy, x0, tw, ox) for (y, th), oy in zip(ys, owned(ys), strict=True)
                 for (x0, tw), ox in zip(xs, owned(xs), strict=True)]
        try:
            for norm in norms:
                # sum, sum of squares per channel, and the pixel count
                # on the device: the features are measured where the net runs
                acc = [torch.zeros(2, norm.num_features, dtype=torch.float64,
                                   device=self.device), 0]
                for box in spans:
                    handle = norm.register_forward_pre_hook(
                        lambda m, a, box=box, acc=acc: self._measure(a[0], box, acc))
                    try:
                        y, th, _, x0, tw, _ = box
                        self._net(x[..., y : y + th, x0 : x0 + tw])
                    except _Stop:
                        pass
                    finally:
                        handle.remove()
                sums, count = acc
                mean = sums[0] / count
                var = (sums[1] / count - mean.square()).clamp_min(0)
                stats.append((mean.float().view(1, -1, 1, 1), var.float().view(1, -1, 1, 1)))
                norm.stats = (stats[-1][0].to(self.device), stats[-1][1].to(self.device))
        finally:
            for n in norms:
                n.stats = None
        return stats

    @staticmethod
    def _measure(feat: torch.Tensor, box: tuple, acc: list) -> None:
        """Adds the tile's own pixels of a norm's input to acc, then stops the pass."""
        feat = feat.double()  # (1, C, h, w) at 1, 1/2 or 1/4 resolution
        f = -(-box[1] // 4) * 4 // feat.shape[-2]  # padded tile side / map side
        (y0, y1), (x0, x1) = box[2], box[5]
        part = feat[0, :, y0 // f : None if y1 is None else y1 // f,
                    x0 // f : None if x1 is None else x1 // f]
        acc[0][0] += part.sum((1, 2))
        acc[0][1] += part.square().sum((1, 2))
        acc[1] += part[0].numel()
        raise _Stop

    def whole_image_stats(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(mean, var) of every instance norm for (1, 3, H, W) in one pass over a copy whose
        longer side is at most stats_size: exact for small images, an estimate for large ones
        (cheaper than exact_stats, but the style drifts from the untiled result)."""
        h, w = x.shape[-2:]
        scale = min(1.0, self.stats_size / max(h, w))
        small = x
        if scale < 1:
            size = [max(4, round(h * scale)), max(4, round(w * scale))]
            small = TF.resize(x, size, antialias=True)
        norms = self.net.norms()
        for n in norms:
            n.record = []
        try:
            self._net(small)
            return [n.record[0] for n in norms]
        finally:
            for n in norms:
                n.record = None

    def tiled(self, x: torch.Tensor, tile: int) -> torch.Tensor:
        """(1, 3, H, W) -> stylized, tile by tile with whole-image statistics."""
        _, _, h, w = x.shape
        norms = self.net.norms()
        out = torch.zeros(1, 3, h, w)
        weight = torch.zeros(1, 1, h, w)
        overlap = min(self.overlap, tile // 2 // 4 * 4)  # small tiles after repeated OOM
        ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
        boxes = [(y, th, x0, tw) for y, th in ys for x0, tw in xs]
        # Same-sized tiles go through the net together, batch_size (or fewer) at a time.
        groups: dict[tuple[int, int], list] = {}
        for box in boxes:
            groups.setdefault((box[1], box[3]), []).append(box)
        per_pass = {size: self._tiles_per_pass(*size) for size in groups}
        if self.stats == "exact":
            stats = self.exact_stats(x, ys, xs)
        else:
            stats = self.whole_image_stats(x)
        try:
            for n, (mean, var) in zip(norms, stats, strict=True):
                n.stats = (mean.to(self.device), var.to(self.device))
            for size, group in groups.items():
                per = per_pass[size]
                for i in range(0, len(group), per):
                    chunk = group[i : i + per]
                    crops = torch.cat([x[..., y : y + th, x0 : x0 + tw] for y, th, x0, tw in chunk])
                    for (y, th, x0, tw), styled in zip(chunk, self._net(crops), strict=True):
                        wy = feather(th, overlap, y > 0, y + th < h)
                        wx = feather(tw, overlap, x0 > 0, x0 + tw < w)
                        wt = wy[:, None] * wx[None, :]
                        out[0, :, y : y + th, x0 : x0 + tw] += styled * wt
                        weight[0, 0, y : y + th, x0 : x0 + tw] += wt
        finally:
            for n in norms:
                n.stats = None
        return out / weight

    def _tiles_per_pass(self, th: int, tw: int) -> int:
        """batch_size, or fewer where a batch of th x tw tiles would pass INDEX_LIMIT."""
        largest = largest_activation(self.net, th, tw)
        if largest > INDEX_LIMIT:
            raise ValueError(f"tile={self.tile}: a {tw}x{th} tile makes tensors over the 2^31 "
                             "index limit of GPU kernels: use a smaller tile (or null)")
        return max(1, min(self.batch_size, INDEX_LIMIT // largest))

    def _stylize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> stylized; tiles when asked, when it would not fit, or on OOM."""
        b, _, h, w = x.shape
        tile = self.tile
        largest = largest_activation(self.net, h, w)
        if tile is None and largest > INDEX_LIMIT:
            tile = DEFAULT_TILE
            log.info("%dx%d untiled would make a tensor of %d elements, over the 2^31 index "
                     "limit of GPU kernels: tiling at %d px", w, h, largest, tile)
        elif tile is None and b * largest > INDEX_LIMIT:  # each image fits, the batch not
            per = INDEX_LIMIT // largest
            return torch.cat([self._stylize(x[i : i + per]) for i in range(0, b, per)])
        if tile is None and not self._fits(h, w, b):
            tile = DEFAULT_TILE
            log.info("%dx%d does not fit in %s memory untiled: tiling at %d px", w, h,
                     self.device, tile)
        if tile is None:
            try:
                return self._net(x)
            except RuntimeError as e:
                if not is_oom(e):
                    raise
                tile = min(DEFAULT_TILE, max(MIN_TILE, max(h, w) // 2 // 4 * 4))
                log.warning("out of memory stylizing %dx%d on %s: tiling at %d px instead",
                            w, h, self.device, tile)
                self._free()
        while True:
            try:
                return torch.cat([self.tiled(img[None], tile) for img in x])
            except RuntimeError as e:
                if not is_oom(e):
                    raise
                self._free()
                if tile <= MIN_TILE:
                    raise RuntimeError(
                        f"out of memory on {self.device} even with {tile} px tiles: "
                        "use device=cpu, batch_size=1 or max_size=..."
                    ) from None
                tile = max(MIN_TILE, tile // 2 // 4 * 4)
                log.warning("out of memory on %s: retrying with %d px tiles", self.device, tile)

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        single = image.dim() == 3
        x = (image[None] if single else image).float().cpu()
        y = self._stylize(x)
        if self.preserve_color:
            y = preserve_color(x, y)
        y = blend(x, y, self.strength)
        return y[0] if single else y

    # -- files -------------------------------------------------------------------------------

    def stylize_file(
        self, src: str | Path, dst: str | Path, overwrite: bool = False, quality: int = 95
    ) -> Path:
        src, dst = Path(src), check_output(dst)
        check_overwrite(dst, overwrite, src)
        photo = read_photo(src, self.max_size)
        photo.rgb = self(photo.rgb)
        return write_photo(photo, dst, quality)
