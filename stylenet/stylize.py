"""Inference API: `Stylizer(model_file)` turns photos into stylized images; infer.py wraps it.

Images of any size: an image too large for the device, or whose activations would pass the
2^31-element limit of GPU kernels, is cut into tiles (stylenet.tiling) that are normalised with
the whole image's instance-norm statistics, so tiled output equals untiled output.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from stylenet.color import blend, check_strength, preserve_color
from stylenet.devices import (
    available_memory,
    is_oom,
    pick_device,
    pick_dtype,
)
from stylenet.image import check_image_path, check_overwrite, read_photo, write_photo
from stylenet.model_file import load_model
from stylenet.multi import choose_painting
from stylenet.tiling import INDEX_LIMIT, Tiler, largest_activation

log = logging.getLogger(__name__)

DEFAULT_TILE = 1024  # tile side chosen when an image does not fit and no tile= was given
MIN_TILE = 128  # below this, halving on out-of-memory stops and the error is reported
# compile=auto compiles on CUDA once untiled passes have seen this many pixels (about 30 1080p
# frames or 8 photos of 8 Mpx): compiling takes tens of seconds, which only a run that long
# earns back, and a single photo never does.
COMPILE_AFTER_PIXELS = 64 * 2**20
BACKENDS = ("auto", "torch", "onnx")
# Peak memory of an untiled pass on the CPU, in float32 copies of its largest activation
# (tiling.largest_activation): 3.8-5.2 measured at 2048 px (paper net and model=lite, PyTorch
# eager and ONNX Runtime; benchmarks/NOTES.md, "Memory"), up to 6.4 for model=lite in PyTorch at
# 1536 px. tests/test_stylize.py holds both paths to it.
CPU_PEAK_MAPS = 8


def has_onnxruntime() -> bool:
    """Whether the ONNX path can run: the exporter needs onnx, the session onnxruntime (both in
    the `onnx` extra)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class Stylizer:
    """A trained model ready to stylize. Images are (3, H, W) or (B, 3, H, W) floats in 0..1.

    tile: None tiles only when needed (memory, the 2^31 index limit); a number always tiles at
    that side. overlap, stats, stats_size: see Tiler. precision: see pick_dtype(). channels_last,
    compile: the untiled fast path, by default on CUDA only. backend: who runs untiled passes,
    see pick_backend(); tiles always run in PyTorch (they need the whole image's statistics).
    style: for a file of several paintings, a name or a blend (multi.style_weights). Built from
    infer.yaml's `stylizer:`.
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
        channels_last: bool | None = None,
        compile: bool | str = "auto",
        compile_backend: str = "inductor",
        backend: str = "auto",
        style: Any = None,
    ):
        self.strength = check_strength(strength)
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile={compile!r}: use auto, true or false")
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}: use 1 or more")
        if tile is not None and tile < 16:
            raise ValueError(f"tile={tile}: use at least 16 (pixels), or null for automatic tiling")
        if tile is not None and not 0 <= overlap <= tile // 2:
            raise ValueError(f"overlap={overlap}: use 0..{tile // 2} (half of tile={tile})")
        if max_size is not None and max_size < 16:
            raise ValueError(f"max_size={max_size}: use at least 16 (pixels), or null")
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        # A file of several paintings: the chosen painting's (or blend's) own plain net, so
        # tiles, ONNX, compile and the ONNX cache work on it as on any file's net.
        self.net, self.meta = choose_painting(*load_model(model), style, model)
        self.channels_last = self.device.type == "cuda" if channels_last is None else channels_last
        self.net.to(self.device, memory_format=self._memory_format)
        self.compile, self.compile_backend = compile, compile_backend
        self._compiled: torch.nn.Module | None = None
        self._pixels = 0  # pixels through untiled passes so far (compile=auto)
        self.batch_size = int(batch_size)
        # Multiples of 4 keep tiles on the network's stride-4 grid (see tiling.tile_starts).
        self.tile = None if tile is None else max(16, tile // 4 * 4)
        self.tiler = Tiler(self.net, self.device, self.dtype, overlap, self.batch_size, stats,
                           stats_size)
        self.max_size = max_size
        self.preserve_color = bool(preserve_color)
        self.backend = self.pick_backend(backend)
        self._session = None  # the ONNX Runtime session, made at the first untiled pass

    # -- the network -----------------------------------------------------------------------

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def pick_backend(self, backend: str) -> str:
        """onnx: the net exported to ONNX and run by ONNX Runtime, fp32 on the CPU only. On 2
        cores it stylizes 1024 px ~2x faster than PyTorch eager
        (benchmarks/NOTES.md, "CPU inference"). auto: onnx on the CPU in fp32 when onnxruntime is
        installed and neither compile nor channels_last asks for PyTorch; torch otherwise."""
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r}: use one of {', '.join(BACKENDS)}")
        fits = (self.device.type == "cpu" and self.dtype == torch.float32
                and self.compile is not True and not self.channels_last)
        if backend == "auto":
            return "onnx" if fits and has_onnxruntime() else "torch"
        if backend == "onnx" and not fits:
            raise ValueError("backend=onnx runs fp32 on the CPU without compile or channels_last:"
                             " use device=cpu precision=fp32, or backend=torch")
        if backend == "onnx" and not has_onnxruntime():
            raise ValueError("backend=onnx needs onnx and onnxruntime: pip install "
                             "'stylenet[onnx]', or use backend=torch")
        return backend

    def _onnx(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) on the CPU -> stylized and clamped, by ONNX Runtime; the net's graph is
        exported on the first call, or read from export.cache_dir()."""
        if self._session is None:
            import onnxruntime as ort

            from stylenet.export import cached_onnx

            log.info("running the net in ONNX Runtime (backend=torch stays in PyTorch)")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = torch.get_num_threads()  # as PyTorch would use
            for refresh in (False, True):  # a cached file that does not load: export again
                try:
                    with torch.inference_mode(False):
                        data = cached_onnx(self.net, refresh)
                    self._session = ort.InferenceSession(data, opts,
                                                         providers=["CPUExecutionProvider"])
                    break
                except Exception:
                    if refresh:
                        raise
        try:
            y = self._session.run(None, {"image": x.contiguous().numpy()})[0]
        except Exception as e:  # ONNX Runtime's errors are not RuntimeErrors
            if "allocate" in str(e):  # "Failed to allocate memory for requested buffer ..."
                raise torch.OutOfMemoryError(f"ONNX Runtime: {e}") from None  # -> tiles
            raise
        return torch.from_numpy(y)

    def _fast_net(self) -> torch.nn.Module:
        """The module for untiled passes: the net, compiled once compile says so."""
        if self._compiled is None:
            auto = self.device.type == "cuda" and self._pixels >= COMPILE_AFTER_PIXELS
            if self.compile is True or (self.compile == "auto" and auto):
                log.info("compiling the net for %s (torch.compile, backend %s)", self.device,
                         self.compile_backend)
                self._compiled = torch.compile(self.net, backend=self.compile_backend)
        return self.net if self._compiled is None else self._compiled

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) on CPU -> stylized on CPU (float32): the fast untiled path."""
        if self.backend == "onnx":
            return self._onnx(x)
        net = self._fast_net()
        self._pixels += x.shape[0] * x.shape[-2] * x.shape[-1]
        x = x.to(self.device, memory_format=self._memory_format)
        use_autocast = self.dtype != torch.float32
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=use_autocast):
            y = net(x)
        return y.float().clamp(0, 1).cpu()

    def untiled_bytes(self, h: int, w: int, batch: int = 1) -> int:
        """Estimated peak memory of an untiled pass. CUDA: about four float32 maps of the first
        conv's width at full resolution. CPU: CPU_PEAK_MAPS float32 copies of the largest
        activation."""
        if self.device.type == "cuda":
            return 4 * 4 * self.net.channels[0] * h * w * batch
        return CPU_PEAK_MAPS * 4 * largest_activation(self.net, h, w) * batch

    def fits_untiled(self, h: int, w: int, batch: int = 1) -> bool:
        """Whether an untiled pass should fit: its estimate against half of the free memory on
        CUDA, three quarters of the available memory on the CPU."""
        need = self.untiled_bytes(h, w, batch)
        if self.device.type == "cuda":
            return need < torch.cuda.mem_get_info(self.device)[0] / 2
        return need < available_memory() * 3 / 4

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
        if tile is None and not self.fits_untiled(h, w, b):
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
                return torch.cat([self.tiler(img[None], tile) for img in x])
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
        src, dst = Path(src), check_image_path(dst)
        check_overwrite(dst, overwrite, src)
        photo = read_photo(src, self.max_size)
        photo.rgb = self(photo.rgb)
        return write_photo(photo, dst, quality)
