"""Many paintings, one net: conditional instance norm, the model file of several paintings,
choosing and blending paintings, tiling and ONNX per painting."""

from __future__ import annotations

import hashlib

import pytest
import torch
from models import save_tiny_model

import stylenet.model_file
from stylenet.model_file import ModelFileError, load_model, save_model
from stylenet.multi import painting_listing, painting_net, style_weights
from stylenet.stylize import Stylizer, has_onnxruntime
from stylenet.transformer import TransformerNet

NAMES = ("starry", "wave", "mosaic")


def random_norms(net: TransformerNet, seed: int = 1) -> TransformerNet:
    """Norm scales and shifts far from their identity start, different for every painting, and
    an output that spans the image range (see models.save_tiny_model)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for norm in net.norms():
            norm.weight.copy_(0.5 + torch.rand(norm.weight.shape, generator=gen))
            norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=gen))
        net.conv_out.conv.weight.mul_(net.pixel_scale / 2)
        net.conv_out.conv.bias.mul_(net.pixel_scale / 2).add_(net.pixel_scale / 2)
    return net.eval()


def multi_net(n: int = 3, channels=(4, 8, 8), seed: int = 0) -> TransformerNet:
    torch.manual_seed(seed)
    return random_norms(TransformerNet(channels, num_residual=1, num_styles=n), seed + 1)


def save_multi(path, net: TransformerNet, names=NAMES):
    paintings = [{"name": n, "sha256": hashlib.sha256(n.encode()).hexdigest(),
                  "image": f"/styles/{n}.jpg"} for n in names]
    return save_model(path, net, {"arch": net.config(), "style": {"name": "+".join(names)},
                                  "paintings": paintings})


def row_net(multi: TransformerNet, k: int) -> TransformerNet:
    """A plain net loaded by hand with painting k's rows: what CIN must equal."""
    plain = TransformerNet(multi.channels, multi.num_residual)
    state = {key: value[k] if key.endswith((".weight", ".bias")) and value.dim() == 2 else value
             for key, value in multi.state_dict().items()}
    plain.load_state_dict(state)
    return plain.eval()


@pytest.fixture
def multi_file(tmp_path):
    return save_multi(tmp_path / "multi.pt", multi_net())


def test_one_painting_at_index_0_is_the_plain_instance_norm_net():
    torch.manual_seed(0)
    plain = random_norms(TransformerNet((4, 8, 8), num_residual=2))
    cin = TransformerNet((4, 8, 8), num_residual=2, num_styles=1)
    cin.load_state_dict({k: v[None] if v.dim() == 1 and "in" in k.split(".")[-2] else v
                         for k, v in plain.state_dict().items()})
    x = torch.rand(2, 3, 37, 50)
    with torch.no_grad():
        assert torch.equal(cin(x, style=0), plain(x))
        # the tiling path: statistics given, and the input of a norm
        stats = [(torch.rand(1, 4, 1, 1), torch.rand(1, 4, 1, 1) + 0.5)]
        assert torch.equal(cin(x, stats, style=0), plain(x, stats))
        assert torch.equal(cin(x, stats, upto=4, style=0), plain(x, stats, upto=4))


def test_painting_k_equals_a_plain_net_loaded_with_its_rows():
    net = multi_net()
    x = torch.rand(3, 3, 32, 44)
    with torch.no_grad():
        outs = [net(x, style=k) for k in range(3)]
        for k in range(3):
            assert torch.equal(outs[k], row_net(net, k)(x))
            assert torch.equal(painting_net(net, torch.eye(3)[k])(x), outs[k])
        assert (outs[0] - outs[1]).abs().mean() > 0.05  # the rows matter
        # one painting per image (sampling=mix), and a blend of the rows
        per_image = net(x, style=torch.tensor([2, 0, 1]))
        for i, k in enumerate([2, 0, 1]):
            torch.testing.assert_close(per_image[i], outs[k][i], rtol=0, atol=1e-5)
        w = torch.tensor([0.25, 0.75, 0.0])
        torch.testing.assert_close(net(x, style=w), painting_net(net, w)(x), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="needs style="):
        net(x)
    with pytest.raises(ValueError, match="leave it out"):
        row_net(net, 0)(x, style=0)


def test_the_single_net_keeps_its_keys_and_files(tmp_path):
    net = TransformerNet((4, 8, 8), num_residual=1)
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes["in1.weight"] == (4,) and shapes["res.0.in2.bias"] == (8,)
    assert not any("added" in k for k in shapes) and "num_styles" not in net.config()
    path = save_model(tmp_path / "single.pt", net, {"arch": net.config()})
    assert torch.load(path, weights_only=True)["version"] == 1  # older stylenet still reads it


