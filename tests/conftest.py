"""Shared test machinery.

The suite executes each notebook once per role (``make test`` = ``pytest tests --nbval-lax solutions``):

* **solution**: nbval runs every cell of every solution notebook. Right after each cell that defines
  an exercise (or calls its check), the hook below saves the exercise's function from nbval's own
  kernel exactly as the grader does (``grading.EXPORT``). ``test_grading`` then checks those saved
  functions in the grader's clean checking process: every solution grades full marks, without
  running the notebook a second time.
* **student**: the grader grades every student twin once (``course_grades`` in ``test_grading``); the
  same executed notebooks prove that each twin stops at its first exercise (``test_notebooks``).

Tests marked ``after_notebooks`` read what nbval left behind, so they are moved after the nbval items.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
ROOT = Path(__file__).resolve().parent.parent
COURSE = sorted(p.stem for p in (ROOT / "solutions").glob("*.ipynb"))
END_TO_END = ["00_start_here"]  # solutions graded by the whole grader; the others reuse nbval's run
NBVAL_EXPORTS = Path(tempfile.mkdtemp(prefix="labsupport-nbval-exports-"))  # {notebook}/{exercise}.pkl
_RUNS: dict[str, list] = {}  # notebook -> [nbval's notebook (its outputs put in place), cells passed, a cell failed]


def executed_solutions() -> dict:
    """Solution notebooks that nbval ran in this session, every code cell passed, with their outputs (for the website)."""
    return {name: nb for name, (nb, passed, failed) in _RUNS.items()
            if not failed and passed == sum(c.cell_type == "code" for c in nb.cells)}


class _NbvalExports:
    """Registered on the plugin manager (not as a conftest hook), so that it also sees the nbval items in solutions/."""

    @staticmethod
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(item):
        """After an nbval cell that defines an exercise, save the exercise's function from nbval's kernel (as the grader does)."""
        outcome = yield
        if type(item).__name__ != "IPyNbCell":
            return
        notebook = Path(str(item.parent.fspath)).stem
        # Keep what nbval's run printed and drew, for the website (test_website), so no notebook runs twice.
        item.cell.outputs = item.test_outputs or []
        run = _RUNS.setdefault(notebook, [item.parent.nb, 0, False])
        if outcome.excinfo is not None:
            run[2] = True
            return
        run[1] += 1
        from labsupport import grading

        names = grading.exports_after(item.cell.source, [e["id"] for e in grading.load_exercises().get(notebook, [])])
        if names:
            folder = NBVAL_EXPORTS / notebook
            folder.mkdir(exist_ok=True)
            kernel = item.parent.kernel
            msg_id = kernel.execute_cell_input(grading.EXPORT % (names, str(folder)), allow_stdin=False)
            kernel.await_reply(msg_id, timeout=120)
            kernel.await_idle(msg_id, timeout=120)


# Units of work under ``pytest -n 2`` (pytest-xdist, ``make test``): each unit runs whole, in order, in one worker. nbval's
# runs of the solutions and the tests that read what they left form one unit; the tests that share the graded student twins
# (``course_grades``) another; every other file is a unit of its own (its module and session fixtures are built once).
# The controller sees node ids only, so the units are named by node id here, and every worker checks the two lists
# against the markers and fixtures it sees (below). (``--dist loadgroup`` with ``xdist_group`` marks would say the same,
# but pytest-xdist 3.8 no longer sees those marks on pytest 9.2: pytest-dev/pytest-xdist#1386.)
NOTEBOOK_READERS = ("solutions/", "tests/test_website.py::", "tests/test_grading.py::test_every_solution_grades_full_marks")
COURSE_GRADES_USERS = ("tests/test_grading.py::test_solutions_grade_full_marks_end_to_end", "tests/test_grading.py::test_every_student_notebook_grades_zero",
                       "tests/test_grading.py::test_course_reports", "tests/test_notebooks.py::test_student_notebook_stops_at_first_exercise")


def unit(nodeid: str) -> str:
    """The unit of work a test belongs to (see above)."""
    if nodeid.startswith(NOTEBOOK_READERS):
        return "notebooks"
    if nodeid.startswith(COURSE_GRADES_USERS):
        return "course_grades"
    return nodeid.split("::")[0]


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return ByUnit(config, log)


def pytest_collection_modifyitems(config, items):
    """nbval's cells first (the unit of work that takes longest starts first), the tests that read what they left last."""
    def reads_notebooks(item) -> bool:
        return type(item).__name__ == "IPyNbCell" or item.get_closest_marker("after_notebooks") is not None or "site" in getattr(item, "fixturenames", ())

    items.sort(key=lambda item: (type(item).__name__ != "IPyNbCell", item.get_closest_marker("after_notebooks") is not None))  # stable
    for item in items:
        want = "notebooks" if reads_notebooks(item) else "course_grades" if "course_grades" in getattr(item, "fixturenames", ()) else None
        if want and unit(item.nodeid) != want:
            raise pytest.UsageError(f"{item.nodeid} belongs with the unit of work {want!r}: name it in tests/conftest.py's "
                                    f"{'NOTEBOOK_READERS' if want == 'notebooks' else 'COURSE_GRADES_USERS'}")


