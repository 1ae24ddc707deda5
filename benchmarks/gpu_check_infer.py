"""benchmarks/gpu_check.py's inference rows: Stylizer untiled and tiled, ONNX Runtime against
PyTorch, and optimize.py, each through the code users call."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import torch
from bench_common import PSNR_DB, ROOT, LogLines, psnr, restore_defaults

if TYPE_CHECKING:
    from gpu_check import Context

# PSNR_DB (bench_common, 40 dB): ONNX vs PyTorch, and tiled vs untiled in bf16/fp16.
# Tiled vs untiled in fp32 (the CPU): equal up to summation order, 70+ dB; tiles normalised with
# their own statistics instead of the whole image's score ~45 dB even at tiny sizes.
PSNR_FP32_DB = 60.0
STYLE_IMAGE = ROOT / "data" / "styles" / "mosaic.png"


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
