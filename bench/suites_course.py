"""The course as a whole: the evaluation classifier and the real-data reference values, the latent sliders' latency,
every notebook's wall time, and the time to grade a submission.

Each suite calls the same labsupport code the notebooks use; importing this module registers them (``bench.core.suite``)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.core import ROOT, Bench, suite
from labsupport import config, data, metrics, pretrained


@suite
def reference(b: Bench) -> None:
    """The evaluation classifier and the real-data values every generative metric is compared with."""
    clf = pretrained.load("classifier", b.device)
    xt, yt = data.mnist_tensors(train=False)
    xr, _ = data.mnist_tensors(train=True, n=b.pick(10_000, 2000))
    n = b.pick(10_000, 2000)
    start = time.perf_counter()
    acc = metrics.accuracy(clf, xt, yt)
    b.record("classifier: test accuracy", 100 * acc, "%", ">= 99", acc >= 0.99, time.perf_counter() - start)
    start = time.perf_counter()
    is_mean, _ = metrics.inception_score(xt[:n], clf)
    b.record(f"real test digits: classifier IS ({n})", is_mean, "", "9.4-9.9 (reference)", 9.0 <= is_mean <= 10, time.perf_counter() - start)
    start = time.perf_counter()
    floor = metrics.frechet_distance(xr, xt[:n], clf)
    b.record(f"real train vs test: classifier FID floor ({len(xr)} vs {n})", floor, "", None, None, time.perf_counter() - start)


def _sliders(widget):
    import ipywidgets as W

    found, stack = [], [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, W.FloatSlider):
            found.append(w)
        stack.extend(getattr(w, "children", ()))
    return found


@suite
def sliders(b: Bench) -> None:
    """Latent-slider redraw latency: decode one z and encode the PNG, as a slider move does."""
    from labsupport import widgets

    for name in ("vae", "vae2d"):
        if name not in pretrained.REGISTRY or not pretrained.path_of(name).exists():
            b.record(f"slider redraw latency ({name})", float("nan"), "ms", "< 100", False, note="checkpoint missing")
            continue
        vae = pretrained.load(name, "cpu")
        xt, _ = data.mnist_tensors(train=False, n=16)
        w = widgets.vae_explorer(vae, xt)
        s = _sliders(w)[0]
        reps, times = b.pick(200, 30), []
        for i in range(reps):
            start = time.perf_counter()
            s.value = -2.0 + 4.0 * (i % 40) / 40
            times.append(time.perf_counter() - start)
        ms = 1000 * torch.tensor(times).median().item()
        b.record(f"slider redraw latency ({name}, CPU, median of {reps})", ms, "ms", "< 100", ms < 100, sum(times))


@suite
def notebooks(b: Bench) -> None:
    """Wall time of every notebook, executed with nbclient, in fast mode and (normal run) normal mode,
    and the numbers the notebooks hand over with ``metrics.report`` (CycleGAN identity, anomaly AUROC, ...)."""
    import json
    import tempfile

    from labsupport import course

    paths = sorted((ROOT / "solutions").glob("*.ipynb"))
    if b.notebook_prefixes:
        paths = [p for p in paths if p.stem.startswith(tuple(b.notebook_prefixes))]
    elif b.fast:
        paths = paths[:1]
    wanted = b.notebook_modes or (["fast"] if b.fast else ["fast", "normal"])
    for mode in wanted:
        for p in paths:
            with tempfile.TemporaryDirectory() as tmp:
                report = Path(tmp) / "report.jsonl"
                res = course.run(p, env=config.environment(mode=mode, report=report))
                for line in report.read_text().splitlines() if report.exists() else []:
                    r = json.loads(line)
                    b.record(f"{p.stem[:2]} ({mode}): {r['name']}", r["value"], r["unit"], None, None, 0)
            limit = {"fast": 90, "normal": 300}[mode]  # the course's promise: every notebook within 5 minutes on 2 CPU cores
            ok = res["error"] is None and res["seconds"] <= limit
            b.record(f"notebook {p.stem} ({mode} mode)", res["seconds"], "s", f"<= {limit}", ok, res["seconds"], note=res["error"] or "")


@suite
def grading(b: Bench) -> None:
    """Seconds to grade a submission in fast mode (one at a time, and a class with --jobs 2)."""
    from bench.grading import measure

    start = time.perf_counter()
    records = measure(class_size=b.pick(30, 4), jobs=2)
    for r in records:
        b.record(f"grading: {r['name'].strip()}", r["value"], r["unit"], None, r["pass"], r["seconds"], r.get("note", ""))
    ok = all(r["pass"] is not False for r in records)
    b.record("grading: solutions full marks, students zero", float(ok), "bool", "yes (a fast floor too)", ok, time.perf_counter() - start)
