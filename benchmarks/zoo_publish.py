"""The zoo's shipping: a finished run published as a shipped model with its record (measured
on the shipped file), the records and the zoo's table, and the README's picture."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import torch
import yaml
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge import Judge  # noqa: E402
from zoo_curves import side_by_side  # noqa: E402
from zoo_judging import (  # noqa: E402
    BAND_KEYS,
    JUDGE_SIZE,
    ROOT,
    bundled_painting,
    heldout,
    nearest_paintings,
    own_distance,
    relative_style,
    score,
    zoo_paintings,
)
from zoo_runs import run_config, seconds_at, start_checkpoint, wall_clock  # noqa: E402

from stylenet import zoo  # noqa: E402
from stylenet.image import image_grid, to_pil  # noqa: E402
from stylenet.model_file import ZOO, load_model, save_model  # noqa: E402
from stylenet.stylize import Stylizer  # noqa: E402

DOCS = ROOT / "docs" / "zoo"
README_PHOTO = "astronaut"  # the README's picture: a face, a flag and a name patch
ZOO_README = """# The model zoo

One model per bundled painting, trained by stylenet on the CPU with the recipe its command names
(`configs/experiment/`) on the 37 photos of `data/get_photos.sh`, weights in fp16.
Use one by name: `python infer.py model=starry_night input=photo.jpg output=out.jpg`;
`python infer.py model=list` lists them.

Held-out losses: `benchmarks/judge.py` (independent of stylenet's loss code) on the 8 photos of
`data/heldout/` at 512 px, against the painting at 512 px, in VGG16 Caffe units (content 1 :
style 5), means over the photos, measured on the shipped file (`tests/test_zoo.py` measures them
again). High-frequency ratio: the Laplacian energy of the output over the photo's, on the same
photos at 512 px, their own size (checkerboards, stripes or noise push it above 2, a blur below
0.3; at 1024 px the photos would be upscaled, nearly free of fine detail, and any painted texture
would pass 2). Periodic share: the part of the output's fine-detail power in isolated spectral
peaks (a dot checker, a weave or stripes; `benchmarks/judge.py`), mean over the same photos; the
zoo's bar is at most 0.1, and the photos and the paintings score under 0.05. Bands 4-16 px: the
structure a model lays over the photo at the scale of brush strokes, the median over the photos
of the mean of the output's 4-8 and 8-16 px band energies (8-bit luminance, differences of
Gaussians; `benchmarks/judge.py`) over the photo's, and in brackets the same over the luminance
variance ratio; the zoo's bar is at least 1.2 for both (a recoloured photo scores ~1, a blur
less; a contrast stretch raises the first only). Relative style:
each layer's style distance over the unchanged photos' own there, the mean over the four layers
(1: no nearer the painting than the photo; the held-out style sums the layers raw, and relu1_2 is
~99 % of it, so only this column counts the layers of strokes). Named: on how many of the 8
photos the output is nearer this painting, in relative style, than any other of the zoo's
(`configs/experiment/zoo/`); the zoo's bar is 7. Wall time: the
training run, start to model file, on the CPU named. Written by `python benchmarks/zoo.py
publish RUN`.

{table}

Each recipe and why: [benchmarks/NOTES.md](../../benchmarks/NOTES.md) ("The zoo's recipes");
`cpu_zoo`'s: [benchmarks/NOTES.md](../../benchmarks/NOTES.md) ("The CPU zoo recipe")."""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def final_style_weight(config: dict) -> float:
    """The style weight a run ends with: its own, or the last phase's that sets one
    (model.phases)."""
    weight = config["style"]["style_weight"]
    for phase in config["model"].get("phases") or []:
        weight = phase.get("style_weight", weight)
    return weight


def train_command(run: Path) -> str:
    """How to train a run's model again, not where: its overrides less Hydra's and a resume's.
    A start from another run's checkpoint stays in it (as ckpt_path=<that file>) unless that run
    had the same command: then its steps were this recipe's own (a tuning try kept as the final
    run)."""
    def overrides(r: Path) -> list[str]:
        return [o for o in yaml.safe_load((r / ".hydra" / "overrides.yaml").read_text())
                if not o.startswith(("hydra.", "ckpt_path="))]

    command = overrides(run)
    start = start_checkpoint(run)
    if start is not None and overrides(start.parent.parent) != command:
        command.append(f"ckpt_path={start}")
    return " ".join(["python train.py", *command])


