"""Self-contained model files: transformer weights + architecture + style + loss network + config.

A model file is a plain torch.save of tensors, strings and numbers, so it loads with
torch.load(weights_only=True): a file that tries to run code is refused. Training checkpoints
(.ckpt) written by stylenet load the same way.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from stylenet.transformer import LEGACY_PIXEL_SCALE, TransformerNet
from stylenet.util import atomic_write

FORMAT = "stylenet-model"
# The newest format this code reads. 2: a net of several paintings (arch num_styles, meta
# "paintings": name, sha256 and image of each, in table order). A file is written with the
# oldest version that reads it, so one-painting files stay 1 and older stylenet still loads them,
# while older code refuses a file of several paintings in one line (its version is newer).
VERSION = 2
# The model zoo: model files shipped with the package, resolved by name (model=starry_night).
ZOO = Path(__file__).resolve().parent / "models"


class ModelFileError(ValueError):
    """A model file that cannot be used; the message names the file and what to do."""


def zoo_names() -> list[str]:
    """The names of the shipped models (stylenet/models/<name>.pt)."""
    return sorted(p.stem for p in ZOO.glob("*.pt"))


def resolve_model(model: str | Path) -> Path:
    """A model file's path, or the name of a shipped model (`starry_night`) -> its path. A bare
    name that is neither is an error listing the shipped ones."""
    path = Path(model)
    if path.exists() or path.suffix or len(path.parts) > 1:
        return path
    if str(model) in zoo_names():
        return ZOO / f"{model}.pt"
    raise ModelFileError(
        f"model={model}: no such file and no shipped model of that name: give a model file's "
        f"path, or one of {', '.join(zoo_names()) or '(none shipped)'} (infer.py model=list)"
    )


def save_model(
    path: str | Path, net: TransformerNet, meta: dict[str, Any], config: str = "",
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write a model file atomically, the weights in `dtype` (fp16 halves a shipped model's
    size; loading casts back to fp32). Refuses non-finite weights, so a diverged run can never
    overwrite a good model."""
    state = {k: v.detach().to(dtype).cpu().contiguous() for k, v in net.state_dict().items()}
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{path}: not written: weights {bad[:3]} hold NaN or inf")
    payload = {
        "format": FORMAT,
        "version": 2 if meta.get("paintings") else 1,
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
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; an image is not one
        raise ModelFileError(f"{path}: not a readable model file, probably truncated or not a "
                             "torch file: check model=..., or copy or export it again")
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


def validate(data: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """What torch.load read -> (state dict, metadata), or a ModelFileError naming the file.
    Takes stylenet model files and stylenet training checkpoints."""
    if not isinstance(data, dict):
        raise ModelFileError(f"{path}: not a stylenet model file")
    if "stylenet" in data and "state_dict" in data:  # a Lightning checkpoint of ours
        meta = dict(data["stylenet"])
        state = {
            k.removeprefix("net."): v for k, v in data["state_dict"].items() if k.startswith("net.")
        }
        return state, meta
    if data.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not a stylenet model file or checkpoint (no '{FORMAT}' header)"
        )
    if data.get("version", 0) > VERSION:
        raise ModelFileError(f"{path}: model file version {data['version']} is newer than "
                             "this stylenet: upgrade it")
    meta = {k: v for k, v in data.items() if k not in ("state_dict", "format", "version")}
    return data["state_dict"], meta


def load_model(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """A model file, a stylenet training checkpoint or a shipped model's name -> (net in eval
    mode, metadata)."""
    path = resolve_model(path)
    state, meta = validate(_read(path), path)
    arch = meta.get("arch", {})
    try:
        net = TransformerNet(channels=tuple(arch.get("channels", (32, 64, 128))),
                             num_residual=int(arch.get("num_residual", 5)),
                             pixel_scale=float(arch.get("pixel_scale", LEGACY_PIXEL_SCALE)),
                             edge_kernel=int(arch.get("edge_kernel", 9)),
                             num_styles=int(arch.get("num_styles", 0)))
        net.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise ModelFileError(
            f"{path}: weights do not fit the architecture the file declares ({arch}): {first}"
        ) from None
    if len(meta.get("paintings", [])) != net.num_styles:  # 0 and 0 for one painting
        raise ModelFileError(f"{path}: names {len(meta.get('paintings', []))} paintings for a "
                             f"net of {net.num_styles}: copy or export it again")
    return net.eval(), meta


def checkpoint_to_model(ckpt: str | Path, out: str | Path) -> Path:
    """Turn a training checkpoint into a model file (e.g. to publish an intermediate step)."""
    net, meta = load_model(ckpt)
    return save_model(out, net, meta, config=meta.get("config", ""))
