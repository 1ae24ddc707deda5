"""The training config as `python train.py OVERRIDES` composes it, for code that calls train(cfg)
directly (tests, benchmarks/quality.py): Hydra's compose API plus the run folder that
@hydra.main would have made."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def compose_train(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """configs/train.yaml with `overrides`, writing its run folder at `output_dir`."""
    os.environ.setdefault("STYLENET_ROOT", str(ROOT))
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg
