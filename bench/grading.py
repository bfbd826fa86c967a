"""Grading time: one submission of every notebook, and a class of N of one notebook with ``--jobs 2`` (grading mode).

    python -m bench.grading [--notebook 00_start_here] [--class-size 30] [--jobs 2] [--solutions-only]
    python -m bench.grading --per-notebook [--notebooks 05 06]   # one solution of each notebook, alone
    python -m bench.grading --per-notebook --notebook heaviest --class-size 100 --solutions-only
    python -m bench.grading --sandbox-cost --class-size 0 [--notebooks 00 05] [--repeats 2]   # sandbox vs --no-sandbox

The class is N copies of one notebook, half the solution (full marks) and half the untouched
student notebook (zero) — or all solutions with ``--solutions-only`` (the worst case: every cell up
to the last exercise runs) — graded by ``labsupport.grading`` exactly as ``labsupport-grade`` does,
in its default mode (grading mode). ``--notebook heaviest`` picks the notebook whose solution took
longest in the per-notebook run. Prints a Markdown table (the format of ``python -m bench``) and the
machine's load average, since timings on a shared machine depend on what else runs.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

from bench.core import ROOT, machine, table
from labsupport import config, grading

TARGET_ONE = 15.0  # seconds per submission, every notebook (issue 19)
TARGET_CLASS = 15 * 60.0  # a class of 100 of the heaviest notebook with --jobs 2
TARGET_SANDBOX = 1.0  # extra seconds per submission for grading in the sandbox (issue 36)


def _record(name: str, value: float, unit: str, ok: bool | None = None, seconds: float = 0.0, note: str = "", target: str | None = None) -> dict:
    return {"name": name, "value": round(value, 2), "unit": unit, "target": target, "pass": ok, "seconds": round(seconds, 1),
            "device": "cpu", "note": note}


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children (the kernels, the check processes)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) for f in ("ru_utime", "ru_stime"))


def _settings() -> grading.Settings:
    return grading.Settings(threads=config.num_threads(default=1))  # the grader's defaults: grading mode, its time and memory limits


def _solution_names(prefixes: list[str] | None = None) -> list[str]:
    """The solution notebooks' names, sorted; only those starting with one of ``prefixes`` when given."""
    names = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))
    return [n for n in names if any(n.startswith(x) for x in prefixes)] if prefixes else names


def _each_solution(notebooks: list[str] | None, tmp: Path) -> Iterator[tuple[str, Path]]:
    """``(name, path)`` of each solution (all of them when ``notebooks`` is empty), copied alone into a folder of ``tmp``."""
    for name in notebooks or _solution_names():
        one = tmp / name
        one.mkdir()
        shutil.copy(ROOT / "solutions" / f"{name}.ipynb", one / f"{name}.ipynb")
        yield name, one / f"{name}.ipynb"


def _grade_alone(path: Path, out: Path, settings: grading.Settings) -> tuple[dict, float]:
    """Grade one notebook (``--jobs 1``): its row and the wall seconds the grading took."""
    start = time.perf_counter()
    [row] = grading.grade([path], out, settings, jobs=1, progress=False, similar=False)
    return row, time.perf_counter() - start


def _full_marks(row: dict) -> bool:
    return row["total"] == row["max"] and row["status"] == "ok"


def per_notebook(notebooks: list[str] | None = None) -> list[dict]:
    """Grade one solution of each notebook alone (``--jobs 1``, 2 threads): seconds per submission, full marks expected."""
    s = grading.Settings(threads=config.num_threads(default=config.cores()))
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _each_solution(notebooks, Path(tmp)):
            load = os.getloadavg()[0]
            row, wall = _grade_alone(path, Path(tmp) / f"out-{name}", s)
            records.append(_record(f"grade one solution of {name} (grading mode)", wall, "s", _full_marks(row) and wall <= TARGET_ONE, wall,
                                   f"{row['total']:g}/{row['max']:g} points, status {row['status']}, load {load:.1f}", f"<= {TARGET_ONE:g} s"))
    return records


def sandbox_cost(notebooks: list[str] | None = None, repeats: int = 2) -> list[dict]:
    """The sandbox's cost per submission: each solution graded alone (``--jobs 1``) in the sandbox and without it
    (``--no-sandbox``), alternately, ``repeats`` times each, so that both see the same load; the median of each."""
    import statistics

    from labsupport.grading import sandbox

    kind = sandbox.resolve("auto")
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, path in _each_solution(notebooks, Path(tmp)):
            times: dict[str, list[float]] = {kind: [], "none": []}
            ok, load = True, os.getloadavg()[0]
            for k in range(repeats):
                for mode in (kind, "none") if k % 2 == 0 else ("none", kind):
                    s = grading.Settings(threads=config.num_threads(default=config.cores()), sandbox=mode)
                    row, wall = _grade_alone(path, Path(tmp) / f"out-{name}-{mode}-{k}", s)
                    times[mode].append(wall)
                    ok = ok and _full_marks(row)
            boxed, bare = statistics.median(times[kind]), statistics.median(times["none"])
            note = (f"{kind}: {', '.join(f'{t:.1f}' for t in times[kind])} s; none: {', '.join(f'{t:.1f}' for t in times['none'])} s; "
                    f"full marks both ways: {ok}; load {load:.1f} before, {os.getloadavg()[0]:.1f} after")
            records.append(_record(f"grade one solution of {name}, in the {kind} sandbox", boxed, "s", ok and boxed <= TARGET_ONE, boxed, note,
                                   f"<= {TARGET_ONE:g} s"))
            records.append(_record("  the same without a sandbox (--no-sandbox)", bare, "s", None, bare))
            records.append(_record("  the sandbox's cost per submission", boxed - bare, "s", boxed - bare < TARGET_SANDBOX, 0,
                                   target=f"< {TARGET_SANDBOX:g} s"))
    return records


