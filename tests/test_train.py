import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT

from stylenet.image import load_tensor
from stylenet.model_file import load_model, save_model
from train import train


def test_fast_dev_run_on_synthetic_data(cfg_train):
    cfg = cfg_train("trainer.fast_dev_run=true")
    metrics = train(cfg)
    for key in ("train/content", "train/style", "train/tv", "train/total"):
        assert torch.isfinite(torch.tensor(metrics[key])), key
    assert metrics["global_step"] == 1


def test_overfit_one_image_halves_the_style_loss(cfg_train, tmp_path):
    cfg = cfg_train(
        "data.dataset.n=2",
        "data.dataset.image_size=32",
        "data.val_size=1",
        "data.batch_size=1",
        "data.num_preview=1",
        "model.net.channels=[8,16,32]",
        "model.net.num_residual=2",
        "trainer.overfit_batches=1",
        "trainer.max_epochs=-1",
        # 60: the net starts from a near-black output (pixels in 0..255, as the reference)
        "trainer.max_steps=60",
        "trainer.log_every_n_steps=1",
        "trainer.limit_val_batches=0",
        "~logger",
    )
    losses = []

    from pytorch_lightning import Callback

    class Record(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(float(trainer.callback_metrics["train/style"]))

    train(cfg, extra_callbacks=[Record()])
    assert len(losses) == 60
    assert losses[-1] <= 0.5 * losses[0], losses


def test_checkpoint_model_file_and_infer_give_identical_output(cfg_train, tmp_path):
    cfg = cfg_train(
        "callbacks=default",
        "trainer.enable_checkpointing=true",
        "trainer.max_steps=3",
        "trainer.max_epochs=-1",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "model.net.channels=[8,16,32]",
        "model.net.num_residual=2",
    )
    metrics = train(cfg)
    ckpt = tmp_path / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    raw = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert not any(k.startswith("loss.") for k in raw["state_dict"])  # no VGG in checkpoints
    model_file = Path(metrics["model_path"])
    net_model, meta = load_model(model_file)
    net_ckpt, _ = load_model(ckpt)
    assert meta["style"]["name"] == "mosaic" and len(meta["style"]["sha256"]) == 64
    assert meta["arch"] == {"channels": [8, 16, 32], "num_residual": 2, "pixel_scale": 255.0,
                            "edge_kernel": 9}
    assert meta["loss_network"]["weights"] == "random"
    assert "style_weight" in meta["config"]
    assert Path(metrics["sample_path"]).is_file()

    photo = load_tensor(ROOT / "data" / "styles" / "waves.png", max_side=45)
    with torch.no_grad():
        expected = net_ckpt(photo[None])[0].clamp(0, 1)
        assert torch.equal(net_model(photo[None])[0].clamp(0, 1), expected)
    src = tmp_path / "in.png"
    from stylenet.image import save_atomic, to_pil

    save_atomic(to_pil(photo), src)
    out = tmp_path / "out.png"
    cmd = [
        sys.executable,
        str(ROOT / "infer.py"),
        f"model={model_file}",
        f"input={src}",
        f"output={out}",
        "device=cpu",
    ]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True)
    written = load_tensor(out)
    assert written.shape == photo.shape
    # the file holds 8-bit values of the same output
    assert (written - expected).abs().max() <= 0.5 / 255 + 1e-6


def test_non_finite_weights_never_become_a_model_file(tmp_path):
    from stylenet.model_file import ModelFileError
    from stylenet.transformer import TransformerNet

    net = TransformerNet(channels=(4, 8, 8), num_residual=1)
    good = save_model(tmp_path / "m.pt", net, {"arch": net.config()})
    before = good.read_bytes()
    with torch.no_grad():
        net.conv1.conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ModelFileError, match="NaN"):
        save_model(good, net, {"arch": net.config()})
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left behind


