"""Section memory: Stylizer on images too big for one pass, as users run it.

Rows:
  tiled vs untiled   at check_size, where an untiled pass fits: Stylizer(model) (automatic:
                     untiled) against Stylizer(model, tile=...) with the whole image's
                     statistics; they must agree to 40 dB
  automatic          Stylizer(model) on a size x size image with the process capped at cap_gib
                     of GPU memory (torch.cuda.set_per_process_memory_fraction). At 8192 px an
                     untiled pass would pass the 2^31-element limit of GPU kernels, so it must
                     tile. Seconds, peak GPU memory and what Stylizer logged.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import (
    PSNR_DB,
    LogLines,
    format_table,
    peak_gib,
    psnr,
    reset_peak,
    restore_defaults,
    smooth_images,
    write_model,
)


@dataclass
class Sizes:
    size: int = 8192
    check_size: int = 2048
    tile: int = 1024
    overlap: int = 128  # Stylizer's default
    cap_gib: float = 8.0
    channels: tuple[int, int, int] = (32, 64, 128)
    num_residual: int = 5


FULL = Sizes()
SMALL = Sizes(size=192, check_size=160, tile=96, overlap=32, channels=(8, 16, 32),
              num_residual=1)


def stylized(model: Path, device: torch.device, image: torch.Tensor, **kwargs) -> dict:
    from stylenet import stylize

    reset_peak(device)
    with LogLines("stylenet.stylize") as log:
        t0 = time.perf_counter()
        out = stylize.Stylizer(model, device=device.type, **kwargs)(image)
        sec = time.perf_counter() - t0
    return {"out": out, "seconds": sec, "peak_gib": peak_gib(device), "log": log.lines}


def run(args, s: Sizes, device: torch.device, work: Path) -> dict:
    from stylenet.model_file import load_model
    from stylenet.tiling import INDEX_LIMIT, largest_activation

    model = write_model(work / "memory_model.pt", s.channels, s.num_residual)
    restore_defaults()  # as a fresh process has them: a Trainer turns cudnn.benchmark on
    rows = []

    x = smooth_images(1, s.check_size, seed=1)[0]
    whole = stylized(model, device, x)
    tiled = stylized(model, device, x, tile=s.tile, overlap=s.overlap)
    db = psnr(tiled["out"], whole["out"])
    rows.append({"name": f"tiled vs untiled {s.check_size} px", "seconds": tiled["seconds"],
                 "peak_gib": tiled["peak_gib"], "psnr_db": db, "ok": db >= PSNR_DB,
                 "detail": f"tile={s.tile} overlap={s.overlap}, whole-image statistics"})
    del x, whole, tiled

    net, _ = load_model(model)
    over = largest_activation(net, s.size, s.size) > INDEX_LIMIT
    big = smooth_images(1, s.size, seed=2)[0]
    cap = None
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        cap = min(1.0, s.cap_gib * 2**30 / total)
        torch.cuda.set_per_process_memory_fraction(cap, device)
        torch.cuda.empty_cache()
    try:
        r = stylized(model, device, big)
    finally:
        if cap is not None:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    out = r["out"]
    problems = []
    if tuple(out.shape) != tuple(big.shape) or not torch.isfinite(out).all():
        problems.append(f"output {tuple(out.shape)}, finite={bool(torch.isfinite(out).all())}")
    tiled_for_index = any("2^31" in line for line in r["log"])
    if over and not tiled_for_index:
        problems.append("an untiled pass would pass 2^31 elements, but it did not tile")
    path = next((line for line in r["log"] if "tiling at" in line), "untiled")
    rows.append({"name": f"automatic {s.size} px" + (f", {s.cap_gib:g} GB cap" if cap else ""),
                 "seconds": r["seconds"], "peak_gib": r["peak_gib"], "ok": not problems,
                 "detail": "; ".join(problems) or path})
    return {"net": {"channels": list(s.channels), "num_residual": s.num_residual},
            "cap_gib": s.cap_gib if cap else None, "rows": rows}


def table(result: dict) -> str:
    columns = [("name", "row", ""), ("seconds", "s", ".1f"), ("peak_gib", "peak GiB", ".2f"),
               ("psnr_db", "PSNR dB", ".1f")]
    return format_table("[memory] Stylizer, automatic and tiled", result["rows"], columns)
