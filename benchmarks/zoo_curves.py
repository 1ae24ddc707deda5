"""The zoo's pictures: held-out losses against wall time, side-by-side images of models, a
recipe run against its baseline at equal time, nets of one recipe against each other."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image
from torchvision.transforms.v2 import functional as TF

sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo_judging as judging  # noqa: E402
from judge import Judge  # noqa: E402
from zoo_judging import (  # noqa: E402
    RESULTS,
    STYLE_KEYS,
    by_layer,
    judged,
    score,
)
from zoo_runs import painting_path, run_config, seconds_at, step_checkpoints, wall_clock  # noqa: E402

from stylenet.image import image_grid, label_draw, load_tensor, to_pil  # noqa: E402
from stylenet.model_file import load_model  # noqa: E402
from stylenet.stylize import Stylizer  # noqa: E402


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
    photos = judging.heldout(size)
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
                 judging.JUDGE_SIZE, out / f"zoo_{style}_side_by_side.jpg")
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
    judge = Judge(None, load_tensor(painting_path(reference), max_side=judging.JUDGE_SIZE))
    photos = judging.heldout()
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
    side_by_side([(p, models) for p in ("astronaut", "chelsea", "china", "text")],
                 judging.JUDGE_SIZE, out / f"zoo_{style}_nets.jpg")
    (out / f"zoo_{style}_nets.json").write_text(json.dumps(rows, indent=1))
    return rows