@pytest.mark.slow
def test_multirun_sweep_gives_runs_side_by_side(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "style.style_weight=1e9,1e10,1e11",
        "data=synthetic",
        "loss.vgg.weights=random",
        "trainer=cpu",
        "trainer.max_steps=2",
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "callbacks=no_checkpoints",
        "trainer.enable_checkpointing=false",
        f"paths.log_dir={tmp_path}",
    ]
    subprocess.run(cmd, check=True, cwd=tmp_path, capture_output=True, timeout=600)
    # one folder per run, side by side, named by the run's overrides
    runs = sorted(
        p.parent.parent.name for p in tmp_path.glob("train/multiruns/*/*/tensorboard/events.*")
    )
    assert [r.split("_")[0] for r in runs] == ["0", "1", "2"]
    assert all(
        "style.style_weight=" in r and "paths.log_dir=" + str(tmp_path).replace("/", "_") in r
        for r in runs
    )
    hparams = sorted(tmp_path.glob("train/multiruns/*/*/tensorboard/hparams.yaml"))
    assert len(hparams) == 3
    weights = [
        float(load_model(m)[1]["config"].split("style_weight: ")[1].split()[0])
        for m in sorted(tmp_path.glob("train/multiruns/*/*/model.pt"))
    ]
    assert weights == [1e9, 1e10, 1e11]


