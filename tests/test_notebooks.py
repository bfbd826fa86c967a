"""Student notebooks run up to their first exercise and stop there with the friendly NotImplementedError.

The solution notebooks themselves are executed by nbval (``pytest --nbval-lax solutions``). The student
twins are executed once, by the grader (``course_grades`` in ``conftest.py``, also used by ``test_grading.py``); this file reads the
notebooks it executed.
"""

from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
STUDENT = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem for p in STUDENT][:1] == ["00_start_here"]
    assert {p.name for p in STUDENT} == {p.name for p in (ROOT / "solutions").glob("*.ipynb")}


def first_error(nb) -> tuple[int, dict] | None:
    """``(cell index, error output)`` of the first cell that raised, or None."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return i, out
    return None


@pytest.mark.parametrize("path", STUDENT, ids=[p.stem for p in STUDENT])
def test_student_notebook_stops_at_first_exercise(path, course_grades):
    code, out, rows = course_grades
    original = nbformat.read(path, as_version=4)
    exercises = [i for i, c in enumerate(original.cells) if c.get("metadata", {}).get("labsupport", {}).get("exercise")]
    assert exercises, f"{path.name} has no exercise"
    first = exercises[0]
    executed = nbformat.read(out / "executed" / f"notebooks__{path.stem}.ipynb", as_version=4)
    assert [c.source for c in executed.cells] == [c.source for c in original.cells], "the grader ran another notebook"
    assert all(c.get("execution_count") for c in executed.cells[:first] if c.cell_type == "code" and c.source.strip()), \
        "a cell before the first exercise did not run"
    found = first_error(executed)
    assert found is not None, f"{path.name} ran through its first exercise without stopping"
    cell, error = found
    # The stub itself only defines the function: it fails when the check (next cell) calls it.
    assert cell in (first, first + 1), f"{path.name} failed at cell {cell} ({error['ename']}: {error['evalue'][:200]}), " \
                                       f"before its first exercise (cell {first})"
    assert "NotImplementedError" in error["evalue"] + error["ename"] and "Exercise 1" in error["evalue"], error["evalue"][:300]
