"""Stand-ins the step checks hand to student code, written once: a plain SGD optimizer that reports its steps,
a tiny network that records its inputs, its non-recording twin with given weights, the skeleton that
runs a student's training step while watching both optimizers and the generator's gradients, a tiny
autoencoder for notebook 02's step checks and a recording linear VAE for notebook 03's."""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from .core import CheckFailed, call, call_explained, describe


class StepSGD:
    """Plain SGD (``p -= lr * p.grad``) with ``zero_grad`` and ``step`` that tells the check when it steps. Not
    torch.optim: its first step in a process imports torch._dynamo, which re-wraps torch.manual_seed, and the
    grader's watch would see a patched torch."""

    def __init__(self, params, lr: float) -> None:
        self.params, self.lr, self.on_step = list(params), lr, None
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.state: dict = {}

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_()
                    p.grad.zero_()

    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        if self.on_step is not None:
            self.on_step()
        with torch.no_grad():
            for p in self.params:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-self.lr)
        return loss


class RecordingNet(torch.nn.Module):
    """A tiny network that notes each input it is called on, with its place in the check's event list.

    ``hidden=0``: linear, ``out_shape`` per row (``()``: one number per row); ``hidden>0``: a tanh critic with one
    score per row, whose input gradient changes from point to point (so where a penalty is taken matters).
    Weights ``scale * N(0, 1)``, biases ``0.3 * N(0, 1)``, drawn from ``seed``.
    """

    def __init__(self, d_in: int, out_shape: tuple[int, ...], hidden: int, seed: int, scale: float) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_out = math.prod(out_shape)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(d_in, hidden or d_out)] + ([torch.nn.Linear(hidden, 1)] if hidden else []))
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * scale)
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.3)
        self.latent_dim, self.out_shape, self.critic = d_in, out_shape, bool(hidden)
        self.inputs: list[tuple[int, torch.Tensor]] = []
        self.events: list | None = None

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.events is not None:
            self.inputs.append((len(self.events), x.detach().clone()))
        h = self.layers[0](x.flatten(1))
        if self.critic:
            return self.layers[1](torch.tanh(h)).squeeze(-1)
        return h.view(len(x), *self.out_shape)


def twin(net: RecordingNet, params: torch.Tensor) -> RecordingNet:
    """A private copy of ``net`` with the flat weights ``params``, not recording."""
    copied = copy.deepcopy(net)
    copied.inputs, copied.events = [], None
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params.float(), copied.parameters())
    return copied


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).clone() for t in tensors]).double()


def grads(net: torch.nn.Module) -> torch.Tensor:
    return flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()])


def ref_grad(net: torch.nn.Module, params: torch.Tensor, loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
    """Gradient w.r.t. ``net``'s parameters set to the flat vector ``params``, on a private copy of ``net``."""
    copied = copy.deepcopy(net)
    if isinstance(copied, RecordingNet):
        copied.inputs, copied.events = [], None
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params.float(), copied.parameters())
    for p in copied.parameters():
        p.requires_grad_(True)
        p.grad = None
    return flat(torch.autograd.grad(loss_of(copied), list(copied.parameters())))


def watch_step(fn: Callable, G: RecordingNet, D: RecordingNet, opt_g: StepSGD, opt_d: StepSGD, which_d: str,
               explain: Callable[[str, Exception], str | None] | None, *args, **kwargs) -> tuple[Any, list[tuple]]:
    """Run a student's training step ``fn(G, D, opt_g, opt_d, *args, **kwargs)`` watching it; return (its result, events).

    Events, in order: ``("step", "g" or which_d, gradients of that optimizer's network, D's weights, G's weights)`` at
    every optimizer step, and ``("g_grad",)`` whenever a gradient reaches G's weights. Both networks note each input
    with its place in the events."""
    events: list[tuple] = []
    G.inputs, D.inputs, G.events, D.events = [], [], events, events

    def on_step(which: str, net: torch.nn.Module) -> Callable[[], None]:
        return lambda: events.append(("step", which, grads(net), flat(D.parameters()), flat(G.parameters())))

    opt_g.on_step, opt_d.on_step = on_step("g", G), on_step(which_d, D)
    hooks = [p.register_hook(lambda grad: events.append(("g_grad",))) for p in G.parameters()]
    try:
        out = call_explained(fn, explain, G, D, opt_g, opt_d, *args, **kwargs)
    finally:
        opt_g.on_step = opt_d.on_step = None
        G.events = D.events = None
        for h in hooks:
            h.remove()
    return out, events


def expect_dict(out: Any, keys: tuple[str, ...], name: str, when: str) -> None:
    """A step's result must be a dict with ``keys``."""
    if not isinstance(out, dict):
        raise CheckFailed(f"{name} should return a dict with keys {list(keys)}, but it returned {describe(out)}{when}.")
    missing = [k for k in keys if k not in out]
    if missing:
        shown = ", ".join(f"'{k}': ..." for k in keys)
        raise CheckFailed(f"The dict {name} returns lacks the key(s) {missing}: return {{{shown}}} (got keys {sorted(out)}){when}.")