@pytest.mark.slow
def test_ddp_trains_in_two_cpu_processes(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "trainer.precision=32-true",
        "data=synthetic",
        "loss.vgg.weights=random",
        "trainer.max_steps=3",
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "callbacks=no_checkpoints",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={tmp_path}",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in log
    assert "distributed_backend=gloo" in log
    assert (tmp_path / "model.pt").is_file()


def test_a_learning_rate_schedule_steps_with_every_optimizer_step(cfg_train, tmp_path):
    """model.scheduler (here OneCycleLR): the lr each step ran with is the schedule's, computed
    independently with torch's own OneCycleLR."""
    from pytorch_lightning import Callback
    from test_folder_length import write_photos

    root = write_photos(tmp_path / "photos", 10)
    cfg = cfg_train("experiment=cpu_zoo", f"data.dataset.root={root}",
                    "data.dataset.image_size=32", "data.dataset.resize=48", "data.val_size=2",
                    "data.num_preview=2", "data.preview_size=32", "loss.vgg.weights=random",
                    "model.net.channels=[8,16,32]", "model.net.num_residual=1",
                    "model.identity_steps=0", "model.optimizer.lr=3e-3",
                    "model.scheduler={_target_:torch.optim.lr_scheduler.OneCycleLR,_partial_:true,"
                    "max_lr:${model.optimizer.lr},total_steps:${trainer.max_steps},pct_start:0.1}",
                    "trainer.max_steps=20", "trainer.enable_model_summary=false", fast=False)
    lrs = []

    class Record(Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            lrs.append(optimizer.param_groups[0]["lr"])

    train(cfg, extra_callbacks=[Record()])
    param = torch.nn.Parameter(torch.zeros(1))
    expected_opt = torch.optim.Adam([param], lr=cfg.model.optimizer.lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(expected_opt, max_lr=cfg.model.optimizer.lr,
                                                   total_steps=20, pct_start=0.1)
    expected = []
    for _ in range(20):
        expected.append(expected_opt.param_groups[0]["lr"])
        expected_opt.step()
        schedule.step()
    assert lrs == pytest.approx(expected)
    assert lrs[0] == pytest.approx(3e-3 / 25) and max(lrs) > 2.5e-3 and lrs[-1] < 1e-4


def test_identity_steps_warm_start_the_net_on_its_photos(cfg_train):
    """model.identity_steps: the first steps fit the net to give its photos back without the
    loss network; the perceptual steps after them start with fresh Adam moments."""
    from pytorch_lightning import Callback

    cfg = cfg_train("data.dataset.n=4", "data.dataset.image_size=32", "data.val_size=1",
                    "data.batch_size=2", "data.num_preview=1", "model.net.channels=[8,16,32]",
                    "model.net.num_residual=1", "model.identity_steps=30",
                    "model.optimizer.lr=1e-2", "trainer.max_epochs=-1", "trainer.max_steps=33",
                    "trainer.log_every_n_steps=1", "trainer.limit_val_batches=0", "~logger")
    rows = []

    class Record(Callback):
        def on_fit_start(self, trainer, module):
            self.vgg_calls = 0

            def count(*_):
                self.vgg_calls += 1
            module.loss.vgg.register_forward_hook(count)

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            state = trainer.optimizers[0].state[next(module.net.parameters())]
            rows.append((float(outputs["loss"]), self.vgg_calls, int(state["step"])))

    train(cfg, extra_callbacks=[Record()])
    identity, perceptual = rows[:30], rows[30:]
    style_targets = identity[0][1]  # the style image's pass at the start of the fit
    assert [calls for _, calls, _ in identity] == [style_targets] * 30  # no loss network
    assert identity[-1][0] < 0.3 * identity[0][0], identity  # it learns to give the photo back
    assert [steps for *_, steps in identity] == list(range(1, 31))
    assert [steps for *_, steps in perceptual] == [1, 2, 3]  # fresh moments
    assert perceptual[0][1] > style_targets and perceptual[0][0] > 10 * identity[-1][0]


def test_with_content_palette_the_identity_steps_fit_the_photo_in_the_paintings_colours(
        cfg_train):
    """loss.content_palette=true: the identity steps' target is the content target, the photo
    recoloured to the painting's palette, not the photo."""
    import torch.nn.functional as F
    from pytorch_lightning import Callback

    from stylenet.color import color_stats, palette_transfer

    cfg = cfg_train("data.dataset.n=4", "data.dataset.image_size=32", "data.val_size=1",
                    "data.batch_size=2", "data.num_preview=1", "model.net.channels=[8,16,32]",
                    "model.net.num_residual=1", "model.identity_steps=3",
                    "loss.content_palette=true", "trainer.max_epochs=-1", "trainer.max_steps=3",
                    "trainer.limit_val_batches=0", "~logger")
    pairs = []

    class Record(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            x = batch.float() / 255
            mean, cov = color_stats(module.style_image)
            with torch.no_grad():
                out = module.net(x)
            self.expected = (F.mse_loss(out, palette_transfer(x, mean[0], cov[0])).item(),
                             F.mse_loss(out, x).item())

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            pairs.append((float(outputs["loss"]), *self.expected))

    train(cfg, extra_callbacks=[Record()])
    assert len(pairs) == 3
    for loss, to_recoloured, to_photo in pairs:
        assert loss == pytest.approx(to_recoloured, rel=1e-4)
        assert loss != pytest.approx(to_photo, rel=1e-2)


def test_the_style_warmup_lightens_the_first_perceptual_steps(cfg_train):
    """model.style_warmup_steps: after the identity steps, that many steps at style_warmup_factor
    times style.style_weight, then the full weight; validation scores with the step's weight."""
    from pytorch_lightning import Callback

    cfg = cfg_train("data.dataset.n=4", "data.dataset.image_size=32", "data.val_size=1",
                    "data.batch_size=2", "data.num_preview=1", "model.net.channels=[8,16,32]",
                    "model.net.num_residual=1", "model.identity_steps=2",
                    "model.style_warmup_steps=3", "model.style_warmup_factor=0.25",
                    "style.style_weight=4e9", "trainer.max_epochs=-1", "trainer.max_steps=7",
                    "trainer.limit_val_batches=0", "~logger")
    weights = []

    class Record(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            weights.append(module.loss.style_weight)

    train(cfg, extra_callbacks=[Record()])
    assert weights[2:] == [1e9] * 3 + [4e9] * 2  # the identity steps do not read the loss
    with pytest.raises(SystemExit, match="style_warmup_factor"):
        train(cfg_train("model.style_warmup_factor=0", "~logger"))


def test_step_checkpoints_are_named_by_the_step_they_hold(cfg_train, tmp_path):
    # Validation logs a "step" metric; a checkpoint saved before a validation must still be
    # named by its own step, not by the previous validation's.
    cfg = cfg_train(
        "callbacks=default",
        "trainer.enable_checkpointing=true",
        "trainer.max_steps=4",
        "trainer.max_epochs=-1",
        "trainer.val_check_interval=2",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "callbacks.model_checkpoint.save_top_k=-1",
        "model.net.channels=[8,16,32]",
        "model.net.num_residual=2",
    )
    train(cfg)
    held = {p.name: torch.load(p, map_location="cpu", weights_only=True)["global_step"]
            for p in (tmp_path / "checkpoints").glob("step*.ckpt")}
    assert held == {"step0000002.ckpt": 2, "step0000004.ckpt": 4}
