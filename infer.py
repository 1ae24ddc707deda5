"""Stylize photos with a trained model: python infer.py model=... input=... output=...

input: an image, a folder (recursive, the tree is kept), a glob or a video; with grid=true, one
contact sheet comparing models. A file of several paintings takes style=NAME, a blend
'style=[a:0.7,b:0.3]', style=list (its paintings) or style=grid (the photo and every painting).
The work is done in stylenet (stylize, inputs, video, sheet); infer(cfg) only picks the mode and
is a plain function (tests call it); main() adds Hydra.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import hydra
import torch
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf

from stylenet.cli import check_required, one_line_errors, run
from stylenet.image import Photo, check_image_path, check_overwrite, write_photo
from stylenet.inputs import check_format, find_inputs, stylize_files
from stylenet.model_file import load_model
from stylenet.multi import painting_listing, painting_names
from stylenet.sheet import contact_sheet
from stylenet.stylize import Stylizer
from stylenet.video import is_video, stylize_video
from stylenet.zoo import listing

log = logging.getLogger("stylenet.infer")


def build_stylizer(cfg: DictConfig, model: str, **settings) -> Stylizer:
    """The `stylizer:` node of configs/infer/infer.yaml, for one model file."""
    try:
        return hydra.utils.instantiate(cfg.stylizer, model=model, **settings)
    except InstantiationException as e:  # show our one-line message, not Hydra's wrapper
        raise e.__cause__ or e from None


def infer(cfg: DictConfig) -> list[Path]:
    """Stylize an image, a folder, a glob or a video, or draw a contact sheet; returns the files
    written."""
    if not 1 <= int(cfg.quality) <= 100:
        raise ValueError(f"quality={cfg.quality}: use 1..100")
    check_format(cfg.format)
    models = list(cfg.model) if isinstance(cfg.model, ListConfig) else [cfg.model]
    if cfg.get("style") == "grid":  # every painting of one file, as a contact sheet's columns
        if len(models) != 1:
            raise ValueError("style=grid shows the paintings of one model file: give one model=")
        names = painting_names(load_model(models[0])[1])
        if not names:
            raise ValueError(f"style=grid: {models[0]} holds one painting: leave style= out")
        dst = check_image_path(cfg.output)
        check_overwrite(dst, cfg.overwrite)
        _, files = find_inputs(str(cfg.input))
        stylizers = (build_stylizer(cfg, models[0], style=name) for name in names)
        sheet = contact_sheet(stylizers, files, cfg.grid_size, cfg.max_size)
        return [write_photo(Photo(sheet), dst, cfg.quality)]
    if cfg.grid:
        dst = check_image_path(cfg.output)
        check_overwrite(dst, cfg.overwrite)
        _, files = find_inputs(str(cfg.input))
        stylizers = (build_stylizer(cfg, m) for m in models)
        sheet = contact_sheet(stylizers, files, cfg.grid_size, cfg.max_size)
        return [write_photo(Photo(sheet), dst, cfg.quality)]
    if len(models) != 1:
        raise ValueError("model=[...]: several models only make sense with grid=true")
    if is_video(cfg.input):
        stylizer = build_stylizer(cfg, models[0])
        return [stylize_video(stylizer, cfg.input, cfg.output, stylizer.batch_size,
                              cfg.overwrite, cfg.progress)]
    base, files = find_inputs(str(cfg.input))
    stylizer = build_stylizer(cfg, models[0])
    dst = Path(cfg.output)
    if base is None:
        if str(cfg.output).endswith(("/", os.sep)):  # output=styled/: a folder, made if need be
            dst.mkdir(parents=True, exist_ok=True)
        dst = dst / files[0].name if dst.is_dir() else dst
        written = [stylizer.stylize_file(files[0], dst, cfg.overwrite, cfg.quality)]
    else:
        written = stylize_files(stylizer, base, files, dst, cfg.format, cfg.overwrite,
                                cfg.quality, cfg.progress)
    if stylizer.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(stylizer.device) / 2**30
        log.info("peak GPU memory: %.2f GiB", peak)
    return written


@hydra.main(version_base="1.3", config_path="configs/infer", config_name="infer")
def main(cfg: DictConfig) -> None:
    if not OmegaConf.is_missing(cfg, "model") and cfg.model == "list":
        print(listing())  # the shipped models: model=starry_night needs no training
        return
    with one_line_errors():
        if cfg.get("style") == "list" and not OmegaConf.is_missing(cfg, "model"):
            print(painting_listing(cfg.model))  # input= and output= are not needed for this
            return
        check_required(cfg)
        infer(cfg)


if __name__ == "__main__":
    run(main)
