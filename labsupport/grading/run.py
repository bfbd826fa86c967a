"""Grading runs: one notebook (read it, run it in its sandbox, check it, score it), a class, a student's self
check, and Gradescope's one submission."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .. import gradescope
from . import integrity, kernel, reports, scoring
from .sandbox import Sandbox, resolve, works
from .settings import Settings
from .submissions import find_submissions, identify, load_exercises, read_notebook, safe_name, written_answers

NO_SANDBOX = ("--no-sandbox: the notebooks run as you, with your files and your network, and can change the installed "
              "course, --out and the other submissions. Use it only for a class you trust.")


def grade_notebook(path: Path, student: str, exercises: dict[str, list[dict]], s: Settings, assignment: str | None = None,
                   executed_dir: Path | None = None, written: dict[str, list[dict]] | None = None,
                   sandbox: Sandbox | None = None, hashes: integrity.Hashes | None = None) -> dict:
    """Grade one notebook file; every failure becomes a status and a message in the returned row.
    ``written`` (default: the course's) are the written questions, collected in ``row["written"]`` and never scored here.
    ``sandbox`` (default: ``s.sandbox``'s, hiding nothing more) runs the kernel and the checks; ``hashes``, when
    given, are verified before the checks run (:class:`integrity.Tampered` stops everything)."""
    start = time.perf_counter()
    written = load_exercises(kind="written") if written is None else written
    sandbox = sandbox or Sandbox(resolve(s.sandbox))
    row = scoring.new_row(student, path)
    nb, problem = read_notebook(path)
    if nb is None:
        row["status"].append("invalid")
        row["problems"].append(problem)
        row["notebook"] = assignment
    else:
        row["notebook"], problem = identify(nb, exercises, assignment)
        if problem:
            row["status"].append(problem.split(":")[0])
            row["problems"].append(problem.split(": ", 1)[1])
    graded = row["notebook"] if row["notebook"] in exercises and not row["status"] else None
    listed = exercises.get(graded or (assignment if assignment in exercises else ""), [])
    results = {}
    if graded:
        ids = [e["id"] for e in listed]
        tmp = Path(tempfile.mkdtemp(prefix="labsupport-grade-"))
        try:
            work, export, scratch = tmp / "work", tmp / "export", tmp / "checks"
            for d in (work, export, scratch / "empty"):
                d.mkdir(parents=True)
            import nbformat

            nbformat.write(nb, work / path.name)  # the kernel's folder holds a copy, never the original
            sandbox.prepare(tmp, work, export, work / path.name, *kernel.make_home(tmp))
            try:
                ran = asyncio.run(kernel.execute_notebook(nb, ids, work, export, s, sandbox))
            except Exception as err:  # the kernel did not start, or nbclient failed: not the student's doing
                ran = {"stopped": None, "timeouts": [], "errors": [], "truncated": []}
                row["status"].append("grader-error")
                row["problems"].append(f"the notebook could not be run: {type(err).__name__}: {err}")
            log = (tmp / "kernel.log").read_text(errors="replace")[-20_000:] if (tmp / "kernel.log").exists() else ""
            scoring.note_run(row, ran, log, s)
            if executed_dir is not None:
                executed_dir.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, executed_dir / f"{safe_name(student)}__{safe_name(path.stem)}.ipynb")
            if hashes is not None:
                hashes.verify(f"before checking {student}'s {path.name}")
            results = kernel.check_exports(export, ids, s, scratch, sandbox)
            if any(r.grader_error for r in results.values()):
                row["status"].append("grader-error")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only the grader's own temporary folder
    scoring.score_row(row, listed, results, s)
    row["written"] = written_answers(nb, written.get(graded or "", []))
    row["by_hand"] = sum(q["points"] for q in row["written"])  # points the instructor still gives, on top of max
    row["status"] = ";".join(dict.fromkeys(row["status"])) or "ok"
    row["seconds"] = round(time.perf_counter() - start, 1)
    return row


def _grade_safely(path: Path, student: str, exercises: dict[str, list[dict]], s: Settings, assignment: str | None, executed: Path,
                  sandbox: Sandbox, hashes: integrity.Hashes) -> dict:
    """A bug in the grader costs one row (status grader-error), not the class's run (tampering stops the run)."""
    try:
        return grade_notebook(path, student, exercises, s, assignment, executed, sandbox=sandbox, hashes=hashes)
    except Exception as err:
        import traceback

        return {**scoring.new_row(student, path), "notebook": assignment, "status": "grader-error", "seconds": 0.0,
                "problems": [f"the grader failed: {type(err).__name__}: {err}", traceback.format_exc()[-2000:]]}


def grade(paths: list[Path], out: Path, s: Settings, jobs: int = 1, assignment: str | None = None,
          progress: bool = True, similar: bool = True, hide: list[Path] = (), warn: bool = True) -> list[dict]:
    """Grade every submission under ``paths`` into ``out``; returns the rows (also in grades.json).

    Each notebook runs in a sandbox of kind ``s.sandbox`` ("auto": the first that works here; SystemExit when none
    does) that hides ``out``, every submission's folder and ``hide``. The installed course's hashes are taken first
    and verified before every checking run and before the reports: a change stops the run, writing nothing."""
    from tqdm.auto import tqdm

    exercises = load_exercises()
    if assignment is not None and assignment not in exercises:
        raise SystemExit(f"--assignment {assignment!r} is not a notebook of this course ({', '.join(exercises)})")
    out = out.resolve()
    for p in paths:
        if p.is_dir() and (out == p.resolve() or p.resolve() in out.parents):
            raise SystemExit(f"--out {out} is inside the submissions folder {p}: choose a folder outside it")
    s = dataclasses.replace(s, sandbox=resolve(s.sandbox))
    if s.sandbox == "none" and warn:
        print(f"warning: {NO_SANDBOX}", file=sys.stderr)
    integrity.compile_package()
    hashes = integrity.Hashes()
    subs = find_submissions(paths, exercises)
    out.mkdir(parents=True, exist_ok=True)
    sandbox = Sandbox(s.sandbox, hide=[out, *hide, *(p if p.is_dir() else p.parent for p in paths), *(f.parent for _, f in subs)])
    rows: list[dict | None] = [None] * len(subs)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool, tqdm(total=len(subs), desc="grading", unit="notebook", disable=not progress) as bar:
        futures = {pool.submit(_grade_safely, f, st, exercises, s, assignment, out / "executed", sandbox, hashes): k for k, (st, f) in enumerate(subs)}
        try:
            for fut in as_completed(futures):
                rows[futures[fut]] = fut.result()
                bar.set_postfix_str(f"{rows[futures[fut]]['student']}", refresh=False)
                bar.update()
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    known = {r["notebook"] for r in rows if r["notebook"] in exercises}
    for r in rows:  # an unreadable file in a one-assignment class still gets that assignment's zero row
        if r["notebook"] is None and len(known) == 1:
            r["notebook"] = next(iter(known))
            r["max"] = sum(e["points"] for e in exercises[r["notebook"]])
            r["exercises"] = [{**e, "score": 0, "passed": False, "message": "not graded: " + "; ".join(r["problems"])} for e in exercises[r["notebook"]]]
    hashes.verify("before writing the reports")
    reports.write_reports(rows, out, exercises, s, reports.similarity_report(rows, exercises) if similar else None)
    return rows


def self_check(path: Path, s: Settings) -> tuple[dict, str]:
    """Grade one notebook exactly as the grader does (same run, same checks, same limits); ``(row, text for the student)``.
    It is the student's own notebook: the sandbox is used where one works here, and none is needed."""
    if not path.is_file():
        raise SystemExit(f"{path}: no such notebook file")
    if s.sandbox == "auto" and not (works("bwrap") or works("unshare")):
        s = dataclasses.replace(s, sandbox="none")
    with tempfile.TemporaryDirectory(prefix="labsupport-self-") as tmp:
        [row] = grade([path], Path(tmp), s, jobs=1, progress=False, similar=False, warn=False)  # the student's own notebook
    lines = [f"Your notebook {path.name} ({row['notebook'] or 'assignment unknown'}) would get {row['total']:g} of {row['max']:g} points.", ""]
    for e in row["exercises"]:
        verdict = "done" if e["passed"] else ("partly done" if e["score"] else "not yet")
        lines.append(f"Exercise {e['number']} ({e['id']}): {e['score']:g} / {e['points']:g} points, {verdict}.")
        if not e["passed"]:
            lines += ["  " + line for line in e["message"].strip().splitlines()]
    for q in row["written"]:
        lines.append(f"Written question {q['number']} ({q['points']:g} points, graded by hand later): {q['status']}.")
    for p in row["problems"]:
        lines.append(f"Note: {p}")
    for c in row["cell_errors"]:
        lines.append(f"Cell {c['cell']} (it starts with `{c['starts']}`) stopped with {c['ename']}: {c['evalue'][:300]}")
    lines += ["", "This is the grader's own run of your notebook, in its grading mode, from a fresh kernel: "
              "run every cell top to bottom yourself too, and save the notebook before you submit it."]
    return row, "\n".join(lines)


def gradescope_run(root: Path, assignment: str, s: Settings) -> int:
    """Inside Gradescope (``run_autograder``): grade ``root/submission`` in the sandbox (which hides all of ``root``:
    the submission, ``results/``, the zip's source), write ``root/results/results.json``. Where the container allows
    no sandbox, it grades without one and says so in the instructor-only output: a student's notebook graded in
    its own container can then rewrite its own results, never another student's."""
    start = time.perf_counter()
    warning = None
    if s.sandbox == "auto" and not (works("bwrap") or works("unshare")):
        s, warning = dataclasses.replace(s, sandbox="none"), "no sandbox could run in this container: graded without one"
    s = dataclasses.replace(s, sandbox=resolve(s.sandbox))
    results_dir = root / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    found = sorted(f for f in (root / "submission").rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
    exercises = load_exercises()
    ours = [f for f in found if read_notebook(f)[0] is not None and read_notebook(f)[0].metadata["submitted"]["notebook"] == assignment]
    if not found:
        report = gradescope.results(None, time.perf_counter() - start, "No .ipynb file was submitted: upload your notebook.")
    else:
        pick = (ours or found)[0]  # the notebook of this assignment, else the first one (which then scores what it scores)
        with tempfile.TemporaryDirectory(prefix="labsupport-gradescope-") as tmp:
            [row] = grade([pick], Path(tmp), s, jobs=1, assignment=assignment, progress=False, similar=False, hide=[root], warn=warning is None)
        report = gradescope.results(row, time.perf_counter() - start)
        if len(found) > 1:
            report["output"] += f"\n{len(found)} notebooks were submitted; graded: {pick.name}."
        print(json.dumps({"instructor_only": {"file": str(pick), "status": row["status"], "seconds": row["seconds"],
                                              "exercises": sum(len(v) for v in exercises.values()),
                                              "sandbox": s.sandbox, "warning": warning}}))  # stdout is instructor-only on Gradescope
    (results_dir / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    return 0

