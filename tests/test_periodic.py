"""The judge's periodic share (benchmarks/judge.py): the zoo's bar against a dot checker, a
weave or stripes, told apart from photos, paintings and noise."""

import math
import sys

import pytest
import torch
import torchvision.transforms.functional as TF
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from judge import PERIODIC_MAX, periodic_share  # noqa: E402

from stylenet.image import load_tensor  # noqa: E402

PHOTOS = sorted((ROOT / "data" / "heldout").glob("*.jpg"))
PAINTINGS = [ROOT / "data" / "styles" / f"{n}.jpg"
             for n in ("starry_night", "composition_vii", "great_wave", "shipwreck_minotaur")]


def grid(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = image.shape[-2:]
    return torch.meshgrid(torch.arange(h, dtype=torch.float32),
                          torch.arange(w, dtype=torch.float32), indexing="ij")


@pytest.mark.parametrize("path", PHOTOS + PAINTINGS, ids=lambda p: p.stem)
def test_photos_and_paintings_are_not_periodic(path):
    assert periodic_share(load_tensor(path, max_side=512)) < PERIODIC_MAX / 2


def test_noise_white_or_smooth_is_not_periodic():
    torch.manual_seed(0)
    noise = torch.rand(3, 256, 384)
    assert periodic_share(noise) < 0.01
    # a kernel of +-3 sigma: a 9 px one's truncation puts a regular ripple in its spectrum
    assert periodic_share(TF.gaussian_blur(noise, [13, 13], [2.0, 2.0])) < 0.01


@pytest.mark.parametrize("amplitude", [0.03, 0.1])
def test_stripes_over_a_photo_are_periodic_whatever_their_phase(amplitude):
    photo = load_tensor(ROOT / "data" / "heldout" / "chelsea.jpg", max_side=512)
    y, x = grid(photo)
    shares = [periodic_share((photo + amplitude * torch.sin(2 * math.pi * (x + y) / 6 + phase))
                             .clamp(0, 1)) for phase in (0.0, 1.0, 2.5)]
    assert min(shares) > PERIODIC_MAX
    assert max(shares) - min(shares) < 0.02
    assert periodic_share(photo) < 0.01  # the share is the stripes'


def test_a_dot_checker_at_the_nets_4px_lattice_is_periodic():
    photo = load_tensor(ROOT / "data" / "heldout" / "astronaut.jpg", max_side=512)
    y, x = grid(photo)
    checker = torch.sin(2 * math.pi * x / 4) * torch.sin(2 * math.pi * y / 4)
    assert periodic_share((photo + 0.08 * checker).clamp(0, 1)) > PERIODIC_MAX


def test_a_small_image_takes_smaller_patches_and_a_tiny_one_gives_nan():
    torch.manual_seed(0)
    y, x = grid(torch.zeros(3, 40, 56))
    stripes = (0.5 + 0.3 * torch.sin(2 * math.pi * x / 5)).expand(3, 40, 56)
    assert periodic_share(stripes) > 0.5
    assert periodic_share(torch.rand(3, 40, 56)) < 0.1
    assert math.isnan(periodic_share(torch.rand(3, 24, 40)))
