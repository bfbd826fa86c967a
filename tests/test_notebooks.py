"""Student notebooks run up to their first exercise and stop there with NotImplementedError.

The solution notebooks themselves are executed by nbval (``pytest --nbval-lax solutions``).
"""

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
STUDENT = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert [p.stem for p in STUDENT][:1] == ["00_start_here"]
    assert {p.name for p in STUDENT} == {p.name for p in (ROOT / "solutions").glob("*.ipynb")}


@pytest.mark.parametrize("path", STUDENT, ids=[p.stem for p in STUDENT])
def test_student_notebook_stops_at_first_exercise(path, mnist_available):
    nb = nbformat.read(path, as_version=4)
    exercises = [i for i, c in enumerate(nb.cells) if c.get("metadata", {}).get("labsupport", {}).get("exercise")]
    assert exercises, f"{path.name} has no exercise"
    first = exercises[0]
    nb.cells = nb.cells[: first + 2]  # up to the first exercise and the cell after it
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(CellExecutionError) as info:
        client.execute()
    assert "NotImplementedError" in str(info.value) and "Exercise 1" in str(info.value)
    failed = [i for i, c in enumerate(nb.cells) if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    # The stub itself only defines the function: it fails when the check (next cell) calls it.
    assert failed and failed[0] in (first, first + 1), f"{path.name} failed at cell {failed[0]}, before its first exercise (cell {first})"
