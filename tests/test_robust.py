"""Bad photos, bad settings and numerical faults: the run goes on, or stops early and clearly,
and never leaves a broken or NaN file behind."""

import logging
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from badfiles import write_bad, write_good, write_odd
from omegaconf import open_dict
from pytorch_lightning import Callback

from stylenet.callbacks import NonFiniteLossError
from stylenet.checkpoint import AtomicCheckpointIO
from stylenet.data import PhotoFolder, StyleDataModule
from stylenet.model_file import save_model
from train import train

TINY = ["model.net.channels=[8,16,32]", "model.net.num_residual=1", "trainer.max_epochs=-1"]


@pytest.fixture
def messy(tmp_path) -> tuple[Path, dict, dict]:
    """A folder as users have them: good photos, odd modes, and every kind of bad file."""
    folder = tmp_path / "photos"
    bad = write_bad(folder)
    odd = write_odd(folder)
    write_good(folder, 6, prefix="zz_good")  # sort last: the held-out and preview photos
    return folder, bad, odd


def test_every_bad_file_is_skipped_once_and_odd_modes_are_used(messy, caplog):
    folder, bad, odd = messy
    ds = PhotoFolder(root=str(folder), image_size=32)
    names = [p.name for p in ds.paths]
    assert "a_folder.jpg" not in names
    for name in odd:
        assert ds.load(names.index(name)).shape == (3, 32, 32), name
    dm = StyleDataModule(ds, batch_size=2, num_workers=2, val_size=2, persistent_workers=False)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            list(dm.train_dataloader())
    # two workers, two epochs: every bad file flagged (in whichever worker found it), no other
    assert sorted(names[i] for i in ds.bad_indices()) == sorted(bad)


