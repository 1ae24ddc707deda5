"""The model zoo's measurements: judge training runs on the held-out photos, draw their curves
against wall time, and publish a finished run as a shipped model with its record.

    python benchmarks/zoo.py judge logs/zoo/runs/starry_night/<date>        # every checkpoint,
                                               # to results/zoo_judge_<painting>_<run>.json
    python benchmarks/zoo.py compare RECIPE_RUN BASELINE_RUN                 # curves + images
    python benchmarks/zoo.py nets PAPER_RUN LITE_RUN...                      # nets, one recipe
    python benchmarks/zoo.py publish logs/zoo/runs/starry_night/<date>       # ship it
    python benchmarks/zoo.py readme                                          # the README picture
    python benchmarks/zoo.py relative results/zoo_judge_*.json   # every layer counted (below)
    python benchmarks/zoo.py hf [MODEL...]     # high-frequency ratio and contrast of models

Verbs that served one finding each (scale, controls, moments, optimum, hf at 1024 px) are in
git at f9220fc; their findings are in benchmarks/NOTES.md.

Scores come from benchmarks/judge.py (imports nothing from stylenet): content and style loss of
each held-out photo of data/heldout/ (8 photos, 512 px on the long side) against the run's
painting at 512 px on its long side, in the VGG16's Caffe units (content 1 : style 5), means
over the photos. The models stylize through stylenet's Stylizer, in fp32 on the CPU, as users
run them. A run's wall time at a step is read from its TensorBoard files (validation and
previews included; start-up, ~15 s, left out; a pause before a resume does not count).
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import sys
from pathlib import Path

import torch
import yaml
from PIL import Image
from torchvision.transforms.v2 import functional as TF

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import reference  # noqa: E402
from judge import HF_RANGE, Judge, contrast_ratio, high_frequency_ratio, paints  # noqa: E402

from stylenet import zoo  # noqa: E402
from stylenet.image import image_grid, label_draw, load_tensor, to_pil  # noqa: E402
from stylenet.model_file import ZOO, load_model, save_model  # noqa: E402
from stylenet.stylize import Stylizer  # noqa: E402

HELD_OUT = ROOT / "data" / "heldout"
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "zoo"
JUDGE_SIZE = 512  # long side of the held-out photos and of the painting when judged
README_PHOTO = "astronaut"  # the README's picture: a face, a flag and a name patch
ZOO_README = """# The model zoo

One model per bundled painting, trained by stylenet with the CPU recipe (`experiment=cpu_zoo`,
`configs/experiment/cpu_zoo.yaml`) on the 37 photos of `data/get_photos.sh`, weights in fp16.
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
~99 % of it, so only this column counts the layers of strokes). Wall time: the
training run, start to model file, on the CPU named. Written by `python benchmarks/zoo.py
publish RUN`.

{table}

Curves against the reference recipe at equal time, and how the recipe was chosen:
[benchmarks/NOTES.md](../../benchmarks/NOTES.md) ("The CPU zoo recipe")."""


def heldout(size: int = JUDGE_SIZE) -> dict[str, torch.Tensor]:
    """name -> (3, H, W) in 0..1, the long side `size` (Lanczos; up from 512 for 1024)."""
    photos = {}
    for path in sorted(HELD_OUT.glob("*.jpg")):
        img = Image.open(path).convert("RGB")
        scale = size / max(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)),
                         Image.Resampling.LANCZOS)
        photos[path.stem] = TF.to_dtype(TF.pil_to_tensor(img), torch.float32, scale=True)
    return photos


def run_config(run: Path) -> dict:
    return yaml.safe_load((run / ".hydra" / "config.yaml").read_text())


def bundled_painting(name: str, max_side: int | None = JUDGE_SIZE) -> torch.Tensor:
    """A bundled style's painting, data/styles/<name>.jpg, its long side max_side (None: as is)."""
    return load_tensor(ROOT / "data" / "styles" / f"{name}.jpg", max_side=max_side)


def painting_path(run: Path) -> Path:
    image = run_config(run)["style"]["image"]
    return Path(image.replace("${paths.data_dir}", str(ROOT / "data")))


