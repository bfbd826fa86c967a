"""The solution -> student build tool, on a small fixture notebook and on the repository itself."""

import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from labsupport import course

ROOT = Path(__file__).resolve().parent.parent


def _fixture_root(tmp_path, root):
    shutil.copy(root / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "solutions").mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Title\nGoals"),
        nbformat.v4.new_code_cell("import math\nx = 1"),
        nbformat.v4.new_code_cell(
            "def square(v):\n    \"\"\"v -> v*v\"\"\"\n    y = 0\n    ### BEGIN SOLUTION\n    y = v * v\n    ### END SOLUTION\n    return y",
            metadata={"labsupport": {"points": 3}},
        ),
        nbformat.v4.new_code_cell("assert square(3) == 9"),
        nbformat.v4.new_markdown_cell("Why?\n<!-- BEGIN SOLUTION -->\nBecause.\n<!-- END SOLUTION -->"),
        nbformat.v4.new_code_cell("class Net:\n    ### BEGIN SOLUTION\n    pass\n    ### END SOLUTION"),
    ]
    nb.cells[1]["outputs"] = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[1]["execution_count"] = 4
    nbformat.write(nb, tmp_path / "solutions" / "01_demo.ipynb")
    return tmp_path


def test_build_makes_student_stub(tmp_path, root, monkeypatch):
    fx = _fixture_root(tmp_path, root)
    monkeypatch.setattr(course, "ROOT", fx)
    course.build(fx)
    student = nbformat.read(fx / "notebooks" / "01_demo.ipynb", as_version=4)
    text = json.dumps(student)
    assert "BEGIN SOLUTION" not in text and "y = v * v" not in text and "Because." not in text
    assert "colab.research.google.com/github/dgm-lab/deep-generative-lab/blob/main/notebooks/01_demo.ipynb" in student.cells[0].source
    assert "google.colab" in student.cells[2].source  # install cell right after the title cell
    stub = next(c for c in student.cells if "def square" in c.source)
    assert 'raise NotImplementedError("Exercise 1 (square)' in stub.source
    assert stub.source.startswith("def square(v):\n    \"\"\"v -> v*v\"\"\"\n    y = 0\n    raise") and stub.source.endswith("return y")
    assert stub.metadata["labsupport"] == {"exercise": "square", "points": 3}
    assert student.metadata["labsupport"]["exercises"] == [
        {"number": 1, "id": "square", "points": 3}, {"number": 2, "id": "Net", "points": 1}]
    for nb in (student, nbformat.read(fx / "solutions" / "01_demo.ipynb", as_version=4)):
        assert all(c.get("outputs", []) == [] and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    # Valid Python that raises the friendly error where the exercise is.
    client = NotebookClient(student, timeout=60, kernel_name="python3")
    with pytest.raises(CellExecutionError, match="NotImplementedError"):
        client.execute()


def test_a_written_question_gets_an_answer_cell_and_the_grader_collects_it(tmp_path, root, monkeypatch):
    from labsupport import grading

    fx = _fixture_root(tmp_path, root)
    nb = nbformat.read(fx / "solutions" / "01_demo.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("## Written question 1 (graded by hand, 2 points): why a sum?\nExplain.\n"
                                                  "<!-- BEGIN SOLUTION -->\nIndependence.\n<!-- END SOLUTION -->"))
    nb.cells.append(nbformat.v4.new_markdown_cell("## Written question 2 (graded by hand): and?\n<!-- BEGIN SOLUTION -->\nSo.\n<!-- END SOLUTION -->"))
    nbformat.write(nb, fx / "solutions" / "01_demo.ipynb")
    monkeypatch.setattr(course, "ROOT", fx)
    course.build(fx)
    listed = json.loads((fx / course.EXERCISES).read_text())["01_demo"]
    written = [e for e in listed if e.get("kind") == "written"]
    assert [(q["id"], q["points"], q["title"]) for q in written] == [("written_1", 2, "why a sum?"), ("written_2", 1, "and?")]
    assert [e["id"] for e in grading.load_exercises(fx / course.EXERCISES)["01_demo"]] == ["square", "Net"]  # the checks grade code only
    student = nbformat.read(fx / "notebooks" / "01_demo.ipynb", as_version=4)
    q1 = next(i for i, c in enumerate(student.cells) if c.source.startswith("## Written question 1"))
    assert "Independence" not in json.dumps(student) and student.cells[q1].source.endswith("Explain.")
    assert student.cells[q1 + 1].metadata["labsupport"] == {"written": "written_1", "points": 2}
    assert "graded by hand" in student.cells[q1 + 1].source
    # The grader reads what the student wrote in that cell; an untouched cell is "not answered".
    student.cells[q1 + 1].source += "\nBecause the log of a product is a sum."
    nbformat.write(student, tmp_path / "sub.ipynb")
    sub, _ = grading.read_notebook(tmp_path / "sub.ipynb")
    got = {q["id"]: q for q in grading.written_answers(sub, written)}
    assert got["written_1"]["status"] == "answered" and "log of a product" in got["written_1"]["answer"]
    assert got["written_2"]["status"] == "not answered" and got["written_2"]["answer"] == ""
    sol, _ = grading.read_notebook(fx / "solutions" / "01_demo.ipynb")
    assert {q["status"] for q in grading.written_answers(sol, written)} == {"answered"}  # the model answers
    nb.cells.append(nbformat.v4.new_markdown_cell("## Written question 3 (graded by hand): no answer given"))
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(ValueError, match="model answer"):
        course.build_pair(tmp_path / "bad.ipynb")