@pytest.mark.slow
def test_training_goes_on_through_bad_files_and_reports_them(messy, cfg_train, caplog):
    folder, bad, _ = messy
    cfg = cfg_train("data=folder", f"data.dataset.root={folder}", "data.dataset.image_size=32",
                    "data.val_size=2", "data.batch_size=2", "data.num_workers=0",
                    "data.num_preview=1", "trainer.max_steps=12", "trainer.log_every_n_steps=1",
                    *TINY)
    with caplog.at_level(logging.WARNING):
        metrics = train(cfg)
    assert metrics["global_step"] == 12
    assert metrics["skipped_files"] == len(bad)  # all of the first epoch's 15 batches were seen
    for name in bad:
        assert caplog.text.count(f"{name}:") == 1, name  # named once, not once per epoch
    assert f"{len(bad)} training photo(s) were skipped" in caplog.text
    assert Path(metrics["model_path"]).is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = Path(cfg.paths.output_dir).glob("tensorboard/events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert acc.Scalars("data/skipped_files")[-1].value == len(bad)


def _bad_config_cases(tmp_path: Path) -> list[tuple[list[str], str]]:
    only_bad = tmp_path / "only_bad"
    write_bad(only_bad)
    small = tmp_path / "small"
    write_good(small, 12, size=(64, 48))
    (tmp_path / "a_file").write_text("")
    model = save_model(tmp_path / "model.pt", *_tiny_net())
    return [
        (["style.image=/nonexistent/starry.jpg"], "style.image: .*no such file"),
        (["loss.content_layer=relu9_9"], "loss.content_layer: unknown VGG layer 'relu9_9'"),
        (["+loss.style_layers.relu3_33=1.0"], "loss.style_layers: unknown VGG layer 'relu3_33'"),
        (["loss.vgg.layers=[relu1_2,relu2_2,relu3_3,pool9]"], "loss.vgg.layers: unknown VGG"),
        (["loss.content_layer=relu4_2"], "loss.content_layer=relu4_2 is not tapped"),
        (["style.style_weight=-1e10"], r"style_weight=-1\S* is negative \(style.style_weight"),
        (["loss.style_layers.relu2_2=-0.5"], "loss.style_layers.relu2_2=-0.5 is negative"),
        (["model.optimizer.lr=-0.001"], "model.optimizer.lr=-0.001 must be > 0"),
        ([f"paths.output_dir={tmp_path / 'a_file' / 'run'}"], "paths.output_dir=.* not writable"),
        (["data=folder", f"data.dataset.root={small}", "data.dataset.image_size=256"],
         "data.dataset.image_size=256 is larger than every photo .* 48 px"),
        (["data=folder", f"data.dataset.root={only_bad}"], "none of the 11 photos .* usable"),
        (["data=folder", f"data.dataset.root={tmp_path / 'nowhere'}"], "does not exist"),
        (["ckpt_path=last"], "ckpt_path=last: there is no"),
        ([f"ckpt_path={model}"], "not a training checkpoint"),
    ]


def _tiny_net():
    from stylenet.transformer import TransformerNet

    net = TransformerNet(channels=(4, 8, 8), num_residual=1)
    return net, {"arch": net.config()}


def test_bad_settings_stop_before_any_work_with_one_line(tmp_path, cfg_train, monkeypatch):
    def no_fit(*args, **kwargs):
        raise AssertionError("training started before the settings were checked")

    monkeypatch.setattr(pl.Trainer, "fit", no_fit)
    cases = _bad_config_cases(tmp_path)
    for overrides, message in cases:
        cfg = cfg_train(*overrides)
        for o in overrides:  # compose_train points the output at tmp_path; a case may move it
            if o.startswith("paths.output_dir="):
                with open_dict(cfg):
                    cfg.paths.output_dir = o.split("=", 1)[1]
        with pytest.raises(SystemExit) as e:
            train(cfg)
        text = str(e.value.code)
        assert "\n" not in text, text
        assert re.search(message, text), (overrides, text)
    print(f"\n{len(cases)} bad settings, each stopped with one line")


class InjectNaN(Callback):
    """Makes the loss of one step NaN, as an overflow would."""

    def __init__(self, at_step: int):
        self.at_step = at_step
        self.module = None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.module = module
        loss = module.loss
        if trainer.global_step == self.at_step - 1 and not hasattr(loss, "_real_forward"):
            loss._real_forward = loss.forward

            def forward(*args, **kwargs):
                terms = loss._real_forward(*args, **kwargs)
                loss.forward = loss._real_forward
                del loss._real_forward
                return {k: v * float("nan") for k, v in terms.items()}

            loss.forward = forward


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_state(tmp_path, cfg_train):
    good_model = save_model(tmp_path / "model.pt", *_tiny_net())  # from an earlier run
    before = good_model.read_bytes()
    inject = InjectNaN(at_step=4)
    cfg = cfg_train("trainer.max_steps=8", "data.batch_size=2",
                    "callbacks.finite_guard.every_n_steps=1", *TINY)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, extra_callbacks=[inject])
    text = str(e.value)
    assert "training stopped at step 4: the loss is nan" in text
    assert "last good state (step 3)" in text and "ckpt_path=" in text
    assert good_model.read_bytes() == before  # never replaced by NaN weights
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    net = {k[4:]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    assert all(torch.isfinite(v).all() for v in net.values())
    for k, v in inject.module.net.state_dict().items():  # the weights before the NaN step
        assert torch.equal(net[k], v), k

    # fix nothing but resume: the bad batch was consumed, training goes on to the end
    metrics = train(cfg_train("trainer.max_steps=8", "data.batch_size=2", "ckpt_path=last", *TINY))
    assert metrics["global_step"] == 8
    assert Path(metrics["model_path"]).read_bytes() != before


@pytest.mark.slow
def test_nan_between_checks_never_reaches_the_weights(tmp_path, cfg_train):
    """Checked every 5 steps (no host sync in between): a NaN at step 2 drops that update on the
    device, and the run stops at the check with finite weights, naming step 2."""
    inject = InjectNaN(at_step=2)
    cfg = cfg_train("trainer.max_steps=8", "data.batch_size=2",
                    "callbacks.finite_guard.every_n_steps=5", *TINY)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, extra_callbacks=[inject])
    text = str(e.value)
    assert "training stopped at step 2: the loss is nan" in text
    assert "finite weights" in text and "(step 4)" in text
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 4
    assert all(torch.isfinite(v).all() for k, v in ckpt["state_dict"].items())


def test_style_weight_far_too_high_is_named_as_the_cause(cfg_train):
    cfg = cfg_train("style.style_weight=1e45", "trainer.max_steps=3", *TINY)
    cause = r"step 1: the loss is inf.*style.style_weight=1e\+45 is far above"
    with pytest.raises(NonFiniteLossError, match=cause):
        train(cfg)


def test_checkpoint_writes_are_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    assert io.load_checkpoint(path)["global_step"] == 1

    def crash(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space"):
        io.save_checkpoint({"global_step": 2}, path)
    monkeypatch.undo()
    assert io.load_checkpoint(path)["global_step"] == 1  # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left
