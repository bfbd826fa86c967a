"""Device, seeds, threads and one compact training loop with a progress bar."""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from typing import Callable, Iterable

import torch
from tqdm.auto import tqdm

from . import config

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
    except (RuntimeError, TypeError) as err:
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
    torch.set_num_threads(config.num_threads())
    seed_everything(seed)
    dev = get_device(device)
    if not quiet:
        print(
            f"device: {dev} | torch {torch.__version__} | CPU threads: {torch.get_num_threads()} | "
            f"fast mode: {'on' if config.FAST else 'off'} | seed: {seed}"
        )
    return dev


def progress(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """A tqdm progress bar (a widget in notebooks, text in a terminal), quiet when not interactive."""
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


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
    desc: str = "training",
) -> dict[str, list[float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``loader`` and return the history.

    ``loss_fn`` returns a scalar loss, or ``(loss, {"name": value, ...})`` to log more numbers.
    ``scheduler`` (if any) steps after every optimizer step. Batches are moved to ``device`` (tensors or tuples of tensors). Stops after ``epochs``, or
    earlier at ``max_steps`` optimizer steps or ``max_seconds`` of wall time. On CUDA the forward
    pass runs in bfloat16 autocast (``amp``), which needs no loss scaling.

    Returns ``{"step": [...], "loss": [...], "seconds": [...], <logged names>: [...]}``, one entry per step.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    model.to(device).train()
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    use_amp = amp and device.type == "cuda"
    history: dict[str, list[float]] = defaultdict(list)
    start, step = time.perf_counter(), 0
    total = epochs * len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None and total is not None:
        total = min(total, max_steps)
    bar = progress(total=total, desc=desc)
    try:
        for _ in range(epochs):
            for batch in loader:
                batch = _to(batch, device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    out = loss_fn(model, batch)
                loss, logs = out if isinstance(out, tuple) else (out, {})
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss.item()} at step {step}: lower the learning rate")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                history["step"].append(step)
                history["loss"].append(loss.item())
                history["seconds"].append(time.perf_counter() - start)
                for k, v in logs.items():
                    history[k].append(float(v))
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4g}", refresh=False)
                if (max_steps is not None and step >= max_steps) or (
                    max_seconds is not None and history["seconds"][-1] >= max_seconds
                ):
                    return dict(history)
    finally:
        bar.close()
        model.eval()
    return dict(history)


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


# --- Notebook 01/02: supervised, unsupervised, autoencoders ---

# --- Notebook 03: variational autoencoders ---

# --- Notebook 04: GANs ---

# --- Notebook 05: GAN variants ---

# --- Notebook 06: VAEs vs GANs and uses ---
