"""Finding and reading submissions: which student, which assignment, which exercises, which written answers."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from .settings import EXERCISES

MAX_FILE_BYTES = 100 * 2**20


def load_exercises(path: Path = EXERCISES, kind: str = "code") -> dict[str, list[dict]]:
    """The course's exercises the checks grade, ``{notebook: [{"number", "id", "points"}]}`` (written by the build tool);
    ``kind="written"``: its written questions instead, ``[{"number", "id", "title", "points"}]``, graded by hand."""
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python -m labsupport.course build` in the course repository")
    return {nb: [e for e in listed if e.get("kind", "code") == kind] for nb, listed in json.loads(path.read_text()).items()}


def read_notebook(path: Path):
    """``(notebook, None)`` or ``(None, why it cannot be graded)``; never raises on a bad file."""
    import nbformat

    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return None, f"the file is larger than {MAX_FILE_BYTES >> 20} MB"
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, f"the file cannot be read as text ({type(err).__name__}: {err})"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err}): the file is damaged or not a notebook"
    if not isinstance(raw, dict) or not isinstance(raw.get("cells"), list) or "nbformat" not in raw:
        return None, "valid JSON but not a Jupyter notebook (no `cells` list or `nbformat` field)"
    try:
        nb = nbformat.reads(text, as_version=4)
    except Exception as err:  # nbformat raises several types for broken notebooks
        return None, f"not a readable Jupyter notebook ({type(err).__name__}: {err})"
    cells = []
    for cell in nb.cells:  # rebuild plain cells: only the sources matter, stored outputs are dropped
        kind, source = cell.get("cell_type"), cell.get("source", "")
        if not isinstance(source, str):
            return None, "a cell's source is not text: the notebook is damaged"
        make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}.get(kind, nbformat.v4.new_raw_cell)
        cells.append(make(source))
    meta = nb.get("metadata", {}).get("labsupport", {})
    claimed = meta.get("notebook") if isinstance(meta, dict) else None
    on_cells = [(c.get("metadata") or {}).get("labsupport", {}) for c in nb.cells]
    clean = nbformat.v4.new_notebook(cells=cells, metadata={"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}})
    clean.metadata["submitted"] = {  # only to tell which assignment this is; ids and points come from the course
        "notebook": claimed if isinstance(claimed, str) else None,
        "cell_exercises": [m.get("exercise") for m in on_cells if isinstance(m, dict) and isinstance(m.get("exercise"), str)],
        # the student's answers to the written questions, by question id (their points come from the course)
        "written": {m["written"]: c.get("source", "") for m, c in zip(on_cells, nb.cells) if isinstance(m, dict) and isinstance(m.get("written"), str)},
    }
    return clean, None


def identify(nb, exercises: dict[str, list[dict]], assignment: str | None) -> tuple[str | None, str | None]:
    """``(assignment the notebook answers, problem or None)``, from its metadata, not its file name."""
    claimed = nb.metadata["submitted"]["notebook"]
    if claimed is None:  # notebook metadata lost (e.g. cells pasted into a new notebook): match the exercise cells' ids
        ids = set(nb.metadata["submitted"]["cell_exercises"])
        matches = [name for name, ex in exercises.items() if ids and ids <= {e["id"] for e in ex}]
        claimed = matches[0] if len(matches) == 1 else None
    if assignment is not None:
        if claimed is not None and claimed != assignment:
            return assignment, f"wrong-assignment: this notebook is {claimed!r}, the assignment is {assignment!r}"
        return assignment, None
    if claimed is None:
        return None, "unknown-assignment: no course metadata (metadata.labsupport.notebook) in this notebook; grade it with --assignment NAME"
    if claimed not in exercises:
        return claimed, f"unknown-assignment: {claimed!r} is not a notebook of this course ({', '.join(exercises)})"
    return claimed, None


# --- running a submission -----------------------------------------------------------------------


def written_answers(nb, questions: list[dict]) -> list[dict]:
    """The student's answers to ``questions`` (from exercises.json, kind "written"), for the instructor to grade by hand."""
    given = nb.metadata["submitted"]["written"] if nb is not None else {}
    rows = []
    for q in questions:
        text = given.get(q["id"])
        answered = text is not None and text.strip() != q["blank"].strip()
        rows.append({"number": q["number"], "id": q["id"], "title": q["title"], "points": q["points"], "answer": text if answered else "",
                     "status": "answered" if answered else ("not answered" if text is not None else "answer cell missing")})
    return rows



def safe_name(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "student"


def _student_folder(p: Path) -> list[tuple[str, Path]]:
    files = sorted(f for f in p.rglob("*.ipynb") if ".ipynb_checkpoints" not in f.parts)
    if not files:
        print(f"warning: {p} holds no .ipynb file", file=sys.stderr)
    return [(p.resolve().name, f) for f in files]


def find_submissions(paths: list[Path], exercises: dict[str, list[dict]]) -> list[tuple[str, Path]]:
    """``[(student, notebook file)]``: a folder is one student's notebooks (a folder holding only folders is a
    class: one student per subfolder); a file is named after its stem, or after its folder when the file
    keeps a course notebook's name (``alice/03_variational_autoencoders.ipynb`` is alice's)."""
    found = []
    for p in paths:
        if p.is_dir() and not any(p.glob("*.ipynb")) and any(d.is_dir() and not d.name.startswith(".") for d in p.iterdir()):
            found += [x for d in sorted(p.iterdir()) if d.is_dir() and not d.name.startswith(".") for x in _student_folder(d)]
        elif p.is_dir():
            found += _student_folder(p)
        elif p.is_file():
            found.append((p.resolve().parent.name if p.stem in exercises else p.stem, p))
        else:
            raise SystemExit(f"{p}: no such file or folder")
    return found

