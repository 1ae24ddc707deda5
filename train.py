"""Train a style model: `python train.py style=mosaic` (see README.md and configs/train.yaml).

train(cfg) is a plain function (tests call it with a composed config); main() only adds Hydra.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
import torchvision
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("STYLENET_ROOT", str(Path(__file__).resolve().parent))
# Sweep folders are named by their overrides; a '/' in a value must not create subfolders.
OmegaConf.register_new_resolver(
    "path_safe", lambda s: str(s).replace("/", "_")[:150], replace=True
)

from stylenet.export import save_model  # noqa: E402
from stylenet.image import ImageError, open_rgb, save_atomic, to_pil  # noqa: E402

log = logging.getLogger("stylenet.train")

HPARAM_METRICS = ("hp/val_content", "hp/val_style", "hp/val_total")


def check_config(cfg: DictConfig) -> None:
    """Fail before any GPU work on settings that can be checked up front."""
    try:
        open_rgb(cfg.style.image)
    except ImageError as e:
        raise SystemExit(f"style.image: {e}") from None
    for key in ("content_weight", "style_weight", "tv_weight"):
        if cfg.style[key] < 0:
            raise SystemExit(f"style.{key}={cfg.style[key]} is negative: loss weights must be >= 0")
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as e:
        raise SystemExit(f"paths.output_dir={out} is not writable ({e.strerror}): choose another folder") from None


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings with every interpolation resolved (Hydra's own section left out)."""
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] = ()) -> dict[str, Any]:
    """Train, export the model file and a stylized sample; return the final metrics.
    extra_callbacks are added to the configured ones (for programmatic use)."""
    check_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(
        cfg.model, loss=loss, style=OmegaConf.to_container(cfg.style, resolve=True), _convert_="partial"
    )
    module.preview = datamodule.preview_images()

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += list(extra_callbacks)
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    config = resolved_config(cfg)
    if logger:
        logger.log_hyperparams(config, metrics={k: float("nan") for k in HPARAM_METRICS})

    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if logger and trainer.is_global_zero:
        logger.log_metrics({f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()
                            if f"hp/{k.replace('/', '_')}" in HPARAM_METRICS}, step=trainer.global_step)
    if trainer.is_global_zero and not trainer.fast_dev_run:
        out = Path(cfg.paths.output_dir)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if bad:
            log.error("metrics %s are not finite: no model file written", bad)
        else:
            model_path = save_model(out / "model.pt", module.net, module.model_meta(),
                                    config=OmegaConf.to_yaml(config))
            sample = write_sample(module, out / "sample.jpg")
            log.info("model file: %s", model_path)
            log.info("stylized sample: %s", sample)
            metrics["model_path"] = str(model_path)
            metrics["sample_path"] = str(sample)
    skipped = module.skipped_files
    if skipped:
        log.warning("%d training photo(s) were skipped as unusable (see the warnings above)", skipped)
    metrics["skipped_files"] = skipped
    metrics["global_step"] = trainer.global_step
    return metrics


def write_sample(module, path: Path) -> Path:
    """One image: the preview photos on top, stylized below, the style image on the left."""
    photos = module.preview.float() / 255
    out = module.stylize(module.preview).cpu()
    size = photos.shape[-1]
    style = torchvision.transforms.v2.functional.resize(module.style_image[0], size, antialias=True)
    style = torchvision.transforms.v2.functional.center_crop(style, size)
    blank = torch.ones_like(style)
    grid = torchvision.utils.make_grid(
        torch.cat([blank[None], photos, style[None], out]), nrow=len(photos) + 1, padding=4, pad_value=1.0
    )
    return save_atomic(to_pil(grid), path, quality=92)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    metrics = train(cfg)
    return metrics.get("val/total")  # for Hydra sweepers that optimise a value


if __name__ == "__main__":
    main()
