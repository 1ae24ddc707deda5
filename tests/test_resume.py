"""Resume: a run stopped at any step and resumed sees the same batches, crops and losses as a run
that was never stopped; a kill -9 at random moments loses at most one checkpoint interval."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from badfiles import write_good
from conftest import ROOT, compose_train
from pace import reached
from pytorch_lightning import Callback

from train import train

TINY = ["model.net.channels=[8,16,32]", "model.net.num_residual=1", "trainer.max_epochs=-1",
        "trainer.log_every_n_steps=1"]


def photo_folder(root: Path) -> Path:
    """15 files, one of them not an image: the first 11 (sorted) are the training split, which
    gives 5 batches of 2 per epoch; the last 4 are held out."""
    folder = root / "photos"
    write_good(folder, 14, size=(40, 36))
    (folder / "bad_text.png").write_bytes(b"not pixels")  # sorts into the training split
    return folder


def folder_overrides(folder: Path) -> list[str]:
    # random crops of a resized photo: the crop positions must survive a resume too
    return ["data=folder", f"data.dataset.root={folder}", "data.dataset.image_size=24",
            "data.dataset.resize=32", "data.dataset.random_crop=true", "data.val_size=4",
            "data.batch_size=2", "data.num_workers=0", "data.num_preview=1", *TINY]


class Record(Callback):
    """Per optimizer step: a fingerprint of the batch and the loss."""

    def __init__(self):
        self.steps: dict[int, tuple[int, float]] = {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        images = batch[0].long()
        weights = torch.arange(1, images[0].numel() + 1).view_as(images[0])
        fingerprint = int((images * weights).sum())  # changes with the photos, crops and order
        self.steps[trainer.global_step] = (fingerprint, float(outputs["loss"]))


def run(tmp: Path, overrides: list[str]) -> tuple[dict, Record]:
    record = Record()
    cfg = compose_train(tmp, ["callbacks=default", "trainer.enable_checkpointing=true",
                              "callbacks.model_checkpoint.every_n_train_steps=1", *overrides])
    return train(cfg, extra_callbacks=[record]), record


@pytest.mark.slow
def test_resume_mid_epoch_and_at_epoch_end_gives_the_same_batches_and_losses(tmp_path, caplog):
    folder = photo_folder(tmp_path)
    common = folder_overrides(folder)
    full, ref = run(tmp_path / "ref", [*common, "trainer.max_steps=8"])
    assert sorted(ref.steps) == list(range(1, 9))
    # 5 batches per epoch: stop mid-epoch (3, the resumed run crosses into the next epoch) and
    # at the end of an epoch (5, Lightning resumes at the next epoch)
    for stop in (3, 5):
        out = tmp_path / f"stop{stop}"
        first, _ = run(out, [*common, f"trainer.max_steps={stop}"])
        assert first["global_step"] == stop
        caplog.clear()
        resumed, rec = run(out, [*common, "trainer.max_steps=8", "ckpt_path=last"])
        assert resumed["global_step"] == 8
        assert sorted(rec.steps) == list(range(stop + 1, 9)), stop
        if stop == 5:  # a whole epoch was seen before the checkpoint: the bad file is known
            assert "bad_text.png" not in caplog.text
        for step, (fingerprint, loss) in rec.steps.items():
            assert fingerprint == ref.steps[step][0], f"stop {stop}: other batch at step {step}"
            assert loss == pytest.approx(ref.steps[step][1], rel=1e-5), (stop, step)
        # the bad file is remembered across the resume: found and counted once in all
        assert resumed["skipped_files"] == full["skipped_files"] == 1


def test_missing_or_unusable_checkpoint_is_a_clear_error(tmp_path, cfg_train):
    cfg = cfg_train("ckpt_path=last")
    with pytest.raises(SystemExit, match=r"ckpt_path=last: there is no .*last.ckpt: .*run.dir="):
        train(cfg)
    bad = tmp_path / "checkpoints" / "last.ckpt"
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 half a zip")
    with pytest.raises(SystemExit, match="not a readable checkpoint"):
        train(cfg)
    with pytest.raises(SystemExit, match="no such checkpoint file"):
        train(cfg_train(f"ckpt_path={tmp_path / 'nope.ckpt'}"))
    # from before the pixel scale was stored: trained at 0..1, refused with the reason
    old = tmp_path / "old.ckpt"
    torch.save({"loops": {}, "state_dict": {},
                "stylenet": {"arch": {"channels": [32, 64, 128], "num_residual": 5}}}, old)
    with pytest.raises(SystemExit, match=r"model.net.pixel_scale=1.0, this run has 255.0"):
        train(cfg_train(f"ckpt_path={old}"))


def scalars(run_dir: Path, tag: str) -> list[dict[int, float]]:
    """One {step: value} per TensorBoard events file, oldest file first (one file per process)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for path in sorted(run_dir.glob("tensorboard/events.out.tfevents.*"),
                       key=lambda p: int(p.name.split(".")[3])):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        out.append({e.step: e.value for e in acc.Scalars(tag)} if tag in acc.Tags()["scalars"]
                   else {})
    return out


