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


def test_previews_and_validation_do_not_recompile_the_training_graph(cfg_train):
    """compile on the CPU with the eager backend: graphs are traced and guarded as on a GPU, so
    a preview at another size or a validation batch under no_grad would show as a new graph."""
    from torch._dynamo.utils import counters

    class Graphs(Callback):
        after_first = None

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 1:
                self.after_first = counters["stats"]["unique_graphs"]

    torch._dynamo.reset()
    graphs = Graphs()
    metrics = train(cfg_train(
        "trainer.max_steps=6", "model.net.channels=[8,16,32]", "model.net.num_residual=1",
        "model.compile=true", "model.compile_backend=eager", "model.preview_every_n_steps=2",
        "data.preview_size=48", "trainer.val_check_interval=3", "trainer.limit_val_batches=2",
        "trainer.check_val_every_n_epoch=null", "trainer.max_epochs=-1", "data.val_size=3",
    ), extra_callbacks=[graphs])
    assert "val/total" in metrics  # validation ran
    assert graphs.after_first > 0  # the training step was compiled
    assert counters["stats"]["unique_graphs"] == graphs.after_first
