"""The module's speed switches: what "auto" resolves to, and that every switch keeps the math."""

import copy
import math

import hydra
import pytest
import torch

from stylenet.losses import PerceptualLoss
from stylenet.module import COMPILE_MIN_STEPS, StyleTransferModule
from stylenet.transformer import TransformerNet
from stylenet.vgg import VGGFeatures


@pytest.fixture(scope="module")
def loss():
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights="random")
    loss = PerceptualLoss(vgg)
    loss.set_style(torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    return loss


def make(loss, **switches) -> StyleTransferModule:
    torch.manual_seed(0)
    return StyleTransferModule(
        TransformerNet((4, 8, 8), num_residual=1), copy.deepcopy(loss), torch.optim.Adam,
        style={"image": "unused.png", "name": "test"}, **switches,
    )


def test_auto_switches_are_off_on_cpu(loss):
    module = make(loss)
    module.apply_speedups("cpu")
    assert module.channels_last is False and module.compile is False
    assert module.net.conv1.conv.weight.is_contiguous()
    assert module.net._compiled_call_impl is None


def test_auto_switches_are_on_for_cuda_and_keep_the_state_dict(loss):
    module = make(loss)
    keys = list(module.state_dict())
    module.apply_speedups("cuda")  # converts and marks for compile; compiles on the first call
    assert module.channels_last is True and module.compile is True
    assert module.net.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert module.loss.vgg.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert module.net._compiled_call_impl is not None
    assert module.loss._compiled_call_impl is not None
    # checkpoints and model files look the same with and without compile
    assert list(module.state_dict()) == keys


def test_auto_compile_waits_for_a_run_long_enough_to_pay_it_back(loss):
    short = make(loss)
    short.apply_speedups("cuda", steps=2000)  # a 2000-step run is never slower for compiling
    assert short.channels_last is True and short.compile is False
    assert short.net._compiled_call_impl is None
    long = make(loss)
    long.apply_speedups("cuda", steps=COMPILE_MIN_STEPS)
    assert long.compile is True and long.net._compiled_call_impl is not None
    forced = make(loss, compile=True)
    forced.apply_speedups("cuda", steps=10)
    assert forced.compile is True


def test_setup_passes_the_runs_length(cfg_train, monkeypatch):
    from train import train

    seen = []
    original = StyleTransferModule.apply_speedups
    monkeypatch.setattr(StyleTransferModule, "apply_speedups",
                        lambda self, device, steps=math.inf: seen.append((device, steps))
                        or original(self, device, steps))
    train(cfg_train("trainer.max_steps=3", "trainer.max_epochs=-1", "model=small",
                    "data.dataset.image_size=32", "style.size=32"))
    assert seen == [("cpu", 3)]


def test_explicit_false_is_the_naive_path_even_on_cuda(loss):
    module = make(loss, channels_last=False, compile=False)
    module.apply_speedups("cuda")
    assert module.net.conv1.conv.weight.is_contiguous()
    assert module.net._compiled_call_impl is None


def test_channels_last_gives_the_same_losses_and_gradients(loss):
    images = torch.randint(0, 256, (2, 3, 24, 24), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    results = []
    for channels_last in (False, True):
        module = make(loss, channels_last=channels_last, compile=False)
        module.apply_speedups("cpu")
        terms = module.losses(images)
        terms["total"].backward()
        results.append((terms, {n: p.grad for n, p in module.net.named_parameters()}))
    (a, ga), (b, gb) = results
    for k in ("content", "style", "total"):
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=0)
    largest = max(g.abs().max() for g in ga.values())
    for name, grad in ga.items():
        if grad.abs().max() < 1e-6 * largest:
            # A bias right before an instance norm has a zero gradient (the norm subtracts the
            # mean): what is computed there is rounding noise, different in every layout.
            continue
        # Pixels in 0..255 give conv1's output a large mean that the norm subtracts: float32
        # cancellation leaves differences of ~1e-4 of the largest gradient between layouts.
        torch.testing.assert_close(grad, gb[name], rtol=1e-3, atol=1e-3 * grad.abs().max().item(),
                                   msg=name)


def test_default_optimizer_is_fused_and_the_naive_model_is_not(cfg_train):
    param = [torch.nn.Parameter(torch.zeros(3))]
    fast = cfg_train()
    naive = cfg_train("model=naive", "trainer=gpu_naive")
    assert hydra.utils.instantiate(fast.model.optimizer)(params=param).defaults["fused"] is True
    assert hydra.utils.instantiate(naive.model.optimizer)(params=param).defaults["fused"] is False
    assert fast.model.channels_last is None and fast.model.compile is None  # auto
    assert naive.model.channels_last is False and naive.model.compile is False
    assert naive.trainer.precision == "32-true" and naive.trainer.accelerator == "gpu"
    assert cfg_train("trainer=gpu", fast=False).trainer.precision == "bf16-mixed"
