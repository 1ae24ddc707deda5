import pytest
import torch

from stylenet.color import color_distance, color_stats, palette_transfer, psd_sqrt
from stylenet.loss_terms import (
    content_loss,
    gram_matrix,
    sliced_wasserstein,
    split_tiles,
    style_loss,
    total_variation,
)
from stylenet.losses import PerceptualLoss
from stylenet.vgg import VGGFeatures


def test_gram_matrix_matches_hand_computation():
    # One image, two channels, 2x2 pixels.
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, -1.0]]]])
    # <c0,c0> = 1+4+9+16 = 30, <c0,c1> = 0+2+0-4 = -2, <c1,c1> = 0+1+0+1 = 2; C*H*W = 8
    expected = torch.tensor([[[30.0, -2.0], [-2.0, 2.0]]]) / 8
    assert torch.allclose(gram_matrix(f), expected)
    assert torch.allclose(gram_matrix(f, normalize="hw"), expected * 2)


def test_gram_matrix_is_batched_and_fp32():
    f = torch.randn(3, 4, 5, 6, dtype=torch.bfloat16)
    g = gram_matrix(f)
    assert g.shape == (3, 4, 4) and g.dtype == torch.float32
    one = f[1].float().reshape(4, -1)
    assert torch.allclose(g[1], one @ one.T / (4 * 5 * 6), rtol=1e-5)


def test_style_loss_weights_layers_and_broadcasts_target():
    grams = {"a": torch.ones(2, 3, 3), "b": torch.zeros(2, 4, 4)}
    targets = {"a": torch.zeros(1, 3, 3), "b": torch.full((1, 4, 4), 2.0)}
    loss = style_loss(grams, targets, {"a": 1.0, "b": 0.5})
    assert loss.item() == pytest.approx(1.0 + 0.5 * 4.0)


def test_content_and_tv():
    a = torch.zeros(1, 3, 4, 4)
    assert content_loss(a, a + 2).item() == pytest.approx(4.0)
    assert total_variation(a).item() == 0.0
    stripes = torch.zeros(1, 1, 2, 4)
    stripes[..., ::2] = 1.0  # every horizontal neighbour differs by 1, vertical ones by 0
    assert total_variation(stripes).item() == pytest.approx(1.0)


def make_loss(**kwargs):
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights="random")
    return PerceptualLoss(vgg, **kwargs)


def test_perceptual_loss_is_zero_for_the_photo_styled_like_itself():
    loss = make_loss(tv_weight=0.0)
    photo = torch.rand(1, 3, 32, 32)
    loss.set_style(photo)
    terms = loss(photo, photo)
    assert terms["content"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["style"].item() == pytest.approx(0.0, abs=1e-6)
    other = torch.rand(1, 3, 32, 32)
    assert loss(other, photo)["style"].item() > 0


def test_negative_weight_and_unknown_layer_are_refused():
    with pytest.raises(ValueError, match="style_weight"):
        make_loss(style_weight=-1.0)
    with pytest.raises(ValueError, match="relu5_3"):
        make_loss(content_layer="relu5_3")


def test_zero_weight_switches_a_style_layer_off():
    vgg = VGGFeatures(["relu1_2", "relu2_2"], weights="random")
    loss = PerceptualLoss(vgg, style_layers={"relu1_2": 1.0, "relu2_2": 0.5, "relu4_3": 0.0})
    assert loss.style_layers == {"relu1_2": 1.0, "relu2_2": 0.5}
    photo = torch.rand(1, 3, 16, 16)
    loss.set_style(photo)
    assert set(loss.style_targets()) == {"relu1_2", "relu2_2"}


def test_the_photos_features_stop_at_the_content_layer():
    """The photo is only a content target: its VGG pass stops at the content tap, and the loss is
    the same as with every tap computed."""
    from stylenet.losses import PerceptualLoss
    from stylenet.vgg import VGGFeatures

    torch.manual_seed(0)
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights="random")
    loss = PerceptualLoss(vgg, content_weight=1.0, style_weight=1.0)
    loss.set_style(torch.rand(1, 3, 32, 32))
    photo, out = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append(o.shape[1]))
             for m in vgg.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        short = loss(out, photo)
    for h in hooks:
        h.remove()
    # the output's pass runs the 10 convs to relu4_3; the photo's the 4 to relu2_2
    assert ran == [64, 64, 128, 128] + [64, 64, 128, 128, 256, 256, 256, 512, 512, 512]
    full = loss(out, {k: v for k, v in loss.features(photo).items()})
    torch.testing.assert_close(short["total"], full["total"])


