"""Per-image optimisation (Gatys, Ecker, Bethge 2016): the pixels of one image are optimised
against the loss network and losses that training uses (stylenet.losses.PerceptualLoss).

optimize_image() is the API; optimize.py wraps it for the command line. A RunLog, when given,
records every step: TensorBoard scalars, a loss-curve PNG and optional intermediate images.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm.auto import tqdm

from stylenet.image import label_draw, save_atomic, to_pil
from stylenet.losses import PerceptualLoss
from stylenet.util import Heartbeat, atomic_write

log = logging.getLogger(__name__)

# The deepest preset tap (conv5_1) sits after four 2x2 poolings: smaller inputs leave it 1 px.
MIN_SIDE = 32


def resize_long_side(image: torch.Tensor, long_side: int) -> torch.Tensor:
    """(..., 3, H, W) -> the same aspect ratio with the longer side `long_side` (antialiased)."""
    h, w = image.shape[-2:]
    scale = long_side / max(h, w)
    size = [max(1, round(h * scale)), max(1, round(w * scale))]
    return TF.resize(image, size, antialias=True)


def level_sizes(height: int, width: int, levels: int) -> list[tuple[int, int]]:
    """Coarse-to-fine (H, W) per level, each level twice the size of the one before."""
    if levels < 1:
        raise ValueError(f"multiscale.levels={levels}: use 1 (full size only) or more")
    sizes = [(round(height / 2**k), round(width / 2**k)) for k in range(levels - 1, -1, -1)]
    if min(sizes[0]) < MIN_SIDE:
        raise ValueError(
            f"multiscale.levels={levels} makes the coarsest level {sizes[0][1]}x{sizes[0][0]}, "
            f"below the {MIN_SIDE} px the loss network needs: use fewer levels or a larger size"
        )
    return sizes


class Objective:
    """The loss as the closure torch.optim calls: zero grads, forward, backward, return total.

    `first`: the terms at the start of each step. Evaluating the last point again reuses its loss
    and gradient.
    """

    def __init__(self, loss: PerceptualLoss, image: torch.Tensor, content: dict[str, torch.Tensor]):
        self.loss, self.image, self.content = loss, image, content
        self.first: dict[str, torch.Tensor] | None = None
        self.evaluations = 0
        self._last_x: torch.Tensor | None = None
        self._last: dict[str, torch.Tensor] = {}

    def __call__(self) -> torch.Tensor:
        if self._last_x is None or not torch.equal(self._last_x, self.image.detach()):
            self.image.grad = None
            terms = self.loss(self.image, self.content)
            terms["total"].backward()
            self.evaluations += 1
            self._last_x = self.image.detach().clone()
            self._last = {k: v.detach() for k, v in terms.items()}
        # else: image.grad still holds the gradient at _last_x (nothing has touched it since).
        if self.first is None:
            self.first = self._last
        return self._last["total"]


StepCallback = Callable[[int, dict[str, float], torch.Tensor], None]


def optimize_image(
    content: torch.Tensor,
    style: torch.Tensor,
    loss: PerceptualLoss,
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    iterations: int,
    init: str = "content",
    levels: int = 1,
    level_iterations: int | None = None,
    style_size: int | None = None,
    seed: int = 0,
    on_step: StepCallback | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Optimise an image to have `content`'s features and `style`'s Grams; returns (3, H, W).

    content, style: (3, H, W) RGB in 0..1 on the loss's device; the result has content's size.
    make_optimizer([image]): called once per level; one optimizer step is one iteration.
    levels > 1: coarse to fine, level_iterations steps at each coarser level. style_size: the
    style's longer side at full size (None: the output's). on_step(step, terms, image): after
    every step, with the losses at its start.
    """
    if init not in ("content", "noise"):
        raise ValueError(f"init={init!r}: use 'content' (start from the photo) or 'noise'")
    if iterations < 1:
        raise ValueError(f"iterations={iterations}: use 1 or more")
    h, w = content.shape[-2:]
    sizes = level_sizes(h, w, levels)
    steps = [level_iterations if level_iterations is not None else iterations] * (levels - 1)
    steps.append(iterations)
    full_style = style_size or max(h, w)

    image = None
    step = 0
    total = sum(steps)
    bar = tqdm(total=total, desc="optimize", unit="it", disable=not progress, leave=False)
    beat = None if progress and sys.stderr.isatty() else Heartbeat(log, total)
    for (lh, lw), n in zip(sizes, steps, strict=True):
        scale = lh / h
        target = TF.resize(content, [lh, lw], antialias=True) if (lh, lw) != (h, w) else content
        loss.set_style(resize_long_side(style, max(1, round(full_style * scale))).unsqueeze(0))
        with torch.no_grad():  # the photo's features (or its recoloured copy's) are a fixed target
            content_feats = loss.features(loss.content_image(target.unsqueeze(0)))
        if image is None:
            if init == "content":
                start = target.clone()
            else:
                gen = torch.Generator().manual_seed(seed)
                start = torch.rand(target.shape, generator=gen).to(target.device)
        else:  # coarse-to-fine: the previous level's result, upsampled, is the start point
            start = F.interpolate(image.unsqueeze(0), size=(lh, lw), mode="bilinear")[0]
        # Unclamped pixels: clamping in the loop would break LBFGS's curvature pairs; the
        # result is clamped when saved, as in the reference implementations.
        x = start.unsqueeze(0).contiguous().requires_grad_(True)  # LBFGS views grads flat
        optimizer = make_optimizer([x])
        objective = Objective(loss, x, content_feats)
        for _ in range(n):
            objective.first = None
            optimizer.step(objective)
            terms = {k: float(v) for k, v in objective.first.items()}
            if not math.isfinite(terms["total"]):
                raise RuntimeError(
                    f"the loss became {terms['total']} at step {step}: lower the optimizer's lr "
                    "or the loss weights"
                )
            if on_step is not None:
                on_step(step, terms, x.detach()[0])
            bar.set_postfix(content=f"{terms['content']:.3g}", style=f"{terms['style']:.3g}",
                            refresh=False)
            bar.update(1)
            step += 1
            if beat is not None:
                beat(step, "step %d/%d at %dx%d: content %.3g, style %.3g", step, total, lw, lh,
                     terms["content"], terms["style"])
        image = x.detach()[0]
        log.info("level %dx%d: %d steps, %d loss evaluations", lw, lh, n, objective.evaluations)
    bar.close()
    return image


