"""Gradescope: the autograder zip, and one graded notebook as Gradescope's ``results.json``.

``labsupport-grade gradescope ASSIGNMENT --out autograder.zip`` (see :mod:`labsupport.grading`) calls
:func:`build_zip`. Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once per
image, then ``run_autograder`` per submission: it grades ``/autograder/submission`` with the course's
own grader (``labsupport-grade gradescope-run``), the notebook in the same sandbox as any graded notebook
(:mod:`labsupport.grading.sandbox`, which hides ``/autograder`` from it; ``setup.sh`` installs bubblewrap),
and writes ``/autograder/results/results.json``
(:func:`results`). ``run_autograder ROOT`` grades ``ROOT`` instead of ``/autograder`` (the tests
run it on a folder built like Gradescope's). Format: Gradescope's published autograder
specification: ``tests[]`` with ``name``, ``score``, ``max_score``, ``status``, ``output``,
``visibility``; top-level ``score``, ``execution_time``, ``output``.
"""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

SETUP = """#!/usr/bin/env bash
# Gradescope runs this once when it builds the autograder image (Ubuntu, as root).
set -euo pipefail
# bubblewrap: each graded notebook runs in its own sandbox (read-only system, no network, results/ hidden).
apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv bubblewrap
python3 -m venv /opt/course
/opt/course/bin/pip install --no-cache-dir /autograder/source
# MNIST into the image once, so grading never downloads (the course reads LABSUPPORT_DATA, default ~/.cache/labsupport/data).
/opt/course/bin/python -c "from labsupport import data; data.mnist(train=True); data.mnist(train=False)"
"""

RUN = """#!/usr/bin/env bash
# Gradescope runs this for every submission. ROOT (first argument, default /autograder) holds
# submission/ (the student's files) and results/ (where results.json goes).
set -uo pipefail
ROOT="${{1:-/autograder}}"
PYTHON=/opt/course/bin/python
[ -x "$PYTHON" ] || PYTHON=python3
cd "$(dirname "$0")"
# The notebook runs in a sandbox (bwrap; where the container forbids it and this runs as root, the user nobody in
# namespaces of its own), which hides ROOT: the student's code cannot rewrite results.json or the course.
exec "$PYTHON" -m labsupport.grading gradescope-run "$ROOT" --assignment {assignment} --memory-limit {memory_limit}
"""


def build_zip(assignment: str, out: Path, memory_limit: int) -> Path:
    """Write ``out``: ``setup.sh``, ``run_autograder`` and the course's package (pyproject.toml, labsupport/)."""
    root = PACKAGE.parent
    files: dict[str, bytes] = {
        "setup.sh": SETUP.encode(),
        "run_autograder": RUN.format(assignment=assignment, memory_limit=memory_limit).encode(),
    }
    for name in ("pyproject.toml", "README.md"):
        files[name] = (root / name).read_bytes()
    for f in sorted(PACKAGE.rglob("*")):
        if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".py", ".json", ".typed", ".txt"):
            files[str(f.relative_to(root))] = f.read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            executable = name in ("setup.sh", "run_autograder")
            info.external_attr = ((stat.S_IFREG | (0o755 if executable else 0o644)) << 16)
            z.writestr(info, data, zipfile.ZIP_DEFLATED)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(buf.getvalue())
    return out


def results(row: dict | None, seconds: float, problem: str | None = None) -> dict:
    """Gradescope's results.json for one graded notebook (a grader row), or a zero with ``problem``."""
    if row is None:
        return {"score": 0, "execution_time": round(seconds), "output": problem or "nothing was graded", "visibility": "visible",
                "stdout_visibility": "hidden", "tests": []}
    tests = [{"name": f"Exercise {e['number']}: {e['id']}", "number": str(e["number"]), "score": e["score"], "max_score": e["points"],
              "status": "passed" if e["passed"] else "failed", "output": e["message"], "output_format": "text", "visibility": "visible"}
             for e in row["exercises"]]
    lines = [f"{row['notebook']}: {row['total']:g} / {row['max']:g} points"]
    lines += [f"Written question {q['number']} ({q['points']:g} points): {q['status']}; your instructor grades it by hand" for q in row.get("written", [])]
    lines += [f"Problem while grading: {p}" for p in row["problems"]]
    lines += [f"Cell {c['cell']} (it starts with `{c['starts']}`) raised {c['ename']}: {c['evalue'][:300]}" for c in row["cell_errors"]]
    return {"score": row["total"], "execution_time": round(seconds), "output": "\n".join(lines), "output_format": "text",
            "visibility": "visible", "stdout_visibility": "hidden", "tests": tests}
