import pytest
import torch

from stylenet.color import blend, preserve_color, rgb_to_ycbcr, ycbcr_to_rgb


def test_ycbcr_round_trip_and_gray_has_neutral_chroma():
    x = torch.rand(2, 3, 5, 7)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5)
    gray = torch.full((3, 2, 2), 0.4)
    ycc = rgb_to_ycbcr(gray)
    assert torch.allclose(ycc[0], torch.full((2, 2), 0.4), atol=1e-6)
    assert torch.allclose(ycc[1:], torch.full((2, 2, 2), 0.5), atol=1e-6)


def test_preserve_color_keeps_photo_chroma_and_style_luminance():
    # mid-range colours, so that mixing one's luminance with the other's chroma needs no clamping
    gen = torch.Generator().manual_seed(0)
    photo = torch.rand(3, 8, 8, generator=gen) * 0.2 + 0.4
    stylized = torch.rand(3, 8, 8, generator=gen) * 0.2 + 0.4
    out = preserve_color(photo, stylized)
    assert torch.allclose(rgb_to_ycbcr(out)[1:], rgb_to_ycbcr(photo)[1:], atol=1e-4)
    assert torch.allclose(rgb_to_ycbcr(out)[0], rgb_to_ycbcr(stylized)[0], atol=1e-4)


def test_strength():
    photo, stylized = torch.zeros(3, 2, 2), torch.ones(3, 2, 2)
    assert torch.equal(blend(photo, stylized, 0.0), photo)
    assert torch.equal(blend(photo, stylized, 1.0), stylized)
    assert torch.allclose(blend(photo, stylized, 0.25), torch.full((3, 2, 2), 0.25))
    with pytest.raises(ValueError, match="strength"):
        blend(photo, stylized, 1.5)
