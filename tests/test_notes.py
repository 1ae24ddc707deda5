"""benchmarks/NOTES.md stays a guide: short, and every pointer into it names a heading it has.

A pointer is `NOTES.md` followed, on the same line, by a double-quoted heading, with nothing
between them but closing brackets, one comma or colon, spaces and one opening parenthesis:

    (benchmarks/NOTES.md, "Pixel scale")            # a comment or a docstring
    benchmarks/NOTES.md ("A lite network")
    (NOTES.md: "How much of a low ratio is contrast")
    [benchmarks/NOTES.md](../../benchmarks/NOTES.md) ("The CPU zoo recipe")

It matches a heading of NOTES.md (a line starting with #, outside code blocks) when it equals
the heading's text or is its start up to a word's end, case aside: "Training" matches
"Training on the GPU (...)", not "Trainings". Scanned: every .py, .yaml and .md file of the
repository outside hidden, generated and data folders. To name two headings, write NOTES.md twice.
A heading split over two lines is not a pointer the scan can read, so it fails too.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "benchmarks" / "NOTES.md"
MAX_LINES = 400
POINTER = re.compile(r'NOTES\.md[)\]]*[,:]?[ \t]*\(?"([^"\n]+)"')
# A heading that does not sit on its pointer's line: cut after its opening quote, or moved to the
# next line (after a comment's #).
DANGLING = re.compile(r'NOTES\.md[)\]]*[,:]?[ \t]*\(?("[^"\n]*$|\n[ \t]*(#[ \t]*)?\(?")',
                      re.MULTILINE)
SUFFIXES = {".py", ".yaml", ".md"}
SKIP_DIRS = {"__pycache__", "logs", "outputs", "multirun", "node_modules"}
SKIP_PATHS = {ROOT / "data" / "coco", ROOT / "data" / "photos"}


def headings(text: str) -> list[str]:
    """The text of each markdown heading, code blocks left out."""
    found, in_code = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            found.append(line.lstrip("#").strip())
    return found


def names(pointer: str, heading: str) -> bool:
    p, h = pointer.strip().casefold(), heading.casefold()
    return h == p or (h.startswith(p) and not h[len(p)].isalnum())


def scanned() -> list[Path]:
    files = []
    for folder, dirs, filenames in os.walk(ROOT):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not d.endswith(".egg-info") and here / d not in SKIP_PATHS)
        files += [here / f for f in sorted(filenames) if Path(f).suffix in SUFFIXES]
    return [f for f in files if f not in (NOTES, Path(__file__).resolve())]


def pointers() -> list[tuple[str, str | None]]:
    """(file:line, heading) of every pointer into NOTES.md outside it; heading None where the
    quoted heading does not close on its line."""
    found = []
    for path in scanned():
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            found += [(f"{path.relative_to(ROOT)}:{number}", m.group(1))
                      for m in POINTER.finditer(line)]
        found += [(f"{path.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}", None)
                  for m in DANGLING.finditer(text)]
    return found


@pytest.mark.parametrize("line, expected", [
    ('# and loses (benchmarks/NOTES.md, "Pixel scale"). So', ["Pixel scale"]),
    ('benchmarks/NOTES.md ("A lite network") the only', ["A lite network"]),
    ('lowers the third (NOTES.md: "How much of a low ratio is contrast")."""',
     ["How much of a low ratio is contrast"]),
    ('[benchmarks/NOTES.md](../../benchmarks/NOTES.md) ("The CPU zoo recipe").',
     ["The CPU zoo recipe"]),
    ('flatter colours; [NOTES](benchmarks/NOTES.md), "A lite network")', ["A lite network"]),
    ('the spread (benchmarks/NOTES.md) and "quoted words" later', []),
    ('see benchmarks/NOTES.md for "words" later', []),
])
def test_the_pointer_convention(line, expected):
    assert [m.group(1) for m in POINTER.finditer(line)] == expected
    assert not DANGLING.search(line)


def test_a_heading_split_over_two_lines_is_caught():
    assert DANGLING.search('faster than PyTorch eager (benchmarks/NOTES.md, "CPU\ninference")')
    assert DANGLING.search('# one change (benchmarks/NOTES.md,\n# "Pixel scale"); empty')
    assert DANGLING.search('a docstring, benchmarks/NOTES.md\n    ("Memory").')
    assert not DANGLING.search('(benchmarks/NOTES.md).\n# "A quoted word" on the next line')


def test_a_heading_is_named_by_its_start_up_to_a_word_end():
    assert names("Training", "Training on the GPU (section `train`, predictions)")
    assert names("the cpu zoo recipe", "The CPU zoo recipe (`experiment=cpu_zoo`)")
    assert not names("Train", "Training on the GPU")
    assert not names("Pixel scales", "Pixel scale and loss balance")


def test_every_pointer_into_the_notes_names_one_of_its_headings():
    found = pointers()
    assert len(found) >= 8, found  # the scan still sees the code's pointers
    have = headings(NOTES.read_text(encoding="utf-8"))
    missing = [f"{where}: {name!r}" if name else f"{where}: a heading split over two lines"
               for where, name in found
               if name is None or not any(names(name, h) for h in have)]
    assert not missing, "pointers to no heading of benchmarks/NOTES.md:\n" + "\n".join(missing)


def test_the_notes_stay_short():
    lines = len(NOTES.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"benchmarks/NOTES.md has {lines} lines (at most {MAX_LINES})"
