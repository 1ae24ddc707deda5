"""What the sections of benchmarks/bench.py share, and benchmarks/gpu_check.py too: PyTorch's
default settings, timing, PSNR, a model file to stylize with, log capture, errors in one line,
the tables and the JSON results, a folder of real-photo JPEGs to train on."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

PSNR_DB = 40.0  # every output must agree with its fp32 reference at least this well


def pytorch_settings() -> dict:
    """The global switches that decide how fp32 convolutions and matmuls run."""
    return {"cudnn.benchmark": torch.backends.cudnn.benchmark,
            "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


# As this process started, before any Trainer ran: PyTorch's defaults, the baseline's settings.
DEFAULTS = pytorch_settings()


def restore_defaults() -> bool:
    """Back to PyTorch's defaults before a baseline row: Lightning's Trainer(benchmark=True) turns
    cudnn.benchmark on for the whole process. TF32 is never set, only checked: False when
    something else changed it, and the baseline is then not PyTorch's default."""
    torch.backends.cudnn.benchmark = DEFAULTS["cudnn.benchmark"]
    return pytorch_settings() == DEFAULTS


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], object], min_time: float, max_calls: int | None = None,
            min_calls: int = 1) -> float:
    """Median wall seconds of one call of fn, called until min_time has passed and min_calls
    were made (at least once, at most max_calls times). fn must return when its work is done:
    the rows here return CPU tensors or arrays, which waits for the device."""
    times: list[float] = []
    min_calls = min(min_calls, max_calls or min_calls)
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_time
                                     and (max_calls is None or len(times) < max_calls)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in 0..1 (inf when identical)."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def write_model(path: Path, channels: tuple[int, int, int], num_residual: int,
                edge_kernel: int = 9) -> Path:
    """A model file of an untrained net whose output spans the image range (as tests/models.py
    makes them): at initialisation the output is near black, which would hide precision errors."""
    from stylenet.model_file import save_model
    from stylenet.transformer import TransformerNet

    torch.manual_seed(0)
    net = TransformerNet(channels=channels, num_residual=num_residual, edge_kernel=edge_kernel)
    with torch.no_grad():
        net.conv_out.conv.weight.mul_(net.pixel_scale / 2)
        net.conv_out.conv.bias.mul_(net.pixel_scale / 2).add_(net.pixel_scale / 2)
    return save_model(path, net, {"arch": net.config(), "style": {"name": "bench"}})


def smooth_images(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """(batch, 3, size, size) in 0..1 on the CPU: smooth random shapes, not white noise."""
    gen = torch.Generator().manual_seed(seed)
    small = torch.rand(batch, 3, max(2, size // 16), max(2, size // 16), generator=gen)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic",
                                           align_corners=False).clamp(0, 1)


class LogLines(logging.Handler):
    """The INFO lines of one logger while in use (Stylizer says when it compiles or tiles)."""

    def __init__(self, name: str):
        super().__init__(logging.INFO)
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def __enter__(self) -> LogLines:
        self.level = self.logger.level
        self.logger.addHandler(self)
        self.logger.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.setLevel(self.level)


def one_line(e: BaseException) -> str:
    """The error's type and first line, for a table cell."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]


def failed_row(e: BaseException) -> dict:
    """A row whose code raised: it fails, with the error's first line; the traceback is printed.
    The other rows still run (SystemExit too: train()'s one-line setting errors)."""
    traceback.print_exc()
    return {"ok": False, "detail": one_line(e)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def write_results(results: dict, folder: Path, name: str) -> dict:
    """results as folder/name.json (folder made if needed); returns them with their "path"."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {path}")
    results["path"] = str(path)
    return results


def fmt(value, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "ok" if value else "FAIL"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def format_table(title: str, rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format spec); the first column is left-aligned, the others right;
    a row's `ok` is printed as ok, FAIL or skipped, then its detail."""
    cells = [[fmt(r.get(key), spec) for key, _, spec in columns] for r in rows]
    heads = [head for _, head, _ in columns]
    widths = [max(len(x) for x in col) for col in zip(heads, *cells, strict=True)]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths, strict=True)))

    out = [title, line(heads) + "  check"]
    for r, row in zip(rows, cells, strict=True):
        ok = "skipped" if r.get("ok") is None else fmt(r["ok"])
        out.append(line(row) + f"  {ok} {r.get('detail', '')}".rstrip())
    return "\n".join(out)


def passed(rows: list[dict]) -> bool:
    """No row failed (a skipped row, ok None, does not fail the run)."""
    return all(r.get("ok") is not False for r in rows)


def make_jpegs(folder: Path, n: int, seed: int = 0) -> Path:
    """n distinct 640x480 JPEGs (COCO's usual size) cut from scikit-image's bundled photos:
    random scale, place and flip, so decoding costs what real photos cost."""
    import importlib.resources

    import numpy as np
    from PIL import Image, ImageOps

    # Read from the installed package's folder: skimage.data's loaders may download.
    bundled = Path(str(importlib.resources.files("skimage"))) / "data"
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
             "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "grass.png", "gravel.png"]
    sources = [Image.open(bundled / k).convert("RGB") for k in names]
    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        rng = np.random.default_rng([seed, i])
        src = sources[i % len(sources)]
        scale = max(640 / src.width, 480 / src.height) * rng.uniform(1.0, 1.6)
        img = src.resize((math.ceil(src.width * scale), math.ceil(src.height * scale)))
        left = int(rng.integers(0, img.width - 640 + 1))
        top = int(rng.integers(0, img.height - 480 + 1))
        img = img.crop((left, top, left + 640, top + 480))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        img.save(folder / f"{i:06d}.jpg", quality=90)

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # PIL lets go of the GIL while coding
        list(pool.map(one, range(n)))
    return folder