class RunLog:
    """Where an optimisation run leaves its traces: TensorBoard scalars under optimize/,
    intermediate images every `save_every` steps, and at close() a loss-curve PNG and a
    summary.json with the timing and final losses."""

    def __init__(self, log_dir: str | Path, save_every: int = 0, tensorboard: bool = True,
                 quality: int = 95):
        from torch.utils.tensorboard import SummaryWriter

        if save_every < 0:
            raise ValueError(f"save_every={save_every}: use 0 (never) or a number of steps")
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save_every, self.quality = save_every, quality
        self.writer = SummaryWriter(str(self.dir)) if tensorboard else None
        self.history: list[dict[str, float]] = []
        self.start = time.perf_counter()

    def __call__(self, step: int, terms: dict[str, float], image: torch.Tensor) -> None:
        self.history.append({"step": step, **terms})
        if self.writer is not None:
            for name, value in terms.items():
                self.writer.add_scalar(f"optimize/{name}", value, step)
        if self.save_every and (step + 1) % self.save_every == 0:
            img = image.float().clamp(0, 1).cpu()
            save_atomic(to_pil(img), self.dir / f"step_{step + 1:05d}.jpg", quality=self.quality)
            if self.writer is not None:
                self.writer.add_image("optimize/image", img, step + 1)

    def close(self, summary: dict | None = None) -> None:
        seconds = time.perf_counter() - self.start
        steps = len(self.history)
        if self.history:
            save_atomic(loss_curve(self.history), self.dir / "loss.png")
        record = {
            "seconds": round(seconds, 3),
            "steps": steps,
            "seconds_per_step": round(seconds / max(steps, 1), 5),
            "first": self.history[0] if self.history else None,
            "last": self.history[-1] if self.history else None,
            **(summary or {}),
        }
        with atomic_write(self.dir / "summary.json") as f:
            f.write(json.dumps(record, indent=2).encode())
        if self.writer is not None:
            self.writer.close()


# total is drawn first, wide and grey, so that the style line it usually hugs stays visible.
CURVE_COLOURS = {"total": (160, 160, 160), "content": (31, 119, 180), "style": (214, 39, 40),
                 "tv": (44, 160, 44), "color": (148, 103, 189)}


def loss_curve(history: list[dict[str, float]], size: tuple[int, int] = (640, 400)) -> Image.Image:
    """The loss terms against the step, log10 scale, as a PIL image (matplotlib is not a
    dependency). Terms that are zero throughout (tv, color by default) are left out."""
    width, height = size
    left, right, top, bottom = 70, 20, 20, 40
    names = [n for n in CURVE_COLOURS if any(h.get(n, 0) > 0 for h in history)]
    values = [math.log10(h[n]) for h in history for n in names if h.get(n, 0) > 0]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    hi = hi if hi > lo else lo + 1
    last = max(history[-1]["step"], 1)
    img = Image.new("RGB", size, "white")
    draw = label_draw(img)
    draw.rectangle([left, top, width - right, height - bottom], outline=(128, 128, 128))

    def xy(step: float, value: float) -> tuple[float, float]:
        x = left + (width - left - right) * step / last
        return x, top + (height - top - bottom) * (hi - math.log10(value)) / (hi - lo)

    for i, name in enumerate(names):
        points = [xy(h["step"], h[name]) for h in history if h.get(name, 0) > 0]
        if len(points) > 1:
            draw.line(points, fill=CURVE_COLOURS[name], width=6 if name == "total" else 2)
        draw.text((width - right - 90, top + 6 + 14 * i), name, fill=CURVE_COLOURS[name])
    draw.text((4, top), f"1e{hi:.1f}", fill="black")
    draw.text((4, height - bottom - 10), f"1e{lo:.1f}", fill="black")
    draw.text((left, height - bottom + 6), "0", fill="black")
    draw.text((width - right - 40, height - bottom + 6), f"{last}", fill="black")
    draw.text((width // 2 - 20, height - bottom + 20), "step", fill="black")
    return img
