"""The module's speed switches: what "auto" resolves to, and that every switch keeps the math."""

import copy
import math

import hydra
import pytest
import torch

from stylenet.losses import PerceptualLoss
from stylenet.module import StyleTransferModule
from stylenet.speed import (
    COMPILE_MIN_STEPS,
    CPU_COMPILE_MIN_MACS,
    CPU_COMPILE_MIN_STEPS,
    forward_macs,
)
from stylenet.transformer import TransformerNet, macs_per_pixel
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


def test_auto_switches_on_cpu_put_the_loss_network_in_nhwc_and_compile_only_a_large_step(loss):
    module = make(loss)
    module.apply_speedups("cpu")  # no step size known: nothing to compile
    assert module.channels_last is False and module.compile is False
    assert module.net.conv1.conv.weight.is_contiguous()
    assert module.loss_channels_last is True and module.compile_loss is False
    assert module.loss.vgg.features[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert module.net._compiled_call_impl is None
    assert module.loss._compiled_call_impl is None
    small = make(loss)  # the lite net's or a 128 px step: the warm-up would not pay back
    small.apply_speedups("cpu", steps=100_000, forward_macs=CPU_COMPILE_MIN_MACS / 2)
    assert small.compile is False
    short = make(loss)
    short.apply_speedups("cpu", steps=CPU_COMPILE_MIN_STEPS - 1, forward_macs=1e12)
    assert short.compile is False
    large = make(loss)  # the paper's net on 256 px crops, a run of hundreds of steps
    large.apply_speedups("cpu", steps=CPU_COMPILE_MIN_STEPS, forward_macs=CPU_COMPILE_MIN_MACS)
    assert large.compile is True and large.net._compiled_call_impl is not None
    assert large.compile_loss is False and large.loss._compiled_call_impl is None
    off = make(loss, channels_last=False, compile=False)
    off.apply_speedups("cpu", steps=100_000, forward_macs=1e12)
    assert off.loss.vgg.features[0].weight.is_contiguous() and off.net._compiled_call_impl is None


def test_the_datamodule_gives_the_transformers_multiply_adds_a_step(loss):
    module = make(loss)
    data = type("Data", (), {"batch_size": 4, "dataset": type("D", (), {"image_size": 256})()})
    per_pixel = macs_per_pixel(module.net, 64)
    assert forward_macs(module.net, data()) == pytest.approx(per_pixel * 4 * 256**2, rel=1e-6)
    assert forward_macs(module.net, None) == 0.0
    paper = StyleTransferModule(TransformerNet(), copy.deepcopy(loss), torch.optim.Adam,
                                style={"image": "unused.png", "name": "test"})
    assert forward_macs(paper.net, data()) >= CPU_COMPILE_MIN_MACS  # the run compiles


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


def test_setup_passes_the_runs_length_and_step_size(cfg_train, monkeypatch):
    from train import train

    seen = []
    original = StyleTransferModule.apply_speedups
    monkeypatch.setattr(StyleTransferModule, "apply_speedups",
                        lambda self, device, steps=math.inf, macs=0.0:
                        seen.append((device, steps, macs)) or original(self, device, steps, macs))
    cfg = cfg_train("trainer.max_steps=3", "trainer.max_epochs=-1", "model=small",
                    "data.dataset.image_size=32", "style.size=32")
    train(cfg)
    small = TransformerNet(tuple(cfg.model.net.channels), cfg.model.net.num_residual)
    macs = macs_per_pixel(small, 32) * cfg.data.batch_size * 32**2
    assert seen == [("cpu", 3, pytest.approx(macs))]


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


def test_the_cpu_speed_switches_keep_the_losses_of_a_fixed_batch():
    """What a long CPU run resolves to (the transformer compiled by inductor, the loss network
    in NHWC) computes the losses of today's eager NCHW step to 1e-4, and its gradients."""
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights="random")
    perceptual = PerceptualLoss(vgg, tv_weight=10.0)
    perceptual.set_style(torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0)))
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    results = []
    for switches in ({"channels_last": False, "compile": False}, {}):
        module = make(perceptual, **switches)
        module.apply_speedups("cpu", steps=10_000, forward_macs=1e12)
        terms = module.losses(images)
        terms["total"].backward()
        results.append((terms, {n: p.grad for n, p in module.net.named_parameters()}))
    assert module.compile and module.loss_channels_last  # the second run took the fast path
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # inductor compiled it
    (a, ga), (b, gb) = results
    for k in ("content", "style", "tv", "total"):
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=0, msg=k)
    largest = max(g.abs().max() for g in ga.values())
    for name, grad in ga.items():
        if grad.abs().max() < 1e-6 * largest:
            continue  # a bias before an instance norm: rounding noise (see the test above)
        # The VGG's backward in NHWC runs other conv kernels; behind the instance norms' float32
        # cancellation that leaves up to ~1.3e-3 of a parameter's largest gradient (as NHWC
        # alone does, uncompiled); a wrong term would show in the losses above.
        torch.testing.assert_close(gb[name], grad, rtol=0, atol=3e-3 * grad.abs().max().item(),
                                   msg=name)


def test_bf16_weights_take_the_uint8_batch_cast_to_their_dtype(loss):
    """trainer.precision=bf16-true (on a GPU) gives the module bf16 weights and leaves the uint8
    batch to it: the batch is cast to the weights' dtype, and a training step's losses and
    gradients come out finite (run here on the CPU, where bf16-true is refused only for speed)."""
    module = make(loss).to(torch.bfloat16)
    images = torch.randint(0, 256, (2, 3, 32, 32), generator=torch.Generator().manual_seed(1),
                           dtype=torch.uint8)
    terms = module.losses(images)
    terms["total"].backward()
    assert all(torch.isfinite(v) for v in terms.values())
    grads = [p.grad for p in module.net.parameters()]
    assert all(g is not None and g.dtype == torch.bfloat16 and torch.isfinite(g).all()
               for g in grads)
    fp32 = make(loss)
    reference = fp32.losses(images)
    # bf16 rounding only: the same step within a few per cent
    assert float(terms["total"]) == pytest.approx(float(reference["total"]), rel=0.1)
