"""Where and in what precision inference runs: the device, the dtype, the memory there is, and
how an out-of-memory error looks on each."""

from __future__ import annotations

import os
from pathlib import Path

import torch

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def available_memory() -> int:
    """Bytes the system can give this process without swapping: MemAvailable (free memory plus
    the page cache it can drop), or the free pages where /proc/meminfo is missing."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


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


def is_oom(e: BaseException) -> bool:
    # The CPU allocator raises a plain RuntimeError when malloc fails.
    return isinstance(e, torch.OutOfMemoryError) or "can't allocate memory" in str(e)