# the judge's scores that zoo.py keeps: content, style and its style by layer, high-frequency
# ratio, periodic share
LAYER_KEYS = tuple(f"style_{layer}" for layer in reference.STYLE_LAYERS)
STYLE_KEYS = ("content", "style", *LAYER_KEYS, "high_freq_ratio", "periodic_share")
# the band energies (judge.band_ratios), kept as medians over the photos: the zoo's band bar
BAND_KEYS = ("band_1", "band_2", "band_4", "band_8", "stroke_bands", "stroke_contrast")


def by_layer(scores: dict, width: int = 0) -> str:
    """The style by layer of a judge's (or mean) scores, one number a layer (4 significant
    digits: relu4_3's is ~1e-3 in the photos' own distance)."""
    return " ".join(f"{scores[k]:{width}.4g}" for k in LAYER_KEYS)


def own_distance(judge: Judge, photos: dict[str, torch.Tensor]) -> dict[str, float]:
    """The held-out photos' own style distance from the painting, by layer (means over photos):
    what a net that gives every photo back unchanged would score."""
    scores = [judge(x, x) for x in photos.values()]
    return {k: statistics.fmean(s[k] for s in scores) for k in LAYER_KEYS}


def relative_style(scores: dict, own: dict[str, float]) -> float:
    """The style with every layer counted: each layer's distance over the photos' own there (1:
    no closer to the painting than the photo, 0: the painting's statistics), the mean over the
    four layers. The judge's style sums the layers raw, and relu1_2 is ~99 % of it."""
    return statistics.fmean(scores[k] / own[k] for k in LAYER_KEYS)


def score(model: str | Path, judge: Judge, photos: dict[str, torch.Tensor]) -> dict:
    """Means over the photos of the judge's scores, medians of its band energies, whether the
    model passes the band bar ("paints"), and each photo's scores."""
    stylizer = Stylizer(model, device="cpu", precision="fp32")
    per_photo = {name: judge(photo, stylizer(photo)) for name, photo in photos.items()}
    mean = {k: statistics.fmean(s[k] for s in per_photo.values()) for k in STYLE_KEYS}
    median = {k: statistics.median(s[k] for s in per_photo.values()) for k in BAND_KEYS}
    return {**mean, **median, "paints": paints(list(per_photo.values())), "photos": per_photo}


def wall_clock(run: Path) -> list[tuple[int, float]]:
    """(step, seconds of training up to it) for every logged training step (identity steps
    included), from the run's TensorBoard files. Each process counts from its first event, at
    its own rate back to the step it resumed from: a pause before a resume does not count. A run
    started from another run's checkpoint takes the other run's time up to that step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    segments = []
    for path in (run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        events = sorted((e for tag in ("train/identity", "train/total")
                         if tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)),
                        key=lambda e: e.step)
        if len(events) > 1:
            segments.append(events)
    clock, done, step = [], 0.0, 0
    origin = started_from(run)
    if origin is not None:  # the steps before it were trained, and are timed, in the other run
        source, step = origin
        done = seconds_at(wall_clock(source), step)
    for events in sorted(segments, key=lambda ev: ev[0].step):
        rate = (events[-1].wall_time - events[0].wall_time) / (events[-1].step - events[0].step)
        start = done + (events[0].step - step) * rate
        clock += [(e.step, start + e.wall_time - events[0].wall_time) for e in events]
        done, step = clock[-1][1], clock[-1][0]
    return clock


def started_from(run: Path) -> tuple[Path, int] | None:
    """(the other run, the step) when `run` started from another run's checkpoint
    (ckpt_path=<other run>/checkpoints/<file>.ckpt, e.g. a shared identity phase), else None."""
    config = run / ".hydra" / "config.yaml"
    ckpt = run_config(run).get("ckpt_path") if config.is_file() else None
    if not ckpt or ckpt == "last":
        return None
    ckpt = Path(ckpt)
    source = ckpt.parent.parent
    if (ckpt.parent.name != "checkpoints" or not ckpt.is_file()
            or not (source / "tensorboard").is_dir() or source.resolve() == run.resolve()):
        return None
    return source, checkpoint_step(ckpt)


def seconds_at(clock: list[tuple[int, float]], step: int) -> float:
    """Training seconds up to `step`, interpolated (extrapolated past the last logged step)."""
    (s0, t0), (s1, t1) = clock[0], clock[-1]
    for (a, ta), (b, tb) in itertools.pairwise(clock):
        if a <= step <= b:
            return ta + (tb - ta) * (step - a) / max(1, b - a)
    if step < s0:
        return t0 * step / max(1, s0)
    return t1 + (t1 - t0) / max(1, s1 - s0) * (step - s1)


def checkpoint_step(ckpt: Path) -> int:
    """The training step a checkpoint holds, read from the file (mapped, not loaded whole)."""
    return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["global_step"]


def step_checkpoints(run: Path) -> dict[int, Path]:
    """step -> checkpoint, the step read from the file: before StepCheckpoint, a step
    checkpoint's name was one validation interval behind the step it holds."""
    return {checkpoint_step(c): c for c in sorted((run / "checkpoints").glob("step*.ckpt"))}


