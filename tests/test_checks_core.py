"""The checks' core (labsupport/checks/core.py): CheckFailed, call, expect_tensor, ratio_hint, the mistake catalogue,
the guards, the partial-credit stages, and the wrapper that leaves the caller's random numbers alone (every check,
right answer and wrong answer)."""

import __future__
import ast
import contextlib
import io
import random
from pathlib import Path

import numpy
import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed

ROOT = Path(__file__).resolve().parent.parent


def test_checkfailed_is_assertion():
    assert issubclass(CheckFailed, AssertionError)


def test_crash_and_missing_are_reported_not_raised_raw():
    def not_written(images):
        raise NotImplementedError("Exercise 1 (normalize_images): your code goes here")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_normalize_images(not_written)

    def crashes(images):
        return images.nope()

    with pytest.raises(CheckFailed, match="crashed with AttributeError"):
        checks.check_normalize_images(crashes)


def test_shape_hints():
    with pytest.raises(CheckFailed, match="single number"):
        checks.expect_tensor(torch.tensor(1.0), (4,), "x")
    with pytest.raises(CheckFailed, match="scalar"):
        checks.expect_tensor(torch.ones(4), (), "x")
    with pytest.raises(CheckFailed, match="NaN"):
        checks.expect_tensor(torch.tensor([float("nan")]), (1,), "x")
    assert "sign" in checks.ratio_hint(-2.0, 2.0) and "twice" in checks.ratio_hint(4.0, 2.0)


# --- one mistake catalogue, one in-place guard, one gradient guard, crash explanations ------------------------------


def test_named_returns_the_first_matching_mistake_and_computes_lazily():
    computed = []

    def costly():
        computed.append(1)
        return torch.tensor([2.0, 4.0])

    catalogue = [("not this", None), ("half", torch.tensor([0.5, 1.0])), ("double", costly), ("double again", torch.tensor([2.0, 4.0]))]
    assert checks.named(torch.tensor([2.0, 4.0]), catalogue) == "double" and computed == [1]
    assert checks.named(torch.tensor([0.5, 1.0]), catalogue) == "half" and computed == [1]  # stops before the costly one
    assert checks.named(torch.tensor([9.0, 9.0]), catalogue) is None
    assert checks.named(torch.tensor([2.0]), catalogue) is None  # another shape never matches
    assert checks.named([3, 5], [("ints", [3, 5])], rtol=0, atol=0) == "ints"


def test_unchanged_and_carries_gradient():
    x = torch.ones(3)
    kept = checks.core.Unchanged(x)
    kept.verify("never raised")
    x.mul_(2)
    with pytest.raises(CheckFailed, match="changed"):
        kept.verify("changed in place")
    leaf = torch.ones(2, requires_grad=True)
    checks.core.carries_gradient(leaf * 2, "never raised")
    for out in (leaf.detach() * 2, torch.tensor(2.0, requires_grad=True)):  # detached, or rebuilt from a number
        with pytest.raises(CheckFailed, match="no gradient"):
            checks.core.carries_gradient(out, "no gradient")


def test_call_explained_replaces_only_crash_messages():
    def crashes(x):
        raise ValueError("must match the size")

    explain = lambda message, err: f"explained: {type(err).__name__}" if "must match" in message else None  # noqa: E731
    with pytest.raises(CheckFailed, match="^explained: ValueError$"):
        checks.core.call_explained(crashes, explain, 1)
    with pytest.raises(CheckFailed, match="crashed with ValueError"):
        checks.core.call_explained(crashes, lambda message, err: None, 1)

    def not_written(x):
        raise NotImplementedError("later")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.core.call_explained(not_written, explain, 1)


# --- partial credit: the stages a check marks are the ones that earn points -----------------------------------------


