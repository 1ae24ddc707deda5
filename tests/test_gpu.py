"""Checks that need CUDA (skipped without it): the GPU training path and GPU inference."""

import math

import pytest
import torch

from stylenet.model_file import save_model
from stylenet.stylize import Stylizer
from stylenet.transformer import TransformerNet
from train import train

pytestmark = pytest.mark.gpu


def test_bf16_training_steps_on_the_gpu(cfg_train):
    # trainer=gpu: bf16-mixed, channels_last and compile switched on for CUDA by default
    cfg = cfg_train("trainer=gpu", "trainer.max_steps=3", "trainer.max_epochs=-1")
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
