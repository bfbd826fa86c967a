"""Flow matching (Lipman et al., ICLR 2023; rectified flow, Liu et al., ICLR 2023): the reference pieces of notebook 09.

The one time convention of the course, fixed here (Lipman's):

* **t = 0 is noise, t = 1 is data.** ``x0 ~ N(0, I)`` is the noise, ``x1`` a data point, and the straight path between them is
  ``x_t = (1 - t) * x0 + t * x1``; its velocity ``d x_t / dt = x1 - x0`` is the regression target.
* Sampling integrates the learned ODE ``dx/dt = v(x, t)`` **forward**, from ``t = 0`` (a fresh noise draw) to ``t = 1`` over the
  grid ``t_k = k / steps``, ``k = 0..steps`` (``steps + 1`` points, step ``dt = 1 / steps > 0``).
  (SD3 and some rectified-flow code use the mirror image, t = 0 data and t = 1 noise with ``v = noise - data``, integrated
  backwards; mixing the two is the classic slip that the checks of notebook 09 name.)
* A velocity network is called as ``velocity(x: (B, ...), t: (B,) float in [0, 1], y: (B,) int64 or None) -> (B, ...)``;
  label ``num_classes`` means "no label" (classifier-free guidance trains with it), as in :mod:`labsupport.diffusion`.
* Images enter in ``[-1, 1]`` and leave in ``[0, 1]`` (:func:`labsupport.diffusion.to_signal` / ``to_image``).

Classifier-free guidance uses the **same w as the course's diffusion models**: ``v = (1 + w) * v(x, t, y) - w * v(x, t, none)``,
so ``w = 0`` is the plain conditional velocity (no guidance). Papers that write ``v_u + s * (v_c - v_u)`` have ``s = 1 + w``
(their "s = 1 means no guidance"). The cost of a sample is counted in network evaluations per sample (NFE): Euler costs 1 per step,
Heun 2 per step, and guidance doubles both (the conditional and unconditional velocities are two evaluations, even when they
share one batched call).

Also here: the exact velocity field of a Gaussian mixture (the "ideal" flow of the 2D figures) and the exact noise prediction of
the same mixture under a diffusion schedule (for exact DDIM paths), and a straightness measure for paths.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .config import resolve_device

Velocity = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # v(x: (B, ...), t: (B,)) -> (B, ...)


def _col(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t: (B,)`` -> ``(B, 1, ..., 1)`` so that it scales each row of ``like: (B, ...)`` (not its last axis)."""
    return t.to(like.dtype).view(-1, *[1] * (like.dim() - 1))


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The straight path ``x_t = (1 - t) x0 + t x1``: ``x0`` noise, ``x1`` data, both ``(B, ...)``, ``t: (B,)`` in [0, 1]."""
    tt = _col(t, x1)
    return (1 - tt) * x0 + tt * x1


def target_velocity(x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
    """The velocity of the straight path from noise ``x0`` to data ``x1``: ``x1 - x0`` (independent of t)."""
    return x1 - x0


def drop_labels(y: torch.Tensor | None, p_uncond: float, num_classes: int = 10) -> torch.Tensor | None:
    """Replace each label by "no label" (``num_classes``) with probability ``p_uncond`` (classifier-free guidance training)."""
    if y is None or p_uncond <= 0:
        return y
    return torch.where(torch.rand(len(y), device=y.device) < p_uncond, torch.full_like(y, num_classes), y)


def loss(v_model, x1: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Conditional flow matching: ``E_{t ~ U[0,1], x0 ~ N(0, I)} ||v_model(x_t, t, y) - (x1 - x0)||^2``, averaged over the batch
    and every coordinate (as ``F.mse_loss``), for data ``x1: (B, ...)``. Labels are passed as given (drop them beforehand
    with :func:`drop_labels` for guidance). ``v_model(x, t, y)``; a model without labels is called as ``v_model(x, t)``."""
    t = torch.rand(len(x1), device=x1.device, dtype=x1.dtype)
    x0 = torch.randn_like(x1)
    xt = interpolate(x0, x1, t)
    pred = v_model(xt, t) if y is None else v_model(xt, t, y)
    return ((pred - target_velocity(x0, x1)) ** 2).mean()


