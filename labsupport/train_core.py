"""The shared skeleton of every trainer in :mod:`labsupport.train`: one step loop, one schedule, one weight average.

Each idea is written once: :func:`run_steps` is the step loop of every trainer (time budget, progress bar and
history, the NaN guard, eval mode at the end), :func:`cosine_decay` their learning-rate schedule,
:func:`weight_average` their exponential moving average of the weights (torch's ``AveragedModel``), :func:`fit` the
generic loop over a loader that most trainers are, and :func:`conv_format` the memory layout of convolutional nets.

Every loop follows one device rule (:func:`labsupport.config.resolve_device`): ``device=None`` means
the model's device, a string goes through ``get_device``; the models are moved there once, at the start.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import defaultdict
from typing import Callable, Iterable, Sequence

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .config import resolve_device


class Progress:
    """A progress bar that tells the truth about what bounds the run.

    Counted in steps when only ``steps`` bound it; when a time budget ``seconds`` is given, the bar
    shows elapsed / budgeted seconds (the step count goes in the postfix), never a made-up step total.
    """

    def __init__(self, desc: str, steps: int | None = None, seconds: float | None = None):
        self.by_time = seconds is not None
        self.start, self.steps, self.seconds = time.perf_counter(), steps, seconds
        if self.by_time:
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=float(seconds), desc=desc, bar_format=fmt, mininterval=0.5, leave=False)
        else:
            self.bar = tqdm(total=steps, desc=desc, unit="step", mininterval=0.5, leave=False)
        self.step = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, **postfix) -> None:
        """One more step done; ``postfix`` numbers are shown beside the bar."""
        self.step += 1
        if self.by_time:
            self.bar.update(min(self.elapsed(), self.seconds) - self.bar.n)
            postfix = {"step": self.step if self.steps is None or self.steps > 10**5 else f"{self.step}/{self.steps}", **postfix}
        else:
            self.bar.update(1)
        if postfix and self.step % 20 == 1:
            self.bar.set_postfix(postfix, refresh=False)

    def done(self) -> bool:
        """Whether the time budget is used up."""
        return self.by_time and self.elapsed() >= self.seconds

    def record(self, history: dict[str, list[float]], postfix: dict[str, str] | None = None, **values: float) -> bool:
        """Append ``values`` and the elapsed seconds to ``history`` (one list per key), count the step
        (``postfix`` shown beside the bar); True when the time budget is used up."""
        for k, v in {**values, "seconds": self.elapsed()}.items():
            history[k].append(v)
        self.update(**(postfix or {}))
        return self.done()

    def close(self) -> None:
        self.bar.close()


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def run_steps(
    step: Callable[[int, object], dict[str, float]], inputs: Iterable, *, modules: Sequence[torch.nn.Module], desc: str,
    steps: int | None = None, max_seconds: float | None = None, watch: Sequence[str] = ("loss",),
    callback: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """The step loop of every trainer here: ``step(i, item)`` for each ``item`` of ``inputs``, ``i`` counting from 1.

    ``step`` does one optimisation step and returns the numbers to log (floats); those named in ``watch`` must be
    finite, or the run stops with a :class:`FloatingPointError` (the one NaN guard; a step that can see its loss
    before updating returns it without updating, so the weights stay finite). ``callback(i)`` runs after
    every step. Stops when ``inputs`` run out or after ``max_seconds`` of wall time (checked after the callback:
    its time counts). ``modules`` are in train mode during the loop and in eval mode after it, even on an error.
    ``steps`` (the expected count, if known) only sizes the progress bar.

    Returns ``{"step": [...], <logged names>: [...], "seconds": [...]}``, one entry per step.
    """
    history: dict[str, list[float]] = defaultdict(list)
    for m in modules:
        m.train()
    bar = Progress(desc, steps=steps, seconds=max_seconds)
    try:
        for i, item in enumerate(inputs, start=1):
            values = step(i, item)
            for name in watch:
                if not math.isfinite(values[name]):
                    raise FloatingPointError(f"{name} became {values[name]} at step {i}: lower the learning rate")
            bar.record(history, postfix={name: f"{values[name]:.4g}" for name in watch}, step=i, **values)
            if callback is not None:
                callback(i)
            if bar.done():
                break
    finally:
        bar.close()
        for m in modules:
            m.eval()
    return dict(history)


def cosine_decay(optimizer: torch.optim.Optimizer, *, steps: int | None = None, seconds: float | None = None,
                 warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's ``LambdaLR`` taking each learning rate along a half cosine to 0 by the end of the run, after a linear
    warm-up over the first ``warmup`` steps (none by default; the warm-up multiplies the cosine).

    The run's progress is the larger of ``step / steps`` and ``elapsed / seconds`` (either may be None), so a run
    bounded by a time budget decays by the clock: ``CosineAnnealingLR`` counts steps only, and such a run has no
    step total. Step it after every optimizer step (:func:`fit` does).
    """
    start = time.perf_counter()

    def factor(step: int) -> float:
        done = max(step / steps if steps else 0.0, (time.perf_counter() - start) / seconds if seconds else 0.0)
        rise = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return rise * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def weight_average(model: torch.nn.Module, decay: float, device: torch.device | str | None = None) -> AveragedModel:
    """An exponential moving average of ``model``'s weights: torch's ``AveragedModel`` with ``get_ema_multi_avg_fn``.

    Call ``update_parameters(model)`` after every step: the first call copies the weights, the n-th one after it
    averages with decay ``min(decay, (1 + n) / (10 + n))``, a warm-up that keeps the average from clinging to
    where it started. Buffers are copied from ``model`` (batch-norm statistics belong to the raw weights: recompute
    them for the average with ``torch.optim.swa_utils.update_bn``). ``.module`` is the averaged network.
    """

    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        n = int(n)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, n)

    return AveragedModel(model, device=device, multi_avg_fn=ema)