def judge_run(run: Path, every: int = 1, keep: tuple[int, ...] = ()) -> dict:
    """Every `every`-th step checkpoint of a run, counted back from its last, and those at the
    steps in `keep`, scored on the held-out photos."""
    clock = wall_clock(run)
    judge = Judge(None, load_tensor(painting_path(run), max_side=JUDGE_SIZE))
    photos = heldout()
    own = own_distance(judge, photos)
    points = []
    ckpts = step_checkpoints(run)
    steps = sorted(set(sorted(ckpts)[::-1][::every]) | (set(keep) & set(ckpts)))
    for step in steps:
        ckpt = ckpts[step]
        s = score(ckpt, judge, photos)
        points.append({"step": step, "seconds": seconds_at(clock, step),
                       **{k: s[k] for k in (*STYLE_KEYS, *BAND_KEYS, "paints")},
                       "style_relative": relative_style(s, own), "file": ckpt.name})
        print(f"{run.name} step {step:>5} {points[-1]['seconds']:>7.0f} s  content "
              f"{s['content']:>8.0f}  style {s['style']:>9.0f}  relative "
              f"{points[-1]['style_relative']:.3f}  hf {s['high_freq_ratio']:.2f}  periodic "
              f"{s['periodic_share']:.3f}  bands {bands_line(s)}", flush=True)
    cfg = run_config(run)
    return {"run": str(run), "style": cfg["style"]["name"], "points": points,
            "photos_own_style": own,
            "seconds_per_step": seconds_at(clock, clock[-1][0]) / clock[-1][0],
            "settings": {"lr": cfg["model"]["optimizer"]["lr"],
                         "scheduler": cfg["model"].get("scheduler"),
                         "batch_size": cfg["data"]["batch_size"],
                         "crop": cfg["data"]["dataset"]["image_size"],
                         "channels": cfg["model"]["net"]["channels"],
                         "num_residual": cfg["model"]["net"]["num_residual"],
                         "style_weight": cfg["style"]["style_weight"],
                         "style_size": cfg["style"]["size"]}}


def bands_line(scores: dict) -> str:
    """The band energies of a judged model in one line: each band's median ratio, 1-2 to
    8-16 px, then the stroke bands and the stroke bands over contrast (the bar's two)."""
    bands = "/".join(f"{scores[k]:.2f}" for k in BAND_KEYS[:4])
    return (f"{bands} strokes {scores['stroke_bands']:.2f} over contrast "
            f"{scores['stroke_contrast']:.2f}{' (paints)' if scores['paints'] else ''}")


def report_path(style: str, run: Path) -> Path:
    """Where `zoo.py judge` keeps a run's judged report."""
    return RESULTS / f"zoo_judge_{style}_{run.name}.json"


