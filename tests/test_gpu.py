"""Checks that need CUDA (skipped without it): the GPU training path and GPU inference."""

import math
import sys

import pytest
import torch
from conftest import ROOT

from stylenet.model_file import save_model, zoo_names
from stylenet.stylize import Stylizer
from stylenet.transformer import TransformerNet
from train import train

sys.path.insert(0, str(ROOT / "benchmarks"))
from zoo import heldout  # noqa: E402

pytestmark = pytest.mark.gpu


def test_bf16_training_steps_on_the_gpu(cfg_train):
    # trainer=gpu: bf16-mixed and channels_last on CUDA by default; compile forced on, since a
    # 3-step run is shorter than COMPILE_MIN_STEPS and would stay eager
    cfg = cfg_train("trainer=gpu", "trainer.max_steps=3", "trainer.max_epochs=-1",
                    "model.compile=true")
    metrics = train(cfg)
    assert metrics["global_step"] == 3
    assert all(math.isfinite(metrics[k]) for k in ("train/content", "train/style"))


def test_gpu_inference_matches_the_cpu(tmp_path):
    torch.manual_seed(0)
    net = TransformerNet(channels=(8, 16, 32), num_residual=2)
    model = save_model(tmp_path / "m.pt", net, {"arch": net.config()})
    photo = torch.rand(3, 67, 93)
    cpu = Stylizer(model, device="cpu", precision="fp32")(photo)
    gpu = Stylizer(model, device="cuda", precision="fp32")(photo)
    mse = torch.mean((cpu - gpu.cpu()) ** 2).item()
    assert mse == 0 or -10 * math.log10(mse) >= 50


# A shipped model on the GPU in Stylizer's defaults (bf16 autocast, channels_last) against fp32
# on the CPU: bf16 keeps 8 significant bits, so outputs differ by rounding the fp32 path does not
# have. The same comparison under CPU bf16 autocast measured 45 dB on an untrained net at 256 px
# (benchmarks/NOTES.md); a GPU result well below that means a path computes more in bf16 than
# autocast should. 38 dB leaves 7 dB for a trained model's larger contrasts (not yet measured on
# one: no model ships yet, so the test has no case).
BF16_PSNR_DB = 38.0


@pytest.mark.parametrize("name", zoo_names())
def test_a_shipped_model_on_the_gpu_in_the_defaults_matches_fp32(name):
    photo = heldout()["chelsea"]
    fp32 = Stylizer(name, device="cpu", precision="fp32")(photo)
    gpu = Stylizer(name, device="cuda")  # the defaults: bf16 autocast, channels_last
    assert gpu.dtype == torch.bfloat16
    out = gpu(photo).cpu()
    assert out.shape == fp32.shape
    mse = torch.mean((out - fp32) ** 2).item()
    assert -10 * math.log10(mse) >= BF16_PSNR_DB
