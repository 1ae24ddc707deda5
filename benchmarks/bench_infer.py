"""Section infer: Stylizer as users get it, and the exported ONNX model in ONNX Runtime, against
the plain fp32 eager forward.

Rows, for each net (the paper's; on the CPU also model=lite) and case (side x side px, batch):
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
  Stylizer tile=1024      cases over 2048 px only: tiles with the whole image's statistics
                          (on the CPU these cases time one call a row and skip compile=true)
  ONNX Runtime            the file stylenet.export writes, run with the CUDA provider when it is
                          installed, else the CPU's (on a GPU run then only for the first case;
                          on the CPU skipped in a case Stylizer would tile for memory)
Each row: warm-up (the first call), median seconds per call, images/s, speedup over fp32 eager,
PSNR against its output (>= 40 dB, else the row fails), peak GPU memory, and what Stylizer
logged (compiling, tiling). Each case's rows are printed as it finishes.
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

# (name, encoder widths, residual blocks, edge kernel) of a net to time
Net = tuple[str, tuple[int, int, int], int, int]
PAPER: Net = ("paper", (32, 64, 128), 5, 9)


def config_net(name: str) -> Net:
    """A net as configs/model/<name>.yaml builds it."""
    from omegaconf import OmegaConf

    folder = Path(__file__).resolve().parents[1] / "configs" / "model"
    cfg = OmegaConf.merge(OmegaConf.load(folder / "stylenet.yaml").net,
                          OmegaConf.load(folder / f"{name}.yaml").get("net", {}))
    return name, tuple(cfg.channels), int(cfg.num_residual), int(cfg.edge_kernel)


@dataclass
class Sizes:
    cases: tuple[tuple[int, int], ...] = ((1024, 1), (512, 16), (4096, 1))  # (side, batch)
    nets: tuple[Net, ...] = (PAPER,)
    min_time: float = 1.0  # seconds of timed calls per row (one call at least)
    min_calls: int = 1  # timed calls per row at least, in cases up to `big` px
    big: int = 2048  # larger cases: one timed call a row, no compile row on the CPU, and a row
    tile: int = 1024  # tiled at this many px (Stylizer tile=..., whole-image statistics)
    compile_backend: str = "inductor"  # small: eager (torch.compile's path, no C++ build)


FULL = Sizes()
# --device cpu without --small: the paper's and the lite net, 1024 px (median of 5) and 4096 px.
CPU = Sizes(cases=((1024, 1), (4096, 1)), nets=(PAPER, config_net("lite")), min_calls=5)
SMALL = Sizes(cases=((48, 1), (32, 4), (128, 1)), nets=(("tiny", (8, 16, 32), 1, 9),
                                                        ("tiny k5", (4, 8, 16), 1, 5)),
              min_time=0.0, big=64, tile=96, compile_backend="eager")


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
            max_calls: int | None = None, min_calls: int = 1) -> dict:
    """The first call (warm-up: compilation, cuDNN's choices) and the median of the rest."""
    reset_peak(device)
    t0 = time.perf_counter()
    out = call(x)
    warmup = time.perf_counter() - t0
    sec = seconds(lambda: call(x), min_time, max_calls, min_calls)
    return {"out": out, "warmup_s": warmup, "seconds": sec, "peak_gib": peak_gib(device)}


def stylizer_path(lines: list[str]) -> str:
    compiled = any("compiling" in line for line in lines)
    onnx = any("ONNX Runtime" in line for line in lines)
    tiled = any(line.startswith("tiling") or "tiling at" in line for line in lines)
    return ("compiled" if compiled else "onnx" if onnx else "eager") + (", tiled" if tiled else "")


def run(args, s: Sizes, device: torch.device, work: Path) -> dict:
    rows, provider = [], None
    for name, channels, blocks, kernel in s.nets:
        model = write_model(work / f"infer_{name.replace(' ', '_')}.pt", channels, blocks, kernel)
        net_rows_, provider = net_rows(s, model, device, work)
        rows += [{**r, "case": f"{name} {r['case']}"} for r in net_rows_]
    return {"nets": [{"name": n, "channels": list(c), "num_residual": b, "edge_kernel": k}
                     for n, c, b, k in s.nets], "onnx_provider": provider, "rows": rows}


def net_rows(s: Sizes, model: Path, device: torch.device,
             work: Path) -> tuple[list[dict], str | None]:
    """Every case's rows for one model file, and the ONNX Runtime provider used."""
    from stylenet import stylize

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
        big = size > s.big
        calls = {"min_time": 0.0 if big else s.min_time, "min_calls": 1 if big else s.min_calls}
        x = smooth_images(batch, size)
        defaults = restore_defaults()
        base = measure(fp32_eager(model, device), x, device=device, **calls)
        ref = base.pop("out")
        case_rows = [{"name": "fp32 eager", **base, "ok": defaults,
                      "detail": "" if defaults else "PyTorch's settings are not the defaults"}]

        # Stylizer compiles itself once a run has stylized COMPILE_AFTER_PIXELS: the defaults
        # row stops timing before that call (on the CPU it never compiles).
        eager_calls = math.ceil(stylize.COMPILE_AFTER_PIXELS / (batch * size * size))
        default_path = "onnx" if device.type == "cpu" and stylize.has_onnxruntime() else "eager"
        fits = True  # untiled, by Stylizer's memory estimate
        stylizers = [("Stylizer defaults", {}, max(1, eager_calls - 1), default_path)]
        if not (big and device.type == "cpu"):  # compiling for 4096 px on 2 cores: minutes
            stylizers.append(("Stylizer compile=true",
                              {"compile": True, "compile_backend": s.compile_backend}, None,
                              "compiled"))
        if big:
            tiled = {"tile": s.tile, "overlap": min(128, s.tile // 2)}  # 128: infer.py's
            stylizers.append((f"Stylizer tile={s.tile}", tiled, None, "eager, tiled"))
        for name, kwargs, max_calls, want in stylizers:
            if kwargs.get("compile"):
                torch._dynamo.reset()  # compiles as a fresh process would, not reusing a graph
            try:
                with LogLines("stylenet") as log:  # stylenet.stylize and stylenet.tiling
                    stylizer = stylize.Stylizer(model, device=device.type, **kwargs)
                    if not kwargs:  # it tiles, in PyTorch, what its memory estimate says
                        fits = stylizer.fits_untiled(size, size, batch)  # would not fit
                        want = want if fits else "eager, tiled"
                    row = measure(stylizer, x, device=device, max_calls=max_calls, **calls)
                    del stylizer
            except Exception as e:  # the other rows' figures still count
                case_rows.append({"name": name, **failed_row(e)})
                continue
            path = stylizer_path(log.lines)
            row.update(name=name, detail=path if path == want else f"{path} (want {want})")
            row["path_ok"] = path == want
            case_rows.append(row)

        if session is not None and device.type == "cpu" and not fits:  # would be killed
            case_rows.append({"name": "ONNX Runtime", "ok": None, "detail": "skipped: untiled "
                              "over Stylizer's CPU memory estimate (it tiles this case)"})
        elif session is not None and (onnx_everywhere or i == 0):
            def run_onnx(x: torch.Tensor) -> torch.Tensor:
                return torch.from_numpy(session.run(None, {"image": x.numpy()})[0])

            try:
                row = measure(run_onnx, x, device=device, **calls)
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
        print(format_table(f"[infer] {Path(model).stem} {case}", case_rows, COLUMNS), flush=True)
        del x, ref
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows, provider


COLUMNS = [("case", "case", ""), ("name", "row", ""), ("warmup_s", "warm-up s", ".2f"),
           ("seconds", "s/call", ".4f"), ("images_per_s", "img/s", ".2f"),
           ("speedup", "x", ".2f"), ("psnr_db", "PSNR dB", ".1f"),
           ("peak_gib", "peak GiB", ".2f")]


def table(result: dict) -> str:
    nets = "; ".join(f"{n['name']} {n['channels']} x{n['num_residual']} edge {n['edge_kernel']}"
                     for n in result["nets"])
    title = (f"[infer] nets: {nets}; CPU tensors in and out; x and PSNR against the same net's "
             f"fp32 eager")
    return format_table(title, result["rows"], COLUMNS)
