"""Section infer: Stylizer as users get it, and the exported ONNX model in ONNX Runtime, against
the plain fp32 eager forward.

Rows, for each case (side x side pixels, batch):
  fp32 eager              load_model, net.to(device), the forward under inference_mode with
                          PyTorch's default settings; the input moved to the device and the
                          output back to the CPU, as Stylizer's calls take and return CPU
                          tensors. The baseline of every ratio.
  Stylizer defaults       stylenet.stylize.Stylizer(model) (on CUDA: bf16 autocast,
                          channels_last, timed before compile=auto compiles once a run has
                          stylized 64 Mpx; on the CPU: ONNX Runtime when installed), as a user
                          stylizing a few photos gets it
  Stylizer compile=true   the same compiled: the steady state of a long run; its first call
                          (the compilation) is reported as the warm-up
  ONNX Runtime            the file stylenet.export writes, run with the CUDA provider when it is
                          installed, else the CPU's (on a GPU run then only for the first case)
Each row: warm-up (the first call), median seconds per call, images/s, speedup over fp32 eager,
PSNR against its output (>= 40 dB, else the row fails), peak GPU memory, and what Stylizer
logged (compiling, tiling).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from bench_common import (
    PSNR_DB,
    LogLines,
    failed_row,
    format_table,
    peak_gib,
    psnr,
    reset_peak,
    restore_defaults,
    seconds,
    smooth_images,
    write_model,
)


@dataclass
class Sizes:
    cases: tuple[tuple[int, int], ...] = ((1024, 1), (512, 16), (4096, 1))  # (side, batch)
    channels: tuple[int, int, int] = (32, 64, 128)  # the paper's net
    num_residual: int = 5
    min_time: float = 1.0  # seconds of timed calls per row (one call at least)
    compile_backend: str = "inductor"  # small: eager (torch.compile's path, no C++ build)


FULL = Sizes()
CPU = Sizes(cases=((1024, 1),))  # --device cpu without --small: the paper's net at 1024 px
SMALL = Sizes(cases=((48, 1), (32, 4), (64, 1)), channels=(8, 16, 32), num_residual=1,
              min_time=0.0, compile_backend="eager")


def fp32_eager(model: Path, device: torch.device):
    from stylenet.model_file import load_model

    net, _ = load_model(model)
    net.to(device).eval()

    def call(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x.to(device)).clamp(0, 1).cpu()

    return call


def onnx_session(model: Path, device: torch.device, work: Path):
    """An ONNX Runtime session of the file stylenet.export writes (CUDA provider when installed
    on a CUDA run), or None without onnxruntime (an optional dependency)."""
    from stylenet import export as export_module

    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = export_module.export(model, "onnx", work / "model.onnx", check=True, overwrite=True)
    opts = ort.SessionOptions()
    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    else:
        opts.intra_op_num_threads = torch.get_num_threads()  # as many threads as torch's rows
    return ort.InferenceSession(str(path), opts, providers=providers)


def measure(call, x: torch.Tensor, min_time: float, device: torch.device,
            max_calls: int | None = None) -> dict:
    """The first call (warm-up: compilation, cuDNN's choices) and the median of the rest."""
    reset_peak(device)
    t0 = time.perf_counter()
    out = call(x)
    warmup = time.perf_counter() - t0
    sec = seconds(lambda: call(x), min_time, max_calls)
    return {"out": out, "warmup_s": warmup, "seconds": sec, "peak_gib": peak_gib(device)}


def stylizer_path(lines: list[str]) -> str:
    compiled = any("compiling" in line for line in lines)
    onnx = any("ONNX Runtime" in line for line in lines)
    tiled = any("tiling at" in line for line in lines)
    return ("compiled" if compiled else "onnx" if onnx else "eager") + (", tiled" if tiled else "")


def run(args, s: Sizes, device: torch.device, work: Path) -> dict:
    from stylenet import stylize

    model = write_model(work / "infer_model.pt", s.channels, s.num_residual)
    onnx_failed = None
    try:
        session = onnx_session(model, device, work)
    except Exception as e:  # the torch rows still count
        session, onnx_failed = None, failed_row(e)
    provider = session and session.get_providers()[0].removesuffix("ExecutionProvider")
    # The CPU provider on a GPU run: one case shows it, the big ones would take minutes.
    onnx_everywhere = device.type != "cuda" or provider == "CUDA"
    rows = []
    for i, (size, batch) in enumerate(s.cases):
        case = f"{size}x{size} b{batch}"
        x = smooth_images(batch, size)
        defaults = restore_defaults()
        base = measure(fp32_eager(model, device), x, s.min_time, device)
        ref = base.pop("out")
        case_rows = [{"name": "fp32 eager", **base, "ok": defaults,
                      "detail": "" if defaults else "PyTorch's settings are not the defaults"}]

        # Stylizer compiles itself once a run has stylized COMPILE_AFTER_PIXELS: the defaults
        # row stops timing before that call (on the CPU it never compiles).
        eager_calls = math.ceil(stylize.COMPILE_AFTER_PIXELS / (batch * size * size))
        default_path = "onnx" if device.type == "cpu" and stylize.has_onnxruntime() else "eager"
        stylizers = [("Stylizer defaults", {}, max(1, eager_calls - 1), default_path),
                     ("Stylizer compile=true",
                      {"compile": True, "compile_backend": s.compile_backend}, None, "compiled")]
        for name, kwargs, max_calls, want in stylizers:
            if kwargs.get("compile"):
                torch._dynamo.reset()  # compiles as a fresh process would, not reusing a graph
            try:
                with LogLines("stylenet.stylize") as log:
                    stylizer = stylize.Stylizer(model, device=device.type, **kwargs)
                    row = measure(stylizer, x, s.min_time, device, max_calls)
                    del stylizer
            except Exception as e:  # the other rows' figures still count
                case_rows.append({"name": name, **failed_row(e)})
                continue
            path = stylizer_path(log.lines)
            row.update(name=name, detail=path if path == want else f"{path} (want {want})")
            row["path_ok"] = path == want
            case_rows.append(row)

        if session is not None and (onnx_everywhere or i == 0):
            def run_onnx(x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

            try:
                row = measure(run_onnx, x, s.min_time, device)
                # ONNX Runtime's memory is not torch's to count
                row.update(peak_gib=None, detail=f"{provider} provider")
            except Exception as e:
                row = failed_row(e)
            case_rows.append({"name": "ONNX Runtime", **row})
        elif onnx_failed is not None:
            case_rows.append({"name": "ONNX Runtime", **onnx_failed})
        else:
            why = ("onnxruntime is not installed (pip install onnxruntime)" if session is None
                   else f"no CUDA provider (pip install onnxruntime-gpu): CPU at "
                   f"{s.cases[0][0]} px only")
            case_rows.append({"name": "ONNX Runtime", "ok": None, "detail": f"skipped: {why}"})

        for r in case_rows:
            r.update(case=case, size=size, batch=batch)
            out = r.pop("out", None)
            if "seconds" not in r:
                continue
            r["images_per_s"] = batch / r["seconds"]
            r["speedup"] = base["seconds"] / r["seconds"]
            if out is not None and r["name"] != "fp32 eager":
                r["psnr_db"] = psnr(out, ref)
                agrees = out.shape == ref.shape and r["psnr_db"] >= PSNR_DB
                r["ok"] = r.pop("path_ok", True) and agrees
                if not agrees:
                    r["detail"] = (f"PSNR {r['psnr_db']:.1f} dB < {PSNR_DB:.0f} against fp32 "
                                   f"eager, shape {tuple(out.shape)}; {r['detail']}")
        rows += case_rows
        del x, ref
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"net": {"channels": list(s.channels), "num_residual": s.num_residual},
            "onnx_provider": provider, "rows": rows}


def table(result: dict) -> str:
    columns = [("case", "case", ""), ("name", "row", ""), ("warmup_s", "warm-up s", ".2f"),
               ("seconds", "s/call", ".4f"), ("images_per_s", "img/s", ".2f"),
               ("speedup", "x", ".2f"), ("psnr_db", "PSNR dB", ".1f"),
               ("peak_gib", "peak GiB", ".2f")]
    net = result["net"]
    title = (f"[infer] net {net['channels']} x{net['num_residual']}; CPU tensors in and out; "
             f"x and PSNR against fp32 eager")
    return format_table(title, result["rows"], columns)
