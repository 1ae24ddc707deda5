"""Training a net of several paintings (model=multi), adding a painting to one
(experiment=add_painting), and what a trained blend does."""

from __future__ import annotations

import hashlib

import pytest
import torch
from conftest import ROOT
from pytorch_lightning import Callback
from test_multi import multi_net, save_multi

from stylenet.model_file import load_model
from stylenet.multi import step_paintings
from stylenet.stylize import Stylizer
from train import train

STYLES = ROOT / "data" / "styles"
TINY = ["data.dataset.n=4", "data.dataset.image_size=32", "data.val_size=2", "data.batch_size=2",
        "data.num_preview=1", "model.net.channels=[8,16,32]", "model.net.num_residual=1",
        "trainer.max_epochs=-1", "~logger"]


def paintings(*pairs: tuple[str, str], size: int = 64) -> str:
    items = ",".join(f"{{name:{name},image:{STYLES / file},size:{size}}}" for name, file in pairs)
    return f"model.paintings=[{items}]"


def test_step_paintings_follow_from_the_step_alone():
    assert [step_paintings("cycle", 3, s, 0, 2) for s in range(5)] == [0, 1, 2, 0, 1]
    drawn = [step_paintings("random", 3, s, 7, 2) for s in range(60)]
    assert drawn == [step_paintings("random", 3, s, 7, 2) for s in range(60)]  # resumable
    assert set(drawn) == {0, 1, 2} and drawn != [step_paintings("random", 3, s, 8, 2)
                                                 for s in range(60)]
    mix = step_paintings("mix", 2, 5, 0, 64)
    assert mix.shape == (64,) and set(mix.tolist()) == {0, 1}
    assert torch.equal(mix, step_paintings("mix", 2, 5, 0, 64))
    assert step_paintings("cycle", 3, 9, 0, 4, batch_idx=1).tolist() == [1, 2, 0, 1]
    with pytest.raises(ValueError, match="model.sampling"):
        step_paintings("every", 3, 0, 0, 2)


@pytest.mark.parametrize("sampling", ["cycle", "mix"])
def test_train_two_paintings_and_stylize_by_name(cfg_train, sampling, photo):
    cfg = cfg_train("model=multi", *TINY, "trainer.max_steps=4", f"model.sampling={sampling}",
                    paintings(("night", "starry_night.jpg"), ("wave", "great_wave.jpg")))
    result = train(cfg)
    net, meta = load_model(result["model_path"])
    assert [p["name"] for p in meta["paintings"]] == ["night", "wave"]
    assert meta["paintings"][1]["sha256"] == hashlib.sha256(
        (STYLES / "great_wave.jpg").read_bytes()).hexdigest()
    for norm in net.norms():  # both rows trained (they start at scale 1, shift 0)
        assert (norm.bias != 0).any(dim=1).all()
    from stylenet.image import load_tensor

    sample = load_tensor(result["sample_path"])  # the photo above a row per painting
    assert sample.shape[-2:] == (3 * (32 + 4) + 4, 2 * (32 + 4) + 4)
    x = load_tensor(photo)
    outs = [Stylizer(result["model_path"], device="cpu", style=s)(x) for s in ("night", "wave")]
    assert outs[0].shape == x.shape and not torch.equal(outs[0], outs[1])


def test_bad_painting_lists_are_refused_in_one_line(cfg_train):
    with pytest.raises(SystemExit, match=r"model.paintings\[1\]=nope: no such style config"):
        train(cfg_train("model=multi", *TINY, "model.paintings=[starry_night,nope]"))
    with pytest.raises(SystemExit, match="two or more paintings with distinct names"):
        train(cfg_train("model=multi", *TINY, "model.paintings=[starry_night]"))
    with pytest.raises(SystemExit, match="model.sampling=every"):
        train(cfg_train("model=multi", *TINY, "model.sampling=every"))


