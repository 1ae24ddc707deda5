"""The judge's band energies: what they call painting and what they do not. A global change of
the photo (a blur, a recolouring, a contrast stretch) must fail the zoo's band bar; structure
laid over the photo at the scale of brush strokes must pass it."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT
from PIL import Image, ImageFilter
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(ROOT / "benchmarks"))
import judge  # noqa: E402


def photos() -> list[torch.Tensor]:
    return [TF.to_dtype(TF.pil_to_tensor(Image.open(p).convert("RGB")), torch.float32,
                        scale=True) for p in sorted((ROOT / "data" / "heldout").glob("*.jpg"))]


def blurred(photo: torch.Tensor) -> torch.Tensor:
    pil = TF.to_pil_image(photo).filter(ImageFilter.GaussianBlur(2))
    return TF.to_dtype(TF.pil_to_tensor(pil), torch.float32, scale=True)


def recoloured(photo: torch.Tensor) -> torch.Tensor:
    """A palette shift: a warm, desaturated grade (a colour filter's output)."""
    grade = torch.tensor([[0.55, 0.35, 0.10], [0.25, 0.60, 0.15], [0.15, 0.30, 0.45]])
    return (torch.einsum("ij,jhw->ihw", grade, photo) + 0.05).clamp(0, 1)


def stretched(photo: torch.Tensor, gain: float = 1.4) -> torch.Tensor:
    """Contrast about the photo's mean, 1.4x (nearly twice the variance), clipped to 0..1."""
    return ((photo - photo.mean()) * gain + photo.mean()).clamp(0, 1)


def painted(photo: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Strokes laid over the photo: short oriented dashes 4-16 px long, in light and dark,
    band-limited noise stretched along one direction (what the published models add)."""
    g = torch.Generator().manual_seed(seed)
    h, w = photo.shape[-2:]
    noise = torch.randn(1, 1, h, w, generator=g)
    x = torch.arange(-12, 13, dtype=torch.float32)
    along = torch.exp(-x**2 / (2 * 6.0**2))
    across = torch.exp(-x**2 / (2 * 1.5**2))
    kernel = (along[None, :] * across[:, None])
    kernel = (kernel / kernel.sum())[None, None]
    strokes = F.conv2d(noise, kernel, padding=12)[0]
    strokes = strokes / strokes.std() * 0.12
    return (photo * 0.85 + 0.075 + strokes).clamp(0, 1)


@pytest.mark.parametrize("change", [blurred, recoloured, stretched])
def test_a_global_change_of_the_photo_fails_the_band_bar(change):
    ratios = [judge.band_ratios(p, change(p)) for p in photos()]
    assert not judge.paints(ratios)


def test_structure_at_the_scale_of_strokes_passes_the_band_bar():
    ratios = [judge.band_ratios(p, painted(p, seed)) for seed, p in enumerate(photos())]
    assert judge.paints(ratios)


def test_each_global_change_moves_the_bands_as_it_should():
    """What each control does to the bands, so that a bar that passes or fails for the wrong
    reason shows: the photo itself scores 1 everywhere, a blur lowers the fine bands most, a
    recolouring keeps every band near 1, a stretch raises them all alike (1 over contrast)."""
    p = photos()[0]
    same = judge.band_ratios(p, p)
    assert all(v == pytest.approx(1.0) for v in same.values())
    blur = judge.band_ratios(p, blurred(p))
    assert blur["band_1"] < blur["band_2"] < blur["band_8"] < 1.0
    recolour = judge.band_ratios(p, recoloured(p))
    assert 0.5 < recolour["stroke_bands"] < 1.2
    stretch = judge.band_ratios(p, stretched(p))
    assert stretch["stroke_bands"] > judge.BAND_MIN  # raw bands alone would call it painted
    assert stretch["stroke_contrast"] == pytest.approx(1.0, abs=0.1)


def test_band_energies_are_measured_at_512_px_on_the_long_side():
    p = photos()[0]
    twice = F.interpolate(p[None], scale_factor=2, mode="bicubic", antialias=True)[0]
    ratios = judge.band_ratios(p, twice.clamp(0, 1))  # the same photo, upscaled: the same bands
    assert ratios["stroke_bands"] == pytest.approx(1.0, abs=0.05)


def test_a_flat_output_scores_no_structure():
    p = photos()[0]
    flat = torch.full_like(p, 0.4)  # an untrained net's grey
    ratios = judge.band_ratios(p, flat)
    assert ratios["stroke_bands"] == 0.0 and ratios["stroke_contrast"] == 0.0
    assert not judge.paints([ratios])
