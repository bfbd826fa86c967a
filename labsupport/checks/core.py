"""What every check is made of: the failure, calling the student's code, the expected-tensor test, the one
mistake catalogue, the in-place and gradient guards, partial-credit stages, and the wrapper that keeps the
caller's random numbers as they were.

A known mistake is a pair ``(message, what it would produce)``; :func:`named` returns the message of the
first one that the student's result matches under one tolerance rule (:func:`close`). What it would
produce is a value, a zero-argument function computing it (for costly ones: computed only when reached),
or ``None`` where the mistake cannot be told apart in this case.
"""

from __future__ import annotations

import functools
import random
from typing import Any, Callable, Iterable

import numpy
import torch


class CheckFailed(AssertionError):
    """A student's function gave a wrong answer; the message explains what looks wrong."""


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    return type(value).__name__ if not isinstance(value, (int, float, bool)) else repr(value)


def call(fn: Callable, *args, **kwargs):
    """Call the student's ``fn``; turn any crash into a :class:`CheckFailed` that names the error."""
    return call_explained(fn, None, *args, **kwargs)


def call_explained(fn: Callable, explain: Callable[[str, Exception], str | None] | None, *args, **kwargs):
    """:func:`call`, where ``explain(message, err)`` may replace the crash's message with one that says more
    (``None`` keeps it). A function not written yet and a non-function get the usual message."""
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"Expected a function, got {describe(fn)}. Pass the function itself, e.g. check_x(x), not x(...).")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise CheckFailed(f"`{name}` is not written yet ({err}). Replace the `raise NotImplementedError` line with your code.") from None
    except CheckFailed:
        raise
    except Exception as err:  # the student's own bug: say what and where, not a traceback from here
        shown = ", ".join(describe(a) for a in args)
        message = f"`{name}` crashed with {type(err).__name__}: {err}\n  It was called with: ({shown})."
        raise CheckFailed((explain(message, err) if explain else None) or message) from None


def expect_tensor(out: Any, shape: tuple[int, ...] | None, what: str) -> torch.Tensor:
    """``out`` must be a finite float tensor of ``shape``; otherwise a clear :class:`CheckFailed`."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, but it is {describe(out)}.")
    if shape is not None and tuple(out.shape) != tuple(shape):
        hint = ""
        if out.dim() == 0 and len(shape) > 0:
            hint = " It is a single number: did you average or sum over the batch too?"
        elif len(shape) == 0 and out.dim() > 0:
            hint = " Expected a single number (a scalar): take the mean over the batch."
        elif len(shape) == 1 and out.dim() == 2 and out.shape[0] == shape[0]:
            hint = " Did you forget to sum over the last dimension?"
        raise CheckFailed(f"{what} should have shape {tuple(shape)}, got {tuple(out.shape)}.{hint}")
    if out.is_floating_point() and not torch.isfinite(out).all():
        raise CheckFailed(f"{what} contains NaN or inf. Look for log(0), division by zero or exp overflow.")
    return out


def close(a: Any, b: Any, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    """The one tolerance rule: same shape and ``|a - b| <= atol + rtol * |b|`` everywhere, in float64."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def named(got: Any, mistakes: Iterable[tuple[str, Any]], rtol: float = 1e-3, atol: float = 1e-4) -> str | None:
    """The message of the first known mistake that ``got`` matches (:func:`close` with ``rtol``, ``atol``), or None.

    Each mistake is ``(message, what it would produce)``: a value, a function of no arguments that computes it
    (called only when the mistakes before it did not match), or None (this mistake does not apply here)."""
    for message, value in mistakes:
        if callable(value) and not isinstance(value, torch.Tensor):
            value = value()
        if value is not None and close(got, value, rtol=rtol, atol=atol):
            return message
    return None


def ratio_hint(got: torch.Tensor | float, want: torch.Tensor | float) -> str:
    """A hint when ``got`` is ``want`` times a tell-tale factor (2, 1/2, -1, ...)."""
    got, want = float(torch.as_tensor(got).double().sum()), float(torch.as_tensor(want).double().sum())
    if abs(want) < 1e-12:
        return ""
    r = got / want
    for factor, text in [(-1, "the sign is flipped"), (2, "it is twice too big (a missing 1/2?)"), (0.5, "it is half the expected value"),
                         (4, "it is 4x too big"), (0.25, "it is 4x too small")]:
        if abs(r - factor) < 1e-3 * max(1, abs(factor)):
            return f" Your value is {r:g} x the right one: {text}."
    return ""


class Unchanged:
    """The one in-place guard: copies of the tensors handed to student code; :meth:`verify` fails if any changed."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors
        self.copies = [t.detach().clone() for t in tensors]

    def verify(self, message: str) -> None:
        if not all(torch.equal(t.detach(), c) for t, c in zip(self.tensors, self.copies)):
            raise CheckFailed(message)


def carries_gradient(out: torch.Tensor, message: str) -> None:
    """The one "no gradient" guard: ``out`` must be part of an autograd graph (not detached, not rebuilt from numbers)."""
    if not out.requires_grad or out.grad_fn is None:
        raise CheckFailed(message)


PASSED: list[str] = []  # partial credit: the stages the running check has passed, in order (the grader reads and clears it)


def stage(name: str) -> None:
    """Mark a stage of partial credit as passed (its points are declared in ``labsupport.course.STAGE_POINTS``)."""
    PASSED.append(name)


def passed(name: str, detail: str = "") -> None:
    print(f"\u2713 {name}: all checks passed{' (' + detail + ')' if detail else ''}.")


def check(fn: Callable) -> Callable:
    """Every ``check_<id>`` is wrapped in this: the check runs on a fork of torch's (CPU) random state, and Python's
    and numpy's global states are put back afterwards, pass or fail, so a check cell never changes the random
    numbers drawn below it. (CUDA's state is left alone: the checks run on the CPU, and touching CUDA in the
    grader's forked children would initialise it there.)"""

    @functools.wraps(fn)
    def run(*args, **kwargs):
        py_state, np_state = random.getstate(), numpy.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                return fn(*args, **kwargs)
        finally:
            random.setstate(py_state)
            numpy.random.set_state(np_state)

    return run