def record_of(name: str, model: Path) -> dict:
    """What the zoo table says of a shipped model, measured on the shipped (fp16) file."""
    _, meta = load_model(model)
    config = yaml.safe_load(meta["config"])
    judge, photos = Judge(None, bundled_painting(name)), heldout()
    judged = score(model, judge, photos)
    judges = {q: judge if q == name else judge.for_painting(bundled_painting(q))
              for q in {*zoo_paintings(), name}}
    nearest = nearest_paintings(judged["outputs"], photos, judges, judged["grams"])
    own = own_distance(judge, photos, {n: g[0] for n, g in judged["grams"].items()})
    return {
        "held_out": {"content": judged["content"], "style": judged["style"],
                     "style_relative": relative_style(judged, own),
                     "high_freq_ratio": judged["high_freq_ratio"],
                     "periodic_share": judged["periodic_share"],
                     **{k: judged[k] for k in BAND_KEYS}, "paints": judged["paints"],
                     # photos whose output is nearer this painting than any other of the zoo's
                     "named": sum(q == name for q in nearest.values()),
                     "photos": {k: {"content": v["content"], "style": v["style"],
                                    "stroke_bands": v["stroke_bands"],
                                    "stroke_contrast": v["stroke_contrast"],
                                    "nearest": nearest[k]}
                                for k, v in judged["photos"].items()}},
        "style_sha256": meta["style"]["sha256"],
        "style_weight": final_style_weight(config), "style_size": config["style"]["size"],
        "steps": config["trainer"]["max_steps"],
    }


def publish(run: Path, name: str | None = None) -> dict:
    """Ship a finished run: its weights in fp16 as stylenet/models/<name>.pt, its record in
    zoo.json (measured on the shipped file) and a sample in docs/zoo/."""
    cfg = run_config(run)
    name = name or cfg["style"]["name"]
    net, meta = load_model(run / "model.pt")
    ZOO.mkdir(exist_ok=True)
    shipped = save_model(ZOO / f"{name}.pt", net, meta, config=meta["config"],
                         dtype=torch.float16)
    minutes = seconds_at(wall_clock(run), cfg["trainer"]["max_steps"]) / 60
    record = {
        "painting": cfg["style"].get("title", name),
        "command": train_command(run),
        "wall_minutes": round(minutes, 1),
        "cpu": f"{cpu_name()}, {torch.get_num_threads()} threads",
        "size_mb": round(shipped.stat().st_size / 2**20, 2),
        **record_of(name, shipped),
        "sample": f"docs/zoo/{name}.jpg",
    }
    DOCS.mkdir(parents=True, exist_ok=True)
    side_by_side([(p, [(name, shipped)]) for p in ("chelsea", "china")], JUDGE_SIZE,
                 ROOT / record["sample"])
    write_records({**zoo.records(), name: record})
    print(json.dumps({k: v for k, v in record.items() if k != "held_out"}, indent=1))
    return record


def rescore() -> dict:
    """Every shipped model's held-out scores measured again from its file (the judge gained a
    score), its record and the zoo's table rewritten; nothing else in a record changes."""
    records = zoo.records()
    for name, record in records.items():
        record["held_out"] = record_of(name, ZOO / f"{name}.pt")["held_out"]
        print(name, {k: v for k, v in record["held_out"].items() if k != "photos"})
    write_records(records)
    return records


def write_records(records: dict) -> None:
    """zoo.json (sorted by name) and the zoo's README table written from it. The table is made
    first: a record that lacks one of its fields (written before the judge gained a score) stops
    here with nothing written, and `zoo.py rescore` mends it."""
    records = dict(sorted(records.items()))
    try:
        readme = ZOO_README.format(table=zoo.table(records)) + "\n"
    except KeyError as e:
        raise SystemExit(f"{zoo.RECORDS}: a record lacks {e}: run `python benchmarks/zoo.py "
                         "rescore`, then this command again; the records were left as they "
                         "were") from None
    zoo.RECORDS.write_text(json.dumps(records, indent=1) + "\n")
    (ZOO / "README.md").write_text(readme)


def readme_picture(out: Path = ROOT / "docs" / "zoo.jpg") -> Path:
    """The README's first picture: each painting above the held-out photo stylized by its
    model, the photo itself on the left."""
    records = zoo.records()
    photo = heldout(JUDGE_SIZE)[README_PHOTO]
    size = photo.shape[-1] // 2
    top, bottom = [torch.ones(3, size, size)], [TF.resize(photo, [size, size], antialias=True)]
    for name in records:
        painting = bundled_painting(name, None)
        top.append(TF.center_crop(TF.resize(painting, size, antialias=True), [size, size]))
        out_img = Stylizer(ZOO / f"{name}.pt", device="cpu", precision="fp32")(photo)
        bottom.append(TF.resize(out_img, [size, size], antialias=True))
    to_pil(image_grid(top + bottom, nrow=len(top), padding=4)).save(out, quality=90)
    return out
