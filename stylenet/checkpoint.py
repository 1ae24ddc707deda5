"""Checkpoints that survive crashes, and a guard that stops a run before a NaN step is applied.

- AtomicCheckpointIO: Lightning's checkpoint writer, with the file synced to disk before it is
  renamed over the old one (wired in through `trainer.plugins`, configs/trainer/default.yaml).
- FiniteGuard: checks every step's loss and gradients before the optimizer applies them; on NaN
  or inf it saves the last good state and stops with a message naming the step and the cause.
- SkippedFilesCount: carries the module's count of skipped photos across a resume.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from typing_extensions import override

from stylenet.image import atomic_write

log = logging.getLogger(__name__)

# The reference recipe's style weight; far above it is the usual way to make the loss overflow.
REFERENCE_STYLE_WEIGHT = 1e10


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, fsync, rename, fsync the folder.

    Lightning's own writer already renames a finished file into place, so a kill -9 during a
    save leaves the old checkpoint; it does not sync, so after a power cut or a preempted VM the
    renamed file can come back empty, and that is what a resume would load. Remote paths
    (s3://, ...) keep Lightning's writer."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (local files only)")
        with atomic_write(path) as f:
            torch.save(checkpoint, f)


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or inf loss or gradient; the message says where and why."""


def checkpoint_dir(trainer: pl.Trainer) -> Path:
    """Where this run's checkpoints go: the ModelCheckpoint's folder, else <root>/checkpoints."""
    callback = trainer.checkpoint_callback
    if callback is not None and getattr(callback, "dirpath", None):
        return Path(callback.dirpath)
    return Path(trainer.default_root_dir) / "checkpoints"


class FiniteGuard(pl.Callback):
    """Stops training at the first step whose loss or gradients are NaN or inf, before the
    optimizer applies it, after saving the state of the last good step as `filename` (last.ckpt,
    so `ckpt_path=last` resumes from it). The data position saved with it is past the bad batch.

    Lightning's detect_anomaly finds where a NaN came from, at a large cost on every step, and
    gradient clipping hides an inf rather than stopping; neither keeps the last good state.
    Under fp16 (a GradScaler is active) inf gradients are normal, skipped steps, so only the
    loss itself is checked there."""

    def __init__(self, filename: str = "last.ckpt"):
        self.filename = filename
        self._loss: torch.Tensor | None = None

    @override
    def on_before_backward(self, trainer, pl_module, loss: torch.Tensor) -> None:
        self._loss = loss.detach()

    @override
    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        loss, self._loss = self._loss, None
        bad_loss = loss is not None and not bool(torch.isfinite(loss).all())
        bad_grads = False
        if getattr(trainer.precision_plugin, "scaler", None) is None and not bad_loss:
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            # One norm over all gradients: inf or NaN if any element is; one sync per step.
            norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            bad_grads = not bool(torch.isfinite(norm))
        bad = bad_loss or bad_grads
        if trainer.world_size > 1:  # every rank must stop, and save, together
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        path = checkpoint_dir(trainer) / self.filename
        trainer.save_checkpoint(path)  # weights and optimizer are still those of the last good step
        raise NonFiniteLossError(self.message(trainer, pl_module, optimizer, loss, bad_loss, path))

    @staticmethod
    def message(trainer, pl_module, optimizer, loss, bad_loss: bool, path: Path) -> str:
        step = trainer.global_step + 1
        value = float(loss) if loss is not None else float("nan")
        what = f"the loss is {value}" if bad_loss else "the gradients hold NaN or inf"
        terms = ", ".join(
            f"{k}={float(v):.3g}" for k, v in sorted(trainer.callback_metrics.items())
            if k.startswith("train/")
        )
        return (
            f"training stopped at step {step}: {what}{f' ({terms})' if terms else ''}. "
            f"Likely cause: {likely_cause(trainer, pl_module, optimizer, bad_loss)}. "
            f"The last good state (step {step - 1}) is saved in {path}; no model file was "
            f"written. Fix the setting, then resume with ckpt_path={path}"
        )


def likely_cause(trainer, pl_module, optimizer, bad_loss: bool) -> str:
    precision = str(trainer.precision)
    if "16" in precision and "bf16" not in precision:
        return (f"fp16 overflow (trainer.precision={precision}): use trainer.precision=bf16-mixed "
                "or 32-true")
    style_weight = float(getattr(pl_module, "style", {}).get("style_weight", 0) or 0)
    if style_weight > 100 * REFERENCE_STYLE_WEIGHT:
        return (f"style.style_weight={style_weight:g} is far above the reference "
                f"{REFERENCE_STYLE_WEIGHT:g}: lower it")
    lr = optimizer.param_groups[0].get("lr", math.nan)
    if not bad_loss:
        return (f"exploding gradients: near-constant photos (raise data.dataset.min_std) or a "
                f"learning rate too high (model.optimizer.lr={lr:g})")
    return (f"a loss weight too high (style.style_weight={style_weight:g}) or a learning rate "
            f"too high (model.optimizer.lr={lr:g})")


class SkippedFilesCount(pl.Callback):
    """Keeps the module's running count of skipped photos (data/skipped_files) across a resume:
    the resumed loader already knows those files, so they are not found and counted again."""

    key = "stylenet_skipped_files"

    @override
    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        checkpoint[self.key] = int(getattr(pl_module, "skipped_files", 0))

    @override
    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        if self.key in checkpoint and hasattr(pl_module, "skipped_files"):
            pl_module.skipped_files = int(checkpoint[self.key])
