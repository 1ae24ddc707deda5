"""model.phases: loss settings that change at given steps of one run."""

import copy

import pytest
import torch
from pytorch_lightning import Callback

from stylenet.losses import PerceptualLoss
from stylenet.module import StyleTransferModule
from stylenet.phases import Phases
from stylenet.transformer import TransformerNet
from stylenet.vgg import VGGFeatures
from train import train

LAYERS = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
LATER = {"style_weight": 2e8, "tv_weight": 1e4, "content_palette": True, "style_tile": 16,
         "style_layers": {"relu2_2": 500.0, "relu3_3": 1e5, "relu4_3": 1e8}}


def loss_with(**settings) -> PerceptualLoss:
    torch.manual_seed(0)
    vgg = VGGFeatures(LAYERS, weights="random")
    loss = PerceptualLoss(vgg, style_weight=1e10, **settings)
    loss.set_style(torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(1)))
    return loss


def test_a_phase_step_computes_what_a_run_resumed_with_its_settings_would(monkeypatch):
    """Before from_step the run's own loss; from it on, the loss built with the phase's settings
    (style layers merged over the run's), on the same net and photos."""
    net = TransformerNet((4, 8, 8), num_residual=1)
    phased = StyleTransferModule(copy.deepcopy(net), loss_with(), torch.optim.Adam,
                                 style={"image": "x.png", "name": "t"},
                                 phases=[{"from_step": 3, **LATER}])
    later = dict(LATER, style_layers={"relu1_2": 1.0, **LATER["style_layers"]})
    references = {
        "before": StyleTransferModule(copy.deepcopy(net), loss_with(), torch.optim.Adam,
                                      style={"image": "x.png", "name": "t"}),
        "after": StyleTransferModule(
            copy.deepcopy(net), loss_with(**{k: v for k, v in later.items()
                                             if k != "style_weight"}),
            torch.optim.Adam, style={"image": "x.png", "name": "t"}),
    }
    references["after"].full_style_weight = LATER["style_weight"]
    photos = (torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(2)) * 255).byte()
    step = {"now": 0}
    monkeypatch.setattr(StyleTransferModule, "global_step", property(lambda self: step["now"]))
    for now, which in [(0, "before"), (2, "before"), (3, "after"), (9, "after")]:
        step["now"] = now
        got = phased.losses(photos, compiled=False)
        want = references[which].losses(photos, compiled=False)
        for key in ("content", "style", "tv", "total"):
            assert got[key].item() == pytest.approx(want[key].item(), rel=1e-5), (now, key)
    # the phase changes what is computed: the two references differ
    assert references["after"].losses(photos, compiled=False)["total"].item() != pytest.approx(
        references["before"].losses(photos, compiled=False)["total"].item(), rel=1e-2)


def test_settings_follow_the_step_alone():
    """Phases stack in order; a step anywhere gets the same settings, so a resumed run does."""
    loss = loss_with()
    phases = Phases([{"from_step": 4, "tv_weight": 10.0, "style_layers": {"relu1_2": 0.5}},
                     {"from_step": 8, "style_weight": 1e9}], loss, 1e10)
    assert phases.settings_at(3)["tv_weight"] == 0.0
    at4, at8 = phases.settings_at(4), phases.settings_at(100)
    assert at4["tv_weight"] == 10.0 and at4["style_weight"] == 1e10
    assert at4["style_layers"] == {"relu1_2": 0.5, "relu2_2": 1.0, "relu3_3": 1.0,
                                   "relu4_3": 1.0}
    assert at8["tv_weight"] == 10.0 and at8["style_weight"] == 1e9
    assert phases.apply(loss, 2) == 1e10 and loss.tv_weight == 0.0
    assert phases.apply(loss, 8) == 1e9 and loss.style_layers["relu1_2"] == 0.5


@pytest.mark.parametrize("phase, message", [
    ({"tv_weight": 1.0}, "from_step"),
    ({"from_step": 0, "tv_weight": 1.0}, "from_step"),
    ({"from_step": 5, "momentum": 0.9}, "unknown setting"),
    ({"from_step": 5, "style_layers": {"relu5_3": 1.0}}, "relu5_3"),
    ({"from_step": 5, "style_tile": 4}, "style_tile"),
    ({"from_step": 5, "style_tile_layers": ["relu4_3"]}, "style_tile_layers"),
    ({"from_step": 5, "tv_weight": -1.0}, "negative"),
    ({"from_step": 5, "lr": 0}, "lr"),
])
def test_a_wrong_phase_is_named_before_the_run(phase, message):
    with pytest.raises(ValueError, match=message):
        Phases([phase], loss_with(), 1e10)


def test_a_run_in_phases_changes_its_loss_at_the_step(cfg_train):
    cfg = cfg_train("data.dataset.n=4", "data.dataset.image_size=32", "data.val_size=1",
                    "data.batch_size=2", "data.num_preview=1", "model.net.channels=[8,16,32]",
                    "model.net.num_residual=1", "style.style_weight=4e9",
                    "model.phases=[{from_step:3,style_weight:1e9,tv_weight:5.0,style_tile:16,"
                    "lr:1e-4}]",
                    "trainer.max_epochs=-1", "trainer.max_steps=5",
                    "trainer.limit_val_batches=0", "~logger")
    seen = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            lr = trainer.optimizers[0].param_groups[0]["lr"]
            seen.append((module.loss.style_weight, module.loss.tv_weight, module.loss.style_tile,
                         lr))

    train(cfg, extra_callbacks=[Record()])
    assert seen == [(4e9, 0.0, None, 1e-3)] * 3 + [(1e9, 5.0, 16, 1e-4)] * 2
    with pytest.raises(SystemExit, match="from_step"):
        train(cfg_train("model.phases=[{tv_weight:5.0}]", "~logger"))
