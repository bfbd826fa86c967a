"""Notebook 09, the network the student builds for the 2D flow: the ``VelocityMLP`` class.

The check runs in three stages of partial credit, as the model checks of notebooks 04 and 05: ``interface`` (the output's
shape for a ``(B,)`` and a ``(B, 1)`` time, the point and the time both used, each point on its own, a parameter count near
the statement's), ``gradients`` (every weight learns, and the output is not squashed: a velocity can take any value), then
the whole check: it *learns* a flow, for a fixed budget, next to the statement's network trained the same way. The task is
notebook 09's ring of eight Gaussians, where the exact velocity field is known (:func:`labsupport.flow.mixture_velocity`), so
"learns" is measured as the distance to the ideal field on fixed points, not as a noisy loss.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from .. import flow
from .core import CheckFailed, call_explained, carries_gradient, check, expect_tensor, passed, stage
from .fakes import build_module, dead_parameters, size_near

STEPS, LR, BATCH, HIDDEN = 300, 3e-3, 256, 64  # the training comparison: Adam on flow.loss, networks of width HIDDEN
RING_STD = 0.1
TOLERANCE = (2.0, 0.1)  # the student's error to the exact field may be at most 2 x the statement's + 0.1


class _ReferenceVelocity(nn.Module):
    """The statement's network: ``[x, sin(k pi t), cos(k pi t)], k = 1..8 -> hidden x 3 (ReLU) -> 2``, no final activation."""

    def __init__(self, hidden: int = 128, frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", math.pi * torch.arange(1, frequencies + 1, dtype=torch.float32))
        self.net = nn.Sequential(nn.Linear(2 + 2 * frequencies, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        angles = t.reshape(-1, 1).to(x.dtype) * self.frequencies
        return self.net(torch.cat([x, angles.sin(), angles.cos()], 1))


class _Adam:
    """Adam (Kingma & Ba, 2015) in a few lines, for the check's fits: torch.optim's first step in a process imports
    torch._dynamo (about 1.5 s), and the grader runs each check in a fresh process."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params = [p for p in params if p.requires_grad]
        self.lr, (self.b1, self.b2), self.eps, self.t = lr, betas, eps, 0
        self.m, self.v = [torch.zeros_like(p) for p in self.params], [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is not None:
                m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
                v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
                p.sub_(self.lr * (m / (1 - self.b1**self.t)) / ((v / (1 - self.b2**self.t)).sqrt() + self.eps))


def _explain(hidden: int) -> Callable[[str, Exception], str | None]:
    def explain(message: str, err: Exception) -> str | None:
        text = str(err)
        if "same number of dimensions" in text or "Sizes of tensors must match" in text or "must match the size of tensor" in text:
            return (message + "\n  A (B,) t lines up with the LAST axis of what it meets: it cannot multiply a row of frequencies or be "
                    "joined to x (B, 2) by torch.cat as it is. Give t an axis first, (B, 1), so that each row gets its time (and accept "
                    "a t that already is (B, 1)).")
        if "shapes cannot be multiplied" in text:
            return (message + f"\n  A layer got inputs of the wrong width: are the layers sized from the constructor's hidden (here "
                    f"{hidden}) and from the number of features you really feed in (2 for x plus your time features)?")
        return None

    return explain


_NO_Y = ("Your loss calls v_model(x_t, t, y) with y = None on the ring, the samplers call v_model(x, t): accept a third argument "
         "y=None and ignore it (the ring has no labels).")


def _fixed_points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g), torch.rand(n, generator=g)


def _interface(cls: Callable) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_module(cls, "VelocityMLP", (), hidden=32)
    x, t = _fixed_points(64, 3)
    what = "VelocityMLP(hidden=32)(x, t)"
    out = call_explained(net, _explain(32), x, t)
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 64 and out.shape[1] != 2:
        raise CheckFailed(f"{what} has shape {tuple(out.shape)} for x of shape (64, 2): the velocity lives where the point lives, "
                          "(B, 2). How many outputs does the last layer have?")
    expect_tensor(out, (64, 2), f"{what} for x (64, 2) and t (64,)")
    net.eval()
    with torch.no_grad():
        base = net(x, t)
        column = call_explained(net, _explain(32), x, t[:, None])
        with_label = call_explained(net, lambda message, err: message + "\n  " + _NO_Y if "positional argument" in str(err) else None, x, t, None)
        late, early = net(x, torch.full_like(t, 0.9)), net(x, torch.full_like(t, 0.1))
        moved = net(x + 1.0, t)
        alone, together = net(x[:5], t[:5]), net(x, t)[:5]
    column = expect_tensor(column, (64, 2), f"{what} for t of shape (64, 1)")
    if not torch.allclose(column, base, atol=1e-5):
        raise CheckFailed("The output differs when t comes as (B, 1) instead of (B,): the same times must give the same velocity. "
                          "Bring t to one shape first, whatever shape it arrives in.")
    if not (isinstance(with_label, torch.Tensor) and with_label.shape == base.shape and torch.allclose(with_label, base, atol=1e-5)):
        raise CheckFailed("VelocityMLP(x, t, None) should be the same as VelocityMLP(x, t). " + _NO_Y)
    if not torch.allclose(alone, together, atol=1e-5):
        raise CheckFailed("In eval mode net(x[:5], t[:5]) differs from net(x, t)[:5]: a point's velocity depends on the other "
                          "points of its batch. Is something normalising over the batch (batch norm in train mode, a mean over B)?")
    if bool((base == base[0]).all()):
        raise CheckFailed(f"The output is {base[0].tolist()} for every point and time: nothing of x or t gets through. Is there a ReLU "
                          "after the last layer, off for every input (a velocity is often negative: leave the last layer linear), or "
                          "are x and t never fed in?")
    if torch.allclose(late, early, atol=1e-6):
        raise CheckFailed("The output does not change with t: the network ignores the time. At t = 0 the point is pure noise and at "
                          "t = 1 it is data, so the velocity must depend on t; a network that ignores it cannot learn a flow.")
    if torch.allclose(moved, base, atol=1e-6):
        raise CheckFailed("The output does not change with x: the network ignores the point. Feed x into the network.")
    size_near(build_module(cls, "VelocityMLP", (), hidden=128), _ReferenceVelocity(128), "VelocityMLP(hidden=128)",
              "check the layer widths against the statement and the constructor's hidden.")
    return net


def _unbounded(cls: Callable) -> None:
    """Fit velocities as large as about 8 for a few steps: an unsquashed network's outputs leave [-1, 1] and turn negative."""
    torch.manual_seed(1)
    net = build_module(cls, "VelocityMLP", (), hidden=32)
    x, t = _fixed_points(128, 4)
    target = 3 * x + 1
    opt = _Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        loss = (net(x, t) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(x, t)
    low, high = out.min().item(), out.max().item()
    if low >= 0:
        raise CheckFailed(f"Fitted to velocities from {target.min().item():.1f} to {target.max().item():.1f} for 100 steps, your "
                          f"network's outputs stay in [{low:.2f}, {high:.2f}]: never negative. Is there an activation (a ReLU?) after the "
                          "last layer? A velocity points any way: leave the last layer linear.")
    if max(abs(low), abs(high)) <= 1.0 + 1e-4:
        raise CheckFailed(f"Fitted to velocities from {target.min().item():.1f} to {target.max().item():.1f} for 100 steps, your "
                          f"network's outputs stay in [{low:.2f}, {high:.2f}]: something squashes them (a tanh, a sigmoid, a clamp after "
                          "the last layer?). The velocity x1 - x0 is often larger than 1: leave the last layer linear.")


def _distance_to_exact(net: nn.Module, seed: int = 0) -> float:
    """Train ``net`` on the ring with ``flow.loss`` for the check's budget; return its mean squared distance to the exact field."""
    g = torch.Generator().manual_seed(seed)
    angles = 2 * math.pi * torch.arange(8) / 8
    centers = 2.0 * torch.stack([angles.cos(), angles.sin()], 1)  # notebook 09's ring: eight modes on a circle of radius 2
    ring = centers[torch.randint(8, (4096,), generator=g)] + RING_STD * torch.randn(4096, 2, generator=g)
    x0, t = _fixed_points(2048, 6)
    x_t = flow.interpolate(x0, ring[torch.randint(len(ring), (2048,), generator=g)], t)
    exact = flow.mixture_velocity(x_t, t, centers, RING_STD)
    opt = _Adam(net.parameters(), lr=LR)
    torch.manual_seed(2)
    for _ in range(STEPS):
        loss = flow.loss(net, ring[torch.randint(len(ring), (BATCH,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        return (net(x_t, t) - exact).pow(2).mean().item()


@check
def check_VelocityMLP(cls: Callable) -> None:
    """``VelocityMLP(hidden)``: ``v(x: (B, 2), t: (B,) or (B, 1), y=None) -> (B, 2)``, depending on x and t, no final activation."""
    net = _interface(cls)
    stage("interface")
    net.train()
    x, t = _fixed_points(64, 3)
    out = net(x, t)
    carries_gradient(out, "The output does not track gradients (a .detach(), torch.no_grad() or .item() inside forward?): nothing could train.")
    (out - torch.randn(out.shape, generator=torch.Generator().manual_seed(8))).pow(2).sum().backward()
    if dead_parameters(net):
        raise CheckFailed(f"These parameters get no gradient: {dead_parameters(net)[:4]}. Every layer you create must be used in forward.")
    _unbounded(cls)
    stage("gradients")
    torch.manual_seed(0)
    want = _distance_to_exact(_ReferenceVelocity(HIDDEN))
    torch.manual_seed(0)
    got = _distance_to_exact(build_module(cls, "VelocityMLP", (), hidden=HIDDEN))
    if got > TOLERANCE[0] * want + TOLERANCE[1]:
        raise CheckFailed(f"Trained with flow.loss on the ring of eight Gaussians for {STEPS} Adam steps (hidden={HIDDEN}), your network's "
                          f"mean squared distance to the exact velocity field ends at {got:.3f}; the statement's network reaches {want:.3f} "
                          f"(the check allows {TOLERANCE[0]:g} x that + {TOLERANCE[1]:g}). Does each hidden layer have a nonlinearity, and does "
                          "the time reach the network in a form it can use (values of order 1, not t x 1000)?")
    passed("VelocityMLP", f"learns the ring's flow to a squared distance of {got:.3f} from the exact field in {STEPS} steps; the "
           f"statement's network {want:.3f}")