def test_every_stage_a_check_marks_has_points_and_every_declared_stage_is_marked():
    """A stage marked without points in course.STAGE_POINTS never earns credit; a declared one never marked never pays."""
    from labsupport import course

    marked = {}
    for module in checks.MODULES:
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_"):
                names = [c.args[0].value for c in ast.walk(node) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "stage"]
                if names:
                    marked[node.name.removeprefix("check_")] = names
    assert {k: set(v) for k, v in marked.items()} == {k: set(v) for k, v in course.STAGE_POINTS.items()}
    assert checks.PASSED is checks.core.PASSED and checks.CheckFailed is checks.core.CheckFailed


# --- a check never changes the caller's random numbers ----------------------------------------------------------------


def _right_answers() -> dict:
    """Every exercise's answer, from the solution blocks of the solution notebooks (run in order, one namespace per notebook)."""
    import nbformat

    from labsupport import course

    answers = {}
    for path in sorted((ROOT / "solutions").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        ns: dict = {}
        for cell in nb.cells:  # the notebook's own imports, then its solution blocks
            with contextlib.suppress(SyntaxError):  # a cell with IPython magics is not Python
                tree = ast.parse(cell.source) if cell.cell_type == "code" else ast.Module([], [])
                imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
                exec(compile(ast.Module(imports, []), path.name, "exec"), ns)
        for e in course.exercises(nb):
            exec(compile(nb.cells[e["cell"]].source, f"{path.name}:{e['id']}", "exec", flags=__future__.annotations.compiler_flag), ns)
            answers[e["id"]] = ns[e["id"]]
    return answers


def _notebook_exists(name: str) -> bool:
    """Whether the notebook of ``check_<id>`` is in solutions/ yet (a module nbXX... checks notebook XX)."""
    module = getattr(checks, name).__wrapped__.__module__.rsplit(".", 1)[-1]
    return bool(list((ROOT / "solutions").glob(f"{module[2:4]}_*.ipynb")))


def _wrong(*args, **kwargs):
    """A wrong answer that draws from all three random generators before it fails."""
    torch.rand(3)
    random.random()
    numpy.random.rand(2)
    return None


def _states():
    return torch.random.get_rng_state(), random.getstate(), numpy.random.get_state()


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and a[1] == b[1] and a[2][0] == b[2][0] and (a[2][1] == b[2][1]).all() and a[2][2:] == b[2][2:]


_ANSWERS: dict = {}


def _answer(name: str):
    if not _ANSWERS:
        _ANSWERS.update(_right_answers())
    return _ANSWERS.get(name)


CHECKED = sorted(name.removeprefix("check_") for name in dir(checks) if name.startswith("check_") and _notebook_exists(name))


@pytest.mark.parametrize("name", CHECKED)
def test_no_check_changes_the_callers_random_state_right_or_wrong(name):
    """Every check (of a notebook that exists), with its solution block's answer and with a wrong answer that draws
    from torch, numpy and random: afterwards all three generators are where the caller left them."""
    torch.set_num_threads(1)  # tiny tensors: a second thread only adds contention (conftest restores the count)
    answer = _answer(name)
    assert answer is not None, f"check_{name} has no exercise answer in solutions/ (a check without an exercise is dead)"
    check = getattr(checks, f"check_{name}")
    assert check.__code__ is checks.core.check(lambda: None).__code__, f"check_{name} is not wrapped by checks.core.check"
    torch.manual_seed(123), random.seed(123), numpy.random.seed(123)
    for fn, verdict in ((answer, "passes"), (_wrong, "fails")):
        before = _states()
        if verdict == "passes":
            with contextlib.redirect_stdout(io.StringIO()):
                check(fn)
        else:
            with pytest.raises(CheckFailed):
                check(fn)
        assert _same(before, _states()), f"check_{name} changed the caller's random state when the answer {verdict}"


def test_the_rng_test_can_fail_without_the_wrapper():
    """The right reparameterize draws noise: run bare (unwrapped), its check moves torch's generator."""
    before = _states()
    with contextlib.redirect_stdout(io.StringIO()):
        checks.check_reparameterize.__wrapped__(_answer("reparameterize"))
    assert not _same(before, _states())
