"""Export a model file to files that run without stylenet: ONNX and TorchScript.

python -m stylenet.export model=model.pt format=onnx|torchscript [output=...] [style=...]

Input of the exported model: float32 RGB (B, 3, H, W) in 0..1, any batch, height and width. A
file of several paintings is exported per painting or blend (style=NAME, its scales and shifts
baked in) or with style=mix, which takes the blend weights as a second input "weights" (N,).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from stylenet.cli import check_required, one_line_errors, run
from stylenet.image import check_overwrite
from stylenet.model_file import ModelFileError, load_model
from stylenet.multi import choose_painting, painting_names
from stylenet.transformer import TransformerNet
from stylenet.util import atomic_write

log = logging.getLogger(__name__)


class Portable(nn.Module):
    """The net with its pad-to-a-multiple-of-4 done in traceable tensor ops.

    TransformerNet decides in Python whether to pad, which tracing freezes for the example's size;
    here the pad is computed from the input's shape, so the exported graph takes any height and
    width. The output is clamped to the image range like Stylizer's. mix: a net of several
    paintings taking the blend weights (N,) as a second input, divided by their sum in the
    graph as style= blends are.
    """

    def __init__(self, net: TransformerNet, mix: bool = False):
        super().__init__()
        self.net = net
        self.mix = mix

    def forward(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        h, w = x.shape[-2], x.shape[-1]  # (B, 3, H, W) in 0..1
        x = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="reflect")
        style = weights / weights.sum() if self.mix else None
        return self.net(x, style=style)[:, :, :h, :w].clamp(0, 1)

    def example(self) -> tuple[torch.Tensor, ...]:
        """Inputs to trace with: an image, and for mix uniform weights."""
        image = torch.rand(1, 3, 64, 64)
        n = self.net.num_styles
        return (image, torch.full((n,), 1 / n)) if self.mix else (image,)


FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def onnx_bytes(module: Portable, opset: int = 17, metadata: str | None = None) -> bytes:
    """An ONNX file of a module taking float32 (B, 3, H, W) images, with dynamic batch, height
    and width (input "image", output "stylized"; with mix also "weights"); metadata goes into
    the "stylenet" property."""
    axes = {0: "batch", 2: "height", 3: "width"}
    inputs = ["image", "weights"] if module.mix else ["image"]
    buf = io.BytesIO()
    # Tracing warns about TransformerNet's Python-side pad decision, which Portable makes moot
    # (the example's sides are multiples of 4), and the exporter about its own deprecation.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: it handles the dynamic pad without onnxscript.
        torch.onnx.export(
            module, module.example(), buf, dynamo=False, opset_version=opset,
            input_names=inputs, output_names=["stylized"],
            dynamic_axes={"image": axes, "stylized": axes},
        )
    return buf.getvalue() if metadata is None else _onnx_with_metadata(buf.getvalue(), metadata)


def cache_dir() -> Path:
    """Where exported graphs are kept between runs: $XDG_CACHE_HOME/stylenet/onnx (else
    ~/.cache/stylenet/onnx). Delete it at any time."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "stylenet" / "onnx"


def cached_onnx(net: TransformerNet, refresh: bool = False) -> bytes:
    """The net as ONNX bytes (Portable, no metadata), exported once per weights and torch
    version and then read from cache_dir(): exporting the paper's net takes a second or two, as
    long as stylizing a 512 px photo on 2 cores. The key hashes every weight, so one painting or
    blend of a file of several (each its own plain net, multi.painting_net) never serves another.
    An unwritable cache only costs the export; refresh exports again over a cached file that
    would not load."""
    key = hashlib.sha256(f"{torch.__version__} {json.dumps(net.config())}".encode())
    for name, tensor in net.state_dict().items():
        key.update(name.encode())
        key.update(tensor.detach().float().cpu().numpy().tobytes())
    path = cache_dir() / f"{key.hexdigest()[:40]}.onnx"
    if not refresh:
        with contextlib.suppress(OSError):
            return path.read_bytes()
    data = onnx_bytes(Portable(net).eval())
    try:
        with atomic_write(path) as f:
            f.write(data)
    except OSError as e:
        log.debug("ONNX cache %s not written: %s", path, e)
    return data


