"""Reports: grades.csv, grades.json, gradebook.csv, similarity.csv, feedback/, written/; the merged gradebook."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from .. import similarity
from .settings import PACKAGE, Settings
from .submissions import load_exercises, read_notebook, safe_name


SANDBOX_NOTES = {
    "bwrap": "each kernel and checking process in its own bubblewrap sandbox: read-only system, no network, own PID namespace, "
             "submissions, --out and home hidden",
    "unshare": "each kernel and checking process as the user nobody in its own mount, PID and network namespaces: read-only "
               "system, no network, submissions, --out and home hidden",
}


def write_reports(rows: list[dict], out: Path, exercises: dict[str, list[dict]], s: Settings, similar: list[dict] | None = None) -> None:
    out.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(r["notebook"] for r in rows if r["notebook"] in exercises))
    columns = [(nb, e["id"], e["id"] if len(names) == 1 else f"{nb}:{e['id']}") for nb in names for e in exercises[nb]]
    with open(out / "grades.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook"] + [c[2] for c in columns] + ["total", "max", "by_hand", "status"])
        for r in rows:
            scores = {(r["notebook"], e["id"]): e["score"] for e in r["exercises"]}
            w.writerow([r["student"], r["notebook"] or ""] + [scores.get(c[:2], "") for c in columns] + [r["total"], r["max"], r.get("by_hand", 0), r["status"]])
    sandbox = {"kind": s.sandbox, "note": SANDBOX_NOTES.get(s.sandbox, "")}
    if s.sandbox == "none":
        sandbox["warning"] = "graded without a sandbox (--no-sandbox or a self check): the notebooks ran as the grader's user"
    report = {"settings": asdict(s), "sandbox": sandbox, "exercises": {nb: exercises[nb] for nb in names}, "submissions": rows,
              # Never copied into feedback/ or a Gradescope result: a pointer for the instructor, not a verdict.
              "instructor_only": {"similarity": similar or [], "note": f"flagged: similarity >= {similarity.FLAG} over at least "
                                  f"{similarity.MIN_TOKENS} normalised tokens; read both answers before concluding anything"}}
    (out / "grades.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    with open(out / "similarity.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["notebook", "exercise", "a", "b", "similarity", "tokens", "flagged"])
        for r in similar or []:
            w.writerow([r[k] for k in ("notebook", "exercise", "a", "b", "similarity", "tokens", "flagged")])
    write_gradebook(rows, out / "gradebook.csv", exercises)
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    by_student: dict[str, list[dict]] = {}
    for r in rows:
        by_student.setdefault(safe_name(r["student"]), []).append(r)
    for student, mine in by_student.items():
        (feedback / f"{student}.md").write_text(_feedback(mine[0]["student"], mine))
    write_written(rows, out / "written")


def write_written(rows: list[dict], folder: Path) -> None:
    """``folder/<notebook>.md``: every student's answer to each written question, side by side, to grade by hand."""
    names = list(dict.fromkeys(r["notebook"] for r in rows if r.get("written")))
    if names:
        folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        mine = [r for r in rows if r["notebook"] == name and r.get("written")]
        lines = [f"# {name}: written questions, to grade by hand", "",
                 "The model answers are in the solution notebook. These points are not in grades.csv's `total`; its `by_hand` column says how many are left to give.", ""]
        for q in mine[0]["written"]:
            lines += [f"## Written question {q['number']} ({q['points']:g} points): {q['title']}", ""]
            for r in mine:
                a = next(x for x in r["written"] if x["id"] == q["id"])
                lines += [f"### {r['student']} ({Path(r['file']).name})", "", a["answer"].strip() if a["answer"] else f"*({a['status']})*", ""]
        (folder / f"{safe_name(name)}.md").write_text("\n".join(lines).rstrip() + "\n")