def fit(
    model: torch.nn.Module,
    loss_fn: Callable[[torch.nn.Module, object], torch.Tensor | tuple[torch.Tensor, dict]],
    loader: Iterable,
    *,
    epochs: int = 1,
    max_steps: int | None = None,
    max_seconds: float | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    lr: float = 1e-3,
    device: torch.device | str | None = None,
    amp: bool = True,
    callback: Callable[[int, torch.nn.Module], None] | None = None,
    desc: str = "training",
) -> dict[str, list[float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``loader`` and return the history.

    ``loss_fn`` returns a scalar loss, or ``(loss, {"name": value, ...})`` to log more numbers.
    ``scheduler`` (if any) steps after every optimizer step. Batches are moved to the device
    (tensors or tuples of tensors). Stops after ``epochs``, or earlier at ``max_steps`` optimizer
    steps or ``max_seconds`` of wall time. On CUDA the forward pass runs in bfloat16 autocast
    (``amp``), which needs no loss scaling. ``callback(step, model)`` runs after every optimizer step.

    Returns ``{"step": [...], "loss": [...], "seconds": [...], <logged names>: [...]}``, one entry per step.
    """
    device = resolve_device(device, model)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    use_amp = amp and device.type == "cuda"
    total = epochs * len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)

    def step(i: int, batch) -> dict[str, float]:
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = loss_fn(model, batch)
        loss, logs = out if isinstance(out, tuple) else (out, {})
        value = loss.item()
        if not math.isfinite(value):
            return {"loss": value}  # no step on a NaN: the weights stay as they were, and run_steps stops the run
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": value, **{k: float(v) for k, v in logs.items()}}

    batches = itertools.islice((batch for _ in range(epochs) for batch in loader), max_steps)
    return run_steps(step, batches, modules=[model], desc=desc, steps=total, max_seconds=max_seconds,
                     callback=None if callback is None else (lambda i: callback(i, model)))


def conv_format(device: torch.device) -> torch.memory_format:
    """On the CPU, oneDNN's convolutions are faster on channels-last weights (2 cores: a DCGAN step 15 -> 20
    steps/s, notebook 08's U-Net at batch 32 16.5 -> 18.3); only 4D weights change, so MLPs are untouched."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format