def test_model_file_round_trip_and_version(multi_file, monkeypatch):
    data = torch.load(multi_file, weights_only=True)
    assert data["version"] == 2 and data["arch"]["num_styles"] == 3
    assert [p["name"] for p in data["paintings"]] == list(NAMES)
    assert data["state_dict"]["in1.weight"].shape == (3, 4)
    net, meta = load_model(multi_file)
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        assert torch.equal(net(x, style=1), multi_net()(x, style=1))
    # Older code: its VERSION is 1, and validate() refuses a newer file in one line.
    monkeypatch.setattr(stylenet.model_file, "VERSION", 1)
    with pytest.raises(ModelFileError, match="version 2 is newer than this stylenet") as e:
        load_model(multi_file)
    assert "\n" not in str(e.value)


def test_choosing_a_painting_by_name_and_the_errors(multi_file, tmp_path):
    with pytest.raises(ModelFileError) as e:
        Stylizer(multi_file, device="cpu", backend="torch")
    msg = str(e.value)
    assert "\n" not in msg and "starry, wave, mosaic" in msg and "style=starry" in msg
    assert "style=list" in msg and "style=grid" in msg
    with pytest.raises(ModelFileError, match="style=nope: no such painting.*starry, wave, mosaic"):
        Stylizer(multi_file, device="cpu", style="nope")
    listing = painting_listing(multi_file)
    assert [line.split()[0] for line in listing.splitlines()[1:]] == list(NAMES)
    single = save_tiny_model(tmp_path / "one.pt", style="t")
    with pytest.raises(ModelFileError, match="holds one painting"):
        Stylizer(single, device="cpu", style="wave")
    Stylizer(single, device="cpu", style="t")  # its own name is fine
    wave = Stylizer(multi_file, device="cpu", backend="torch", style="wave")
    assert wave.meta["style"]["name"] == "wave" and wave.meta["style"]["image"].endswith("wave.jpg")
    x = torch.rand(3, 40, 40)
    with torch.no_grad():
        expected = multi_net()(x[None], style=1)[0].clamp(0, 1)
    assert torch.equal(wave(x), expected)


def test_blend_weights_are_normalised_and_checked():
    names = list(NAMES)
    for spec in (["starry:0.7", "wave:0.3"], "starry:7,wave:3", {"starry": 0.7, "wave": 0.3},
                 "[starry:0.7,wave:0.3]"):
        torch.testing.assert_close(style_weights(spec, names), torch.tensor([0.7, 0.3, 0.0]))
    assert style_weights("mosaic", names).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match="negative"):
        style_weights(["starry:-1", "wave:2"], names)
    with pytest.raises(ValueError, match="sum to 0"):
        style_weights(["starry:0"], names)
    with pytest.raises(ValueError, match="name:weight"):
        style_weights(["starry:x"], names)


@pytest.mark.parametrize("style", ["wave", ["starry:0.6", "mosaic:0.4"]])
def test_tiled_output_equals_untiled_for_a_painting_and_a_blend(multi_file, style):
    # An overlap of 128 covers the net's receptive field: tiled equals untiled to rounding.
    x = torch.rand(3, 300, 290)
    untiled = Stylizer(multi_file, device="cpu", backend="torch", style=style)(x)
    tiled = Stylizer(multi_file, device="cpu", backend="torch", style=style, tile=256,
                     overlap=128)(x)
    assert (tiled - untiled).abs().max() < 1e-4
    other = Stylizer(multi_file, device="cpu", backend="torch", style="starry", tile=256,
                     overlap=128)(x)
    assert (other - tiled).abs().mean() > 0.02  # the tiles used the chosen painting's rows


def test_strength_and_preserve_color_work_on_a_painting(multi_file):
    x = torch.rand(3, 40, 40)
    assert torch.equal(Stylizer(multi_file, device="cpu", style="wave", strength=0)(x), x)
    full = Stylizer(multi_file, device="cpu", backend="torch", style="wave")(x)
    kept = Stylizer(multi_file, device="cpu", backend="torch", style="wave",
                    preserve_color=True)(x)
    assert (kept - full).abs().mean() > 0.01


