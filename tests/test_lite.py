"""model=lite: within the issue's cost, trained by train(cfg), and taken by every inference path
(Stylizer in PyTorch and in ONNX Runtime, tiles, video, the ONNX and TorchScript exports)."""

from pathlib import Path

import pytest
from test_infer import cfg as infer_cfg
from test_stylize import psnr, smooth_image

from infer import infer
from stylenet.export import export
from stylenet.model_file import load_model
from stylenet.stylize import Stylizer
from stylenet.transformer import macs_per_pixel
from train import train

MAX_MACS = 15_000  # multiply-adds per pixel: the published small nets' 12-15k


@pytest.fixture(scope="module")
def lite_file(tmp_path_factory):
    """A lite model file as train(cfg) writes it (2 steps: the weights do not matter here)."""
    from conftest import compose_train

    tmp = tmp_path_factory.mktemp("lite")
    cfg = compose_train(tmp, ["model=lite", "trainer.max_steps=2", "trainer.max_epochs=-1",
                              "data.dataset.image_size=32"])
    return Path(train(cfg)["model_path"])


def test_the_lite_net_is_the_config_and_within_the_cost(lite_file):
    net, meta = load_model(lite_file)
    assert meta["arch"]["channels"] == [4, 8, 32] and meta["arch"]["edge_kernel"] == 5
    assert net.conv1.conv.kernel_size == (5, 5) and len(net.res) == 5
    assert macs_per_pixel(net) <= MAX_MACS


def test_every_inference_path_takes_a_lite_model(lite_file, tmp_path):
    x = smooth_image(100, 76)
    ref = Stylizer(lite_file, device="cpu", backend="torch")(x)
    assert ref.shape == x.shape
    fast = Stylizer(lite_file, device="cpu")
    assert fast.backend == "onnx" and (fast(x) - ref).abs().max() < 1e-5
    tiled = Stylizer(lite_file, device="cpu", tile=48, overlap=24)(x)
    assert psnr(tiled, ref) >= 40
    for fmt in ("onnx", "torchscript"):  # export() checks the file against PyTorch itself
        assert export(lite_file, fmt, tmp_path / f"lite.{fmt}").is_file()

    av = pytest.importorskip("av")
    from test_video import make_video

    src = tmp_path / "clip.mp4"
    make_video(src)
    (dst,) = infer(infer_cfg(model=lite_file, input=src, output=tmp_path / "styled.mp4"))
    with av.open(str(dst)) as res:
        frames = list(res.decode(video=0))
    assert len(frames) == 3 and (frames[0].height, frames[0].width) == (32, 48)
