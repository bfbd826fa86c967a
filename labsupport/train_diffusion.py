"""Training a diffusion model's denoiser (notebooks 08 and 09): DDPM's simple loss or the student's own, classifier-free
guidance's label dropout, a warm-up and cosine decay, an exponential moving average of the weights.

Built on :func:`labsupport.train_core.fit`; import it from :mod:`labsupport.train`, which re-exports every trainer.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import resolve_device
from .data import TensorLoader
from .diffusion import Schedule, simple_loss, to_signal
from .train_core import conv_format, cosine_decay, fit, weight_average


def train_diffusion(
    model: torch.nn.Module, x: torch.Tensor, schedule: Schedule, *, y: torch.Tensor | None = None, epochs: int | None = None,
    max_seconds: float | None = None, batch_size: int = 128, lr: float = 2e-3, p_uncond: float = 0.1, ema_decay: float | None = 0.999,
    seed: int | None = None, device: torch.device | str | None = None, desc: str = "diffusion", loss: Callable | None = None,
    callback: Callable[[int, torch.nn.Module], None] | None = None,
) -> tuple[dict[str, list[float]], torch.nn.Module]:
    """Train the denoiser ``model(x_t, t, y)`` on ``x: (N, 1, 28, 28)`` in [0, 1] with DDPM's simple loss
    (:func:`labsupport.diffusion.simple_loss`); with labels ``y``, drop them with probability ``p_uncond``
    for classifier-free guidance. Adam with a cosine decay of ``lr`` over the run (by steps, or by time
    under ``max_seconds``, after a linear warm-up over the first 100 steps or 5% of them). Returns the :func:`fit` history and
    the :func:`weight_average` of the weights (decay ``ema_decay``, from the first step on; the model itself when None).

    ``loss(model, x0, schedule, y) -> scalar`` replaces the simple loss (notebook 08 trains with the
    student's); labels are dropped here, before it is called. ``callback(step, ema_or_model)`` runs after
    every step (e.g. to keep snapshots of the averaged weights).
    """
    if epochs is None:
        epochs = 10 if max_seconds is None else 10**6
    device = resolve_device(device, model)
    model.to(device, memory_format=conv_format(device))
    loader = TensorLoader(*((x,) if y is None else (x, y)), batch_size=batch_size, seed=seed, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * len(loader) if epochs < 10**6 else None
    warmup = 100 if total is None else max(1, min(100, total // 20))  # a short linear warm-up keeps Adam's first steps sane
    scheduler = cosine_decay(optimizer, steps=total, seconds=max_seconds, warmup=warmup)
    ema = weight_average(model, ema_decay) if ema_decay else None

    num_classes = getattr(model, "num_classes", None) or 10

    def loss_fn(m, batch):
        xb, yb = (batch, None) if y is None else batch
        if loss is None:
            return simple_loss(m, to_signal(xb), schedule, yb, p_uncond if yb is not None else 0.0)
        if yb is not None and p_uncond > 0:  # classifier-free guidance: the label "num_classes" means no label
            yb = torch.where(torch.rand(len(yb), device=yb.device) < p_uncond, torch.full_like(yb, num_classes), yb)
        return loss(m, to_signal(xb), schedule, yb)

    def after_step(step: int, m: torch.nn.Module) -> None:
        if ema is not None:
            ema.update_parameters(m)
        if callback is not None:
            callback(step, ema.module if ema is not None else m)

    history = fit(model, loss_fn, loader, epochs=epochs, max_seconds=max_seconds, optimizer=optimizer, scheduler=scheduler, device=device,
                  callback=after_step, desc=desc)
    return history, (ema.module.eval() if ema is not None else model)