@pytest.mark.skipif(not has_onnxruntime(), reason="needs onnx and onnxruntime")
def test_onnx_per_painting_and_with_the_mix_input_match_pytorch(multi_file, tmp_path,
                                                                monkeypatch):
    import onnxruntime as ort

    from stylenet.export import cache_dir, export

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # an empty ONNX cache
    x = torch.rand(3, 52, 61)
    outs = {}
    for style in ("starry", "wave", "starry", ["starry:0.5", "wave:0.5"]):
        fast = Stylizer(multi_file, device="cpu", backend="onnx", style=style)
        slow = Stylizer(multi_file, device="cpu", backend="torch", style=style)
        got = fast(x)
        torch.testing.assert_close(got, slow(x), rtol=0, atol=1e-4)
        outs[str(style)] = got
    # one cached graph per painting or blend, and none served for another
    assert len(list(cache_dir().glob("*.onnx"))) == 3
    assert (outs["starry"] - outs["wave"]).abs().mean() > 0.02
    # export: a painting baked in, or the blend weights as a second input
    net, _ = load_model(multi_file)
    baked = export(multi_file, out=tmp_path / "wave.onnx", style="wave")
    mixed = export(multi_file, out=tmp_path / "mix.onnx", style="mix")
    images = torch.rand(2, 3, 37, 45)
    session = ort.InferenceSession(str(baked), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = net(images, style=1).clamp(0, 1)
    got = torch.from_numpy(session.run(None, {"image": images.numpy()})[0])
    torch.testing.assert_close(got, want, rtol=0, atol=1e-4)
    session = ort.InferenceSession(str(mixed), providers=["CPUExecutionProvider"])
    for w in ([0.0, 0.0, 1.0], [3.0, 1.0, 0.0]):  # weights divided by their sum in the graph
        weights = torch.tensor(w)
        with torch.no_grad():
            want = net(images, style=weights / weights.sum()).clamp(0, 1)
        got = session.run(None, {"image": images.numpy(), "weights": weights.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="holds one painting"):
        export(save_tiny_model(tmp_path / "one.pt"), out=tmp_path / "x.onnx", style="mix")


def test_the_loss_holds_each_paintings_targets_and_settings():
    """Painting k of a loss of several scores as a loss of painting k alone with k's settings;
    a batch mixing paintings scores each photo against its own painting."""
    from stylenet.losses import PerceptualLoss
    from stylenet.multi import mixed_terms
    from stylenet.vgg import VGGFeatures

    torch.manual_seed(0)
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3"], weights="random")
    layers = {"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 0.0}
    settings = [{"name": "a", "style_weight": 2.0, "content_weight": 1.0, "tv_weight": 0.5},
                {"name": "b", "style_weight": 7.0, "content_weight": 3.0, "tv_weight": 0.0,
                 "style_layers": {"relu3_3": 2.0}, "content_palette": True}]
    shared = {"style_layers": layers, "style_weight": 1.0, "content_weight": 1.0}
    multi = PerceptualLoss(vgg, **shared, paintings=settings)
    styles = [torch.rand(1, 3, 40, 48), torch.rand(1, 3, 36, 30)]
    multi.set_style(styles)
    assert multi.target_relu1_2.shape == (2, 64, 64)
    out, photos = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 32, 32)
    singles = []
    for s, style in zip(settings, styles, strict=True):
        one = PerceptualLoss(vgg, style_layers={**layers, **s.get("style_layers", {})},
                             **{k: s[k] for k in ("style_weight", "content_weight", "tv_weight")},
                             content_palette=s.get("content_palette", False))
        one.set_style(style)
        singles.append(one)
    with torch.no_grad():
        for k, one in enumerate(singles):
            got, want = multi(out, photos, painting=k), one(out, photos)
            for term in want:
                torch.testing.assert_close(got[term], want[term], rtol=1e-5, atol=0)
        index = torch.tensor([1, 0, 0, 1])
        mixed = mixed_terms(multi, out, photos, index)
        per_photo = [singles[k](out[i : i + 1], photos[i : i + 1]) for i, k in
                     enumerate(index.tolist())]
        for term in ("content", "style", "tv", "total"):
            want = sum(t[term] for t in per_photo) / 4
            torch.testing.assert_close(mixed[term], want, rtol=1e-5, atol=0)
    with pytest.raises(ValueError, match=r"model.paintings\[0\] \(a\).style_weight=-1"):
        PerceptualLoss(vgg, **shared, paintings=[{**settings[0], "style_weight": -1}])


def test_infer_by_name_blend_list_and_grid_from_the_command_line(multi_file, photo, tmp_path,
                                                                  capsys):
    """The overrides as a shell passes them to infer.py, composed by Hydra."""
    from conftest import CONFIGS
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    import infer
    from stylenet.image import load_tensor

    def run(*overrides):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS / "infer"), version_base="1.3"):
            cfg = compose("infer", overrides=[f"model={multi_file}", f"input={photo}",
                                              "device=cpu", "backend=torch", *overrides])
        return infer.main.__wrapped__(cfg)

    run("output=" + str(tmp_path / "wave.png"), "style=wave")
    run("output=" + str(tmp_path / "blend.png"), "style=[starry:0.7,wave:0.3]")
    wave, blend = load_tensor(tmp_path / "wave.png"), load_tensor(tmp_path / "blend.png")
    assert wave.shape == blend.shape == load_tensor(photo).shape
    assert (wave - blend).abs().mean() > 0.01
    run("output=" + str(tmp_path / "grid.png"), "style=grid", "grid_size=64")
    grid = load_tensor(tmp_path / "grid.png")
    assert grid.shape[-1] == 4 * (64 + 4) + 4  # the photo, then one column per painting
    capsys.readouterr()
    run("output=x.png", "style=list")
    assert "starry" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one line on stderr naming the paintings
        run("output=" + str(tmp_path / "none.png"))
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "starry, wave, mosaic" in err
