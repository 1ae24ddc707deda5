"""The zoo's judging: held-out photos, a model's scores on the independent judge
(benchmarks/judge.py), a run's checkpoints judged against its wall time (benchmarks/zoo_runs.py),
and the high-frequency ratio of models. The verbs are in benchmarks/zoo.py.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import reference  # noqa: E402
from judge import HF_RANGE, Judge, contrast_ratio, high_frequency_ratio, paints  # noqa: E402
from zoo_runs import (  # noqa: E402
    painting_path,
    run_config,
    seconds_at,
    step_checkpoints,
    wall_clock,
)

from stylenet import zoo  # noqa: E402
from stylenet.image import load_tensor  # noqa: E402
from stylenet.stylize import Stylizer  # noqa: E402

HELD_OUT = ROOT / "data" / "heldout"
RESULTS = ROOT / "benchmarks" / "results"
JUDGE_SIZE = 512  # long side of the held-out photos and of the painting when judged


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


def bundled_painting(name: str, max_side: int | None = JUDGE_SIZE) -> torch.Tensor:
    """A bundled style's painting, data/styles/<name>.jpg, its long side max_side (None: as is)."""
    return load_tensor(ROOT / "data" / "styles" / f"{name}.jpg", max_side=max_side)


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


def own_distance(judge: Judge, photos: dict[str, torch.Tensor],
                 grams: dict[str, dict] | None = None) -> dict[str, float]:
    """The held-out photos' own style distance from the painting, by layer (means over photos):
    what a net that gives every photo back unchanged would score. `grams`: photo name -> the
    photo's judge.grams(), where score() already has them."""
    if grams is not None:
        scores = [{f"style_{k}": v for k, v in judge.style_by_layer(grams[n]).items()}
                  for n in photos]
    else:
        scores = [judge(x, x) for x in photos.values()]
    return {k: statistics.fmean(s[k] for s in scores) for k in LAYER_KEYS}


def relative_style(scores: dict, own: dict[str, float]) -> float:
    """The style with every layer counted: each layer's distance over the photos' own there (1:
    no closer to the painting than the photo, 0: the painting's statistics), the mean over the
    four layers. The judge's style sums the layers raw, and relu1_2 is ~99 % of it."""
    return statistics.fmean(scores[k] / own[k] for k in LAYER_KEYS)


def zoo_paintings() -> list[str]:
    """The zoo's paintings: one recipe file each in configs/experiment/zoo/."""
    return sorted(p.stem for p in (ROOT / "configs" / "experiment" / "zoo").glob("*.yaml"))


def nearest_paintings(outputs: dict[str, torch.Tensor], photos: dict[str, torch.Tensor],
                      judges: dict[str, Judge],
                      grams: dict[str, tuple[dict, dict]] | None = None) -> dict[str, str]:
    """photo name -> the painting (of `judges`, one per painting) its output is nearest in
    relative style, each photo against its own distance from each painting. `grams`: photo name
    -> (the photo's, its output's) grams(), where score() already has them."""
    vgg = next(iter(judges.values()))  # every judge's VGG16 is the same: Gram matrices once
    nearest = {}
    for name, out in outputs.items():
        photo, stylized = grams[name] if grams else (vgg.grams(photos[name]), vgg.grams(out))
        relative = {painting: judge.relative_style(photo, stylized)
                    for painting, judge in judges.items()}
        nearest[name] = min(relative, key=relative.get)
    return nearest


def score(model: str | Path, judge: Judge, photos: dict[str, torch.Tensor]) -> dict:
    """Means over the photos of the judge's scores, medians of its band energies, whether the
    model passes the band bar ("paints"), each photo's scores, the outputs scored and the
    grams() of each photo and its output (for own_distance and nearest_paintings)."""
    stylizer = Stylizer(model, device="cpu", precision="fp32")
    outputs = {name: stylizer(photo) for name, photo in photos.items()}
    judged = {name: judge.judged(photo, outputs[name]) for name, photo in photos.items()}
    per_photo = {name: j[0] for name, j in judged.items()}
    mean = {k: statistics.fmean(s[k] for s in per_photo.values()) for k in STYLE_KEYS}
    median = {k: statistics.median(s[k] for s in per_photo.values()) for k in BAND_KEYS}
    return {**mean, **median, "paints": paints(list(per_photo.values())), "photos": per_photo,
            "outputs": outputs, "grams": {name: j[1:] for name, j in judged.items()}}


def judge_run(run: Path, every: int = 1, keep: tuple[int, ...] = (),
              known: list[dict] = ()) -> dict:
    """Every `every`-th step checkpoint of a run, counted back from its last, and those at the
    steps in `keep`, scored on the held-out photos; a checkpoint among `known` (points of an
    earlier report of this run) keeps its scores."""
    known = {p["file"]: p for p in known if "file" in p}
    clock = wall_clock(run)
    judge = Judge(None, load_tensor(painting_path(run), max_side=JUDGE_SIZE))
    photos = heldout()
    own = own_distance(judge, photos)
    points = []
    ckpts = step_checkpoints(run)
    steps = sorted(set(sorted(ckpts)[::-1][::every]) | (set(keep) & set(ckpts)))
    for step in steps:
        ckpt = ckpts[step]
        if ckpt.name in known:
            points.append({**known[ckpt.name], "seconds": seconds_at(clock, step)})
            continue
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


def earlier_report(run: Path) -> dict | None:
    """The report `zoo.py judge` wrote for this run, if any."""
    path = report_path(run_config(run)["style"]["name"], run)
    report = json.loads(path.read_text()) if path.is_file() else None
    return report if report and Path(report["run"]).resolve() == run.resolve() else None


def judged(run: Path, every: int = 1, keep: tuple[int, ...] = ()) -> dict:
    """A run's judged curve: the report `zoo.py judge` wrote for it when that holds every step
    checkpoint the run has now (judging is ~17 s a checkpoint), else judged again, the report's
    checkpoints kept. The wall time of each point is read from the run again, as wall_clock()
    counts it now."""
    report = earlier_report(run)
    if report and {p["step"] for p in report["points"]} >= set(step_checkpoints(run)):
        clock = wall_clock(run)
        for point in report["points"]:
            point["seconds"] = seconds_at(clock, point["step"])
        return report
    return judge_run(run, every, keep, report["points"] if report else ())


def high_frequency(models: tuple[str | Path, ...], size: int = JUDGE_SIZE) -> dict:
    """The judge's high-frequency ratio of models (shipped names or model files; none: every
    shipped model) on the held-out photos at their own size: the mean over the photos, their
    range, and whether the mean is within the bar (judge.HF_RANGE). Beside it, the output's
    luminance variance over the photo's (`contrast`, mean over the photos) and the mean of each
    photo's high-frequency ratio over its contrast ratio (`hf_per_contrast`): a darker, flatter
    grade lowers the first two and keeps the third, a blur lowers the third
    (NOTES.md: "The zoo's high-frequency ratio is measured at 512 px")."""
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