class TinyAE(torch.nn.Module):
    """A small linear-sigmoid autoencoder 784 -> 4 -> 784 with weights ``0.05 * N(0, 1)`` drawn from ``seed``: the
    model that notebook 02's step checks (``ae_train_step``, ``denoising_step``) hand to the student's step."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.enc, self.dec = torch.nn.Linear(784, 4), torch.nn.Linear(4, 784)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.enc(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(z)).view(-1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


class LossVAE(torch.nn.Module):
    """A linear VAE whose ``decode`` records every code it is given, so a check can see what was decoded: notebook 03's
    ``vae_loss`` and ``vae_train_step`` checks hand it to the student's code (``forward_calls`` counts ``model(x)``).

    ``logvar`` sits near a different value in each dimension (-2, -1, 0.8, 1.6), where the standard
    deviation, the variance, ``|logvar|`` and 1 all differ, so the spread of ``z - mu`` tells them apart.
    Plain torch only: the grader flags calls of the course's reference answers while the student's code runs.
    """

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.latent_dim = 4
        self.w_mu = torch.nn.Parameter(0.06 * torch.randn(784, 4, generator=g))
        self.w_lv = torch.nn.Parameter(0.004 * torch.randn(784, 4, generator=g))
        self.b_lv = torch.nn.Parameter(torch.tensor([-2.0, -1.0, 0.8, 1.6]))
        self.w_dec = torch.nn.Parameter(0.4 * torch.randn(4, 784, generator=g))
        self.b_dec = torch.nn.Parameter(0.3 * torch.randn(784, generator=g))
        self.codes: list[torch.Tensor] = []
        self.forward_calls = 0

    def encoder_params(self) -> list[torch.nn.Parameter]:
        return [self.w_mu, self.w_lv, self.b_lv]

    def decoder_params(self) -> list[torch.nn.Parameter]:
        return [self.w_dec, self.b_dec]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = x.flatten(1)
        mu = flat @ self.w_mu - 0.3 * self.w_mu.sum(0)  # roughly centred on 0 for pixels on with probability 0.3
        return mu, flat @ self.w_lv + self.b_lv

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        return (z @ self.w_dec + self.b_dec).view(-1, 1, 28, 28)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.codes.append(z.detach().clone())
        return self.logits(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.forward_calls += 1
        mu, logvar = self.encode(x)
        return self.decode(mu + (0.5 * logvar).exp() * torch.randn_like(mu)), mu, logvar


def discs(n: int, seed: int) -> torch.Tensor:
    """``(n, 1, 28, 28)`` in {0, 1}: filled discs of random centre and radius (three factors of variation), made-up
    "digits" for the model checks that train a student's network: no download, easy for a good network to learn."""
    g = torch.Generator().manual_seed(seed)
    centre = 7 + 14 * torch.rand(n, 2, 1, 1, generator=g)
    radius = 3 + 4 * torch.rand(n, 1, 1, generator=g)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    inside = (rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2 < radius**2
    return inside.float()[:, None]


def build_module(cls: Callable, what: str, attributes: tuple[str, ...], **kwargs) -> torch.nn.Module:
    """``cls(**kwargs)`` for the model checks: an ``nn.Module`` with parameters that keeps ``attributes`` of its
    constructor's arguments (the notebooks' training loops and measurements read them); else a clear CheckFailed."""
    net = call(cls, **kwargs)
    shown = ", ".join(f"{k}={v}" for k, v in kwargs.items())
    if not isinstance(net, torch.nn.Module):
        raise CheckFailed(f"{what}({shown}) is a {describe(net)}, not a torch.nn.Module: subclass torch.nn.Module and call super().__init__().")
    if not list(net.parameters()):
        raise CheckFailed(f"{what}({shown}) has no parameters: build its layers in __init__ as attributes.")
    for name in attributes:
        if getattr(net, name, None) != kwargs[name]:
            raise CheckFailed(f"{what}({shown}).{name} is {getattr(net, name, 'missing')!r}: keep the constructor's {name} as an attribute "
                              "(the training loop and the measurements read it).")
    return net


def dead_parameters(net: torch.nn.Module) -> list[str]:
    """Names of the trainable parameters that the last backward pass left without a (non-zero) gradient."""
    return [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]


def size_near(net: torch.nn.Module, reference: torch.nn.Module, what: str, advice: str) -> None:
    """The parameter count within 8x of the statement's network: wide enough for other sound designs, not for a toy."""
    n, ref = sum(p.numel() for p in net.parameters()), sum(p.numel() for p in reference.parameters())
    if not ref / 8 <= n <= ref * 8:
        raise CheckFailed(f"{what} has {n:,} parameters, far from the statement's network (about {ref:,}): {advice}")