def export(model: str | Path, fmt: str = "onnx", out: str | Path | None = None,
           opset: int = 17, check: bool = True, overwrite: bool = False,
           style: object = None) -> Path:
    """Write the model as ONNX (dynamic batch, height and width) or TorchScript, files that run
    without stylenet. out: None writes beside the model (model.onnx, model.torchscript.pt; with
    style=, model-STYLE.onnx); an existing file is never replaced unless overwrite. check:
    compare the exported file with PyTorch on an odd-sized input. style: for a file of several
    paintings, a name or blend baked in, or mix (the weights as a second input)."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: use onnx or torchscript")
    model = Path(model)
    net, meta = load_model(model)
    mix = style == "mix"
    if mix and not painting_names(meta):
        raise ValueError(f"style=mix: {model} holds one painting: leave style= out")
    if not mix:
        net, meta = choose_painting(net, meta, style, model)
    tag = "" if style is None else "-" + ("mix" if mix else meta["style"]["name"])
    out = Path(out) if out else model.with_name(model.stem + tag.replace(":", "_") + FORMATS[fmt])
    check_overwrite(out, overwrite)
    portable = Portable(net, mix).eval()
    about = {"style": meta.get("style", {}), "arch": meta.get("arch", {}),
             "input": "float32 RGB (B, 3, H, W) in 0..1, any H and W"}
    if mix:
        about["weights"] = f"float32 (N,) >= 0 over the paintings {painting_names(meta)}"
    info = json.dumps(about, default=str)
    if fmt == "onnx":
        data = onnx_bytes(portable, opset, metadata=info)
    else:
        buf = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the Python-side pad decision, as above
            traced = torch.jit.trace(portable, portable.example())
        torch.jit.save(traced, buf, _extra_files={"stylenet.json": info})
        data = buf.getvalue()
    with atomic_write(out) as f:
        f.write(data)
    if check:
        diff = check_export(out, portable)
        if diff is not None:
            log.info("%s: max difference to PyTorch %.2e", out, diff)
    return out


def _onnx_with_metadata(data: bytes, info: str) -> bytes:
    try:
        import onnx
    except ImportError:
        return data
    proto = onnx.load_from_string(data)
    onnx.helper.set_model_props(proto, {"stylenet": info})
    return proto.SerializeToString()


def check_export(path: str | Path, portable: Portable, tol: float = 1e-3) -> float | None:
    """Max |exported - PyTorch| on a batch of two odd-sized images (with mix, and uneven
    weights); raises above tol. None when ONNX Runtime is not installed (the ONNX file is then
    written but unchecked)."""
    path = Path(path)
    x = torch.rand(2, 3, 37, 53)
    inputs = (x, torch.rand(portable.net.num_styles) + 0.1) if portable.mix else (x,)
    names = ["image", "weights"][: len(inputs)]
    with torch.no_grad():
        expected = portable(*inputs)
        if path.suffix == ".onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                log.warning("%s: onnxruntime not installed: export not checked", path)
                return None
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            feed = {n: t.numpy() for n, t in zip(names, inputs, strict=True)}
            got = torch.from_numpy(session.run(None, feed)[0])
        else:
            got = torch.jit.load(str(path))(*inputs)
    diff = (got - expected).abs().max().item()
    if got.shape != expected.shape or diff > tol:
        raise ModelFileError(f"{path}: exported model differs from PyTorch (max {diff:.2e}, shape "
                             f"{tuple(got.shape)}): report this with the model file")
    return diff


@hydra.main(version_base="1.3", config_path="../configs/infer", config_name="export")
def main(cfg: DictConfig) -> None:
    with one_line_errors():
        check_required(cfg)
        print(export(cfg.model, cfg.format, cfg.output, opset=cfg.opset, check=cfg.check,
                     overwrite=cfg.overwrite, style=cfg.get("style")))


if __name__ == "__main__":
    run(main)
