"""benchmarks/gpu_check.py's training rows: train(cfg) to the first checkpoints, then resumed
with ckpt_path=last, each checked against the fast path the product resolves for the device."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import pytorch_lightning as pl
import torch

if TYPE_CHECKING:
    from gpu_check import Context


class Observe(pl.Callback):
    """What a training run really did: the precision, the resolved speed switches and the
    memory layout of both nets at the start, and the loss of every step."""

    def __init__(self):
        self.seen: dict = {}
        self.losses: list[float] = []

    def on_train_start(self, trainer, module):
        cl = torch.channels_last
        self.seen = {
            "start_step": trainer.global_step, "precision": trainer.precision,
            "device": module.device.type, "channels_last": module.channels_last,
            "compile": module.compile,
            "net_nhwc": module.net.conv1.conv.weight.is_contiguous(memory_format=cl),
            "vgg_nhwc": module.loss.vgg.features[0].weight.is_contiguous(memory_format=cl),
        }

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def expected_path(device: torch.device) -> dict:
    """The fast path as the product resolves it for this check's short run: bf16 autocast and
    channels_last on CUDA, eager (compile waits for runs of COMPILE_MIN_STEPS; bench.py times
    the compiled path); on the CPU fp32, eager, the transformer in NCHW and the loss network in
    NHWC (faster there: benchmarks/NOTES.md, "The CPU training step")."""
    cuda = device.type == "cuda"
    return {"precision": "bf16-mixed" if cuda else "32-true", "device": device.type,
            "channels_last": cuda, "compile": False, "net_nhwc": cuda,
            "vgg_nhwc": cuda or device.type == "cpu"}


def run_training(ctx: Context, max_steps: int, resume: bool) -> tuple[dict, Observe]:
    from stylenet.config import compose_train
    from train import train

    overrides = [*ctx.train_overrides(), f"trainer.max_steps={max_steps}"]
    if resume:
        overrides.append("ckpt_path=last")
    observe = Observe()
    cfg = compose_train(overrides, ctx.run_dir)
    return train(cfg, extra_callbacks=[observe]), observe


def check_path(observe: Observe, device: torch.device) -> list[str]:
    want = expected_path(device)
    return [f"{k}={observe.seen.get(k)} (want {v})" for k, v in want.items()
            if observe.seen.get(k) != v]


def row_train(ctx: Context) -> tuple[bool, str]:
    s = ctx.s
    metrics, observe = run_training(ctx, s.first_steps, resume=False)
    problems = check_path(observe, ctx.device)
    last = ctx.run_dir / "checkpoints" / "last.ckpt"
    if metrics["global_step"] != s.first_steps:
        problems.append(f"global_step={metrics['global_step']} (want {s.first_steps})")
    if not last.is_file():
        problems.append(f"no {last}")
    elif (step := torch.load(last, weights_only=True)["global_step"]) != s.first_steps:
        problems.append(f"last.ckpt at step {step} (want {s.first_steps})")
    losses = observe.losses
    if not losses or not all(math.isfinite(v) for v in losses):
        problems.append("non-finite loss")
    k = max(1, len(losses) // 10)
    first, final = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if s.falls and not final < first:
        problems.append(f"loss did not fall ({first:.3g} -> {final:.3g})")
    seen = observe.seen
    detail = (f"{s.first_steps} steps {seen.get('precision')} channels_last="
              f"{seen.get('channels_last')} compile={seen.get('compile')}, loss {first:.3g} -> "
              f"{final:.3g}")
    return not problems, "; ".join(problems) or detail


def row_resume(ctx: Context) -> tuple[bool, str]:
    from stylenet.model_file import load_model

    s = ctx.s
    metrics, observe = run_training(ctx, s.steps, resume=True)
    problems = check_path(observe, ctx.device)
    if observe.seen.get("start_step") != s.first_steps:
        problems.append(f"resumed at step {observe.seen.get('start_step')} (want "
                        f"{s.first_steps})")
    if metrics["global_step"] != s.steps:
        problems.append(f"global_step={metrics['global_step']} (want {s.steps})")
    model = metrics.get("model_path")
    if not model or not Path(model).is_file():
        problems.append("no model file written")
    else:
        load_model(model)  # weights_only, validated
        ctx.model = Path(model)
    detail = (f"ckpt_path=last: step {observe.seen.get('start_step')} -> "
              f"{metrics['global_step']}, {len(observe.losses)} steps run, model.pt written")
    return not problems, "; ".join(problems) or detail
