"""Self-contained model files: transformer weights + architecture + style + loss network + config.

Export to files that run without stylenet:
python -m stylenet.export model=model.pt format=onnx|torchscript [output=...]

A model file is a plain torch.save of tensors, strings and numbers, so it loads with
torch.load(weights_only=True): a file that tries to run code is refused. Training checkpoints
(.ckpt) written by stylenet load the same way.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from stylenet.image import atomic_write
from stylenet.transformer import LEGACY_PIXEL_SCALE, TransformerNet

log = logging.getLogger(__name__)

FORMAT = "stylenet-model"
VERSION = 1


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


def save_model(
    path: str | Path, net: TransformerNet, meta: dict[str, Any], config: str = ""
) -> Path:
    """Write a model file atomically. Refuses non-finite weights, so a diverged run can never
    overwrite a good model."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: not written: weights {bad[:3]} hold NaN or inf")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "state_dict": state,
        **meta,
        "config": config,
    }
    with atomic_write(path) as f:
        torch.save(payload, f)
    return Path(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file: check model=...")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ModelFileError(
            f"{path}: refused: the file holds Python objects that could run code ({first}); "
            "only load model files from people you trust, and ask for a stylenet model file"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise ModelFileError(
            f"{path}: not a readable model file, probably truncated or not a torch file "
            f"({type(e).__name__}): copy or export it again"
        ) from None


def load_model(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """A model file or a stylenet training checkpoint -> (net in eval mode, metadata)."""
    path = Path(path)
    data = _read(path)
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: not a stylenet model file")
    if "stylenet" in data and "state_dict" in data:  # a Lightning checkpoint of ours
        meta = dict(data["stylenet"])
        state = {
            k.removeprefix("net."): v for k, v in data["state_dict"].items() if k.startswith("net.")
        }
    elif data.get("format") == FORMAT:
        if data.get("version", 0) > VERSION:
            raise ModelFileError(f"{path}: model file version {data['version']} is newer than "
                                 "this stylenet: upgrade it")
        meta = {k: v for k, v in data.items() if k not in ("state_dict", "format", "version")}
        state = data["state_dict"]
    else:
        raise ModelFileError(
            f"{path}: not a stylenet model file or checkpoint (no '{FORMAT}' header)"
        )
    arch = meta.get("arch", {})
    try:
        net = TransformerNet(channels=tuple(arch.get("channels", (32, 64, 128))),
                             num_residual=int(arch.get("num_residual", 5)),
                             pixel_scale=float(arch.get("pixel_scale", LEGACY_PIXEL_SCALE)))
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ModelFileError(
            f"{path}: weights do not fit the architecture the file declares ({arch}): {first}"
        ) from None
    return net.eval(), meta


def checkpoint_to_model(ckpt: str | Path, out: str | Path) -> Path:
    """Turn a training checkpoint into a model file (e.g. to publish an intermediate step)."""
    net, meta = load_model(ckpt)
    return save_model(out, net, meta, config=meta.get("config", ""))


# -- Portable files: ONNX and TorchScript ----------------------------------------------------


class Portable(nn.Module):
    """The net with its pad-to-a-multiple-of-4 done in traceable tensor ops.

    TransformerNet decides in Python whether to pad, which tracing freezes for the example's size;
    here the pad is computed from the input's shape, so the exported graph takes any height and
    width. The output is clamped to the image range like Stylizer's.
    """

    def __init__(self, net: TransformerNet):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) in 0..1
        h, w = x.shape[-2], x.shape[-1]
        x = F.pad(x, (0, (4 - w % 4) % 4, 0, (4 - h % 4) % 4), mode="reflect")
        return self.net(x)[:, :, :h, :w].clamp(0, 1)


FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}


def export(model: str | Path, fmt: str = "onnx", out: str | Path | None = None,
           opset: int = 17, check: bool = True) -> Path:
    """Write the model as ONNX (dynamic batch, height and width) or TorchScript, files that run
    without stylenet. check: compare the exported file with PyTorch on an odd-sized input."""
    if fmt not in FORMATS:
        raise ValueError(f"format={fmt}: use onnx or torchscript")
    model = Path(model)
    net, meta = load_model(model)
    portable = Portable(net).eval()
    out = Path(out) if out else model.with_name(model.stem + FORMATS[fmt])
    info = json.dumps({"style": meta.get("style", {}), "arch": meta.get("arch", {}),
                       "input": "float32 RGB (B, 3, H, W) in 0..1, any H and W"}, default=str)
    example = torch.rand(1, 3, 64, 64)
    buf = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    # Tracing warns about TransformerNet's Python-side pad decision, which Portable makes moot
    # (the example's sides are multiples of 4), and the exporter about its own deprecation.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "onnx":
            # The TorchScript-based exporter: it handles the dynamic pad without onnxscript.
            torch.onnx.export(
                portable, (example,), buf, dynamo=False, opset_version=opset,
                input_names=["image"], output_names=["stylized"],
                dynamic_axes={"image": axes, "stylized": axes},
            )
            data = _onnx_with_metadata(buf.getvalue(), info)
        else:
            traced = torch.jit.trace(portable, example)
            torch.jit.save(traced, buf, _extra_files={"stylenet.json": info})
            data = buf.getvalue()
    with atomic_write(out) as f:
        f.write(data)
    if check:
        diff = check_export(out, net)
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


def check_export(path: str | Path, net: TransformerNet, tol: float = 1e-3) -> float | None:
    """Max |exported - PyTorch| on a batch of two odd-sized images; raises above tol. None when
    ONNX Runtime is not installed (the ONNX file is then written but unchecked)."""
    path = Path(path)
    x = torch.rand(2, 3, 37, 53)
    with torch.no_grad():
        expected = Portable(net).eval()(x)
        if path.suffix == ".onnx":
            try:
                import onnxruntime as ort
            except ImportError:
                log.warning("%s: onnxruntime not installed: export not checked", path)
                return None
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = torch.from_numpy(session.run(None, {"image": x.numpy()})[0])
        else:
            got = torch.jit.load(str(path))(x)
    diff = (got - expected).abs().max().item()
    if got.shape != expected.shape or diff > tol:
        raise ModelFileError(f"{path}: exported model differs from PyTorch (max {diff:.2e}, shape "
                             f"{tuple(got.shape)}): report this with the model file")
    return diff


@hydra.main(version_base="1.3", config_path="../configs/infer", config_name="export")
def main(cfg: DictConfig) -> None:
    try:
        out = Path(cfg.output) if cfg.output else None
        if out is not None and out.exists() and not cfg.overwrite:
            raise ModelFileError(f"{out}: exists: choose another output or set overwrite=true")
        print(export(cfg.model, cfg.format, out, opset=cfg.opset, check=cfg.check))
    except (ModelFileError, ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