def judged(run: Path, every: int = 1, keep: tuple[int, ...] = ()) -> dict:
    """A run's judged curve: the report `zoo.py judge` wrote for it when that holds every step
    checkpoint the run has now (judging is ~17 s a checkpoint), else judged afresh. The wall
    time of each point is read from the run again, as wall_clock() counts it now."""
    path = report_path(run_config(run)["style"]["name"], run)
    if path.is_file():
        report = json.loads(path.read_text())
        if (Path(report["run"]).resolve() == run.resolve()
                and {p["step"] for p in report["points"]} >= set(step_checkpoints(run))):
            clock = wall_clock(run)
            for point in report["points"]:
                point["seconds"] = seconds_at(clock, point["step"])
            return report
    return judge_run(run, every, keep)


# -- pictures ------------------------------------------------------------------------------------
def plot(curves: dict[str, dict], path: Path, title: str) -> Path:
    """Held-out content and style loss against wall time, one line per run (PIL only)."""
    w, h, pad = 520, 320, 50
    colours = [(200, 40, 40), (40, 90, 200), (40, 160, 70), (150, 80, 170)]
    canvas = Image.new("RGB", (2 * w, h + 30), "white")
    draw = label_draw(canvas)
    draw.text((10, 5), title, fill="black")
    for panel, key in enumerate(("content", "style")):
        x0 = panel * w
        pts = [p for c in curves.values() for p in c["points"]]
        tmax = max(p["seconds"] for p in pts)
        lo, hi = min(p[key] for p in pts), max(p[key] for p in pts)
        hi = hi if hi > lo else lo + 1

        def xy(p, x0=x0, tmax=tmax, lo=lo, hi=hi, key=key):
            return (x0 + pad + (w - 1.5 * pad) * p["seconds"] / tmax,
                    30 + h - pad - (h - 1.5 * pad) * (p[key] - lo) / (hi - lo))

        draw.rectangle([x0 + pad, 30 + pad / 2, x0 + w - pad / 2, 30 + h - pad], outline="grey")
        draw.text((x0 + pad, 30 + h - pad + 5), f"0 .. {tmax / 60:.0f} min", fill="black")
        draw.text((x0 + 5, 30 + pad / 2), f"{hi:.0f}", fill="black")
        draw.text((x0 + 5, 30 + h - pad - 10), f"{lo:.0f}", fill="black")
        draw.text((x0 + w / 2 - 60, 30 + 8), f"held-out {key}", fill="black")
        for i, (name, c) in enumerate(curves.items()):
            colour = colours[i % len(colours)]
            line = [xy(p) for p in c["points"]]
            if len(line) > 1:
                draw.line(line, fill=colour, width=2)
            for q in line:
                draw.ellipse([q[0] - 2, q[1] - 2, q[0] + 2, q[1] + 2], fill=colour)
            draw.text((x0 + pad + 10, 30 + h - pad - 20 - 14 * (i + 1)), name, fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def at_time(curve: dict, seconds: float) -> dict:
    """The last point of a run at or before `seconds` of wall time."""
    return [p for p in curve["points"] if p["seconds"] <= seconds + 1][-1]


def side_by_side(rows: list[tuple[str, list[tuple[str, Path]]]], size: int, path: Path) -> Path:
    """One row per held-out photo: the photo, then each model's output (columns named in
    `rows`' (photo, [(label, model)]) order)."""
    photos = heldout(size)
    stylizers = {}
    cells = []
    for photo_name, models in rows:
        photo = photos[photo_name]
        cells.append(photo)
        for _label, model in models:
            stylizer = stylizers.setdefault(model, Stylizer(model, device="cpu",
                                                            precision="fp32"))
            cells.append(stylizer(photo))
    hmin = min(c.shape[-2] for c in cells)
    wmin = min(c.shape[-1] for c in cells)
    cells = [TF.center_crop(c, [hmin, wmin]) for c in cells]
    to_pil(image_grid(cells, nrow=1 + len(rows[0][1]), padding=4)).save(path, quality=92)
    return path


def compare(recipe: Path, baseline: Path, out: Path = RESULTS, every: int = 1,
            finals: dict[str, Path] | None = None) -> dict:
    """Curves of both runs and side-by-side images at equal wall time (the shorter run's last
    checkpoint). every: judge every n-th checkpoint for the curves (each run's last checkpoint
    and its last one at equal time are always judged); a run's `zoo.py judge` report is used
    instead where it holds all its checkpoints. Either run may also be given as its judged
    report (results/zoo_judge_<painting>_<run>.json) when its run folder is gone: its curve
    and times come from the report, and the side-by-side shows its model only where the
    report's checkpoints are still on disk, or, when it is picked at its last step, the model
    file `finals` names for it ("recipe" or "baseline": e.g. the shipped file of the run)."""
    runs = {"recipe": recipe, "baseline": baseline}
    reports = {k: json.loads(run.read_text()) for k, run in runs.items() if run.suffix == ".json"}
    seconds = {k: ({p["step"]: p["seconds"] for p in reports[k]["points"]} if k in reports else
                   {s: seconds_at(wall_clock(run), s) for s in step_checkpoints(run)})
               for k, run in runs.items()}
    t = min(max(times.values()) for times in seconds.values())
    keep = {k: tuple([s for s, sec in times.items() if sec <= t + 1][-1:])
            for k, times in seconds.items()}
    curves = {k: reports[k] if k in reports else judged(run, every, keep=keep[k])
              for k, run in runs.items()}
    style = curves["recipe"]["style"]
    out.mkdir(parents=True, exist_ok=True)
    plot(curves, out / f"zoo_{style}_curves.png", f"{style}: held-out loss against wall time "
         "(2-core CPU)")
    picks = {k: at_time(c, t) for k, c in curves.items()}
    models = [(k, Path(c["run"]) / "checkpoints" / picks[k]["file"]) for k, c in curves.items()]
    for k, final in (finals or {}).items():
        if picks[k]["step"] != curves[k]["points"][-1]["step"]:
            raise SystemExit(f"{final}: the {k} is picked at step {picks[k]['step']}, not at its "
                             "last step, so its final model cannot stand for it; drop --final")
        models = [(name, final if name == k else m) for name, m in models]
    for k, model in [m for m in models if not m[1].is_file()]:
        print(f"{k}: {model} is gone; the side-by-side leaves it out")
    models = [m for m in models if m[1].is_file()]
    side_by_side([(p, models[::-1]) for p in ("astronaut", "chelsea", "china", "text")],
                 JUDGE_SIZE, out / f"zoo_{style}_side_by_side.jpg")
    report = {"equal_time_seconds": t, "at_equal_time": picks, "curves": curves}
    (out / f"zoo_{style}_compare.json").write_text(json.dumps(report, indent=1))
    for k, p in picks.items():
        print(f"{k:<9} at {p['seconds']:.0f} s (step {p['step']}): content {p['content']:.0f}, "
              f"style {p['style']:.0f}, hf {p['high_freq_ratio']:.2f}, periodic "
              f"{p.get('periodic_share', float('nan')):.3f}")
    r, b = picks["recipe"], picks["baseline"]
    print(f"recipe / baseline at equal time: content {r['content'] / b['content']:.3f}, "
          f"style {r['style'] / b['style']:.3f}")
    return report


def nets(reference: Path, others: list[Path], out: Path = RESULTS) -> dict:
    """Nets trained with the same recipe and steps (e.g. model=lite against the paper's): each
    run's final model on the judge, its ratios to the reference run's, its training minutes and
    its multiply-adds per pixel, and one side-by-side of every final model."""
    from stylenet.transformer import macs_per_pixel

    runs = [reference, *others]
    judge = Judge(None, load_tensor(painting_path(reference), max_side=JUDGE_SIZE))
    photos = heldout()
    rows = {}
    for run in runs:
        s = score(run / "model.pt", judge, photos)
        cfg = run_config(run)
        rows[run.name] = {"run": str(run), "steps": cfg["trainer"]["max_steps"],
                          "minutes": seconds_at(wall_clock(run), cfg["trainer"]["max_steps"]) / 60,
                          "macs_per_pixel": macs_per_pixel(load_model(run / "model.pt")[0]),
                          **{k: s[k] for k in STYLE_KEYS}}
    ref = rows[reference.name]
    for name, r in rows.items():
        r["content_ratio"], r["style_ratio"] = (r["content"] / ref["content"],
                                                r["style"] / ref["style"])
        print(f"{name:<16} {r['macs_per_pixel'] / 1e3:6.1f}k MACs/px  {r['minutes']:5.1f} min  "
              f"content {r['content']:6.0f} ({r['content_ratio']:.2f}x)  style {r['style']:6.0f} "
              f"({r['style_ratio']:.2f}x)  hf {r['high_freq_ratio']:.2f}  periodic "
              f"{r['periodic_share']:.3f}  style by layer "
              f"{by_layer(r)}")
    style = run_config(reference)["style"]["name"]
    out.mkdir(parents=True, exist_ok=True)
    models = [(run.name, run / "model.pt") for run in runs]
    side_by_side([(p, models) for p in ("astronaut", "chelsea", "china", "text")], JUDGE_SIZE,
                 out / f"zoo_{style}_nets.jpg")
    (out / f"zoo_{style}_nets.json").write_text(json.dumps(rows, indent=1))
    return rows


def high_frequency(models: tuple[str | Path, ...], size: int = JUDGE_SIZE) -> dict:
    """The judge's high-frequency ratio of models (shipped names or model files; none: every
    shipped model) on the held-out photos at their own size: the mean over the photos, their
    range, and whether the mean is within the bar (judge.HF_RANGE). Beside it, the output's
    luminance variance over the photo's (`contrast`, mean over the photos) and the mean of each
    photo's high-frequency ratio over its contrast ratio (`hf_per_contrast`): a darker, flatter
    grade lowers the first two and keeps the third, a blur lowers the third
    (NOTES.md: "How much of a low ratio is contrast")."""
    models = models or tuple(zoo.records())
    photos = heldout(size)
    rows: dict[str, dict] = {}
    for model in models:
        stylizer = Stylizer(model, device="cpu", precision="fp32")
        ratios, contrasts = [], []
        for x in photos.values():
            with torch.no_grad():
                y = stylizer(x)
            ratios.append(high_frequency_ratio(x, y))
            contrasts.append(contrast_ratio(x, y))
        mean = statistics.fmean(ratios)
        rows[str(model)] = r = {
            "mean": mean, "min": min(ratios), "max": max(ratios),
            "within": HF_RANGE[0] <= mean <= HF_RANGE[1],
            "contrast": statistics.fmean(contrasts),
            "hf_per_contrast": statistics.fmean(
                h / c for h, c in zip(ratios, contrasts, strict=True))}
        print(f"{model}: hf {mean:.2f} ({r['min']:.2f}-{r['max']:.2f} by photo), "
              f"{'within' if r['within'] else 'outside'} {HF_RANGE[0]}-{HF_RANGE[1]}; "
              f"contrast {r['contrast']:.2f}, hf per contrast {r['hf_per_contrast']:.2f}",
              flush=True)
    return rows


def add_relative(path: Path) -> dict:
    """A judged report (zoo.py judge) with each point's style relative to the photos' own by
    layer, from the style by layer it already holds (the judge scores only the unchanged photos)."""
    report = json.loads(path.read_text())
    own = report.get("photos_own_style") or own_distance(
        Judge(None, bundled_painting(report["style"])), heldout())
    report["photos_own_style"] = own
    for p in report["points"]:
        p["style_relative"] = relative_style(p, own)
        print(f"{report['style']} {Path(report['run']).name} step {p['step']:>5} "
              f"{p['seconds']:>6.0f} s  content {p['content']:6.0f}  style {p['style']:7.0f}  "
              f"by layer / the photos' {' '.join(f'{p[k] / own[k]:.3f}' for k in LAYER_KEYS)}  "
              f"relative {p['style_relative']:.3f}  hf {p['high_freq_ratio']:.2f}")
    path.write_text(json.dumps(report, indent=1))
    return report


# -- publishing ----------------------------------------------------------------------------------
def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def record_of(name: str, model: Path) -> dict:
    """What the zoo table says of a shipped model, measured on the shipped (fp16) file."""
    _, meta = load_model(model)
    config = yaml.safe_load(meta["config"])
    judge, photos = Judge(None, bundled_painting(name)), heldout()
    judged = score(model, judge, photos)
    return {
        "held_out": {"content": judged["content"], "style": judged["style"],
                     "style_relative": relative_style(judged, own_distance(judge, photos)),
                     "high_freq_ratio": judged["high_freq_ratio"],
                     "periodic_share": judged["periodic_share"],
                     **{k: judged[k] for k in BAND_KEYS}, "paints": judged["paints"],
                     "photos": {k: {"content": v["content"], "style": v["style"],
                                    "stroke_bands": v["stroke_bands"],
                                    "stroke_contrast": v["stroke_contrast"]}
                                for k, v in judged["photos"].items()}},
        "style_sha256": meta["style"]["sha256"],
        "style_weight": config["style"]["style_weight"], "style_size": config["style"]["size"],
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
    overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    minutes = seconds_at(wall_clock(run), cfg["trainer"]["max_steps"]) / 60
    record = {
        "painting": cfg["style"].get("title", name),
        "command": "python train.py " + " ".join(o for o in overrides
                                                 if not o.startswith("hydra.")),
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("judge", help="score every step checkpoint of runs")
    j.add_argument("runs", nargs="+", type=Path)
    j.add_argument("--every", type=int, default=1, help="every n-th checkpoint")
    c = sub.add_parser("compare", help="curves and images: recipe run against baseline run")
    c.add_argument("recipe", type=Path)
    c.add_argument("baseline", type=Path,
                   help="the baseline's run folder, or its judged report (zoo_judge_*.json)")
    c.add_argument("--out", type=Path, default=RESULTS)
    c.add_argument("--every", type=int, default=1,
                   help="judge every n-th checkpoint for the curves (~1 min each)")
    c.add_argument("--final", action="append", default=[], metavar="SIDE=MODEL",
                   help="the model a side's last step saved, for the side-by-side where its run "
                   "folder is gone, e.g. recipe=stylenet/models/great_wave.pt")
    n = sub.add_parser("nets", help="final models of runs of one recipe against a reference run")
    n.add_argument("reference", type=Path)
    n.add_argument("others", nargs="+", type=Path)
    n.add_argument("--out", type=Path, default=RESULTS)
    pub = sub.add_parser("publish", help="ship a finished run in stylenet/models/")
    pub.add_argument("run", type=Path)
    pub.add_argument("--name")
    sub.add_parser("readme", help="docs/zoo.jpg from the shipped models")
    sub.add_parser("rescore", help="measure every shipped model's held-out scores again and "
                   "rewrite its record and the zoo's table")
    rel = sub.add_parser("relative", help="add the style relative to the photos' own, layer by "
                         "layer, to judged JSONs (results/zoo_judge_*.json) and print it")
    rel.add_argument("reports", nargs="+", type=Path)
    hf = sub.add_parser("hf", help="the high-frequency ratio of models on the held-out photos, "
                        "with their contrast")
    hf.add_argument("models", nargs="*", help="shipped names or model files (default: every "
                    "shipped model)")
    a = p.parse_args(argv)
    if a.cmd == "judge":
        for run in a.runs:
            report = judge_run(run, a.every)
            RESULTS.mkdir(parents=True, exist_ok=True)
            path = report_path(report["style"], run)
            path.write_text(json.dumps(report, indent=1))
    elif a.cmd == "compare":
        finals = dict(f.split("=", 1) for f in a.final if "=" in f)
        if len(finals) != len(a.final) or not set(finals) <= {"recipe", "baseline"}:
            p.error(f"--final {a.final}: SIDE is recipe or baseline")
        compare(a.recipe, a.baseline, a.out, a.every, {k: Path(v) for k, v in finals.items()})
    elif a.cmd == "nets":
        nets(a.reference, a.others, a.out)
    elif a.cmd == "hf":
        high_frequency(tuple(a.models))
    elif a.cmd == "relative":
        for path in a.reports:
            add_relative(path)
    elif a.cmd == "publish":
        publish(a.run, a.name)
    elif a.cmd == "rescore":
        rescore()
    else:
        print(readme_picture())
    return 0


if __name__ == "__main__":
    sys.exit(main())
