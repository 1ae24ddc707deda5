"""The model zoo: the models shipped in stylenet/models/, one per bundled painting, and their
records (stylenet/models/zoo.json: how each was trained and how it scores on held-out photos).

    python infer.py model=list                                   # what is shipped
    python infer.py model=starry_night input=photo.jpg output=out.jpg
    Stylizer("starry_night")

benchmarks/zoo.py trains nothing: it judges runs and publishes a finished one here.
"""

from __future__ import annotations

import json
from typing import Any

from stylenet.model_file import ZOO, zoo_names

RECORDS = ZOO / "zoo.json"


def records() -> dict[str, dict[str, Any]]:
    """name -> record, for every model the zoo's table lists."""
    return json.loads(RECORDS.read_text()) if RECORDS.is_file() else {}


def listing() -> str:
    """The shipped models, one line each: name, painting, training, held-out losses."""
    recs = records()
    rows = [f"{'model':<20} {'painting':<48} {'steps':>6} {'content':>8} {'style':>8}"]
    for name in zoo_names():
        r = recs.get(name, {})
        judged = r.get("held_out", {})
        rows.append(f"{name:<20} {r.get('painting', '(no record)'):<48} "
                    f"{r.get('steps', ''):>6} {judged.get('content', float('nan')):>8.0f} "
                    f"{judged.get('style', float('nan')):>8.0f}")
    rows.append(f"use: python infer.py model=NAME input=photo.jpg output=out.jpg ({ZOO})")
    return "\n".join(rows)


def table(recs: dict[str, dict[str, Any]] | None = None) -> str:
    """The zoo's table in Markdown (stylenet/models/README.md holds it, written from zoo.json by
    benchmarks/zoo.py publish; a test checks they agree)."""
    recs = records() if recs is None else recs
    rows = ["| model | painting | training command | steps | wall time, CPU | style weight, "
            "size | held-out content / style | relative style | bands 4-16 px (over contrast) | "
            "high-freq. ratio | periodic share | named | sample |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in recs.items():
        judged = r["held_out"]
        rows.append(
            f"| `{name}` | {r['painting']} | `{r['command']}` | {r['steps']} | "
            f"{r['wall_minutes']} min, {r['cpu']} | {r['style_weight']:g}, {r['style_size']} px | "
            f"{judged['content']:,.0f} / {judged['style']:,.0f} | "
            f"{judged['style_relative']:.3f} | "
            f"{judged['stroke_bands']:.2f} ({judged['stroke_contrast']:.2f}) | "
            f"{judged['high_freq_ratio']:.2f} | {judged['periodic_share']:.3f} | "
            f"{judged['named']}/{len(judged['photos'])} | [{name}](../../{r['sample']}) |")
    return "\n".join(rows)
