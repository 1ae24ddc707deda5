"""Train a style model: `python train.py style=mosaic` (see README.md and configs/train.yaml).

train(cfg) is a plain function (tests call it with a composed config); main() only adds Hydra.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

os.environ.setdefault("STYLENET_ROOT", str(Path(__file__).resolve().parent))

from stylenet.callbacks import NonFiniteLossError, skipped_files, written_files  # noqa: E402
from stylenet.checkpoint import note_start, resolve_checkpoint  # noqa: E402
from stylenet.cli import check_added_keys, check_required, run  # noqa: E402
from stylenet.config import register_resolvers  # noqa: E402
from stylenet.image import (
    ImageError,  # noqa: E402
    load_style,  # noqa: E402
)
from stylenet.model_file import ModelFileError, load_model  # noqa: E402
from stylenet.module import HPARAM_METRICS  # noqa: E402
from stylenet.multi import add_painting, painting_configs, painting_names  # noqa: E402
from stylenet.vgg_weights import WeightsUnavailableError  # noqa: E402

log = logging.getLogger("stylenet.train")
# Lightning logs every trainer.log_every_n_steps global steps, across epochs: its warning that an
# epoch of a small folder is shorter than that is moot. The modules it finds in eval mode at the
# start are the frozen loss network's, on purpose.
warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval")
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training")
register_resolvers()  # before @hydra.main composes the config

# What a user sweeps and compares in TensorBoard's HParams tab (the whole resolved config is in
# the run folder's .hydra/ and in the model file).
SWEPT_SETTINGS = (
    "style.name", "style.size", "style.content_weight", "style.style_weight", "style.tv_weight",
    "loss.content_layer", "loss.style_layers", "loss.vgg.weights", "model.net.channels",
    "model.net.num_residual", "model.net.edge_kernel", "model.optimizer.lr", "model.scheduler",
    "model.identity_steps", "model.style_warmup_steps", "model.style_warmup_factor",
    "loss.content_palette", "model.paintings", "model.sampling", "data.batch_size",
    "data.dataset.image_size", "trainer.precision", "trainer.max_steps", "seed",
)
# Groups whose keys a `+key=value` typo would silently add to (see check_added_keys).
CHECKED_GROUPS = ("style", "loss", "data", "model")


def build(node: DictConfig, **kwargs) -> Any:
    """hydra.utils.instantiate, with our own one-line errors for bad settings (the loss checks its
    layer names and weights, the data its photos) instead of Hydra's wrapped traceback."""
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        if isinstance(e.__cause__, ValueError | FileNotFoundError | WeightsUnavailableError):
            raise SystemExit(str(e.__cause__)) from None
        raise


def check_settings(cfg: DictConfig) -> None:
    """The command line as given: required settings left out, keys added with a typo."""
    if "hydra" in cfg:  # composed with return_hydra_config (stylenet.config.compose_train)
        overrides = cfg.hydra.overrides.task
    else:
        overrides = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    try:
        check_required(cfg)
        check_added_keys(cfg, overrides, CHECKED_GROUPS)
    except ValueError as e:
        raise SystemExit(str(e)) from None


def check_run(cfg: DictConfig) -> None:
    """Settings that no object checks when it is built: fail before any work."""
    accelerator = OmegaConf.select(cfg, "trainer.accelerator")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise SystemExit(f"trainer.accelerator={accelerator}, but this machine has no CUDA GPU: "
                         "train on the CPU with trainer=cpu (or try debug=default)")
    precision = str(OmegaConf.select(cfg, "trainer.precision"))
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto")
                                      and not torch.cuda.is_available())
    if precision.startswith("bf16-true") and on_cpu:
        raise SystemExit("trainer.precision=bf16-true on the CPU: it has no native bf16 here and "
                         "runs ~50x slower than fp32; train there with trainer.precision=32-true, "
                         "or on a GPU (trainer=gpu)")
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


def resolved_config(cfg: DictConfig) -> dict[str, Any]:
    """The run's settings with every interpolation resolved (Hydra's own section left out)."""
    keys = [k for k in cfg if k != "hydra"]
    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, keys), resolve=True)


def swept_settings(cfg: DictConfig) -> dict[str, Any]:
    """SWEPT_SETTINGS as TensorBoard takes them: numbers and strings (lists and mappings are
    written out); a setting this config lacks is left out."""
    out = {}
    for key in SWEPT_SETTINGS:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, DictConfig | ListConfig):
            value = json.dumps(OmegaConf.to_container(value, resolve=True))
        if value is not None:
            out[key] = value
    return out


