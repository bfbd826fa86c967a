"""The course's switches, device, threads and seeds: every environment variable is read here and nowhere else.

``LABSUPPORT_FAST=1``        fast mode: notebooks train for real, on less data and fewer steps (CI uses it).
``LABSUPPORT_GRADING=1``     grading mode (the grader sets it): fast mode, and training before a notebook's last
                           exercise shrinks to the least that still defines its functions (``pick(..., grading=)``).
``LABSUPPORT_DATA``          where data sets live (see :func:`data_root`).
``LABSUPPORT_DEVICE``        force a device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
``LABSUPPORT_THREADS``       CPU threads for torch (default: all cores, at most 8).
``LABSUPPORT_REPORT``        a file that :func:`labsupport.metrics.report` appends measured numbers to (the bench sets it).
``LABSUPPORT_REQUIRE_BROWSER=1``  the browser test fails instead of skipping when Chromium is missing (CI sets it).

The three modes are called ``"normal"``, ``"fast"`` and ``"grading"`` everywhere (here, in ``bench`` and in
the grader). Grading mode is fast mode everywhere a notebook gives no ``grading=`` value; ``FAST`` is true in it.
Child processes (graded kernels, benchmarked notebooks) get their switches from :func:`environment`.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import TypeVar

import torch

T = TypeVar("T")
MODES = ("normal", "fast", "grading")
_UNSET = object()


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


GRADING: bool = _flag("LABSUPPORT_GRADING")
FAST: bool = _flag("LABSUPPORT_FAST") or GRADING
MODE: str = "grading" if GRADING else "fast" if FAST else "normal"


def pick(normal: T, fast: T, grading: T = _UNSET) -> T:  # type: ignore[assignment]
    """Return ``fast`` in fast mode, ``grading`` in grading mode (``fast`` when not given), ``normal`` otherwise.

    >>> epochs = pick(normal=10, fast=1)
    >>> steps = pick(normal=5000, fast=300, grading=1)  # before the last exercise: only what defines the functions
    """
    if GRADING and grading is not _UNSET:
        return grading
    return fast if FAST else normal


def cores() -> int:
    """CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def num_threads(default: int | None = None) -> int:
    """Threads for torch on the CPU: ``LABSUPPORT_THREADS``, else ``default``, else all cores (capped at 8).

    Measured on a 2-core machine: more threads than cores makes training several times slower.
    """
    env = os.environ.get("LABSUPPORT_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, default if default is not None else min(8, cores()))


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where data sets live: ``root`` > ``$LABSUPPORT_DATA`` > ``~/.cache/labsupport/data``."""
    if root is None:
        root = os.environ.get("LABSUPPORT_DATA") or Path.home() / ".cache" / "labsupport" / "data"
    return Path(root).expanduser().resolve()


def report_path() -> str | None:
    """The file measured numbers go to (``$LABSUPPORT_REPORT``), or None when nobody collects them."""
    return os.environ.get("LABSUPPORT_REPORT") or None


def require_browser() -> bool:
    """Whether a missing browser fails the browser test (``$LABSUPPORT_REQUIRE_BROWSER``) instead of skipping it."""
    return _flag("LABSUPPORT_REQUIRE_BROWSER")


def environment(mode: str | None = None, threads: int | None = None, report: str | os.PathLike | None = None,
                device: str | None = None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process (a kernel, a checking process): this one's, with the course's switches set.

    ``mode``: ``"normal"``, ``"fast"`` or ``"grading"`` (default: this process's mode); ``threads``: its torch threads;
    ``report``: the file it hands measured numbers to (none by default); ``device``: its forced device.
    """
    mode = mode or MODE
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    env = dict(os.environ if base is None else base)
    env["LABSUPPORT_FAST"] = "1" if mode in ("fast", "grading") else "0"
    env["LABSUPPORT_GRADING"] = "1" if mode == "grading" else "0"
    if threads is not None:
        env["LABSUPPORT_THREADS"] = str(threads)
    if report is not None:
        env["LABSUPPORT_REPORT"] = str(report)
    else:
        env.pop("LABSUPPORT_REPORT", None)
    if device is not None:
        env["LABSUPPORT_DEVICE"] = device
    return env


# --- device --------------------------------------------------------------------------------------

_DEVICE_HELP = "Use 'cpu', 'cuda', 'cuda:N' or 'mps' (or leave it out to pick the best available)."


def get_device(name: str | torch.device | None = None) -> torch.device:
    """The device to compute on: ``name`` > ``$LABSUPPORT_DEVICE`` > CUDA > Apple MPS > CPU.

    Raises ``ValueError`` with a clear message for an unknown or unavailable device.
    """
    name = name if name is not None else (os.environ.get("LABSUPPORT_DEVICE") or None)
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"Unknown device {name!r}. {_DEVICE_HELP}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {name!r} was asked for, but this machine has no CUDA GPU. {_DEVICE_HELP}")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"Device {name!r}: only {torch.cuda.device_count()} CUDA device(s) here. {_DEVICE_HELP}")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"Device {name!r} was asked for, but Apple MPS is not available here. {_DEVICE_HELP}")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Device {name!r} is not supported by the course. {_DEVICE_HELP}")
    return device


def resolve_device(device: str | torch.device | None = None, model: torch.nn.Module | None = None) -> torch.device:
    """The one device rule of every function that takes ``device``.

    ``None`` means the model's device (where its first parameter lives), or the best available device
    (:func:`get_device`) when there is no model or it has no parameters; a string or ``torch.device``
    goes through :func:`get_device`, so a typo or a missing GPU is a clear ``ValueError``.
    """
    if device is not None:
        return get_device(device)
    if model is not None:
        param = next(model.parameters(), None)
        if param is not None:
            return param.device
    return get_device()


# --- seeds and the start of every notebook ----------------------------------------------------------


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy (if present) and torch on every device."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass


def setup(seed: int = 0, device: str | None = None, quiet: bool = False) -> torch.device:
    """Start of every notebook: threads, seed and device in one call; prints what it chose."""
    torch.set_num_threads(num_threads())
    seed_everything(seed)
    dev = get_device(device)
    if not quiet:
        print(f"device: {dev} | torch {torch.__version__} | CPU threads: {torch.get_num_threads()} | "
              f"mode: {MODE} | seed: {seed}")
    return dev