def write_gradebook(rows: list[dict], path: Path, exercises: dict[str, list[dict]]) -> None:
    """The LMS export: one row per student, one column per assignment (its total), then their sum."""
    names = [n for n in exercises if any(r["notebook"] == n for r in rows)]
    book: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["notebook"] in exercises:  # two notebooks of one assignment from one student: the better counts
            mine = book.setdefault(r["student"], {})
            mine[r["notebook"]] = max(mine.get(r["notebook"], 0), r["total"])
        else:
            book.setdefault(r["student"], {})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student"] + [f"{n} ({sum(e['points'] for e in exercises[n]):g} points)" for n in names] + ["total"])
        for student in sorted(book):
            w.writerow([student] + [book[student].get(n, 0) for n in names] + [sum(book[student].values())])


def merge_gradebook(folders: list[Path], path: Path) -> Path:
    """One gradebook CSV from several grading runs' ``grades.json`` (e.g. one run per assignment)."""
    rows = []
    for folder in folders:
        report = folder / "grades.json" if folder.is_dir() else folder
        if not report.exists():
            raise SystemExit(f"{report}: no grades.json here (give the --out folders of earlier grading runs)")
        rows += json.loads(report.read_text())["submissions"]
    write_gradebook(rows, path, load_exercises())
    return path


def _sources(nb, ids: list[str]) -> dict[str, str | None]:
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    return {i: similarity.function_source(cells, i) for i in ids}


def similarity_report(rows: list[dict], exercises: dict[str, list[dict]]) -> list[dict]:
    """Similarity of every graded answer to every other of its exercise and to the published solution (solutions/)."""
    submissions, solutions = [], {}
    for r in rows:
        if r["notebook"] not in exercises:
            continue
        nb, _ = read_notebook(Path(r["file"]))
        if nb is not None:
            submissions.append((r["student"], r["notebook"], _sources(nb, [e["id"] for e in exercises[r["notebook"]]])))
    for name in {n for _, n, _ in submissions}:
        path = PACKAGE.parent / "solutions" / f"{name}.ipynb"  # in a course checkout; an installed package has none
        nb, _ = read_notebook(path) if path.exists() else (None, None)
        if nb is not None:
            solutions[name] = _sources(nb, [e["id"] for e in exercises[name]])
    return similarity.report(submissions, solutions)


def _feedback(student: str, rows: list[dict]) -> str:
    lines = [f"# Feedback for {student}", ""]
    for r in rows:
        lines += [f"## {r['notebook'] or Path(r['file']).name}: {r['total']:g} / {r['max']:g} points", "", f"File: `{Path(r['file']).name}`", ""]
        if r["problems"]:
            lines += ["**Problems while grading:**", ""] + [f"- {p}" for p in r["problems"]] + [""]
        if r["exercises"]:
            lines += ["| exercise | points | result |", "|---|---|---|"]
            for e in r["exercises"]:
                lines.append(f"| {e['number']}. `{e['id']}` | {e['score']:g} / {e['points']:g} | {'passed' if e['passed'] else 'not passed'} |")
            lines.append("")
            for e in r["exercises"]:
                if not e["passed"]:
                    lines += [f"### Exercise {e['number']} (`{e['id']}`)", "", "```text", e["message"].strip(), "```", ""]
        if r.get("written"):
            lines += [f"**Written questions** ({r['by_hand']:g} points more, graded by hand by your instructor, not in the total above):", ""]
            lines += [f"- Written question {q['number']} ({q['points']:g} points), {q['title']}: {q['status']}" for q in r["written"]] + [""]
        if r["cell_errors"]:
            lines += ["### Cells that raised an error", "", "(Cells are counted from 1 at the top of the notebook, text cells included.)", ""]
            for c in r["cell_errors"]:
                lines += [f"Cell {c['cell']} (it starts with `{c['starts']}`): **{c['ename']}**: {c['evalue'][:300]}", "", "```text", c["traceback"][-1500:].strip(), "```", ""]
    return "\n".join(lines).rstrip() + "\n"

