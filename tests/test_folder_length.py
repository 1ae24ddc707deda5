"""A run's length and its validation and preview schedule are counted in steps, for a folder of
any size: the defaults train a handful of photos as they train COCO, and a folder too small for
a batch beside its held-out photos stops with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

from stylenet.config import compose_train
from train import train

# The command a new user types for their own folder (the folder is added per test).
USER = ["data=folder", "trainer=cpu", "loss=vgg16_offline", "model=small",
        "data.dataset.image_size=64", "data.val_size=2"]


def write_photos(folder: Path, n: int, seed: int = 0) -> Path:
    """n small photo-like JPEGs: smooth colour fields with a bright disc, 80x72 px."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:72, 0:80] / 72.0
    for i in range(n):
        a = rng.uniform(0, 255, (3, 3))
        img = a[:, 0, None, None] + a[:, 1, None, None] * x / 2 + a[:, 2, None, None] * y / 2
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.1, 0.3)
        img[:, (y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, (3, 1))
        pixels = np.clip(img, 0, 255).astype(np.uint8).transpose(1, 2, 0)
        Image.fromarray(pixels).save(folder / f"photo_{i:04d}.jpg", quality=90)
    return folder


def events(run_dir: Path) -> tuple[dict[str, list[int]], list[int]]:
    """From the run's TensorBoard file: {scalar tag: steps logged} and the preview images'
    steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (path,) = run_dir.glob("tensorboard/events.out.tfevents.*")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [e.step for e in acc.Scalars(t)] for t in tags["scalars"]}
    previews = [e.step for e in acc.Images("preview")] if "preview" in tags["images"] else []
    return scalars, previews


def run_train_py(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0"}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_defaults_count_the_run_in_steps():
    cfg = compose_train(["data=folder", "data.dataset.root=x"], "/tmp/unused")
    assert cfg.trainer.max_steps == 40000 and cfg.trainer.max_epochs == -1
    assert cfg.trainer.check_val_every_n_epoch is None
    assert cfg.trainer.val_check_interval == 1000 and cfg.model.preview_every_n_steps == 500
    short = compose_train(["trainer.max_steps=7"], "/tmp/unused")
    assert short.trainer.val_check_interval == 7 and short.model.preview_every_n_steps == 7


@pytest.mark.parametrize("n, steps", [(37, 12), (1000, 6)])
def test_a_folder_trains_to_its_step_count(tmp_path, n, steps):
    """37 photos: 35 train, 8 batches an epoch, so 12 steps cross an epoch; 1000: 249 batches."""
    root = write_photos(tmp_path / "photos", n)
    cfg = compose_train([*USER, f"data.dataset.root={root}", f"trainer.max_steps={steps}"],
                        tmp_path / "run")
    metrics = train(cfg)
    assert metrics["global_step"] == steps
    scalars, previews = events(tmp_path / "run")
    assert scalars["val/total"] == [steps]  # a run shorter than 1000 steps validates at its end
    assert previews == [1, steps]
    assert Path(metrics["model_path"]).is_file()


def test_validation_and_previews_keep_their_step_schedule_across_epochs(tmp_path):
    """10 photos, 2 held out: 2 batches an epoch; validation every 3 steps, previews every 2."""
    root = write_photos(tmp_path / "photos", 10)
    cfg = compose_train([*USER, f"data.dataset.root={root}", "trainer.max_steps=7",
                         "trainer.val_check_interval=3", "model.preview_every_n_steps=2"],
                        tmp_path / "run")
    assert train(cfg)["global_step"] == 7
    scalars, previews = events(tmp_path / "run")
    assert scalars["val/total"] == [3, 6]
    assert previews == [1, 2, 4, 6]


def test_train_py_on_ten_photos_as_a_user_types_it(tmp_path):
    """The command that crashed with "val_check_interval (1000) must be less than or equal to
    the number of the training batches (2)"."""
    root = write_photos(tmp_path / "myphotos", 10)
    run_dir = tmp_path / "run"
    done = run_train_py([*USER, f"data.dataset.root={root}", "trainer.max_steps=5",
                         f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "max_steps=5" in done.stderr + done.stdout
    # Lightning's notes on a short epoch and the frozen VGG16's eval mode say nothing to a user
    assert "logging interval" not in done.stderr
    assert "eval mode at the start" not in done.stderr
    scalars, previews = events(run_dir)
    assert scalars["val/total"] == [5] and previews == [1, 5]
    assert (run_dir / "model.pt").is_file()


def test_a_folder_too_small_for_a_batch_stops_with_one_line(tmp_path):
    root = write_photos(tmp_path / "five", 5)
    done = run_train_py([*USER, f"data.dataset.root={root}", "trainer.max_steps=5",
                         f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if "photos in" in x]
    assert f"5 photos in {root}" in line
    assert "data.val_size=2" in line and "data.batch_size=4" in line
    assert "at least 6" in line