def load_paintings(paintings: list[dict[str, Any]], where: str) -> list[torch.Tensor]:
    """Each painting's image at its size; its sha256 recorded in its dict."""
    images = []
    for i, style in enumerate(paintings):
        try:
            image, style["sha256"] = load_style(style)
        except ImageError as e:
            raise SystemExit(f"{where.format(i=i)}.image: {e}") from None
        images.append(image)
    return images


def multi_setup(cfg: DictConfig) -> dict[str, Any] | None:
    """What a net of several paintings adds to the module's arguments: model=multi (the paintings
    of model.paintings) or base=FILE (experiment=add_painting: style= is a painting added to the
    file's, trained alone). None for a net of one painting."""
    base = OmegaConf.select(cfg, "base")
    if base is None and OmegaConf.select(cfg, "model.paintings") is None:
        return None
    if base is None:
        try:
            paintings = painting_configs(cfg)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        images = load_paintings(paintings, "model.paintings[{i}]")
        return {"paintings": paintings, "style_image": images,
                "style": {"name": "+".join(p["name"] for p in paintings)}}
    try:
        base_net, meta = load_model(base)
    except ModelFileError as e:
        raise SystemExit(f"base={base}: {e}") from None
    names = painting_names(meta)
    style = OmegaConf.to_container(cfg.style, resolve=True)
    if not names:
        raise SystemExit(f"base={base} holds one painting: adding one needs a file of several "
                         "(train one with model=multi)")
    if style["name"] in names:
        raise SystemExit(f"style.name={style['name']}: {base} already has a painting of that "
                         f"name ({', '.join(names)}): choose another")
    images = load_paintings([style], "style")
    return {"net": add_painting(base_net), "paintings": [style], "style_image": images,
            "frozen_paintings": meta["paintings"],
            "style": {"name": "+".join([*names, style["name"]])}}


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] = ()) -> dict[str, Any]:
    """Train; the callbacks write the model file and a stylized sample. Returns the final metrics
    (and model_path, sample_path, skipped_files, global_step). extra_callbacks are added to the
    configured ones (for programmatic use)."""
    check_settings(cfg)
    multi = multi_setup(cfg)
    if multi is None:
        style = OmegaConf.to_container(cfg.style, resolve=True)
        style_image = load_paintings([style], "style")[0]
    check_run(cfg)
    ckpt_path = resolve_checkpoint(cfg)
    note_start(cfg, ckpt_path)
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)

    # first: a wrong layer name or weight stops here, before the photos
    loss = build(cfg.loss) if multi is None else build(cfg.loss, paintings=multi["paintings"])
    datamodule = build(cfg.data)
    config = resolved_config(cfg)
    if multi is None:
        module = build(cfg.model, loss=loss, style=style, style_image=style_image,
                       run_config=OmegaConf.to_yaml(config), _convert_="partial")
    else:  # a net of N paintings (built after the seed, as build() would), or the base's + 1
        if "net" not in multi:
            multi["net"] = build(cfg.model.net, num_styles=len(multi["paintings"]))
        model = OmegaConf.create({k: v for k, v in config["model"].items() if k != "net"})
        module = build(model, loss=loss, run_config=OmegaConf.to_yaml(config),
                       _convert_="partial", **multi)
    callbacks = [build(c) for c in (cfg.get("callbacks") or {}).values()]
    logger = build(cfg.logger) if cfg.get("logger") else False
    trainer: pl.Trainer = build(cfg.trainer, callbacks=[*callbacks, *extra_callbacks],
                                logger=logger)
    if logger:
        logger.log_hyperparams(swept_settings(cfg),
                               metrics={k: float("nan") for k in HPARAM_METRICS})

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    metrics: dict[str, Any] = {k: float(v) for k, v in trainer.callback_metrics.items()}
    skipped = skipped_files(datamodule)
    if skipped:
        log.warning("%d training photo(s) were skipped as unusable (named in the warnings above)",
                    skipped)
    return {**metrics, **written_files(trainer), "skipped_files": skipped,
            "global_step": trainer.global_step}


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except NonFiniteLossError as e:
        raise SystemExit(f"error: {e}") from None
    return metrics.get("val/total")  # for Hydra sweepers that optimise a value


if __name__ == "__main__":
    run(main)
