"""The zoo's recipe files (configs/experiment/zoo/<painting>.yaml): each trains its own painting,
and each composes with the GPU command of benchmarks/NOTES.md ("The zoo's recipes") into the
paper's length with the recipe's arithmetic unchanged."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import CONFIGS, ROOT
from test_zoo import trained_with_the_recipe

from stylenet import speed
from stylenet.config import compose_train
from stylenet.transformer import TransformerNet, macs_per_pixel
from train import check_settings, resolved_config

RECIPES = sorted(p.stem for p in (CONFIGS / "experiment" / "zoo").glob("*.yaml"))
NOTES = (ROOT / "benchmarks" / "NOTES").with_suffix(".md")


def gpu_command(name: str) -> list[str]:
    """The overrides of NOTES.md's GPU command (written for The Starry Night) for `name`."""
    lines = [line.strip() for line in NOTES.read_text().splitlines()
             if line.strip().startswith("python train.py experiment=zoo/")
             and "trainer=gpu" in line]
    assert len(lines) == 1, "NOTES.md holds one GPU command for the zoo's recipes"
    command = re.sub(r"experiment=zoo/\w+", f"experiment=zoo/{name}", lines[0])
    return shlex.split(command.removeprefix("python train.py"))


def test_there_is_a_recipe_per_painting():
    assert "starry_night" in RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_trains_its_own_painting(name, tmp_path):
    cfg = compose_train([f"experiment=zoo/{name}"], tmp_path)
    check_settings(cfg)
    assert cfg.style.name == name
    assert cfg.trainer.accelerator == "cpu" and cfg.trainer.precision == "32-true"
    assert cfg.data.dataset.root.endswith("data/photos")


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_composes_with_the_gpu_command_at_the_papers_length(name, tmp_path):
    cpu = resolved_config(compose_train([f"experiment=zoo/{name}"], tmp_path / "cpu"))
    cfg = compose_train(gpu_command(name), tmp_path / "gpu")
    check_settings(cfg)  # no key added with a typo
    gpu = resolved_config(cfg)
    t = cfg.trainer
    assert (t.accelerator, t.precision, t.max_steps) == ("gpu", "bf16-mixed", 40_000)
    assert cfg.callbacks.model_checkpoint.every_n_train_steps == 1000
    assert t.val_check_interval == 1000 and cfg.model.preview_every_n_steps == 1000
    assert cfg.data.num_workers > 0  # decoding beside the GPU step
    assert cfg.data.dataset.root.endswith("data/photos")  # the bundled photos
    # the same arithmetic as on the CPU, but for the length
    want, got = trained_with_the_recipe(cpu), trained_with_the_recipe(gpu)
    assert {**got, "max_steps": None} == {**want, "max_steps": None}
    # a 40,000-step run on CUDA compiles both nets
    net = TransformerNet(tuple(cfg.model.net.channels), cfg.model.net.num_residual)
    macs = macs_per_pixel(net, 32) * cfg.data.batch_size * cfg.data.dataset.image_size**2
    s = speed.resolve(cfg.model.channels_last, cfg.model.compile, "cuda", t.max_steps, macs)
    assert s.compile and s.compile_loss and s.channels_last
