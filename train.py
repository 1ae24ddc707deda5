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

from hydra.errors import InstantiationException  # noqa: E402

from stylenet.checkpoint import FiniteGuard, NonFiniteLossError, SkippedFilesCount  # noqa: E402
from stylenet.image import ImageError, open_rgb, save_atomic, to_pil  # noqa: E402
from stylenet.model_file import save_model  # noqa: E402
from stylenet.transformer import LEGACY_PIXEL_SCALE  # noqa: E402
from stylenet.vgg import layer_names  # noqa: E402

log = logging.getLogger("stylenet.train")

HPARAM_METRICS = ("hp/val_content", "hp/val_style", "hp/val_total")


def check_config(cfg: DictConfig) -> str | None:
    """Fail with a one-line message naming the setting and the fix, before any data, VGG or GPU
    work, on settings that can be checked up front. Returns the checkpoint to resume from."""
    try:
        open_rgb(cfg.style.image)
    except ImageError as e:
        raise SystemExit(f"style.image: {e}") from None
    for key in ("content_weight", "style_weight", "tv_weight"):
        if cfg.style[key] < 0:
            raise SystemExit(f"style.{key}={cfg.style[key]} is negative: loss weights must be >= 0")
    check_loss_layers(cfg.loss)
    lr = OmegaConf.select(cfg, "model.optimizer.lr")
    if lr is not None and not lr > 0:
        raise SystemExit(f"model.optimizer.lr={lr} must be > 0: the reference recipe uses 1e-3")
    out = Path(cfg.paths.output_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as e:
        raise SystemExit(
            f"paths.output_dir={out} is not writable ({e.strerror}): choose another folder"
        ) from None
    return resolve_checkpoint(cfg)


def check_loss_layers(loss: DictConfig) -> None:
    """VGG layers are named in configs (relu3_3); a typo must not surface after data loading."""
    vgg = loss.get("vgg") or {}
    arch = vgg.get("arch", "vgg16")
    try:
        known = layer_names(arch)
    except Exception:  # noqa: BLE001 - an unknown arch is reported by name below
        raise SystemExit(f"loss.vgg.arch={arch} is not a known VGG: use vgg16") from None
    taps = list(vgg.get("layers") or [])
    style_layers = dict(loss.get("style_layers") or {})
    content = loss.get("content_layer")
    named = [("loss.vgg.layers", t) for t in taps]
    named += [("loss.style_layers", s) for s in style_layers]
    if content is not None:
        named.append(("loss.content_layer", content))
    for key, name in named:
        if name not in known:
            close = [k for k in known if k.startswith(str(name)[:4])][:6]
            raise SystemExit(
                f"{key}: unknown VGG layer {name!r}: use one of {close or known[:6]} (names like "
                "relu3_3: block 3, layer 3)"
            )
    for key, name in named[len(taps) :]:
        if key == "loss.style_layers" and style_layers[name] == 0:
            continue  # weight 0 switches the layer off: it need not be tapped
        if taps and name not in taps:
            raise SystemExit(f"{key}={name} is not tapped: add it to loss.vgg.layers ({taps})")
    for name, weight in style_layers.items():
        if weight < 0:
            raise SystemExit(f"loss.style_layers.{name}={weight} is negative: weights must be >= 0")
    scale = loss.get("feature_scale", 1.0)
    if not scale > 0:
        raise SystemExit(f"loss.feature_scale={scale} must be > 0 (1.0 for torchvision's VGG)")


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """ckpt_path=last means this run folder's checkpoints/last.ckpt (resume a run by passing its
    folder: hydra.run.dir=<run folder> ckpt_path=last); a path is taken as it is. A missing,
    corrupt or mismatched checkpoint is an error here, not a fresh start or a crash later."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if str(ckpt) == "last":
        folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
        path = Path(folder or Path(cfg.paths.output_dir) / "checkpoints") / "last.ckpt"
        if not path.is_file():
            raise SystemExit(
                f"ckpt_path=last: there is no {path}: resume a run by naming its folder, "
                "hydra.run.dir=<run folder> ckpt_path=last, or pass ckpt_path=<file.ckpt>"
            )
    else:
        path = Path(ckpt)
        if not path.is_file():
            raise SystemExit(f"ckpt_path={ckpt}: no such checkpoint file: check the path")
    remove_stale_temp_files(path.parent)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means: pick another file
        raise SystemExit(
            f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}): resume from "
            f"another one in {path.parent}"
        ) from None
    if not isinstance(state, dict) or "loops" not in state or "state_dict" not in state:
        raise SystemExit(
            f"ckpt_path={path}: not a training checkpoint (a model file cannot be resumed): "
            "pass a .ckpt from a run's checkpoints/ folder"
        )
    arch = (state.get("stylenet") or {}).get("arch") or {}
    # Checkpoints from before the pixel scale was stored were trained at 0..1.
    arch.setdefault("pixel_scale", LEGACY_PIXEL_SCALE)
    net = OmegaConf.to_container(cfg.model.get("net") or DictConfig({}), resolve=True)
    for key in ("channels", "num_residual", "pixel_scale"):
        want = net.get(key)
        if key in arch and want is not None and arch[key] != want:
            raise SystemExit(
                f"ckpt_path={path} was trained with model.net.{key}={arch[key]}, this run has "
                f"{want}: resume with the run's own settings"
            )
    return str(path)


def remove_stale_temp_files(folder: Path) -> None:
    """A kill during a save leaves the atomic writer's temp file (never a .ckpt); tidy them up.
    Only in the first process: other DDP ranks start while rank 0 may already be saving."""
    if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("NODE_RANK", "0") != "0":
        return
    for tmp in folder.glob(".*.ckpt.*.tmp"):
        log.info("removing %s, left by an interrupted save", tmp)
        tmp.unlink(missing_ok=True)


def build_data(cfg: DictConfig):
    """The DataModule; its photo checks (folder, crop size, usable photos) end the run here with
    their one-line message rather than Hydra's wrapped traceback."""
    try:
        return hydra.utils.instantiate(cfg.data)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ValueError | FileNotFoundError):
            raise SystemExit(str(cause)) from None
        raise


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings with every interpolation resolved (Hydra's own section left out)."""
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] = ()) -> dict[str, Any]:
    """Train, export the model file and a stylized sample; return the final metrics.
    extra_callbacks are added to the configured ones (for programmatic use)."""
    ckpt_path = check_config(cfg)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    datamodule = build_data(cfg)
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(
        cfg.model, loss=loss, style=OmegaConf.to_container(cfg.style, resolve=True),
        _convert_="partial",
    )
    module.preview = datamodule.preview_images()

    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    # Not optional, so not in the callbacks group: no run may go on after a NaN step.
    callbacks += [FiniteGuard(), SkippedFilesCount(), *extra_callbacks]
    logger = hydra.utils.instantiate(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=logger)
    config = resolved_config(cfg)
    if logger:
        logger.log_hyperparams(config, metrics={k: float("nan") for k in HPARAM_METRICS})

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if logger and trainer.is_global_zero:
        hp = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()}
        logger.log_metrics({k: v for k, v in hp.items() if k in HPARAM_METRICS},
                           step=trainer.global_step)
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
    # The dataset's shared flags count each file once, whichever worker or earlier run found it.
    dataset = datamodule.dataset
    if hasattr(dataset, "bad_indices"):
        skipped = len(dataset.bad_indices())
    else:
        skipped = module.skipped_files
    if skipped:
        log.warning("%d training photo(s) were skipped as unusable (named in the warnings above)",
                    skipped)
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
        torch.cat([blank[None], photos, style[None], out]), nrow=len(photos) + 1, padding=4,
        pad_value=1.0,
    )
    return save_atomic(to_pil(grid), path, quality=92)


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except NonFiniteLossError as e:
        raise SystemExit(f"error: {e}") from None
    return metrics.get("val/total")  # for Hydra sweepers that optimise a value


if __name__ == "__main__":
    main()
