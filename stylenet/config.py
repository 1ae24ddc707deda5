"""The training config as `python train.py OVERRIDES` composes it, for code that calls train(cfg)
directly (tests, benchmarks/quality.py): Hydra's compose API plus the run folder that
@hydra.main would have made."""

from __future__ import annotations

import os
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def at_most(every: int, length: int | None) -> int:
    """An interval of `every` steps, shortened to the run's `length` so that a shorter run still
    validates and previews once, at its end (length -1 or None: no limit)."""
    return every if length is None or length < 0 else max(1, min(every, length))


def register_resolvers() -> None:
    """The resolvers configs/ uses; idempotent."""
    # Sweep folders are named by their overrides; a "/" in a value must not create subfolders,
    # and the name stays under the 255 bytes a file name may have.
    OmegaConf.register_new_resolver("path_safe", lambda s: str(s).replace("/", "_")[:200],
                                    replace=True)
    OmegaConf.register_new_resolver("at_most", at_most, replace=True)


def compose_train(overrides: list[str], output_dir: str | Path) -> DictConfig:
    """configs/train.yaml with `overrides`, writing its run folder at `output_dir`."""
    os.environ.setdefault("STYLENET_ROOT", str(ROOT))
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
    HydraConfig().set_config(cfg)
    return cfg
