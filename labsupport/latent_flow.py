"""Latent flow matching (Rombach et al., CVPR 2022, "latent diffusion", with flow matching in place of diffusion): notebook 03's VAE
meets notebook 09's flow. The VAE's encoder turns each digit into a code; a small MLP learns the velocity field of flow matching
from noise to those codes (with labels, for classifier-free guidance); a sample is a code integrated from noise and decoded.

Same conventions as :mod:`labsupport.flow`: t = 0 noise, t = 1 data; ``velocity(z: (B, D), t: (B,) in [0, 1], y: (B,) or None)``;
label ``num_classes`` means "no label"; guidance ``w`` as ``(1 + w) v(z, t, y) - w v(z, t, none)``; cost counted in network
evaluations per sample (NFE, guidance included). Only the space differs: codes ``(B, latent_dim)`` instead of images, so no
``[-1, 1]`` signal range and no clipping: the decoder maps any code to pixel probabilities.

Why it is worth a look (measured by ``python -m bench --only latent_flow``): an MLP on 32 numbers trains in minutes on a CPU and
costs a fraction of a millisecond per evaluation, against the pixel U-Net's many. Why it is not free: every sample passes through the
VAE's decoder, whose Bernoulli means are blurred digits, so the decoded real codes (the reconstructions) bound the quality it can reach.

The shipped VAE (``pretrained.load("vae")``, 32 dimensions) uses about 13 of them: the other codes' means sit near 0 for every
digit (posterior collapse, notebook 03). The codes are used as they are, not standardised, so those dimensions stay near 0 instead of
being blown up to unit noise.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from . import flow
from .config import resolve_device
from .data import TensorLoader
from .models import time_embedding
from .train_core import cosine_decay, fit, weight_average


class LatentVelocity(nn.Module):
    """The velocity ``v(z_t, t, y)`` of flow matching on codes: an MLP on the code concatenated with a sinusoidal time embedding
    (plus, with ``num_classes``, a label embedding whose extra row ``num_classes`` means "no label").

    ``forward(z: (B, latent_dim), t: (B,) float in [0, 1], y: (B,) int64 or None) -> (B, latent_dim)``.
    """

    def __init__(self, latent_dim: int = 32, num_classes: int | None = 10, hidden: int = 512, depth: int = 3, emb_dim: int = 64):
        super().__init__()
        self.latent_dim, self.num_classes, self.emb_dim = latent_dim, num_classes, emb_dim
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        layers: list[nn.Module] = [nn.Linear(latent_dim + emb_dim, hidden), nn.SiLU()]
        for _ in range(depth - 1):
            layers += [nn.Linear(hidden, hidden), nn.SiLU()]
        self.net = nn.Sequential(*layers, nn.Linear(hidden, latent_dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = time_embedding(t, self.emb_dim, T=1)  # T=1: t in [0, 1] gets the same frequencies as the pixel models' 1..1000
        if self.label is not None:
            emb = emb + self.label(y if y is not None else torch.full((len(z),), self.num_classes, dtype=torch.long, device=z.device))
        return self.net(torch.cat([z, emb], 1))


@torch.no_grad()
def encode(vae: nn.Module, x: torch.Tensor, sample: bool = False, seed: int = 0, batch_size: int = 2000) -> torch.Tensor:
    """Codes ``(N, latent_dim)`` on the CPU of images ``x: (N, 1, 28, 28)`` in [0, 1]: the posterior means ``mu`` of
    ``vae.encode`` or, with ``sample``, one draw ``mu + sigma * eps`` each (noise from ``seed``)."""
    vae.eval()
    dev = resolve_device(model=vae)
    g = torch.Generator().manual_seed(seed)
    out = []
    for xb in x.split(batch_size):
        mu, logvar = (v.float().cpu() for v in vae.encode(xb.to(dev)))
        out.append(mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g) if sample else mu)
    return torch.cat(out)


@torch.no_grad()
def decode(vae: nn.Module, z: torch.Tensor, batch_size: int = 2000) -> torch.Tensor:
    """Images ``(N, 1, 28, 28)`` on the CPU from codes ``z: (N, latent_dim)``: the decoder's pixel probabilities (the Bernoulli
    means, not binary draws: the evaluation classifier and FID see the same grey levels as the other models' samples)."""
    vae.eval()
    dev = resolve_device(model=vae)
    return torch.cat([torch.sigmoid(vae.decode(zb.to(dev))).float().cpu() for zb in z.split(batch_size)])


