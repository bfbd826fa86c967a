"""The bench's core: the suite registry, the record every metric becomes, and the table it prints.

Suites (``bench.suites_*``, one module per family) and the grading timer (``bench.grading``) import this; the command line
(``bench.run``) imports them all. Nothing here imports a suite, so there is no cycle.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import torch

from labsupport import config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITES: dict[str, Callable[["Bench"], None]] = {}
# Targets given up on purpose (issue 35): their metrics stay in the table as records with no target and no pass/fail;
# the README's generated section lists why, and the suites' docstrings say it where the records are made.
RETIRED = {
    "DCGAN (shipped): IS >= 9, FID <= 1.05 x floor": "six recipe searches reached IS 8.99 and FID 1.17 x floor; the diffusion "
                                                     "model is now the course's best generator",
    "semisupervised 100 labels: M1+M2 >= 90%": "it reached 89.3%; M1 + semi-supervised EM meets the 90% goal (95.1%) and keeps "
                                               "its target",
}


def suite(fn: Callable[["Bench"], None]) -> Callable[["Bench"], None]:
    """Register a group of metrics under the function's name."""
    SUITES[fn.__name__] = fn
    return fn


class Bench:
    """Collects records; ``mode="fast"`` picks the smoke budgets and floors, ``"normal"`` the ones targets are stated for."""

    def __init__(self, mode: str, device: torch.device, seed: int = 0):
        if mode not in config.MODES:
            raise ValueError(f"mode must be one of {config.MODES}, got {mode!r}")
        self.mode, self.fast, self.device, self.seed = mode, mode == "fast", device, seed
        self.records: list[dict] = []
        self.notebook_modes: list[str] | None = None  # notebooks suite: which modes, which notebooks (None: the default)
        self.notebook_prefixes: list[str] | None = None
        self.suite: str | None = None  # set by the runner: every record names the suite that made it

    def pick(self, normal, fast):
        return fast if self.fast else normal

    def record(self, name: str, value: float, unit: str, target: str | None = None, ok: bool | None = None,
               seconds: float = 0.0, note: str = "") -> None:
        if self.fast and "fast floor" not in (target or ""):
            ok = None  # a fast run's small budgets say nothing about normal-run targets: only fast floors count
        rec = {
            "name": name, "value": round(float(value), 4) if value == value else None, "unit": unit,
            "target": target, "pass": ok, "seconds": round(seconds, 1), "device": str(self.device),
            "torch": torch.__version__, "seed": self.seed, "mode": self.mode, "note": note, "suite": self.suite,
        }
        self.records.append(rec)
        flag = "" if ok is None else (" PASS" if ok else " FAIL")
        print(f"  {name}: {rec['value']} {unit}{flag}", flush=True)


def machine() -> str:
    cores = config.cores()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.machine()}, {cores} cores, {gpu}, torch {torch.__version__}, Python {platform.python_version()}"


def table(records: list[dict]) -> str:
    rows = ["| metric | value | unit | target | pass | seconds | device |", "|---|---|---|---|---|---|---|"]
    for r in records:
        ok = "" if r["pass"] is None else ("yes" if r["pass"] else "**no**")
        val = "n/a" if r["value"] is None else f"{r['value']:g}"
        rows.append(f"| {r['name']} | {val} | {r['unit']} | {r['target'] or ''} | {ok} | {r['seconds']:g} | {r['device']} |")
    return "\n".join(rows)
