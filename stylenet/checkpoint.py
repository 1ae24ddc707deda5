"""Training checkpoints: written so that they survive crashes, found and checked on resume.

- AtomicCheckpointIO: Lightning's checkpoint writer, with the file synced to disk before it is
  renamed over the old one (wired in through `trainer.plugins`, configs/trainer/default.yaml).
- resolve_checkpoint: `ckpt_path=last` or a path -> a checkpoint that exists, loads and fits this
  run's architecture, else a one-line error (Lightning would warn and start afresh).
- note_start: a run started from another run's checkpoint says which in its folder, for good.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf
from typing_extensions import override

from stylenet.transformer import LEGACY_PIXEL_SCALE
from stylenet.util import atomic_write

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into a temp file beside the target, fsync, rename, fsync the folder.

    Lightning's own writer already renames a finished file into place, so a kill -9 during a
    save leaves the old checkpoint; it does not sync, so after a power cut or a preempted VM the
    renamed file can come back empty, and that is what a resume would load. Remote paths
    (s3://, ...) keep Lightning's writer."""

    @override
    def save_checkpoint(
        self, checkpoint: dict[str, Any], path, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options (local files only)")
        with atomic_write(path) as f:
            torch.save(checkpoint, f)


def resolve_checkpoint(cfg: DictConfig) -> str | None:
    """ckpt_path=last means this run folder's checkpoints/last.ckpt (resume a run by passing its
    folder: hydra.run.dir=<run folder> ckpt_path=last); a path is taken as it is. A missing,
    corrupt or mismatched checkpoint is an error here, not a fresh start or a crash later."""
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return None
    if str(ckpt) == "last":
        path = checkpoint_folder(cfg) / "last.ckpt"
        if not path.is_file():
            raise SystemExit(
                f"ckpt_path=last: there is no {path}: resume a run by naming its folder, "
                "hydra.run.dir=<run folder> ckpt_path=last, or pass ckpt_path=<file.ckpt>"
            )
    else:
        path = Path(ckpt)
        if not path.is_file():
            raise SystemExit(f"ckpt_path={ckpt}: no such checkpoint file: check the path")
    remove_stale_temp_files(path.parent)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read means: pick another file
        raise SystemExit(
            f"ckpt_path={path}: not a readable checkpoint ({type(e).__name__}): resume from "
            f"another one in {path.parent}"
        ) from None
    if not isinstance(state, dict) or "loops" not in state or "state_dict" not in state:
        raise SystemExit(
            f"ckpt_path={path}: not a training checkpoint (a model file cannot be resumed): "
            "pass a .ckpt from a run's checkpoints/ folder"
        )
    arch = (state.get("stylenet") or {}).get("arch") or {}
    # Checkpoints from before the pixel scale was stored were trained at 0..1.
    arch.setdefault("pixel_scale", LEGACY_PIXEL_SCALE)
    net = OmegaConf.to_container(cfg.model.get("net") or DictConfig({}), resolve=True)
    for key in ("channels", "num_residual", "pixel_scale"):
        want = net.get(key)
        if key in arch and want is not None and arch[key] != want:
            raise SystemExit(
                f"ckpt_path={path} was trained with model.net.{key}={arch[key]}, this run has "
                f"{want}: resume with the run's own settings"
            )
    return str(path)


def checkpoint_folder(cfg: DictConfig) -> Path:
    """Where this run writes its checkpoints (and finds last.ckpt)."""
    folder = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath")
    return Path(folder or Path(cfg.paths.output_dir) / "checkpoints")


STARTED_FROM = "started_from.txt"  # in a run's folder: the other run's checkpoint it began at


def note_start(cfg: DictConfig, ckpt_path: str | None) -> None:
    """A run started from another run's checkpoint (a tuning try from a probe's step) writes
    that file's path to <run folder>/started_from.txt. Hydra rewrites .hydra/ at each launch,
    so after a resume (ckpt_path=last) this note is what still says where the run's first steps
    were trained (the zoo's wall times and commands read it). A resume from the run's own
    checkpoints keeps it; a fresh start in the folder removes it."""
    if not first_process():
        return
    out = Path(cfg.paths.output_dir)
    note = out / STARTED_FROM
    if ckpt_path is None:
        note.unlink(missing_ok=True)
    elif Path(ckpt_path).resolve().parent != checkpoint_folder(cfg).resolve():
        out.mkdir(parents=True, exist_ok=True)
        note.write_text(f"{Path(ckpt_path).resolve()}\n")


def first_process() -> bool:
    """Rank 0 of node 0 (or no DDP at all), from the launcher's environment."""
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def remove_stale_temp_files(folder: Path) -> None:
    """A kill during a save leaves the atomic writer's temp file (never a .ckpt); tidy them up.
    Only in the first process: other DDP ranks start while rank 0 may already be saving."""
    if not first_process():
        return
    for tmp in folder.glob(".*.ckpt.*.tmp"):
        log.info("removing %s, left by an interrupted save", tmp)
        tmp.unlink(missing_ok=True)
