"""Training callbacks, configured in configs/callbacks/:

- FiniteGuard: keeps a finite flag of every step's loss and gradients on the device, drops a bad
  update there, and every N steps stops a run that had one, naming the step and the cause.
- SkippedFiles: logs how many training photos were found unusable (data/skipped_files).
- ModelFile: at the end of fit, writes the self-contained model file and a stylized sample.
- StepCheckpoint: Lightning's ModelCheckpoint, its `{step}` the step the checkpoint holds.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from typing_extensions import override

from stylenet.image import save_atomic, to_pil
from stylenet.model_file import save_model

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss or gradient; the message says where and why."""


def checkpoint_dir(trainer: pl.Trainer) -> Path:
    """Where this run's checkpoints go: the ModelCheckpoint's folder, else <root>/checkpoints."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


class StepCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose `{step}` in the file name is the optimizer step the checkpoint holds.
    The module logs a "step" metric at each validation (the x of its points in TensorBoard), and
    ModelCheckpoint takes a logged "step" over the trainer's: a step checkpoint, saved before
    that step's validation, would be named after the previous validation's step."""

    @override
    def _monitor_candidates(self, trainer: pl.Trainer) -> dict[str, torch.Tensor]:
        candidates = super()._monitor_candidates(trainer)
        candidates["step"] = torch.tensor(trainer.global_step)
        return candidates


class FiniteGuard(pl.Callback):
    """Stops training at the first step whose loss or gradients are NaN or inf, without letting
    the optimizer apply them: saves the state as `filename` (last.ckpt, for `ckpt_path=last`) and
    stops with a message naming the step and the likely cause. The finite flag stays on the
    device (the bad update is dropped there) and is read every `every_n_steps` steps; under fp16
    only the loss is checked. Why this design: docs/ARCHITECTURE.md, "Non-finite steps"."""

    def __init__(self, filename: str = "last.ckpt", every_n_steps: int = 50):
        if every_n_steps < 1:
            raise ValueError(f"callbacks.finite_guard.every_n_steps={every_n_steps}: use 1 or more")
        self.filename = filename
        self.every_n_steps = every_n_steps
        self._loss: torch.Tensor | None = None
        self._first_bad: torch.Tensor | None = None  # step number of the first bad step, or -1
        self._bad_loss: torch.Tensor | None = None  # that step's loss

    @override
    def on_train_start(self, trainer, pl_module) -> None:
        self._first_bad = torch.full((), -1, dtype=torch.long, device=pl_module.device)
        self._bad_loss = torch.zeros((), device=pl_module.device)

    @override
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss, self._loss = self._loss, None
        step = trainer.global_step + 1
        finite = torch.isfinite(loss).all() if loss is not None else torch.ones((), dtype=bool)
        if getattr(trainer.precision_plugin, "scaler", None) is None:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            if grads:  # one norm over all gradients: inf or NaN if any element is
                finite = finite & torch.isfinite(torch.nn.utils.get_total_norm(grads))
                if getattr(optimizer, "_step_supports_amp_scaling", False):
                    # Fused Adam skips the whole update (and its step count) on the device
                    # where found_inf is 1, as under a GradScaler.
                    optimizer.found_inf = (~finite).float()
                else:
                    for g in grads:  # plain Adam then moves on its momentum alone
                        g.masked_fill_(~finite, 0.0)
        new = (self._first_bad < 0) & ~finite
        self._first_bad = torch.where(new, step, self._first_bad)
        if loss is not None:
            self._bad_loss = torch.where(new, loss.float(), self._bad_loss)
        if step % self.every_n_steps == 0:
            self._check(trainer, pl_module, optimizer, last_good=step - 1)

    @override
    def on_train_end(self, trainer, pl_module) -> None:
        self._check(trainer, pl_module, trainer.optimizers[0], last_good=trainer.global_step)

    def _check(self, trainer, pl_module, optimizer, last_good: int) -> None:
        first_bad = int(self._first_bad)  # the one host sync, every every_n_steps steps
        if trainer.world_size > 1:  # every rank must stop, and save, together
            any_bad = trainer.strategy.reduce_boolean_decision(first_bad >= 0, all=False)
            if any_bad and first_bad < 0:
                first_bad = last_good + 1  # another rank's step was bad
        if first_bad < 0:
            return
        path = checkpoint_dir(trainer) / self.filename
        trainer.save_checkpoint(path)  # finite weights: the bad steps' updates were dropped
        raise NonFiniteLossError(self.message(trainer, pl_module, optimizer, first_bad,
                                              float(self._bad_loss), last_good, path))

    @staticmethod
    def message(trainer, pl_module, optimizer, bad_step: int, loss: float, last_good: int,
                path: Path) -> str:
        bad_loss = not math.isfinite(loss)
        what = f"the loss is {loss}" if bad_loss else "the gradients hold NaN or inf"
        terms = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k.startswith("train/")}
        shown = ", ".join(f"{k}={v:.3g}" for k, v in sorted(terms.items()))
        state = ("the last good state" if last_good == bad_step - 1 else
                 "the state with finite weights (the bad steps' updates were dropped)")
        return (
            f"training stopped at step {bad_step}: {what}{f' ({shown})' if shown else ''}. "
            f"Likely cause: {likely_cause(trainer, pl_module, optimizer, bad_loss, terms)}. "
            f"{state[0].upper()}{state[1:]} (step {last_good}) is saved in {path}; no model "
            f"file was written. Fix the setting, then resume with ckpt_path={path}"
        )