@pytest.mark.slow
def test_kill_9_at_random_moments_and_resume_each_time(tmp_path):
    """A real training process is killed with SIGKILL three times at random moments (sometimes
    during a checkpoint save) and resumed with ckpt_path=last; the final run must reach the step
    count and its loss curve must match, step for step, a run that was never killed."""
    steps, every = 24, 4
    overrides = [
        "data=synthetic", "data.dataset.n=24", "data.dataset.image_size=32", "data.val_size=4",
        "loss.vgg.weights=random", "trainer=cpu", "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false", "trainer.val_check_interval=null",
        "trainer.check_val_every_n_epoch=1",
        "trainer.limit_val_batches=0", f"trainer.max_steps={steps}", *TINY,
    ]
    ref = Record()
    train(compose_train(tmp_path / "ref", [*overrides, "callbacks=no_checkpoints",
                                           "trainer.enable_checkpointing=false", "~logger"]),
          extra_callbacks=[ref])

    run_dir = tmp_path / "run"
    ckpts = run_dir / "checkpoints"
    progress = tmp_path / "progress"
    cmd = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}",
           f"callbacks.model_checkpoint.every_n_train_steps={every}"]
    # the killed runs pace themselves (0.2 s a step) and report their step, so the kill lands
    # where it was aimed, however fast the steps run here
    paced = ["+callbacks.pace._target_=pace.Pace", f"+callbacks.pace.path={progress}",
             "+callbacks.pace.seconds=0.2"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "tests"), *filter(None, [os.environ.get("PYTHONPATH")])])}
    rng = random.Random(int(os.environ.get("STYLENET_KILL_SEED", "0")) or None)
    kills, lost = [], []
    resumed_from = 0
    for attempt in range(3):
        args = cmd + paced + (["ckpt_path=last"] if (ckpts / "last.ckpt").exists() else [])
        progress.unlink(missing_ok=True)
        proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        # kill at a random step past the last resume (between or during checkpoint saves), not
        # before the first checkpoint (before it there is nothing to resume from), and early
        # enough that the run cannot finish in the moment between aiming and killing
        target = min(max(resumed_from + rng.randint(1, every + 2), every + 1), steps - every)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and reached(progress) < target:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.3))
        assert proc.poll() is None, f"finished before kill {attempt}: {proc.stderr.read()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        # the steps this process trained (TensorBoard shows a step only after its checkpoint)
        at_kill = reached(progress)
        if (ckpts / "last.ckpt").exists():
            ckpt = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=True)
            resumed_from = ckpt["global_step"]
        else:  # killed before the first save completed: the next run starts from step 0
            resumed_from = 0
        kills.append(at_kill)
        lost.append(at_kill - resumed_from)
        assert 0 <= at_kill - resumed_from <= every, (at_kill, resumed_from)
        # a kill during a save leaves at most a temp file, never a broken .ckpt
        for path in ckpts.glob("*.ckpt"):
            torch.load(path, map_location="cpu", weights_only=True)

    final = subprocess.run(cmd + ["ckpt_path=last"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=300)
    assert final.returncode == 0, final.stderr[-3000:]
    assert torch.load(ckpts / "last.ckpt", weights_only=True)["global_step"] == steps
    assert (run_dir / "model.pt").is_file()
    assert not list(ckpts.glob(".*.tmp"))

    # The curve over all processes: the latest process wins where steps were trained twice.
    curve: dict[int, float] = {}
    for part in scalars(run_dir, "train/total"):
        curve.update(part)
    assert sorted(curve) == list(range(steps))  # no gap, no step twice
    for step, value in curve.items():
        assert value == pytest.approx(ref.steps[step + 1][1], rel=1e-4), step
    print(f"\nkilled at steps {kills}, steps redone after each resume {lost} "
          f"(checkpoint every {every})")


def test_a_run_started_from_another_runs_checkpoint_notes_it_through_its_resumes(tmp_path):
    """Hydra rewrites .hydra/ at each launch: the run's own note keeps where its first steps
    were trained (benchmarks/zoo_runs.py reads it for wall times and commands)."""
    from stylenet.checkpoint import STARTED_FROM

    folder = photo_folder(tmp_path)
    probe, tuned = tmp_path / "probe", tmp_path / "tuned"
    run(probe, [*folder_overrides(folder), "trainer.max_steps=2"])
    start = probe / "checkpoints" / "step0000002.ckpt"
    assert not (probe / STARTED_FROM).exists()  # began here
    run(tuned, [*folder_overrides(folder), "trainer.max_steps=3", f"ckpt_path={start}"])
    assert (tuned / STARTED_FROM).read_text().strip() == str(start.resolve())
    run(tuned, [*folder_overrides(folder), "trainer.max_steps=4", "ckpt_path=last"])
    assert (tuned / STARTED_FROM).read_text().strip() == str(start.resolve())
    own = tuned / "checkpoints" / "step0000004.ckpt"
    run(tuned, [*folder_overrides(folder), "trainer.max_steps=5", f"ckpt_path={own}"])
    assert (tuned / STARTED_FROM).read_text().strip() == str(start.resolve())
    run(tuned, [*folder_overrides(folder), "trainer.max_steps=1"])  # afresh in the same folder
    assert not (tuned / STARTED_FROM).exists()
