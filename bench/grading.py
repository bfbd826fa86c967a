"""Grading time: one submission at a time, and a class of N with ``--jobs 2`` (fast mode).

    python -m bench.grading [--notebook 00_start_here] [--class-size 30] [--jobs 2]

The class is N copies of one notebook, half the solution (full marks) and half the untouched
student notebook (zero), graded by ``labsupport.grading`` exactly as ``labsupport-grade`` does.
Prints a Markdown table (the format of ``python -m bench``) and the machine's load average, since
timings on a shared machine depend on what else runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.core import ROOT, machine, table
from labsupport import config, grading


def _record(name: str, value: float, unit: str, ok: bool | None = None, seconds: float = 0.0, note: str = "") -> dict:
    return {"name": name, "value": round(value, 2), "unit": unit, "target": None, "pass": ok, "seconds": round(seconds, 1),
            "device": "cpu", "note": note}


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (the kernels, the check processes)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grading", description=__doc__.split("\n\n")[0])
    p.add_argument("--notebook", default="00_start_here")
    p.add_argument("--class-size", type=int, default=30)
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    records = measure(args.notebook, args.class_size, args.jobs)
    print(table(records))
    print(f"\n{machine()}; load average before: {load:.1f}, after: {os.getloadavg()[0]:.1f} "
          f"(other processes on this machine slow these numbers down)")
    return 0 if all(r["pass"] is not False for r in records) else 1


def measure(notebook: str = "00_start_here", class_size: int = 30, jobs: int = 2) -> list[dict]:
    """Grade one solution, one untouched student notebook, and a class of ``class_size``; return the records."""
    s = grading.Settings(threads=config.num_threads(default=1))  # fast mode, default time limits
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = tmp / "class"
        sub.mkdir()
        for kind, folder in (("solution", "solutions"), ("student", "notebooks")):
            one = tmp / kind
            one.mkdir()
            shutil.copy(ROOT / folder / f"{notebook}.ipynb", one / f"{kind}.ipynb")
            start = time.perf_counter()
            [row] = grading.grade([one / f"{kind}.ipynb"], tmp / f"out-{kind}", s, jobs=1, progress=False)
            wall = time.perf_counter() - start
            ok = row["total"] == (row["max"] if kind == "solution" else 0)
            records.append(_record(f"grade one {kind} notebook ({notebook}, fast mode)", wall, "s", ok, wall,
                                   f"{row['total']}/{row['max']} points, status {row['status']}"))
        for k in range(class_size):
            kind, folder = ("solution", "solutions") if k % 2 == 0 else ("student", "notebooks")
            shutil.copy(ROOT / folder / f"{notebook}.ipynb", sub / f"student{k:02d}_{kind}.ipynb")
        start, cpu = time.perf_counter(), _cpu()
        rows = grading.grade(sorted(sub.glob("*.ipynb")), tmp / "out-class", s, jobs=jobs, progress=True)
        wall = time.perf_counter() - start
        ok = all(r["total"] == (r["max"] if "solution" in r["file"] else 0) for r in rows)
        records.append(_record(f"grade a class of {class_size} ({notebook}, --jobs {jobs})", wall, "s", ok, wall,
                               "half solutions, half untouched student notebooks"))
        records.append(_record("  per submission in that class", wall / class_size, "s", None, 0))
        records.append(_record("  CPU time per submission (grader, kernels, checks)", (_cpu() - cpu) / class_size, "s", None, 0,
                               "less sensitive to other load than wall time"))
    return records


if __name__ == "__main__":
    raise SystemExit(main())
