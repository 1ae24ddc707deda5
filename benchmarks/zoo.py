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

The code, one owner each: zoo_judging.py (held-out photos, scores, checkpoints against wall
time), zoo_curves.py (curves and side-by-side images), zoo_publish.py (shipping a model, its
record, the zoo's table, the README picture). Verbs that served one finding each (scale,
controls, moments, optimum, hf at 1024 px) are in git at f9220fc; their findings are in
benchmarks/NOTES.md.

Scores come from benchmarks/judge.py (imports nothing from stylenet): content and style loss of
each held-out photo of data/heldout/ (8 photos, 512 px on the long side) against the run's
painting at 512 px on its long side, in the VGG16's Caffe units (content 1 : style 5), means
over the photos. The models stylize through stylenet's Stylizer, in fp32 on the CPU, as users
run them. A run's wall time at a step is read from its TensorBoard files (validation and
previews included; start-up, ~15 s, left out; a pause before a resume does not count).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from zoo_curves import compare, nets  # noqa: E402
from zoo_judging import (  # noqa: E402
    RESULTS,
    add_relative,
    earlier_report,
    high_frequency,
    judge_run,
    report_path,
)
from zoo_publish import publish, readme_picture, rescore  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    j = sub.add_parser("judge", help="score every step checkpoint of runs")
    j.add_argument("runs", nargs="+", type=Path)
    j.add_argument("--every", type=int, default=1, help="every n-th checkpoint")
    j.add_argument("--again", action="store_true",
                   help="judge every checkpoint again (by default those the run's report holds "
                   "keep their scores)")
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
            earlier = None if a.again else earlier_report(run)
            report = judge_run(run, a.every, known=earlier["points"] if earlier else ())
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
