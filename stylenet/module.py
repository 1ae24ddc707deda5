"""LightningModule: transformer -> loss network -> losses, with preview images in TensorBoard."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from typing_extensions import override

from stylenet import speed
from stylenet.losses import PerceptualLoss
from stylenet.multi import SAMPLING, content_targets, step_paintings, step_terms
from stylenet.phases import Phases
from stylenet.preview import (
    log_preview,
    log_styles,
    sample_grid,
)
from stylenet.transformer import TransformerNet

log = logging.getLogger(__name__)

# TensorBoard's HParams tab compares runs by these, copied from the validation losses.
HPARAM_METRICS = {"hp/val_content": "val/content", "hp/val_style": "val/style",
                  "hp/val_total": "val/total"}


class StyleTransferModule(pl.LightningModule):
    """Trains `net` so that net(photo) keeps the photo's content and takes the style image's style.

    style_image (1, 3, H, W) in 0..1 and style (name, image, sha256, ...): from load_style().
    run_config: the resolved training config, kept in the model file. identity_steps: steps
    fitting the net to give its photos back before the perceptual loss. style_warmup_steps: the
    first perceptual steps, at style_warmup_factor times the style weight. channels_last, compile:
    None picks what is fastest where the run trains (apply_speedups()); True or False sets both
    nets. paintings: for a net of several paintings, one style record each (style_image then
    a list of their images, in order), trained as `sampling` says (see multi.step_paintings);
    frozen_paintings: the records of the rows ahead of them that are not trained (a painting
    added to a trained net), so painting k is the net's row len(frozen_paintings) + k.
    phases: loss settings and the learning rate from given steps on (stylenet/phases.py).
    """

    def __init__(
        self,
        net: TransformerNet,
        loss: PerceptualLoss,
        optimizer: Callable[..., torch.optim.Optimizer],
        style: dict[str, Any],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None = None,
        style_image: torch.Tensor | None = None,
        preview_every_n_steps: int = 500,
        identity_steps: int = 0,
        style_warmup_steps: int = 0,
        style_warmup_factor: float = 1.0,
        channels_last: bool | None = None,
        compile: bool | None = None,
        compile_mode: str | None = None,
        compile_backend: str = "inductor",
        run_config: str = "",
        paintings: list[dict[str, Any]] | None = None,
        sampling: str = "cycle",
        sampling_seed: int = 0,
        frozen_paintings: list[dict[str, Any]] | None = None,
        phases: list[dict[str, Any]] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler", "style_image",
                                          "run_config", "paintings", "frozen_paintings"],
                                  logger=False)
        self.paintings = [dict(p) for p in paintings] if paintings else None
        if paintings is not None and sampling not in SAMPLING:
            raise ValueError(f"model.sampling={sampling}: use cycle or random (one painting per "
                             "step) or mix (a painting per photo)")
        self.sampling, self.sampling_seed = sampling, int(sampling_seed)
        self.frozen_paintings = [dict(p) for p in frozen_paintings or []]
        self.offset = len(self.frozen_paintings)  # the net's row of painting 0
        self.net = net
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.style = dict(style)
        self.style_image = style_image
        self.run_config = run_config
        self.preview_every_n_steps = preview_every_n_steps
        self.identity_steps = identity_steps
        if style_warmup_steps < 0 or not 0 < style_warmup_factor <= 1:
            raise ValueError(f"model.style_warmup_steps={style_warmup_steps}, "
                             f"model.style_warmup_factor={style_warmup_factor:g}: the steps must "
                             "be >= 0 and the factor in (0, 1], e.g. 600 and 0.25")
        self.style_warmup_steps, self.style_warmup_factor = style_warmup_steps, style_warmup_factor
        self.full_style_weight = loss.style_weight
        self.phases = Phases(phases, loss, loss.style_weight)  # loss settings that change
        if scheduler is not None and any("lr" in p for p in self.phases.phases):
            raise ValueError("model.phases sets lr and model.scheduler is set: use one of them")
        self.channels_last = channels_last  # resolved: the transformer's layout and compile;
        self.compile = compile  # the loss network's follow in loss_channels_last, compile_loss
        self.loss_channels_last = self.compile_loss = None
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend
        self.preview: torch.Tensor | None = None  # (P, 3, S, S) uint8, from the datamodule

    @override
    def setup(self, stage: str) -> None:
        # setup() runs before Lightning moves the module, so ask the strategy where it will run.
        # The datamodule is set up by now, so the run's length and its batches' size are known.
        self.apply_speedups(self.trainer.strategy.root_device.type,
                            self.trainer.estimated_stepping_batches,
                            speed.forward_macs(self.net, self.trainer.datamodule))

    def apply_speedups(self, device_type: str, steps: float = math.inf,
                       forward_macs: float = 0.0) -> None:
        """Resolve the None ("auto") switches for `device_type`, a run of `steps` optimizer
        steps and a transformer forward of `forward_macs` multiply-adds a step
        (stylenet/speed.py says how), and apply them; idempotent."""
        if self.loss_channels_last is None:  # not resolved yet
            s = speed.resolve(self.channels_last, self.compile, device_type, steps, forward_macs)
            self.channels_last, self.compile = s.channels_last, s.compile
            self.loss_channels_last, self.compile_loss = s.loss_channels_last, s.compile_loss
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.loss_channels_last:
            self.loss.vgg.to(memory_format=torch.channels_last)
        if not getattr(self, "_compiled", False):
            # nn.Module.compile() compiles in place: state_dict keys stay free of `_orig_mod.`,
            # so checkpoints and model files are the same with and without compile.
            if self.compile:
                self.net.compile(mode=self.compile_mode, backend=self.compile_backend)
            if self.compile_loss:
                self.loss.compile(mode=self.compile_mode, backend=self.compile_backend)
            self._compiled = True
        log.info("speed switches on %s: transformer channels_last=%s compile=%s, loss network "
                 "channels_last=%s compile=%s (mode %s)", device_type, self.channels_last,
                 self.compile, self.loss_channels_last, self.compile_loss,
                 self.compile_mode or "default")

    @override
    def on_fit_start(self) -> None:
        # Style targets are computed once per run, on the training device, in full precision.
        images = self.style_image if self.paintings else [self.style_image]
        with torch.autocast(self.device.type, enabled=False):
            vgg_dtype = self.loss.vgg.features[0].weight.dtype  # bf16 under bf16-true
            styles = [image.to(self.device, vgg_dtype) for image in images]
            self.loss.set_style(styles if self.paintings else styles[0])
        datamodule = self.trainer.datamodule
        if hasattr(datamodule, "preview_images"):
            self.preview = datamodule.preview_images()
        log_styles(self, images)

    def _step_style(self, batch: int, batch_idx: int | None = None) -> int | torch.Tensor | None:
        """The painting(s) of this step's photos (None: a net of one painting); see
        multi.step_paintings."""
        if not self.paintings:
            return None
        return step_paintings(self.sampling, len(self.paintings), self.global_step,
                              self.sampling_seed, batch, batch_idx, self.device)

    def _to_input(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) on the device -> float 0..1 in the net's dtype (bf16 weights under
        trainer.precision=bf16-true), normalised here, not on the CPU."""
        x = images.float().div_(255).to(self.net.conv1.conv.weight.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    @override
    def forward(self, x: torch.Tensor, style: int | torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x, style=style)

    def losses(self, images: torch.Tensor, compiled: bool = True,
               batch_idx: int | None = None) -> dict[str, torch.Tensor]:
        """uint8 photos (B, 3, H, W) on the device -> the weighted loss terms and 'total'.
        The one place the step's math lives: training, validation and benchmarks call it.
        compiled=False runs the eager forwards (calling .forward() skips nn.Module.compile):
        validation's batch size and no-grad mode would otherwise recompile the training graph.
        batch_idx: a validation batch's (its photos take the paintings in turn)."""
        x = self._to_input(images)
        if self.phases.phases:
            self.full_style_weight = self.phases.apply(self.loss, self.global_step)
        factor = self.style_factor_at(self.global_step)
        self.loss.style_weight = self.full_style_weight * factor
        self.loss.style_factor = factor
        net, loss = (self.net, self.loss) if compiled else (self.net.forward, self.loss.forward)
        return step_terms(net, loss, x, self._step_style(len(x), batch_idx), self.offset)

    def style_factor_at(self, step: int) -> float:
        """style_weight_at()'s factor: style_warmup_factor during the warmup, else 1."""
        warm = step < self.identity_steps + self.style_warmup_steps
        return self.style_warmup_factor if warm else 1.0

    def style_weight_at(self, step: int) -> float:
        """The style weight at optimizer step `step`: reduced by style_warmup_factor for the first
        style_warmup_steps perceptual steps (the net first learns the photo in the painting's
        palette at a light style weight; a full weight from the start paints blocks on the
        output's 4 px lattice, benchmarks/NOTES.md, "The CPU zoo recipe"), the full weight
        after them."""
        return self.full_style_weight * self.style_factor_at(step)

    def _shared_step(self, images: torch.Tensor, stage: str,
                     batch_idx: int | None = None) -> torch.Tensor:
        train = stage == "train"
        terms = self.losses(images, compiled=train, batch_idx=None if train else batch_idx)
        if train and self.style_warmup_steps:
            self.log("train/style_weight", self.loss.style_weight, on_step=True,
                     batch_size=len(images))
        self.log_dict(
            {f"{stage}/{k}": v for k, v in terms.items()},
            on_step=train, on_epoch=not train, batch_size=len(images), sync_dist=not train,
        )
        return terms["total"]

    @override
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        step = self.global_step
        lr = self.phases.lr_at(step)
        if lr is not None:  # a phase's learning rate, for the optimizer step that follows
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = lr
        if step < self.identity_steps:
            # A warm start: the net first learns to give its photo back (pixel MSE, no loss
            # network), so the style is learnt on top of a photo rather than of grey; with
            # loss.content_palette, the photo in the painting's colours (the content target).
            x = self._to_input(batch)
            style = self._step_style(len(x))
            with torch.no_grad():
                target = content_targets(self.loss, x, style)
            loss = F.mse_loss(self.net(x, style=None if style is None else style + self.offset),
                              target)
            self.log("train/identity", loss, on_step=True, batch_size=len(batch))
            return loss
        if step == self.identity_steps > 0:
            # Adam's moments of the small pixel gradients would make the first perceptual
            # steps far too large: the style phase starts with fresh moments.
            self.optimizers().optimizer.state.clear()
        return self._shared_step(batch, "train")

    @override
    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "val", batch_idx)

    @override
    def on_validation_epoch_end(self) -> None:
        # The HParams tab's metrics get a value at every validation, not only when a run ends:
        # a run still going, or killed, can be compared already.
        if self.trainer.sanity_checking:
            return
        metrics = self.trainer.callback_metrics
        values = {hp: metrics[val] for hp, val in HPARAM_METRICS.items() if val in metrics}
        # "step" sets the x of this validation's points: Lightning would put them one step
        # before the optimizer step they measure (a preview of the same weights shows that one).
        self.log_dict({**values, "step": float(self.global_step)}, sync_dist=True)

    @override
    def on_validation_end(self) -> None:
        # Lightning has written this validation's metrics by now: put them on disk, so a run
        # killed after it still shows them.
        tb = self._tensorboard()
        if tb is not None:
            tb.flush()

    @override
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step = self.global_step
        if self.preview is not None and (step == 1 or step % self.preview_every_n_steps == 0):
            self.log_preview(step)

    def log_preview(self, step: int) -> None:
        log_preview(self, step)

    def sample_grid(self) -> torch.Tensor:
        """One image: the preview photos on top, stylized below (a row per painting), the style
        image on the left."""
        return sample_grid(self)

    def _tensorboard(self):
        logger = self.logger
        if logger is None or not hasattr(logger.experiment, "add_image") or self.global_rank != 0:
            return None
        return logger.experiment

    @override
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(
            params=[p for p in self.net.parameters() if p.requires_grad])
        if self.scheduler_factory is None:
            return optimizer
        # Stepped after every optimizer step; Lightning saves and resumes its state.
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def model_meta(self) -> dict[str, Any]:
        """What a model file needs beside the weights: architecture, style, loss network."""
        vgg = self.loss.vgg
        keys = ("name", "sha256", "image")
        meta = {
            "arch": self.net.config(),
            "style": {k: self.style[k] for k in keys if k in self.style},
            "loss_network": {"weights": getattr(vgg, "weights_name", None),
                             "input_convention": vgg.input_convention},
        }
        if self.paintings:  # in table order: row k of every norm is paintings[k]
            meta["paintings"] = [{k: p[k] for k in keys if k in p}
                                 for p in [*self.frozen_paintings, *self.paintings]]
        return meta

    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("loss.")
        }
        checkpoint["stylenet"] = self.model_meta()

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Put back what on_save_checkpoint left out, as it is now (the loss network from its
        # config, the style targets until on_fit_start recomputes them), so that loading stays
        # strict for the transformer's own keys.
        own = {k: v for k, v in self.state_dict().items() if k.startswith("loss.")}
        checkpoint["state_dict"] = {**own, **checkpoint["state_dict"]}
