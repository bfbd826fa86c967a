"""The grader's settings and where the course's own files are."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent  # the installed labsupport
EXERCISES = PACKAGE / "exercises.json"


@dataclass
class Settings:
    timeout: float = 900.0  # seconds per notebook (all cells together)
    cell_timeout: float = 300.0  # seconds per cell
    check_timeout: float = 60.0  # seconds per check
    mode: str = "grading"  # the course's mode in the kernel: "grading" (least training), "fast" or "normal"
    run_all: bool = False  # run the cells after the last exercise too
    max_output: int = 100_000  # characters of output kept per cell
    threads: int = 1  # LABSUPPORT_THREADS for the kernel and the checks
    memory_limit: int = 4096  # MB of data memory (RLIMIT_DATA: heap and private mappings) per kernel and per check
    sandbox: str = "auto"  # where graded code runs: "auto" (bwrap, else unshare), "bwrap", "unshare" or "none" (see grading.sandbox)

