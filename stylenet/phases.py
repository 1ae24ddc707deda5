"""A recipe in phases: loss settings and lr that change at given steps of one run (`model.phases`).

A painting's CPU recipe first trains with the reference loss, which lays the painting's structure
over the photos, then changes the loss to clean it up (benchmarks/NOTES.md, "The zoo's recipes").
One run with phases is the same as a run stopped at the phase's step and resumed from its
checkpoint with the new settings, in one command, and resumable anywhere: the settings follow
from the step alone.

    model:
      phases:
        - from_step: 8000
          style_weight: 2e8
          tv_weight: 1e4
          content_palette: true
          style_tile: 128
          style_layers: {relu1_2: 1, relu2_2: 500, relu3_3: 1e5, relu4_3: 1e8}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# What a phase may change: the loss's own attributes (style_weight is the full weight, before
# any style warm-up), its style layers' weights, merged over the run's, and the optimizer's
# learning rate (lr; null: the optimizer's own).
KEYS = ("style_weight", "content_weight", "tv_weight", "content_palette", "style_tile",
        "style_tile_layers", "style_layers", "lr")


class Phases:
    """The loss settings at each step: the run's own until the first phase's from_step, then
    each phase's over the run's (and over the phases before it)."""

    def __init__(self, phases: Sequence[Mapping[str, Any]] | None, loss: Any,
                 style_weight: float):
        self.phases = [dict(p) for p in phases or []]
        if self.phases and getattr(loss, "paintings", None):
            raise ValueError("model.phases trains one painting: each painting of model=multi "
                             "keeps its settings in model.paintings")
        last = 0
        for i, p in enumerate(self.phases):
            where = f"model.phases[{i}]"
            step = p.pop("from_step", None)
            if not isinstance(step, int) or step <= last:
                raise ValueError(f"{where}.from_step={step}: each phase needs a from_step, an "
                                 f"integer over the phase before's ({last})")
            unknown = sorted(set(p) - set(KEYS))
            if unknown:
                raise ValueError(f"{where}: unknown setting(s) {unknown}: a phase sets some of "
                                 f"{list(KEYS)}")
            for name in p.get("style_layers") or {}:
                if name not in loss.style_layers:
                    raise ValueError(f"{where}.style_layers.{name}: not a style layer of the run "
                                     f"({list(loss.style_layers)}): give it a weight in "
                                     "loss.style_layers too")
            p["from_step"] = last = step
        self.base = {"style_weight": style_weight, "content_weight": loss.content_weight,
                     "tv_weight": loss.tv_weight, "content_palette": loss.content_palette,
                     "style_tile": loss.style_tile, "style_tile_layers": loss.style_tile_layers,
                     "style_layers": dict(loss.style_layers), "lr": None}
        for p in self.phases:  # every phase is checked against the loss before the run starts
            self.check(loss, self.settings_at(p["from_step"]))

    def settings_at(self, step: int) -> dict[str, Any]:
        """The settings in force at optimizer step `step` (style_weight: the full weight)."""
        out = {**self.base, "style_layers": dict(self.base["style_layers"])}
        for p in self.phases:
            if p["from_step"] > step:
                break
            for key, value in p.items():
                if key == "style_layers":
                    out["style_layers"].update({n: float(w) for n, w in value.items()})
                elif key != "from_step":
                    out[key] = value
        return out

    @staticmethod
    def check(loss: Any, s: dict[str, Any]) -> None:
        for key in ("style_weight", "content_weight", "tv_weight", *s["style_layers"]):
            value = s[key] if key in s else s["style_layers"][key]
            if float(value) < 0:
                raise ValueError(f"model.phases: {key}={value} is negative: weights are >= 0")
        if s["lr"] is not None and not float(s["lr"]) > 0:
            raise ValueError(f"model.phases: lr={s['lr']}: a learning rate > 0")
        tile, tiled = s["style_tile"], s["style_tile_layers"]
        if tile is not None and int(tile) < 8:
            raise ValueError(f"model.phases: style_tile={tile}: null, or a side of at least 8 px")
        if tiled is not None and (tile is None or not set(tiled) <= set(loss.style_layers)):
            raise ValueError(f"model.phases: style_tile_layers={list(tiled)}: style layers, "
                             "with a style_tile")

    def lr_at(self, step: int) -> float | None:
        """The learning rate a phase sets at `step` (None: the optimizer's own)."""
        lr = self.settings_at(step)["lr"]
        return None if lr is None else float(lr)

    def apply(self, loss: Any, step: int) -> float:
        """Set `loss` to the settings at `step`; returns the full style weight there."""
        s = self.settings_at(step)
        loss.content_weight, loss.tv_weight = s["content_weight"], s["tv_weight"]
        loss.content_palette, loss.style_tile = bool(s["content_palette"]), s["style_tile"]
        loss.style_tile_layers = None if s["style_tile_layers"] is None else list(
            s["style_tile_layers"])
        loss.style_layers = dict(s["style_layers"])  # a layer at 0 adds nothing
        return float(s["style_weight"])
