"""A training run's folder as the zoo reads it: its config, its painting, its checkpoints and its
wall time at each step.

A run's wall time at a step is read from its TensorBoard files (validation and previews
included; start-up, ~15 s, left out; a pause before a resume does not count).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
import yaml

from stylenet.checkpoint import STARTED_FROM

ROOT = Path(__file__).resolve().parents[1]


def run_config(run: Path) -> dict:
    return yaml.safe_load((run / ".hydra" / "config.yaml").read_text())


def painting_path(run: Path) -> Path:
    image = run_config(run)["style"]["image"]
    return Path(image.replace("${paths.data_dir}", str(ROOT / "data")))


def wall_clock(run: Path) -> list[tuple[int, float]]:
    """(step, seconds of training up to it) for every logged training step (identity steps
    included), from the run's TensorBoard files. Each process counts from its first event, at
    its own rate back to the step it resumed from: a pause before a resume does not count. A run
    started from another run's checkpoint takes the other run's time up to that step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    segments = []
    for path in (run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        events = sorted((e for tag in ("train/identity", "train/total")
                         if tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)),
                        key=lambda e: e.step)
        if len(events) > 1:
            segments.append(events)
    clock, done, step = [], 0.0, 0
    origin = started_from(run)
    if origin is not None:  # the steps before it were trained, and are timed, in the other run
        source, step = origin
        done = seconds_at(wall_clock(source), step)
    for events in sorted(segments, key=lambda ev: ev[0].step):
        rate = (events[-1].wall_time - events[0].wall_time) / (events[-1].step - events[0].step)
        start = done + (events[0].step - step) * rate
        clock += [(e.step, start + e.wall_time - events[0].wall_time) for e in events]
        done, step = clock[-1][1], clock[-1][0]
    return clock


def start_checkpoint(run: Path) -> Path | None:
    """The other run's checkpoint `run` started from (ckpt_path=<other run>/checkpoints/<file>.ckpt,
    e.g. a shared identity phase), else None. The run's note says it
    (stylenet.checkpoint.note_start: a resume rewrites .hydra/), else, for runs from before the
    note, the config of its last launch."""
    config, note = run / ".hydra" / "config.yaml", run / STARTED_FROM
    if note.is_file():
        ckpt = note.read_text().strip()
    else:
        ckpt = run_config(run).get("ckpt_path") if config.is_file() else None
    if not ckpt or ckpt == "last":
        return None
    ckpt = Path(ckpt)
    source = ckpt.parent.parent
    if (ckpt.parent.name != "checkpoints" or not ckpt.is_file()
            or not (source / "tensorboard").is_dir() or source.resolve() == run.resolve()):
        return None
    return ckpt


def started_from(run: Path) -> tuple[Path, int] | None:
    """(the other run, the step) when `run` started from another run's checkpoint, else None."""
    ckpt = start_checkpoint(run)
    return None if ckpt is None else (ckpt.parent.parent, checkpoint_step(ckpt))


def seconds_at(clock: list[tuple[int, float]], step: int) -> float:
    """Training seconds up to `step`, interpolated (extrapolated past the last logged step)."""
    (s0, t0), (s1, t1) = clock[0], clock[-1]
    for (a, ta), (b, tb) in itertools.pairwise(clock):
        if a <= step <= b:
            return ta + (tb - ta) * (step - a) / max(1, b - a)
    if step < s0:
        return t0 * step / max(1, s0)
    return t1 + (t1 - t0) / max(1, s1 - s0) * (step - s1)


def checkpoint_step(ckpt: Path) -> int:
    """The training step a checkpoint holds, read from the file (mapped, not loaded whole)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]


def step_checkpoints(run: Path) -> dict[int, Path]:
    """step -> checkpoint, the step read from the file: before StepCheckpoint, a step
    checkpoint's name was one validation interval behind the step it holds."""
    return {checkpoint_step(c): c for c in sorted((run / "checkpoints").glob("step*.ckpt"))}