def pytest_configure(config):
    config.addinivalue_line("markers", "after_notebooks: runs after nbval has executed the solution notebooks")
    config.pluginmanager.register(_NbvalExports(), "labsupport-nbval-exports")
    import torch

    from labsupport import config as course_config

    # The course's threads rule in this process too (LABSUPPORT_THREADS; every core by default): two pytest-xdist workers at
    # torch's default of every core each slowed one another several times over (a 1-s test file took 142 s).
    torch.set_num_threads(course_config.num_threads())


def pytest_unconfigure(config):
    shutil.rmtree(NBVAL_EXPORTS, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_global_state():
    """Every test starts from the same random state and leaves torch's global settings as it found them."""
    import random

    import torch

    threads, grad, dtype = torch.get_num_threads(), torch.is_grad_enabled(), torch.get_default_dtype()
    rng = torch.random.get_rng_state()
    random.seed(0)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
    torch.set_grad_enabled(grad)
    torch.set_default_dtype(dtype)
    torch.random.set_rng_state(rng)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def mnist_available() -> bool:
    """Tests that need MNIST fail loudly (never skip) when it is missing: CI must provide it."""
    from labsupport import config, data

    raw = config.data_root() / "MNIST" / "raw"
    if not all((raw / f).exists() or (raw / f"{f}.gz").exists() for f in data.MNIST_FILES):
        pytest.fail(f"MNIST is not in {raw}: set LABSUPPORT_DATA to a folder holding MNIST/raw (CI uses ../shared/data)")
    return True


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(out: Path) -> dict[str, dict]:
    rows = json.loads((out / "grades.json").read_text())["submissions"]
    return {f"{r['student']}/{Path(r['file']).stem}": r for r in rows}


@pytest.fixture(scope="session")
def course_grades(tmp_path_factory, mnist_available):
    """Grade every student notebook and the END_TO_END solutions once (fast mode, 2 at a time).

    The executed student notebooks (``out/executed``) also serve ``test_notebooks``.
    """
    from labsupport import grading

    copies = tmp_path_factory.mktemp("course")  # a snapshot: other authors may be editing the repository meanwhile
    for folder, names in (("solutions", END_TO_END), ("notebooks", COURSE)):
        (copies / folder).mkdir()
        for name in names:
            shutil.copy(ROOT / folder / f"{name}.ipynb", copies / folder)
    before = _digest(copies)
    out = tmp_path_factory.mktemp("course_grades")
    code = grading.main([str(copies / "solutions"), str(copies / "notebooks"), "--out", str(out), "--jobs", "2", "--quiet"])
    assert _digest(copies) == before, "the grader changed the submitted files"
    return code, out, _rows(out)