def test_add_painting_trains_only_its_row(cfg_train, tmp_path):
    base_net = multi_net(2, channels=(8, 16, 32))
    base = save_multi(tmp_path / "base.pt", base_net, names=("starry", "wave"))
    seen = {}

    class Record(Callback):
        def on_train_start(self, trainer, module):
            seen["params"] = [p for g in trainer.optimizers[0].param_groups for p in g["params"]]
            seen["frozen"] = [n for n, p in module.net.named_parameters() if not p.requires_grad]

    cfg = cfg_train("experiment=add_painting", f"base={base}", "style.name=tiles",
                    f"style.image={STYLES / 'mosaic.png'}", "style.size=64", *TINY[:5],
                    "trainer.max_epochs=-1", "trainer.max_steps=3", "~logger")
    result = train(cfg, extra_callbacks=[Record()])
    norms = len(base_net.norms())
    assert len(seen["params"]) == 2 * norms and all(p.shape[0] == 1 for p in seen["params"])
    assert any("conv" in n for n in seen["frozen"])
    net, meta = load_model(result["model_path"])
    assert [p["name"] for p in meta["paintings"]] == ["starry", "wave", "tiles"]
    old, new = base_net.state_dict(), net.state_dict()
    for key, value in old.items():
        if "in" in key.split(".")[-2] and value.dim() == 2:  # a norm table: the old rows kept
            assert torch.equal(new[key][:2], value), key
            assert not torch.equal(new[key][2], value.mean(0)), key  # the new row trained
        else:
            assert torch.equal(new[key], value), key
    x = torch.rand(3, 45, 52)
    for name in ("starry", "wave"):
        before = Stylizer(base, device="cpu", backend="torch", style=name)(x)
        after = Stylizer(result["model_path"], device="cpu", backend="torch", style=name)(x)
        assert torch.equal(before, after), name
    with pytest.raises(SystemExit, match="already has a painting of that name"):
        train(cfg_train("experiment=add_painting", f"base={base}", "style.name=wave",
                        f"style.image={STYLES / 'mosaic.png'}", *TINY))


@pytest.mark.parametrize("kind", ["cycle", "mix", "add_painting"])
def test_a_resumed_run_goes_on_as_if_never_stopped(tmp_path, kind):
    """Checkpoints and ckpt_path=last as for one painting: the paintings drawn, the frozen and
    trained rows and the optimizer state all survive a restart."""
    from conftest import compose_train

    if kind in ("cycle", "mix"):
        setup = ["model=multi", f"model.sampling={kind}",
                 paintings(("night", "starry_night.jpg"), ("wave", "great_wave.jpg"))]
    else:
        base = save_multi(tmp_path / "base.pt", multi_net(2, channels=(8, 16, 32)),
                          names=("starry", "wave"))
        setup = ["experiment=add_painting", f"base={base}", "style.name=tiles",
                 f"style.image={STYLES / 'mosaic.png'}", "style.size=64"]
    losses: dict[str, dict[int, float]] = {}

    class Record(Callback):
        def __init__(self, run):
            self.run = run

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.setdefault(self.run, {})[trainer.global_step] = float(outputs["loss"])

    def run(name, *extra):
        cfg = compose_train(tmp_path / name, [*setup, *TINY, "callbacks=default",
                                              "trainer.enable_checkpointing=true",
                                              "callbacks.model_checkpoint.every_n_train_steps=1",
                                              *extra])
        return train(cfg, extra_callbacks=[Record(name + str(extra))])

    straight = run("straight", "trainer.max_steps=4")
    run("stopped", "trainer.max_steps=2")
    resumed = run("stopped", "trainer.max_steps=4", "ckpt_path=last")
    done = losses["stopped('trainer.max_steps=4', 'ckpt_path=last')"]
    assert sorted(done) == [3, 4]
    for step in (3, 4):
        assert done[step] == pytest.approx(losses["straight('trainer.max_steps=4',)"][step],
                                           rel=1e-5)
    a, b = load_model(straight["model_path"])[0], load_model(resumed["model_path"])[0]
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-6)
