"""benchmarks/step_profile.py's profiling parts: labels for the profiler on the transformer, the
loss network and the loss module; the convolutions' multiply-adds of one step; the profiler's
events summed into the step's parts (seconds a step, multiply-adds per second)."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.profiler import record_function

PARTS = ("data", "transformer", "loss net", "losses", "backward", "optimizer", "loop")
# The profiler's own label of the loader's next batch; the plain loop's optimizer step.
DATA_LABEL = "enumerate(DataLoader)"
OPTIMIZER_LABEL = "Optimizer.step#"


class Parts:
    """Labels the forwards of the transformer, the loss network and the loss module for the
    profiler (forward hooks that the compiler leaves out of its graphs: a compiled net keeps its
    one graph). Counts only while `on` is set."""

    def __init__(self, transformer: nn.Module, vgg: nn.Module, loss: nn.Module | None = None):
        self.on = False
        self._open: list[record_function] = []
        self.handles = []
        labelled = [(transformer, "transformer"), (vgg, "loss net")]
        if loss is not None:
            labelled.append((loss, "loss module"))
        for module, name in labelled:
            self.handles.append(module.register_forward_pre_hook(self._enter(name)))
            self.handles.append(module.register_forward_hook(self._exit))

    def _enter(self, name: str):
        @torch.compiler.disable
        def hook(module, args):
            if self.on:
                self._open.append(record_function(f"part:{name}").__enter__())
        return hook

    @torch.compiler.disable
    def _exit(self, module, args, output):
        if self.on and self._open:
            self._open.pop().__exit__(None, None, None)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def count_macs(step, transformer: nn.Module, vgg: nn.Module) -> dict[str, float]:
    """Multiply-adds of the convolutions that one call of `step` (an eager training step) runs:
    the transformer's forward, the loss network's forwards, and the backward (the input and
    weight gradients that autograd computes), by hooks removed afterwards."""
    macs = dict.fromkeys(("transformer", "loss net", "backward"), 0)

    def counter(name: str):
        def hook(conv, args, out):
            kh, kw = conv.kernel_size
            n = out.numel() * conv.in_channels // conv.groups * kh * kw
            macs[name] += n
            if torch.is_grad_enabled():
                macs["backward"] += n * (args[0].requires_grad + conv.weight.requires_grad)
        return hook

    handles = [conv.register_forward_hook(counter(name))
               for module, name in [(transformer, "transformer"), (vgg, "loss net")]
               for conv in module.modules() if isinstance(conv, nn.Conv2d)]
    try:
        step()
    finally:
        for h in handles:
            h.remove()
    return macs


def summarise(prof: torch.profiler.profile, steps: int, step_s: float, macs: dict,
              optimizer_labelled: bool = False) -> dict:
    """Seconds a step of each part (from the profiler's events over `steps` steps), and their
    multiply-adds per second (`macs`: count_macs() of one step)."""
    totals = dict.fromkeys(("data", "transformer", "loss net", "loss module", "backward",
                            "optimizer"), 0.0)
    for e in prof.events():
        name = e.name
        if name.startswith("part:"):
            totals[name[5:]] += e.cpu_time_total
        elif name.startswith(DATA_LABEL):
            totals["data"] += e.cpu_time_total
        elif name.startswith(OPTIMIZER_LABEL) and not optimizer_labelled:
            totals["optimizer"] += e.cpu_time_total
    s = {k: v / 1e6 / steps for k, v in totals.items()}
    parts = {"data": s["data"], "transformer": s["transformer"], "loss net": s["loss net"],
             "losses": max(s["loss module"] - s["loss net"], 0.0), "backward": s["backward"],
             "optimizer": s["optimizer"]}
    parts["loop"] = max(step_s - sum(parts.values()), 0.0)
    rate = {k: macs[k] / parts[k] / 1e9 if parts[k] > 0 else None for k in macs}
    return {"step_s": step_s, "parts": parts, "gmacs_per_s": rate,
            "gmacs": {k: v / 1e9 for k, v in macs.items()}}
