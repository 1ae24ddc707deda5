"""benchmarks/zoo.py reads a run's wall time from its TensorBoard files: identity steps count, and
a pause before a resume does not."""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import zoo_curves  # noqa: E402
import zoo_judging as zoo  # noqa: E402
import zoo_runs  # noqa: E402


def write_events(folder, *series):
    """One process's event file: (tag, steps, first wall time, seconds per step) series."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(folder))
    for tag, steps, start, seconds_per_step in series:
        for step in steps:
            writer.add_scalar(tag, 1.0, step,
                              walltime=start + (step - steps[0]) * seconds_per_step)
    writer.close()


def test_wall_clock_counts_identity_steps_and_skips_the_pause_before_a_resume(tmp_path):
    events = tmp_path / "tensorboard"
    # first process: 10 identity steps at 0.5 s, then perceptual steps to 100 at 1 s a step
    write_events(events, ("train/identity", range(0, 10), 1000.0, 0.5),
                 ("train/total", range(10, 101, 10), 1005.0, 1.0))
    # resumed an hour later from step 100, at 2 s a step
    write_events(events, ("train/total", range(100, 201, 10), 9000.0, 2.0))
    clock = zoo_runs.wall_clock(tmp_path)
    assert [s for s, _ in clock] == sorted(s for s, _ in clock)
    at = dict(clock)
    assert at[0] == 0 and at[9] == pytest.approx(4.5)
    assert at[100] == pytest.approx(95.0)  # 5 s of identity steps, 90 s from step 10 to 100
    assert at[200] == pytest.approx(295.0)  # + 100 steps at 2 s: the hour's pause is not counted
    assert zoo_runs.seconds_at(clock, 150) == pytest.approx(195.0)
    assert zoo_runs.seconds_at(clock, 220) == pytest.approx(295.0 + 20 * 295.0 / 200)


@pytest.mark.slow
def test_nets_judges_each_runs_final_model_against_the_reference_run(tmp_path, monkeypatch):
    """zoo.py nets, on two 3-step runs of train.py as a user types it (small and lite nets), with
    the held-out photos and the painting shrunk to 64 px."""
    import subprocess

    from conftest import FAST
    from test_benchmark import needs_offline_vgg

    needs_offline_vgg()  # the judge's VGG16
    for name in ("small", "lite"):
        subprocess.run([sys.executable, str(ROOT / "train.py"), *FAST, f"model={name}",
                        "style=starry_night", "trainer.max_steps=3", "trainer.max_epochs=-1",
                        "trainer.log_every_n_steps=1", "data.dataset.image_size=32",
                        f"hydra.run.dir={tmp_path / name}"],
                       check=True, cwd=tmp_path, capture_output=True)
    photos = zoo.heldout(64)
    monkeypatch.setattr(zoo, "JUDGE_SIZE", 64)
    monkeypatch.setattr(zoo, "heldout", lambda size=64: photos)
    rows = zoo_curves.nets(tmp_path / "small", [tmp_path / "lite"], tmp_path / "out")
    small, lite = rows["small"], rows["lite"]
    assert small["content_ratio"] == 1 == small["style_ratio"]
    assert lite["style_ratio"] == pytest.approx(lite["style"] / small["style"])
    assert lite["content_ratio"] == pytest.approx(lite["content"] / small["content"])
    assert lite["macs_per_pixel"] < small["macs_per_pixel"]
    assert all(r["steps"] == 3 and r["minutes"] > 0 for r in rows.values())
    assert (tmp_path / "out" / "zoo_starry_night_nets.jpg").is_file()


def test_a_run_started_from_another_runs_checkpoint_takes_that_runs_time_to_it(tmp_path):
    """A probe started from another run's step-20 checkpoint (a shared identity phase) did not
    train steps 0-20 itself: they cost what they cost in that run, not the probe's rate."""
    import torch
    import yaml

    source, probe = tmp_path / "source", tmp_path / "probe"
    write_events(source / "tensorboard", ("train/identity", range(0, 20), 1000.0, 0.5),
                 ("train/total", range(20, 101, 10), 1010.0, 1.0))
    (source / "checkpoints").mkdir()
    ckpt = source / "checkpoints" / "step0000020.ckpt"
    torch.save({"global_step": 20}, ckpt)
    write_events(probe / "tensorboard", ("train/total", range(30, 121, 10), 5000.0, 2.0))
    (probe / ".hydra").mkdir()
    (probe / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": str(ckpt)}))
    at = dict(zoo_runs.wall_clock(probe))
    assert zoo_runs.seconds_at(zoo_runs.wall_clock(source), 20) == pytest.approx(10.0)
    assert at[30] == pytest.approx(10.0 + 10 * 2.0)  # 20 identity steps at 0.5 s, 10 at 2 s
    assert at[120] == pytest.approx(10.0 + 100 * 2.0)
    # resumed later (ckpt_path=last rewrites .hydra/): the run's note still says where it began
    (probe / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": "last"}))
    (probe / "started_from.txt").write_text(f"{ckpt}\n")
    assert dict(zoo_runs.wall_clock(probe))[120] == pytest.approx(10.0 + 100 * 2.0)
    # a run that began here (no note): its own clock, as before
    (probe / "started_from.txt").unlink()
    assert dict(zoo_runs.wall_clock(probe))[120] == pytest.approx(30 * 2.0 + 90 * 2.0)


def test_a_published_command_drops_a_start_from_a_run_of_the_same_command(tmp_path):
    """A tuning try kept as the final run started from a checkpoint of a run with its own
    command: those steps were the recipe's, so the record says the command alone. A start from a
    run trained otherwise stays in it, after a resume too; a resume's ckpt_path=last never does."""
    import torch
    import yaml
    import zoo_publish

    source, run = tmp_path / "source", tmp_path / "run"
    write_events(source / "tensorboard", ("train/total", range(0, 101, 10), 1000.0, 1.0))
    (source / "checkpoints").mkdir()
    ckpt = source / "checkpoints" / "step0000050.ckpt"
    torch.save({"global_step": 50}, ckpt)
    for folder in (source, run):
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": str(ckpt)}))

    def overrides(folder, *items):
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(list(items)))

    overrides(source, "experiment=zoo/udnie", "ckpt_path=last", "hydra.run.dir=x")
    overrides(run, "experiment=zoo/udnie", f"ckpt_path={ckpt}", "hydra.run.dir=y")
    assert zoo_publish.train_command(run) == "python train.py experiment=zoo/udnie"
    overrides(source, "experiment=cpu_paint", "style=udnie")
    assert zoo_publish.train_command(run).split() == [
        "python", "train.py", "experiment=zoo/udnie", f"ckpt_path={ckpt}"]
    # resumed later: the note keeps the start
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"ckpt_path": "last"}))
    overrides(run, "experiment=zoo/udnie", "ckpt_path=last")
    (run / "started_from.txt").write_text(f"{ckpt}\n")
    assert zoo_publish.train_command(run).split()[-1] == f"ckpt_path={ckpt}"
    (run / "started_from.txt").unlink()  # a run that began here
    assert zoo_publish.train_command(run) == "python train.py experiment=zoo/udnie"
