"""Stylize one photo by optimising its pixels (Gatys et al. 2016): no trained model needed.

    python optimize.py content=photo.jpg style=painting.jpg output=out.jpg preset=gatys
    python optimize.py ... preset=weighted network=vgg16_offline device=cuda

See configs/optimize/optimize.yaml. optimize(cfg) is a plain function (tests call it); main()
only adds Hydra and one-line errors.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

os.environ.setdefault("STYLENET_ROOT", str(Path(__file__).resolve().parent))

from stylenet.cli import check_required, run  # noqa: E402
from stylenet.color import blend, check_strength, preserve_color  # noqa: E402
from stylenet.devices import pick_device  # noqa: E402
from stylenet.gatys import RunLog, level_sizes, optimize_image  # noqa: E402
from stylenet.image import (  # noqa: E402
    ImageError,
    check_image_path,
    check_overwrite,
    load_tensor,
    save_atomic,
    to_pil,
)
from stylenet.losses import PerceptualLoss  # noqa: E402

log = logging.getLogger("stylenet.optimize")


def default_log_dir(output: Path) -> Path:
    return output.with_name(f"{output.stem}_log")


def check_config(cfg: DictConfig) -> Path:
    """Fail before any work on settings that can be checked up front; returns the output path."""
    if not isinstance(cfg.loss, DictConfig):  # loss=vgg16_offline: train.py's group
        raise ValueError(f"loss={cfg.loss}: optimize.py picks its loss network with network= "
                         "(vgg19, vgg16, vgg16_offline), e.g. network=vgg16_offline; loss.* "
                         "holds the loss settings")
    check_required(cfg)
    out = check_image_path(cfg.output)
    check_overwrite(out, cfg.overwrite, Path(cfg.content))
    check_strength(cfg.strength)
    for key in ("size", "style_size"):
        if cfg[key] is not None and cfg[key] < 1:
            raise ValueError(f"{key}={cfg[key]}: use a number of pixels, or null")
    return out


def build_loss(cfg: DictConfig) -> PerceptualLoss:
    """The training loss module with a VGG tapped at exactly the layers the losses use."""
    taps = list(dict.fromkeys([cfg.loss.content_layer, *cfg.loss.style_layers]))
    try:
        vgg = hydra.utils.instantiate(cfg.loss.vgg, layers=taps)
        return hydra.utils.instantiate(cfg.loss, vgg=vgg, _convert_="all")
    except InstantiationException as e:  # show our one-line message, not Hydra's wrapper
        raise e.__cause__ or e from None


def optimize(cfg: DictConfig) -> Path:
    """Run one optimisation as configured; returns the output file."""
    out = check_config(cfg)
    content = load_tensor(cfg.content, max_side=cfg.size)
    style = load_tensor(cfg.style)
    device = pick_device(cfg.device)
    loss = build_loss(cfg).to(device)
    make_optimizer = hydra.utils.instantiate(cfg.optimizer)
    content = content.to(device)
    run_log = None
    if cfg.log:
        run_log = RunLog(cfg.log_dir or default_log_dir(out), save_every=cfg.save_every,
                         quality=cfg.quality)
        OmegaConf.save(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]),
                       run_log.dir / "config.yaml", resolve=True)
    levels = cfg.multiscale.levels
    steps = cfg.iterations + (levels - 1) * cfg.multiscale.iterations
    split = ""
    if levels > 1:  # e.g. "(200 at 256x192, 200 at 512x384, then 500 at 1024x768)"
        sizes = level_sizes(content.shape[-2], content.shape[-1], levels)
        split = " (" + ", ".join(f"{cfg.multiscale.iterations} at {w}x{h}"
                                 for h, w in sizes[:-1])
        split += f", then {cfg.iterations} at {sizes[-1][1]}x{sizes[-1][0]})"
    log.info("optimising %dx%d on %s: %s, %d steps%s", content.shape[-1], content.shape[-2],
             device, cfg.optimizer._target_.rsplit(".", 1)[-1], steps, split)
    start = time.perf_counter()
    try:
        image = optimize_image(
            content, style.to(device), loss, make_optimizer, cfg.iterations, init=cfg.init,
            levels=cfg.multiscale.levels, level_iterations=cfg.multiscale.iterations,
            style_size=cfg.style_size, seed=cfg.seed, on_step=run_log, progress=cfg.progress,
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        if cfg.preserve_color:
            image = preserve_color(content, image)
        image = blend(content, image, cfg.strength)
        save_atomic(to_pil(image), out, quality=cfg.quality)
        log.info("wrote %s: %d steps in %.1f s on %s", out, steps, seconds, device)
    finally:  # a failed run still leaves its loss curve and summary, to see what happened
        if run_log is not None:
            run_log.close({"optimize_seconds": round(time.perf_counter() - start, 3),
                           "device": str(device), "size": list(content.shape[-2:])})
            log.info("loss curve, TensorBoard log and summary in %s", run_log.dir)
    return out


@hydra.main(version_base="1.3", config_path="configs/optimize", config_name="optimize")
def main(cfg: DictConfig) -> None:
    try:
        optimize(cfg)
    except (ImageError, FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run(main)