def train_latent_flow(
    model: nn.Module, z: torch.Tensor, y: torch.Tensor | None = None, *, steps: int | None = None, max_seconds: float | None = None,
    batch_size: int = 256, lr: float = 1e-3, p_uncond: float = 0.1, ema_decay: float | None = 0.999, seed: int = 0,
    device: torch.device | str | None = None, desc: str = "latent flow",
) -> tuple[dict[str, list[float]], nn.Module]:
    """Train ``model(z_t, t, y)`` on codes ``z: (N, latent_dim)`` (labels ``y: (N,)`` dropped with probability ``p_uncond`` for
    classifier-free guidance) with :func:`labsupport.flow.loss`, for ``steps`` steps or ``max_seconds`` of wall time (one of them;
    the first to come stops it). Adam with a cosine decay of ``lr`` over the run, after a 100-step warm-up. Returns the
    :func:`labsupport.train.fit` history and the weight average (decay ``ema_decay``; the model itself when None), in eval mode."""
    if steps is None and max_seconds is None:
        raise ValueError("give steps or max_seconds: the run needs an end")
    device = resolve_device(device, model)
    model.to(device)
    loader = TensorLoader(*((z,) if y is None else (z, y)), batch_size=batch_size, seed=seed, drop_last=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = cosine_decay(optimizer, steps=steps, seconds=max_seconds, warmup=min(100, max(1, (steps or 2000) // 20)))
    ema = weight_average(model, ema_decay) if ema_decay else None
    num_classes = getattr(model, "num_classes", None) or 10

    def loss_fn(m: nn.Module, batch) -> torch.Tensor:
        zb, yb = (batch, None) if y is None else batch
        return flow.loss(m, zb, flow.drop_labels(yb, p_uncond, num_classes))

    after = None if ema is None else (lambda _step, m: ema.update_parameters(m))
    epochs = 10**6 if steps is None else -(-steps // len(loader))  # enough passes over the codes for the step count
    history = fit(model, loss_fn, loader, epochs=epochs, max_steps=steps, max_seconds=max_seconds, optimizer=optimizer,
                  scheduler=scheduler, device=device, callback=after, desc=desc)
    return history, (ema.module.eval() if ema is not None else model.eval())


@torch.no_grad()
def sample_codes(model: nn.Module, n: int, *, steps: int = 10, method: str = "euler", y: torch.Tensor | None = None,
                 guidance: float = 0.0, num_classes: int = 10, seed: int = 0, batch_size: int = 1000,
                 step: Callable | None = None) -> torch.Tensor:
    """``n`` codes ``(n, latent_dim)`` on the CPU: noise drawn with ``seed`` integrated by :func:`labsupport.flow.integrate` over
    ``steps`` steps of ``method`` (or ``step``), the velocity guided by :func:`labsupport.flow.guided` (labels ``y: (n,)``, weight
    ``guidance``). Costs :func:`labsupport.flow.nfe` ``(method, steps, guidance)`` network evaluations per sample."""
    was_training = model.training
    model.eval()
    dev = resolve_device(model=model)
    noise = torch.randn(n, model.latent_dim, generator=torch.Generator().manual_seed(seed))  # drawn at once: any batch_size, same codes
    out = []
    for start in range(0, n, batch_size):
        z0 = noise[start : start + batch_size].to(dev)
        yb = None if y is None else y[start : start + batch_size].to(dev)
        out.append(flow.integrate(flow.guided(model, yb, guidance, num_classes), z0, steps, method, step).float().cpu())
    model.train(was_training)
    return torch.cat(out)


def generate(model: nn.Module, vae: nn.Module, n: int, **sampling) -> torch.Tensor:
    """``n`` images ``(n, 1, 28, 28)`` in [0, 1]: :func:`sample_codes` (``sampling``: its keywords) decoded by :func:`decode`."""
    return decode(vae, sample_codes(model, n, **sampling))
