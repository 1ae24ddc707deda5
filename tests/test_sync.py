"""The training step never waits for the device in the common case: a host sync
(`aten._local_scalar_dense`, what .item(), bool() and int() of a tensor run) stalls the GPU's
queue every step. Counted here on the CPU, where the same calls happen."""

import torch
from pytorch_lightning import Callback
from torch.utils._python_dispatch import TorchDispatchMode

from train import train


class CountSyncs(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._local_scalar_dense.default:
            self.calls += 1
        return func(*args, **(kwargs or {}))


class CountInSteps(Callback):
    """Counts during steps 2..5: not the first (previews, style targets), no logging or finite
    check step (every 50)."""

    def __init__(self):
        self.mode = None
        self.counts = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if 2 <= trainer.global_step <= 5:
            self.mode = CountSyncs()
            self.mode.__enter__()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if self.mode is not None:
            self.mode.__exit__(None, None, None)
            self.counts.append(self.mode.calls)
            self.mode = None


def test_a_training_step_has_no_host_sync(cfg_train):
    count = CountInSteps()
    train(cfg_train("trainer.max_steps=7", "model.net.channels=[8,16,32]",
                    "model.net.num_residual=1"), extra_callbacks=[count])
    assert count.counts == [0, 0, 0, 0]