def likely_cause(trainer, pl_module, optimizer, bad_loss: bool, terms: dict[str, float]) -> str:
    precision = str(trainer.precision)
    if "16" in precision and "bf16" not in precision:
        return (f"fp16 overflow (trainer.precision={precision}): use trainer.precision=bf16-mixed "
                "or 32-true")
    style_weight = pl_module.loss.style_weight
    style, content = terms.get("train/style", 0.0), terms.get("train/content", 0.0)
    # At the reference balance the style term is a few times the content term, not thousands.
    if math.isfinite(content) and content > 0 and not style <= 1000 * content:
        return (f"style.style_weight={style_weight:g} is far above the content term (style "
                f"{style:.3g}, content {content:.3g}; a few times more is usual): lower it")
    lr = optimizer.param_groups[0].get("lr", math.nan)
    if not bad_loss:
        return (f"exploding gradients: near-constant photos (raise data.dataset.min_std) or a "
                f"learning rate too high (model.optimizer.lr={lr:g})")
    return (f"a loss weight too high (style.style_weight={style_weight:g}) or a learning rate "
            f"too high (model.optimizer.lr={lr:g})")


class SkippedFiles(pl.Callback):
    """Logs data/skipped_files: the photos the dataset has flagged unusable so far. The flags
    live in the dataset (shared by loader workers, saved with the loader's position), so this
    reads a CPU count and never waits for the GPU."""

    def __init__(self, every_n_steps: int = 50):
        self.every_n_steps = every_n_steps
        self._last = -1

    @override
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        count = skipped_files(trainer.datamodule)
        if count != self._last or trainer.global_step % self.every_n_steps == 0:
            pl_module.log("data/skipped_files", float(count), on_step=True, batch_size=1)
            self._last = count


def skipped_files(datamodule) -> int:
    dataset = getattr(datamodule, "dataset", None)
    return len(dataset.bad_indices()) if hasattr(dataset, "bad_indices") else 0


class ModelFile(pl.Callback):
    """At the end of fit: `filename` (the model file: weights, architecture, style, loss network,
    resolved config) and `sample` (preview photos above their stylized versions, the style image
    on the left) in the run folder. Nothing is written after fast_dev_run or when a final metric
    is not finite. `written` maps model_path / sample_path to what was written."""

    def __init__(self, filename: str = "model.pt", sample: str | None = "sample.jpg"):
        self.filename = filename
        self.sample = sample
        self.written: dict[str, str] = {}

    @override
    def on_fit_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero or trainer.fast_dev_run:
            return
        bad = [k for k, v in trainer.callback_metrics.items() if not torch.isfinite(v).all()]
        if bad:
            log.error("metrics %s are not finite: no model file written", bad)
            return
        out = Path(trainer.default_root_dir)
        model = save_model(out / self.filename, pl_module.net, pl_module.model_meta(),
                           config=pl_module.run_config)
        self.written["model_path"] = str(model)
        log.info("model file: %s", model)
        if self.sample and pl_module.preview is not None:
            sample = save_atomic(to_pil(pl_module.sample_grid()), out / self.sample, quality=92)
            self.written["sample_path"] = str(sample)
            log.info("stylized sample: %s", sample)


def written_files(trainer: pl.Trainer) -> dict[str, Any]:
    return {k: v for cb in trainer.callbacks if isinstance(cb, ModelFile)
            for k, v in cb.written.items()}
