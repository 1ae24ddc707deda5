"""benchmarks/zoo.py reads a run's wall time from its TensorBoard files: identity steps count, and
a pause before a resume does not."""

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import zoo  # noqa: E402


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
    clock = zoo.wall_clock(tmp_path)
    assert [s for s, _ in clock] == sorted(s for s, _ in clock)
    at = dict(clock)
    assert at[0] == 0 and at[9] == pytest.approx(4.5)
    assert at[100] == pytest.approx(95.0)  # 5 s of identity steps, 90 s from step 10 to 100
    assert at[200] == pytest.approx(295.0)  # + 100 steps at 2 s: the hour's pause is not counted
    assert zoo.seconds_at(clock, 150) == pytest.approx(195.0)
    assert zoo.seconds_at(clock, 220) == pytest.approx(295.0 + 20 * 295.0 / 200)
