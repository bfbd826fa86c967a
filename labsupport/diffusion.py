"""Diffusion models (DDPM, Ho et al. 2020; DDIM, Song et al. 2021; classifier-free guidance, Ho & Salimans 2022).

Conventions, fixed once here so that no function can be off by one:

* time runs over ``t = 1..T``; every schedule array has ``T + 1`` entries and index 0 means "no noise"
  (``alpha_bar[0] = 1``, ``beta[0] = 0``);
* images enter the diffusion in ``[-1, 1]`` (:func:`to_signal`) and leave it in ``[0, 1]`` (:func:`to_image`);
* a denoiser is called as ``eps_model(x_t: (B, 1, 28, 28), t: (B,) int64, y: (B,) int64 or None) -> (B, 1, 28, 28)``
  and predicts the noise ``eps`` that made ``x_t`` from ``x_0``; label ``num_classes`` is "no label"
  (classifier-free guidance trains with it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .config import resolve_device


def to_signal(images: torch.Tensor) -> torch.Tensor:
    """``(B, 1, 28, 28)`` in [0, 1] -> in [-1, 1], the range the noise is added in."""
    return 2 * images - 1


def to_image(x: torch.Tensor) -> torch.Tensor:
    """Back from [-1, 1] to [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


@dataclass(frozen=True)
class Schedule:
    """A noise schedule: ``beta[t]``, ``alpha[t] = 1 - beta[t]``, ``alpha_bar[t] = prod_{s <= t} alpha[s]``, for t = 0..T."""

    beta: torch.Tensor  # (T + 1,) float64, beta[0] = 0

    @property
    def T(self) -> int:
        return len(self.beta) - 1

    @property
    def alpha(self) -> torch.Tensor:
        return 1 - self.beta

    @property
    def alpha_bar(self) -> torch.Tensor:
        return torch.cumprod(self.alpha, 0)

    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` for t = 1..T: ``(T,)``."""
        ab = self.alpha_bar[1:]
        return ab / (1 - ab)

    def posterior_variance(self) -> torch.Tensor:
        """``beta_tilde[t] = (1 - alpha_bar[t-1]) / (1 - alpha_bar[t]) * beta[t]`` for t = 1..T, index 0 unused: ``(T + 1,)``."""
        ab = self.alpha_bar
        out = torch.zeros_like(self.beta)
        out[1:] = (1 - ab[:-1]) / (1 - ab[1:]) * self.beta[1:]
        return out


def linear_schedule(T: int = 1000, beta_1: float = 1e-4, beta_T: float = 0.02) -> Schedule:
    """DDPM's schedule: beta rises linearly from ``beta_1`` to ``beta_T`` (scaled by 1000 / T so short chains stay comparable)."""
    scale = 1000 / T
    return Schedule(torch.cat([torch.zeros(1, dtype=torch.float64), torch.linspace(scale * beta_1, scale * beta_T, T, dtype=torch.float64)]))


def cosine_schedule(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> Schedule:
    """Nichol & Dhariwal (2021): ``alpha_bar(t) = cos^2((t / T + s) / (1 + s) * pi / 2)`` normalised to 1 at t = 0."""
    t = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    beta = (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)
    return Schedule(torch.cat([torch.zeros(1, dtype=torch.float64), beta]))


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t]`` shaped ``(B, 1, 1, 1)`` to broadcast against images ``like``, in ``like``'s dtype and device."""
    return values.to(like.device)[t].to(like.dtype).view(-1, *[1] * (like.dim() - 1))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) in closed form, with the given ``noise``.

    ``x0, noise: (B, ...)`` in signal space, ``t: (B,)`` int64 in 1..T.
    """
    ab = _at(schedule.alpha_bar, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def simple_loss(eps_model, x0: torch.Tensor, schedule: Schedule, y: torch.Tensor | None = None, p_uncond: float = 0.0,
                num_classes: int = 10) -> torch.Tensor:
    """DDPM's "simple" objective E_{t, eps} ||eps - eps_model(x_t, t)||^2, averaged over pixels and the batch.

    ``x0: (B, 1, 28, 28)`` in signal space; t ~ U{1..T}. With labels ``y`` and ``p_uncond`` > 0, each label is
    replaced by "no label" (``num_classes``) with that probability, so one network learns both the
    conditional and the unconditional noise (classifier-free guidance).
    """
    t = torch.randint(1, schedule.T + 1, (len(x0),), device=x0.device)
    noise = torch.randn_like(x0)
    if y is not None and p_uncond > 0:
        y = torch.where(torch.rand(len(y), device=y.device) < p_uncond, torch.full_like(y, num_classes), y)
    return F.mse_loss(eps_model(q_sample(x0, t, noise, schedule), t, y), noise)


def _guided_eps(eps_model, x, t, y, guidance: float, num_classes: int) -> torch.Tensor:
    """Classifier-free guidance: ``(1 + w) eps(x, t, y) - w eps(x, t, no label)``; plain ``eps(x, t, y)`` when w = 0."""
    if y is None or guidance == 0:
        return eps_model(x, t, y)
    both = eps_model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, num_classes)]))
    cond, uncond = both.chunk(2)
    return (1 + guidance) * cond - guidance * uncond


def ddpm_step(eps: torch.Tensor, x_t: torch.Tensor, t: int, schedule: Schedule, noise: torch.Tensor | None = None) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1} of DDPM (Algorithm 2), with the posterior variance beta_tilde_t.

    mean = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t); no noise is added at t = 1.
    """
    beta, alpha, ab = schedule.beta[t].item(), schedule.alpha[t].item(), schedule.alpha_bar[t].item()
    mean = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
    if t == 1:
        return mean
    noise = torch.randn_like(x_t) if noise is None else noise
    return mean + schedule.posterior_variance()[t].sqrt().item() * noise


def ddim_step(eps: torch.Tensor, x_t: torch.Tensor, t: int, t_prev: int, schedule: Schedule) -> torch.Tensor:
    """One deterministic DDIM step (eta = 0) from t to ``t_prev`` < t: predict x_0 (clipped to [-1, 1]), then re-noise it to t_prev."""
    ab, ab_prev = schedule.alpha_bar[t].item(), schedule.alpha_bar[t_prev].item()
    x0 = ((x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)).clamp(-1, 1)
    eps = (x_t - math.sqrt(ab) * x0) / math.sqrt(1 - ab)  # the noise consistent with the clipped x_0
    return math.sqrt(ab_prev) * x0 + math.sqrt(1 - ab_prev) * eps


@torch.no_grad()
def generate(eps_model, schedule: Schedule, n: int, *, steps: int | None = None, y: torch.Tensor | None = None, guidance: float = 0.0,
           num_classes: int = 10, seed: int = 0, device: torch.device | str | None = None, batch_size: int = 500,
           step: Callable | None = None, keep: Sequence[int] = ()) -> torch.Tensor | tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """``n`` images ``(n, 1, 28, 28)`` in [0, 1] on the CPU: DDPM ancestral sampling over all T steps (``steps=None``),
    or DDIM over ``steps`` evenly spaced steps. ``y: (n,)`` labels for a conditional model, ``guidance`` its weight w.
    (Not named ``sample``: notebook 08's exercise of that name turns given noise ``x_T`` into images, one batch, DDIM only.)

    ``step(eps, x_t, t, schedule, noise) -> x_{t-1}`` replaces :func:`ddpm_step` (notebook 08 samples with the
    student's). With ``keep`` (times t), also returns ``{t: images}``: the first batch's x_t in [0, 1] at those times."""
    was_training = getattr(eps_model, "training", False)
    eps_model.eval() if hasattr(eps_model, "eval") else None
    dev = resolve_device(device, eps_model if isinstance(eps_model, torch.nn.Module) else None)
    g = torch.Generator().manual_seed(seed)
    times = list(range(schedule.T, 0, -1)) if steps is None else sorted({round(v) for v in torch.linspace(schedule.T, 1, steps).tolist()}, reverse=True)
    out, frames = [], {}
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x = torch.randn(b, 1, 28, 28, generator=g).to(dev)
        yb = None if y is None else y[start : start + b].to(dev)
        for i, t in enumerate(times):
            tt = torch.full((b,), t, dtype=torch.long, device=dev)
            eps = _guided_eps(eps_model, x, tt, yb, guidance, num_classes)
            if start == 0 and t in keep:
                frames[t] = to_image(x).float().cpu()
            if steps is None:
                x = (step or ddpm_step)(eps, x, t, schedule, torch.randn(x.shape, generator=g).to(dev))
            else:
                x = ddim_step(eps, x, t, times[i + 1] if i + 1 < len(times) else 0, schedule)
        out.append(to_image(x).float().cpu())
        if start == 0 and 0 in keep:
            frames[0] = out[-1]
    if hasattr(eps_model, "train"):
        eps_model.train(was_training)
    return (torch.cat(out), frames) if keep else torch.cat(out)


def matching_time(schedule: Schedule, sigma: float) -> int:
    """The t in 1..T whose noise matches Gaussian noise of std ``sigma`` added to images in [0, 1].

    In signal space that noise has std ``2 sigma``, and ``x_t / sqrt(alpha_bar_t) = x_0 + sqrt((1 - alpha_bar_t) / alpha_bar_t) eps``:
    the t whose ratio is closest to ``2 sigma``."""
    ab = schedule.alpha_bar[1:]
    return int((((1 - ab) / ab).sqrt() - 2 * sigma).abs().argmin()) + 1


@torch.no_grad()
def denoise(eps_model, schedule: Schedule, y: torch.Tensor, sigma: float, steps: int = 1, batch_size: int = 500) -> torch.Tensor:
    """Denoise ``y: (B, 1, 28, 28)`` = clean images in [0, 1] plus Gaussian noise of std ``sigma``; returns ``(B, 1, 28, 28)`` in [0, 1].

    ``y`` becomes ``x_t = sqrt(alpha_bar_t) (2 y - 1)`` at the :func:`matching_time` t; ``steps=1`` is one Tweedie step to
    the posterior mean ``(x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)``, more runs DDIM from t down to 0.
    Unconditional: the model gets no label."""
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (the noise's std on the [0, 1] pixel scale), got {sigma}")
    if y.dim() != 4 or tuple(y.shape[1:]) != (1, 28, 28):
        raise ValueError(f"y must be a batch of images (B, 1, 28, 28), got shape {tuple(y.shape)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    t = matching_time(schedule, sigma)
    times = sorted({round(v) for v in torch.linspace(t, 1, steps).tolist()}, reverse=True) if steps > 1 else [t]
    dev = next(eps_model.parameters()).device if isinstance(eps_model, torch.nn.Module) else y.device
    out = []
    for batch in y.split(batch_size):
        x = math.sqrt(schedule.alpha_bar[t].item()) * to_signal(batch.to(dev))
        for i, s in enumerate(times):
            eps = eps_model(x, torch.full((len(x),), s, dtype=torch.long, device=dev), None)
            x = ddim_step(eps, x, s, times[i + 1] if i + 1 < len(times) else 0, schedule)  # to t_prev = 0: the x_0 estimate itself
        out.append(to_image(x).to(y.device, y.dtype))
    return torch.cat(out)