def guided(v_model, y: torch.Tensor | None, guidance: float = 0.0, num_classes: int = 10) -> Velocity:
    """The velocity ``v(x, t)`` to integrate: ``v_model(x, t, y)``, or with ``guidance`` w != 0
    ``(1 + w) v_model(x, t, y) - w v_model(x, t, none)`` (one batched call of 2B rows). ``y: (B,)`` or None (unconditional)."""
    if y is None:
        return lambda x, t: v_model(x, t)
    if guidance == 0:
        return lambda x, t: v_model(x, t, y)

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        both = v_model(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, torch.full_like(y, num_classes)]))
        cond, uncond = both.chunk(2)
        return (1 + guidance) * cond - guidance * uncond

    return v


def time_grid(steps: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``steps + 1`` times ``0 = t_0 < t_1 < ... < t_steps = 1``, evenly spaced: ``(steps + 1,)``."""
    return torch.linspace(0, 1, steps + 1, dtype=dtype)


def euler_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """One Euler step of ``dx/dt = v(x, t)``: ``x + dt * v(x, t)`` (1 evaluation)."""
    return x + dt * v(x, torch.full((len(x),), t, dtype=x.dtype, device=x.device))


def heun_step(v: Velocity, x: torch.Tensor, t: float, dt: float) -> torch.Tensor:
    """One Heun step (explicit trapezoid, 2 evaluations): an Euler predictor to ``t + dt``, then the average of the velocities at
    both ends: ``x + dt / 2 * (v(x, t) + v(x_pred, t + dt))``. Second order: its error per unit time falls as ``dt^2``."""
    tb = lambda s: torch.full((len(x),), s, dtype=x.dtype, device=x.device)  # noqa: E731
    k1 = v(x, tb(t))
    k2 = v(x + dt * k1, tb(t + dt))
    return x + dt / 2 * (k1 + k2)


EVALS_PER_STEP = {"euler": 1, "heun": 2}
STEPPERS = {"euler": euler_step, "heun": heun_step}


def nfe(method: str, steps: int, guidance: float = 0.0) -> int:
    """Network evaluations per sample: ``steps`` x (1 for Euler, 2 for Heun) x (2 with guidance w != 0)."""
    return steps * EVALS_PER_STEP[method] * (2 if guidance else 1)


@torch.no_grad()
def integrate(v: Velocity, x0: torch.Tensor, steps: int, method: str = "euler", step: Callable | None = None,
              trajectory: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Integrate ``dx/dt = v(x, t)`` from ``x0: (B, ...)`` at t = 0 to t = 1 over :func:`time_grid` with ``method``
    (``"euler"`` or ``"heun"``, or any ``step(v, x, t, dt) -> x``). Returns ``x1: (B, ...)``, and with ``trajectory`` also the
    states at every grid time, ``(steps + 1, B, ...)``."""
    step = step or STEPPERS[method]
    times = time_grid(steps, torch.float64).tolist()
    x, path = x0, [x0]
    for t, t_next in zip(times[:-1], times[1:]):
        x = step(v, x, t, t_next - t)
        if trajectory:
            path.append(x)
    return (x, torch.stack(path)) if trajectory else x


@torch.no_grad()
def generate(v_model, n: int, *, steps: int = 10, method: str = "euler", step: Callable | None = None, sampler: Callable | None = None,
           y: torch.Tensor | None = None, guidance: float = 0.0, num_classes: int = 10, seed: int = 0,
           device: torch.device | str | None = None, batch_size: int = 500, shape: tuple[int, ...] = (1, 28, 28)) -> torch.Tensor:
    """``n`` images ``(n, 1, 28, 28)`` in [0, 1] on the CPU from a velocity network (``y: (n,)`` labels, ``guidance`` its w),
    integrating from noise drawn with ``seed`` (the same noise for any sampler: comparisons see the same starting points).
    ``step(v, x, t, dt)`` replaces the ``method``'s step; ``sampler(v, x0, steps) -> path: (steps + 1, B, ...)`` replaces the
    whole integration, its last state is the sample (notebook 09 samples with the student's)."""
    from .diffusion import to_image  # images share the diffusion models' [-1, 1] signal range

    was_training = getattr(v_model, "training", False)
    if hasattr(v_model, "eval"):
        v_model.eval()
    dev = resolve_device(device, v_model if isinstance(v_model, torch.nn.Module) else None)
    g = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        x0 = torch.randn(b, *shape, generator=g).to(dev)
        yb = None if y is None else y[start : start + b].to(dev)
        v = guided(v_model, yb, guidance, num_classes)
        x1 = sampler(v, x0, steps)[-1] if sampler is not None else integrate(v, x0, steps, method, step)
        out.append(to_image(x1).float().cpu())
    if hasattr(v_model, "train"):
        v_model.train(was_training)
    return torch.cat(out)


def straightness(path: torch.Tensor) -> torch.Tensor:
    """How straight each path is: the straight-line distance from start to end over the length travelled, in (0, 1]
    (1 = a straight segment at any speed). ``path: (S + 1, B, D)`` states along B paths -> ``(B,)``."""
    chord = (path[-1] - path[0]).flatten(1).norm(dim=1)
    length = (path[1:] - path[:-1]).flatten(2).norm(dim=2).sum(0)
    return chord / length.clamp_min(1e-12)


# --- exact fields of a Gaussian mixture (2D figures): data x1 ~ sum_k pi_k N(mu_k, std^2 I), noise N(0, I) --------


def _responsibilities(x: torch.Tensor, means: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """Posterior weights of equal-weight components ``N(means_k, var I)`` at ``x: (B, D)``; ``means: (B, K, D)``, ``var: (B, 1)``."""
    d2 = ((x[:, None, :] - means) ** 2).sum(-1)  # (B, K)
    return torch.softmax(-d2 / (2 * var), dim=1)


def mixture_velocity(x: torch.Tensor, t: torch.Tensor, centers: torch.Tensor, std: float) -> torch.Tensor:
    """The exact marginal velocity ``E[x1 - x0 | x_t = x]`` of flow matching from N(0, I) to the equal-weight mixture of
    ``N(centers_k, std^2 I)``: what a perfectly trained network would output. ``x: (B, D)``, ``t: (B,)``, ``centers: (K, D)``.

    Given component k, ``x_t ~ N(t mu_k, var_t I)`` with ``var_t = (1 - t)^2 + t^2 std^2`` and
    ``E[x1 - x0 | x_t, k] = mu_k + (t std^2 - (1 - t)) / var_t * (x - t mu_k)`` (jointly Gaussian); then average over k."""
    x64, t64, c = x.double(), t.double()[:, None], centers.double()
    var = (1 - t64) ** 2 + t64 ** 2 * std ** 2                         # (B, 1)
    means = t64[:, :, None] * c[None]                                   # (B, K, D)
    w = _responsibilities(x64, means, var)                              # (B, K)
    per_k = c[None] + ((t64 * std ** 2 - (1 - t64)) / var)[:, :, None] * (x64[:, None] - means)
    return (w[:, :, None] * per_k).sum(1).to(x.dtype)


def mixture_eps(x: torch.Tensor, alpha_bar: float, centers: torch.Tensor, std: float) -> torch.Tensor:
    """The exact noise prediction ``E[eps | x_t = x]`` of a diffusion ``x_t = sqrt(ab) x_0 + sqrt(1 - ab) eps`` on the same
    mixture: ``x: (B, D)`` -> ``(B, D)``. Given k, ``x_t ~ N(sqrt(ab) mu_k, (ab std^2 + 1 - ab) I)`` and
    ``E[eps | x_t, k] = sqrt(1 - ab) / (ab std^2 + 1 - ab) * (x - sqrt(ab) mu_k)``."""
    x64, c = x.double(), centers.double()
    var = torch.full((len(x), 1), alpha_bar * std ** 2 + 1 - alpha_bar, dtype=torch.float64)
    means = math.sqrt(alpha_bar) * c[None].expand(len(x), -1, -1)
    w = _responsibilities(x64, means, var)
    per_k = math.sqrt(1 - alpha_bar) / var[:, :, None] * (x64[:, None] - means)
    return (w[:, :, None] * per_k).sum(1).to(x.dtype)


@torch.no_grad()
def ddim_path(eps: Callable[[torch.Tensor, float], torch.Tensor], x_T: torch.Tensor, alpha_bars: list[float]) -> torch.Tensor:
    """Deterministic DDIM (eta = 0) along ``alpha_bars`` (rising from about 0 at pure noise to the last, about 1), without the
    image samplers' clipping of x_0 to [-1, 1] (2D data is not in that box). ``eps(x, alpha_bar) -> (B, D)``; ``x_T: (B, D)``.
    Returns the states at every alpha_bar: ``(len(alpha_bars), B, D)``; one evaluation per step after the first state."""
    x, path = x_T, [x_T]
    for ab, ab_next in zip(alpha_bars[:-1], alpha_bars[1:]):
        e = eps(x, ab)
        x0 = (x - math.sqrt(1 - ab) * e) / math.sqrt(ab)
        x = math.sqrt(ab_next) * x0 + math.sqrt(1 - ab_next) * e
        path.append(x)
    return torch.stack(path)