def test_the_outputs_pass_stops_at_the_deepest_layer_a_term_reads():
    """Style on relu1_2 and relu2_2 only: the output's VGG pass runs 4 convs, not 10."""
    vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights="random")
    loss = PerceptualLoss(vgg, style_layers={"relu1_2": 1.0, "relu2_2": 1.0, "relu3_3": 0.0,
                                             "relu4_3": 0.0})
    loss.set_style(torch.rand(1, 3, 32, 32))
    ran = []
    hooks = [m.register_forward_hook(lambda m, i, o: ran.append(o.shape[1]))
             for m in vgg.features if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        loss(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert ran == [64, 64, 128, 128] * 2  # the photo's pass, then the output's


def test_a_second_style_scale_adds_the_loss_of_the_half_size_images():
    """style_scales=[1, 0.5]: the style term is the scale-1 loss plus the loss of the output at
    half size against the painting at half size (both antialiased), each computed here by a
    one-scale loss on images resized by hand."""
    torch.manual_seed(0)
    vgg = VGGFeatures(["relu1_2", "relu2_2"], weights="random")
    layers = {"relu1_2": 1.0, "relu2_2": 3.0}
    two = PerceptualLoss(vgg, style_layers=layers, style_weight=1.0, style_scales=[1.0, 0.5])
    one = PerceptualLoss(vgg, style_layers=layers, style_weight=1.0)
    painting, out, photo = torch.rand(1, 3, 48, 40), torch.rand(2, 3, 32, 32), torch.rand(2, 3,
                                                                                          32, 32)

    def half(x):
        return torch.nn.functional.interpolate(x, size=(x.shape[2] // 2, x.shape[3] // 2),
                                               mode="bilinear", antialias=True)

    two.set_style(painting)
    one.set_style(painting)
    full = one(out, photo)["style"]
    one.set_style(half(painting))
    halved = one(half(out), half(photo))["style"]
    torch.testing.assert_close(two(out, photo)["style"], full + halved)
    assert set(two.state_dict()) >= {"target_relu1_2", "target_relu2_2_scale1"}


@pytest.mark.parametrize("scales", [[0.5], [1.0, 1.5], [1.0, 0.0], []])
def test_style_scales_must_start_at_one_then_shrink(scales):
    with pytest.raises(ValueError, match=r"loss.style_scales=.*start with 1.0"):
        make_loss(style_scales=scales)


def test_color_distance_is_the_gaussian_wasserstein_distance():
    """Against the closed form computed with scipy's matrix square root: |m1 - m2|^2 +
    tr(C1 + C2 - 2 (C2^1/2 C1 C2^1/2)^1/2), and |m1 - m2|^2 + tr(C2) for a flat image."""
    linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(0)
    mix = torch.tensor([[1.0, 0.3, 0.0], [0.2, 0.8, 0.1], [0.0, 0.5, 0.6]])
    image = torch.einsum("ij,bjhw->bihw", mix, torch.rand(2, 3, 16, 12))
    target = torch.rand(1, 3, 20, 20) ** 2
    m2, c2 = color_stats(target)
    root = psd_sqrt(c2[0])
    torch.testing.assert_close(root @ root, c2[0], atol=1e-6, rtol=1e-5)
    expected = []
    for one in image:
        f = one.reshape(3, -1).double().numpy()
        c1 = (f - f.mean(1, keepdims=True)) @ (f - f.mean(1, keepdims=True)).T / f.shape[1]
        r2 = linalg.sqrtm(c2[0].double().numpy()).real
        cross = linalg.sqrtm(r2 @ c1 @ r2).real
        dm = f.mean(1) - m2[0].double().numpy()
        expected.append(dm @ dm + (c1 + c2[0].double().numpy() - 2 * cross).trace())
    got = color_distance(image, m2[0], root)
    assert got.item() == pytest.approx(sum(expected) / 2, rel=1e-4)
    flat = torch.full((1, 3, 8, 8), 0.5)
    assert color_distance(flat, m2[0], root).item() == pytest.approx(
        ((0.5 - m2[0]) ** 2).sum().item() + c2[0].trace().item(), abs=2e-5)  # the root's clamp


def test_the_colour_term_compares_the_output_with_the_paintings_palette():
    loss = make_loss(color_weight=10.0)
    painting = torch.rand(1, 3, 40, 32)
    loss.set_style(painting)
    photo = torch.rand(2, 3, 32, 32)
    # A linear colour transfer to the painting's mean and covariance zeroes the term.
    m1, c1 = color_stats(photo)
    m2, c2 = color_stats(painting)
    to_painting = psd_sqrt(c2[0]) @ torch.linalg.inv(psd_sqrt(c1[0]))
    recoloured = (torch.einsum("ij,jhw->ihw", to_painting, photo[0] - m1[0].view(3, 1, 1))
                  + m2[0].view(3, 1, 1))[None]
    assert loss(recoloured, photo[:1])["color"].item() == pytest.approx(0.0, abs=1e-5)
    out = torch.full((2, 3, 32, 32), 0.5, requires_grad=True)  # flat: a zero covariance
    terms = loss(out, photo)
    assert terms["color"].item() > 0
    torch.testing.assert_close(terms["total"], terms["content"] + terms["style"] + terms["tv"]
                               + terms["color"])
    terms["total"].backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    plain = make_loss()
    plain.set_style(painting)
    assert "color" not in plain(photo, photo)  # off by default, as in the paper
    with pytest.raises(ValueError, match="color_weight"):
        make_loss(color_weight=-1.0)


def test_palette_transfer_is_the_optimal_transport_map_between_the_two_gaussians():
    """Against the closed form with scipy's matrix square root: the photo's colours moved onto
    the painting's mean and covariance by the symmetric map A = C1^-1/2 (C1^1/2 C2 C1^1/2)^1/2
    C1^-1/2; unmoved by a shift or an overall gain of the photo's colours, which a net behind an
    instance norm cannot see either."""
    linalg = pytest.importorskip("scipy.linalg")
    torch.manual_seed(0)
    mix = torch.tensor([[1.0, 0.3, 0.0], [0.2, 0.8, 0.1], [0.0, 0.5, 0.6]])
    photo = 0.3 + 0.2 * torch.einsum("ij,bjhw->bihw", mix, torch.rand(2, 3, 16, 12))
    painting = 0.35 + 0.3 * torch.rand(1, 3, 20, 20) ** 2
    m2, c2 = color_stats(painting)
    got = palette_transfer(photo, m2[0], c2[0], eps=0.0)
    assert 0 < got.min() and got.max() < 1  # no clamping in this test
    for one, out in zip(photo, got, strict=True):
        f = one.reshape(3, -1).double().numpy()
        m1 = f.mean(1, keepdims=True)
        c1 = (f - m1) @ (f - m1).T / f.shape[1]
        r1 = linalg.sqrtm(c1).real
        a = linalg.inv(r1) @ linalg.sqrtm(r1 @ c2[0].double().numpy() @ r1).real @ linalg.inv(r1)
        assert a == pytest.approx(a.T, abs=1e-6)  # symmetric: no rotation of the hues
        expected = a @ (f - m1) + m2[0].double().numpy()[:, None]
        torch.testing.assert_close(out.reshape(3, -1).double(), torch.from_numpy(expected),
                                   atol=1e-4, rtol=0)
    m, c = color_stats(got)
    torch.testing.assert_close(m, m2.expand(2, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(c, c2.expand(2, 3, 3), atol=1e-5, rtol=1e-3)
    for moved in [photo + torch.tensor([0.1, -0.05, 0.02]).view(3, 1, 1), 1.3 * photo - 0.1]:
        torch.testing.assert_close(palette_transfer(moved, m2[0], c2[0], eps=0.0), got,
                                   atol=1e-4, rtol=0)
    grey = photo[:, :1].expand(-1, 3, -1, -1)  # a covariance of rank 1: eps keeps it finite
    assert torch.isfinite(palette_transfer(grey, m2[0], c2[0])).all()


def test_content_palette_takes_the_content_target_in_the_paintings_colours():
    painting = torch.rand(1, 3, 40, 32)
    photo = 0.25 + 0.5 * torch.rand(2, 3, 32, 32)
    plain, palette = make_loss(), make_loss(content_palette=True)
    for loss in plain, palette:
        loss.set_style(painting)
    m2, c2 = color_stats(painting)
    recoloured = palette_transfer(photo, m2[0], c2[0])
    torch.testing.assert_close(palette.content_image(photo), recoloured, atol=1e-5, rtol=0)
    assert plain.content_image(photo) is photo  # off by default, as in the paper
    assert palette(recoloured, photo)["content"].item() == pytest.approx(0.0, abs=1e-6)
    assert plain(recoloured, photo)["content"].item() > 0
    assert palette(photo, photo)["content"].item() > 0


def test_sliced_wasserstein_is_the_squared_distance_between_sorted_projections():
    torch.manual_seed(0)
    c, n = 4, 20000
    directions = torch.nn.functional.normalize(torch.randn(c, 8), dim=0)
    target = torch.randn(c, n)
    # The same samples in another spatial order: the same distribution, distance 0.
    same = target[:, torch.randperm(n)].reshape(1, c, 100, 200)
    assert sliced_wasserstein(same, target, directions).item() == pytest.approx(0.0, abs=1e-10)
    # Two Gaussians a shift mu apart: W2^2 along unit direction d is (d . mu)^2.
    mu = torch.tensor([1.0, -2.0, 0.5, 0.0])
    shifted = (torch.randn(c, n) + mu[:, None]).reshape(1, c, 100, 200)
    expected = ((directions.t() @ mu) ** 2).mean().item()
    assert sliced_wasserstein(shifted, target, directions).item() == pytest.approx(expected,
                                                                                   rel=0.05)
    # Sample counts that differ: the painting's sorted values are read at the output's ranks.
    one = torch.ones(1, 1)
    values = torch.randn(1, 2000).sort().values
    every_other = values[:, 1::2].reshape(1, 1, 1, 1000)
    assert sliced_wasserstein(every_other, values, one).item() == pytest.approx(0.0, abs=1e-12)
    twice = values.repeat_interleave(2, dim=1).reshape(1, 1, 1, 4000)
    assert sliced_wasserstein(twice, values, one).item() == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(values[:, :1000].reshape(1, 1, 1, 1000), values, one).item() > 0.1


def test_sliced_wasserstein_tells_apart_what_a_gram_matrix_cannot():
    torch.manual_seed(0)
    c, n = 3, 40000
    # Independent signs (+-1) and independent unit Gaussians: the same Gram matrix (the
    # identity), two distributions.
    signs = torch.randint(0, 2, (c, n)).float() * 2 - 1
    gauss = torch.randn(c, n)
    grams = [gram_matrix(x.reshape(1, c, 200, 200), "hw")[0] for x in (signs, gauss)]
    torch.testing.assert_close(grams[0], grams[1], atol=0.03, rtol=0)
    directions = torch.eye(c)
    assert sliced_wasserstein(gauss.reshape(1, c, 200, 200), signs, directions).item() > 0.1


def test_a_sliced_style_loss_compares_feature_distributions_at_any_size():
    loss = make_loss(style_metric="sliced", sliced_samples=65536, tv_weight=0.0)
    painting = torch.rand(1, 3, 48, 40)
    loss.set_style(painting)
    # Stored: the painting's feature vectors (C, H*W) at each layer, not Gram matrices.
    assert loss.style_targets()["relu1_2"].shape == (64, 48 * 40)
    assert loss(painting, painting)["style"].item() == pytest.approx(0.0, abs=1e-6)
    out = torch.rand(2, 3, 32, 32, requires_grad=True)  # fewer pixels than the painting
    photo = torch.rand(2, 3, 32, 32)
    terms = loss(out, photo)
    assert terms["style"].item() > 0
    terms["total"].backward()
    assert torch.isfinite(out.grad).all() and out.grad.abs().sum() > 0
    capped = make_loss(style_metric="sliced", sliced_samples=100)
    capped.set_style(painting)
    assert capped.style_targets()["relu1_2"].shape == (64, 100)
    few = make_loss(style_metric="sliced", sliced_directions=4)
    few.set_style(painting)
    assert few(out, photo)["style"].item() > 0
    with pytest.raises(ValueError, match="style_metric"):
        make_loss(style_metric="histogram")
    with pytest.raises(ValueError, match="style_scales"):
        make_loss(style_metric="sliced", style_scales=[1.0, 0.5])


def test_split_tiles_cuts_whole_tiles_in_reading_order():
    f = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    tiles = split_tiles(f, 2, 3)  # 2 x 2 px tiles; the last row and column are left out
    assert tiles.shape == (2 * 6, 3, 2, 2)
    assert torch.equal(tiles[0], f[0, :, 0:2, 0:2])
    assert torch.equal(tiles[5], f[0, :, 2:4, 4:6])
    assert torch.equal(tiles[7], f[1, :, 0:2, 2:4])


def test_a_tiled_style_loss_asks_the_paintings_texture_of_every_tile():
    """loss.style_tile: each tile's Gram matrices against the painting's, the mean over tiles
    (never less than the whole image's loss). An output whose texture sits in one tile of four,
    the rest flat, pays more per tile than on the whole image (4/3 x if the flat tiles held no
    features); the texture in every tile pays little either way."""
    torch.manual_seed(0)
    painting = (torch.rand(1, 3, 64, 64) > 0.5).float()  # a high-contrast texture
    flat = torch.zeros(1, 3, 32, 32)
    blot = torch.cat([torch.cat([painting[..., :32, :32], flat], -1),
                      torch.cat([flat, flat], -1)], -2)  # the texture in one tile of four
    whole, tiled = make_loss(), make_loss(style_tile=32)
    for loss in (whole, tiled):
        loss.set_style(painting)
    # per tile: the mean of each tile's loss, the tiles' Gram matrices from the image's features
    feats = tiled.features(blot)
    by_hand = torch.stack([
        style_loss({n: gram_matrix(feats[n][..., i * s:(i + 1) * s, j * s:(j + 1) * s])
                    for n, s in (("relu1_2", 32), ("relu2_2", 16), ("relu3_3", 8),
                                 ("relu4_3", 4))},
                   tiled.style_targets(), tiled.style_layers)
        for i in (0, 1) for j in (0, 1)]).mean()
    assert tiled.style_term(blot, feats).item() == pytest.approx(by_hand.item(), rel=1e-5)
    # the blot pays more per tile than on the whole image; the painting itself, little either way
    assert tiled.style_term(blot, feats) > 1.1 * whole.style_term(blot, feats)  # 1.21 x here
    itself = tiled.features(painting)
    assert tiled.style_term(painting, itself) < 0.5 * tiled.style_term(blot, feats)
    with pytest.raises(ValueError, match="style_tile"):
        make_loss(style_tile=4)


def test_style_tile_layers_tiles_those_layers_alone():
    """loss.style_tile_layers: the layers named are held tile by tile, the others on the whole
    image; the sum is each layer's loss taken its own way."""
    torch.manual_seed(0)
    painting = (torch.rand(1, 3, 64, 64) > 0.5).float()
    output = torch.rand(1, 3, 64, 64) * torch.linspace(0, 1, 64)  # darker to the left
    whole, tiled = make_loss(), make_loss(style_tile=32)
    deep = make_loss(style_tile=32, style_tile_layers=["relu3_3", "relu4_3"])
    for loss in (whole, tiled, deep):
        loss.set_style(painting)
    feats = deep.features(output)
    g_whole, g_tiled = whole._grams(output, 1.0, feats), tiled._grams(output, 1.0, feats, 32)
    mixed = {n: (g_tiled if n in ("relu3_3", "relu4_3") else g_whole)[n] for n in g_whole}
    expected = style_loss(mixed, deep.style_targets(), deep.style_layers)
    assert deep.style_term(output, feats).item() == pytest.approx(expected.item(), rel=1e-5)
    # neither all-tiled nor all-whole: the tiling of the named layers is what counts
    for other in (whole, tiled):
        assert abs(other.style_term(output, feats) / expected - 1) > 1e-3
    with pytest.raises(ValueError, match="style_tile_layers"):
        make_loss(style_tile_layers=["relu4_3"])  # no tile side
    with pytest.raises(ValueError, match="style_tile_layers"):
        make_loss(style_tile=32, style_tile_layers=["relu5_3"])  # not a style layer
