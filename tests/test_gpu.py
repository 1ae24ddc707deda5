"""Checks that need CUDA (marked gpu, skipped without it): the GPU training path and GPU
inference; and, on the CPU, that the bar the GPU inference check uses tells bf16 rounding from a
wrong result."""

import math
import sys

import pytest
import torch
from conftest import ROOT

from stylenet.model_file import load_model, save_model, zoo_names
from stylenet.stylize import Stylizer
from stylenet.transformer import TransformerNet
from train import train

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_common import psnr  # noqa: E402
from zoo_judging import heldout  # noqa: E402


@pytest.mark.gpu
def test_bf16_training_steps_on_the_gpu(cfg_train):
    # trainer=gpu: bf16-mixed and channels_last on CUDA by default; compile forced on, since a
    # 3-step run is shorter than COMPILE_MIN_STEPS and would stay eager
    cfg = cfg_train("trainer=gpu", "trainer.max_steps=3", "trainer.max_epochs=-1",
                    "model.compile=true")
    metrics = train(cfg)
    assert metrics["global_step"] == 3
    assert all(math.isfinite(metrics[k]) for k in ("train/content", "train/style"))


@pytest.mark.gpu
def test_gpu_inference_matches_the_cpu(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(channels=(8, 16, 32), num_residual=2)
    model = save_model(tmp_path / "m.pt", net, {"arch": net.config()})
    photo = torch.rand(3, 67, 93)
    cpu = Stylizer(model, device="cpu", precision="fp32")(photo)
    gpu = Stylizer(model, device="cuda", precision="fp32")(photo)
    assert psnr(cpu, gpu.cpu()) >= 50


# A shipped model on the GPU in Stylizer's defaults (bf16 autocast, channels_last) against fp32
# on the CPU: bf16 keeps 8 significant bits, so outputs differ by rounding the fp32 path does not
# have. Measured on the CPU, starry_night on the held-out cat at 512 px: 59.6 dB under bf16
# autocast with channels_last, 59.4 dB with the whole net cast to bf16. A model whose weights are
# off by 3 % random noise, a wrong result that still looks right, scores 34-42 dB over 4 draws
# (1 %: 43-51 dB). 48 dB fails the 3 % models and leaves ~11 dB for the GPU's own kernels.
BF16_PSNR_DB = 48.0


@pytest.mark.gpu
@pytest.mark.parametrize("name", zoo_names())
def test_a_shipped_model_on_the_gpu_in_the_defaults_matches_fp32(name):
    photo = heldout()["chelsea"]
    fp32 = Stylizer(name, device="cpu", precision="fp32")(photo)
    gpu = Stylizer(name, device="cuda")  # the defaults: bf16 autocast, channels_last
    assert gpu.dtype == torch.bfloat16
    out = gpu(photo).cpu()
    assert out.shape == fp32.shape
    assert psnr(out, fp32) >= BF16_PSNR_DB


@pytest.mark.parametrize("name", zoo_names())
def test_the_bf16_bar_passes_bf16_rounding_and_fails_a_wrong_result_on_the_cpu(name):
    photo = heldout()["chelsea"]
    fp32 = Stylizer(name, device="cpu", precision="fp32", backend="torch")(photo)
    bf16 = Stylizer(name, device="cpu", precision="bf16", channels_last=True)
    assert bf16.dtype == torch.bfloat16
    assert psnr(bf16(photo), fp32) >= BF16_PSNR_DB
    net, _ = load_model(name)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(1 + 0.03 * torch.randn(p.shape, generator=gen))
        noisy = net.float()(photo[None])[0].clamp(0, 1)
    assert psnr(noisy, fp32) < BF16_PSNR_DB
