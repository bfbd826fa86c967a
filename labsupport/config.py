"""The course's switches, read from the environment in this one place.

``LABSUPPORT_FAST=1``  fast mode: notebooks train for real, on less data and fewer steps (CI uses it).
``LABSUPPORT_DATA``     where data sets live (see :func:`labsupport.data.data_root`).
``LABSUPPORT_DEVICE``   force a device: ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
``LABSUPPORT_THREADS``  CPU threads for torch (default: all cores, at most 8).
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")


FAST: bool = _flag("LABSUPPORT_FAST")


def pick(normal: T, fast: T) -> T:
    """Return ``fast`` in fast mode and ``normal`` otherwise.

    >>> epochs = pick(normal=10, fast=1)
    """
    return fast if FAST else normal


def num_threads() -> int:
    """Threads for torch on the CPU: ``LABSUPPORT_THREADS`` or all cores (capped at 8).

    Measured on a 2-core machine: more threads than cores makes training several times slower.
    """
    env = os.environ.get("LABSUPPORT_THREADS", "").strip()
    if env:
        return max(1, int(env))
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))
