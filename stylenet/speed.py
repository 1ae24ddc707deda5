"""The training speed switches (model.channels_last, model.compile): what null ("auto") resolves
to for the device a run trains on, its length and its transformer's size. The module applies
them (StyleTransferModule.apply_speedups); none changes what the nets compute."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from torch import nn

from stylenet.transformer import macs_per_pixel

log = logging.getLogger(__name__)

# compile=None compiles on CUDA only for runs at least this long. A prediction, not yet measured
# (benchmarks/NOTES.md, "Training"): compiling both nets from an empty cache takes 40-80 s on an
# H100 and saves 3-6 ms a step, so it pays back after roughly 7,000-25,000 steps. A 2000-step run
# stays eager (never slower for compiling); the paper's two COCO epochs (41,000 steps) compile.
COMPILE_MIN_STEPS = 10_000
# On the CPU (a 2-core Xeon, benchmarks/NOTES.md, "The CPU training step"): compiling the
# transformer (inductor's C++ kernels fuse its padding, norms and ReLUs) saves 0.74 s of its 2.3 s
# forward and backward at 256 px crops, batch 4 (the paper's net: 40 G multiply-adds a step
# forward), 65 ms at 128 px (10 G) and nothing on the lite and small nets, for a warm-up of
# 35-95 s. So compile=None compiles it on the CPU only where it pays back quickly: a forward of
# at least CPU_COMPILE_MIN_MACS a step, for at least CPU_COMPILE_MIN_STEPS steps. The loss
# network stays eager there (compiled: 0.1 s a step for ~20 s of warm-up per graph).
CPU_COMPILE_MIN_MACS = 20e9
CPU_COMPILE_MIN_STEPS = 200


@dataclass(frozen=True)
class Switches:
    channels_last: bool  # the transformer's layout
    compile: bool  # the transformer compiled
    loss_channels_last: bool  # the loss network's layout
    compile_loss: bool  # the loss network compiled


def resolve(channels_last: bool | None, compile: bool | None, device_type: str,
            steps: float, forward_macs: float) -> Switches:
    """The switches as given (None: auto) for a run of `steps` optimizer steps on `device_type`
    whose transformer forward takes `forward_macs` multiply-adds a step. On CUDA: both nets in
    channels_last, compiled for runs of COMPILE_MIN_STEPS or more. On the CPU: the loss network
    in channels_last (1.35x faster there; the transformer is slower in it), the transformer
    compiled where CPU_COMPILE_MIN_MACS and CPU_COMPILE_MIN_STEPS say it pays back. True or
    False sets both nets."""
    on_cuda, on_cpu = device_type == "cuda", device_type == "cpu"
    loss_layout = on_cuda or on_cpu if channels_last is None else channels_last
    compile_loss = on_cuda and steps >= COMPILE_MIN_STEPS if compile is None else compile
    layout = on_cuda if channels_last is None else channels_last
    if compile is not None:
        compiled = compile
    elif on_cpu:
        compiled = forward_macs >= CPU_COMPILE_MIN_MACS and steps >= CPU_COMPILE_MIN_STEPS
    else:
        compiled = on_cuda and steps >= COMPILE_MIN_STEPS
        if on_cuda and not compiled:
            log.info("compile: off for a %d-step run, shorter than the %d steps compiling takes "
                     "to pay back its warm-up (model.compile=true forces it)", steps,
                     COMPILE_MIN_STEPS)
    return Switches(layout, compiled, loss_layout, compile_loss)


def forward_macs(net: nn.Module, datamodule) -> float:
    """The transformer's multiply-adds in one training step's forward, from the datamodule's
    batch size and crop size (0 when it does not say them)."""
    batch = getattr(datamodule, "batch_size", None)
    crop = getattr(getattr(datamodule, "dataset", None), "image_size", None)
    if not batch or not crop:
        return 0.0
    return macs_per_pixel(net, 32) * batch * crop**2