def test_check_detects_drift(tmp_path, root, monkeypatch):
    fx = _fixture_root(tmp_path, root)
    monkeypatch.setattr(course, "ROOT", fx)
    assert course.check(fx), "nothing built yet: check must complain"
    course.build(fx)
    assert course.check(fx) == []
    p = fx / "notebooks" / "01_demo.ipynb"
    p.write_text(p.read_text().replace("Title", "Edited by hand"))
    assert any("01_demo" in msg for msg in course.check(fx))
    (fx / "notebooks" / "99_orphan.ipynb").write_text("{}")
    assert any("99_orphan" in msg for msg in course.check(fx))


def test_unterminated_solution_is_an_error(tmp_path, root):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("def f():\n    ### BEGIN SOLUTION\n    return 1")]
    nbformat.write(nb, tmp_path / "bad.ipynb")
    with pytest.raises(ValueError, match="without"):
        course.build_pair(tmp_path / "bad.ipynb")


def test_repository_notebooks_are_in_sync(root):
    assert course.check(root) == [], "run `python -m labsupport.course build` and commit"


def test_colab_install_cell_keeps_colabs_torch(root, monkeypatch, capsys):
    """The install cell of a built student notebook, run in a simulated Colab: the package goes in with
    --no-deps, then only the requirements Colab lacks or has too old; torch and torchvision are never named."""
    import importlib.metadata
    import sys
    import types

    from labsupport import colab

    calls, widget_manager = [], []
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: widget_manager.append(True))
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    shell = types.SimpleNamespace(run_line_magic=lambda magic, line: calls.append((magic, line)))
    monkeypatch.setattr("IPython.get_ipython", lambda: shell)
    # Colab as it might be: a newer torch than our pin, old ipywidgets, no ipyevents, an old ipykernel of its own.
    colab_has = {"torch": "2.99.0", "torchvision": "0.99.0", "ipywidgets": "7.7.1", "ipykernel": "5.5.6", "jupyterlab": "3.0.0"}
    real_version = importlib.metadata.version

    def version(name):
        if name == "ipyevents":
            raise importlib.metadata.PackageNotFoundError(name)
        return colab_has.get(name) or real_version(name)

    monkeypatch.setattr(colab.importlib.metadata, "version", version)
    student = nbformat.read(root / "notebooks" / "07_latent_space_explorer.ipynb", as_version=4)
    cell = next(c for c in student.cells if c.get("id") == "colab-install")
    exec(cell.source, {"get_ipython": lambda: shell})
    assert calls[0] == ("pip", "install -q --no-deps 'labsupport @ git+https://github.com/dgm-lab/deep-generative-lab'")
    assert len(calls) == 2 and calls[1][0] == "pip"
    installed = calls[1][1].split()[2:]
    assert sorted(installed) == ["'ipyevents>=2.0'", "'ipywidgets>=8.0'"], installed
    assert not any(word in line for _, line in calls[1:] for word in ("torch", "ipykernel", "jupyterlab", "pytest"))
    assert widget_manager == [True]
    assert "left as they are" in capsys.readouterr().out


def test_install_cell_does_nothing_outside_colab(root):
    student = nbformat.read(root / "notebooks" / "00_start_here.ipynb", as_version=4)
    cell = next(c for c in student.cells if c.get("id") == "colab-install")
    calls = []
    exec(cell.source, {"get_ipython": lambda: calls.append("called")})
    assert calls == []


def _answer_lines(solution: nbformat.NotebookNode) -> set[str]:
    """Every non-trivial line between the solution markers (comments and lines under 8 characters, e.g. `pass`, left out)."""
    found = set()
    for cell in solution.cells:
        if cell.cell_type == "code":
            for block in re.findall(rf"{course.BEGIN}\n(.*?)\n\s*{course.END}", cell.source, re.S):
                found |= {s for s in (line.strip() for line in block.splitlines()) if len(s) >= 8 and not s.startswith("#")}
    return found


def _leaked(solution: nbformat.NotebookNode, student: nbformat.NotebookNode) -> list[str]:
    """Answer lines that appear anywhere in the student notebook, its markdown (hints) and code alike."""
    text = "\n".join(cell.source for cell in student.cells)
    return sorted(line for line in _answer_lines(solution) if line in text)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb")))
def test_no_answer_line_appears_in_the_student_notebook(root, name):
    """Hints ask, they never hand over the code: no line of an answer is in the student's copy."""
    solution = nbformat.read(root / "solutions" / f"{name}.ipynb", as_version=4)
    student = nbformat.read(root / "notebooks" / f"{name}.ipynb", as_version=4)
    assert _answer_lines(solution), f"{name}: no answer lines found (markers moved?)"
    assert not _leaked(solution, student), f"{name}: the student notebook shows answer lines {_leaked(solution, student)}"


def test_the_leak_test_finds_a_hint_that_hands_over_the_answer(root):
    solution = nbformat.read(root / "solutions" / "00_start_here.ipynb", as_version=4)
    student = nbformat.read(root / "notebooks" / "00_start_here.ipynb", as_version=4)
    line = sorted(_answer_lines(solution))[0]
    student.cells.append(nbformat.v4.new_markdown_cell(f"*Hint:* write `{line}`."))
    assert _leaked(solution, student) == [line]