def measure(notebook: str = "00_start_here", class_size: int = 30, jobs: int = 2, solutions_only: bool = False) -> list[dict]:
    """Grade one solution, one untouched student notebook, and a class of ``class_size``; return the records."""
    s = _settings()
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sub = tmp / "class"
        sub.mkdir()
        for kind, folder in (("solution", "solutions"), ("student", "notebooks")):
            one = tmp / kind
            one.mkdir()
            shutil.copy(ROOT / folder / f"{notebook}.ipynb", one / f"{kind}.ipynb")
            row, wall = _grade_alone(one / f"{kind}.ipynb", tmp / f"out-{kind}", s)
            ok = row["total"] == (row["max"] if kind == "solution" else 0)
            records.append(_record(f"grade one {kind} notebook ({notebook}, grading mode)", wall, "s", ok, wall,
                                   f"{row['total']:g}/{row['max']:g} points, status {row['status']}"))
        for k in range(class_size):
            kind, folder = ("solution", "solutions") if solutions_only or k % 2 == 0 else ("student", "notebooks")
            shutil.copy(ROOT / folder / f"{notebook}.ipynb", sub / f"student{k:03d}_{kind}.ipynb")
        load, start, cpu = os.getloadavg()[0], time.perf_counter(), _cpu()
        rows = grading.grade(sorted(sub.glob("*.ipynb")), tmp / "out-class", s, jobs=jobs, progress=True)
        wall = time.perf_counter() - start
        ok = all(r["total"] == (r["max"] if "solution" in r["file"] else 0) for r in rows)
        what = "all solutions" if solutions_only else "half solutions, half untouched student notebooks"
        records.append(_record(f"grade a class of {class_size} ({notebook}, --jobs {jobs})", wall, "s", ok and (class_size < 100 or wall <= TARGET_CLASS),
                               wall, f"{what}; load {load:.1f} before, {os.getloadavg()[0]:.1f} after, similarity report included",
                               f"<= {TARGET_CLASS / 60:g} min for 100" if class_size >= 100 else None))
        records.append(_record("  per submission in that class", wall / class_size, "s", None, 0))
        records.append(_record("  CPU time per submission (grader, kernels, checks)", (_cpu() - cpu) / class_size, "s", None, 0,
                               "less sensitive to other load than wall time"))
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.grading", description=__doc__.split("\n\n")[0])
    p.add_argument("--notebook", default="00_start_here", help="the class's notebook, or `heaviest` (with --per-notebook)")
    p.add_argument("--class-size", type=int, default=30, help="0: no class")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--solutions-only", action="store_true", help="every submission of the class is a completed solution")
    p.add_argument("--per-notebook", action="store_true", help="first grade one solution of every notebook, alone")
    p.add_argument("--notebooks", nargs="*", default=None, help="with --per-notebook or --sandbox-cost: only these (name prefixes)")
    p.add_argument("--sandbox-cost", action="store_true", help="grade each solution with and without the sandbox, alternately")
    p.add_argument("--repeats", type=int, default=2, help="with --sandbox-cost: gradings of each notebook each way (default %(default)s)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]
    records: list[dict] = []
    notebook = args.notebook
    if args.sandbox_cost:
        records += sandbox_cost(_solution_names(args.notebooks), args.repeats)
    if args.per_notebook:
        names = _solution_names(args.notebooks)
        records += per_notebook(names)
        if notebook == "heaviest":
            notebook = max(zip(records, names), key=lambda rn: rn[0]["value"])[1]
    elif notebook == "heaviest":
        raise SystemExit("--notebook heaviest needs --per-notebook")
    if args.class_size > 0:
        records += measure(notebook, args.class_size, args.jobs, args.solutions_only)
    print(table(records))
    for r in records:
        if r["note"]:
            print(f"- {r['name'].strip()}: {r['note']}")
    print(f"\n{machine()}; load average before: {load:.1f}, after: {os.getloadavg()[0]:.1f} "
          f"(other processes on this machine slow these numbers down)")
    return 0 if all(r["pass"] is not False for r in records) else 1


if __name__ == "__main__":
    raise SystemExit(main())
