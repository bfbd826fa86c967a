"""GAN training loops: Algorithm 1 (:func:`gan_step`, :func:`train_gan`), the 2D toy GAN and WGAN-GP of notebooks 04 and
05 (:func:`toy_gan`), the conditional GAN (:func:`train_conditional_gan`) and CycleGAN (:func:`train_cyclegan`).

Each loop is a :func:`labsupport.train_core.run_steps` step loop; the losses come from :mod:`labsupport.losses`.
Import them from :mod:`labsupport.train`, which re-exports every trainer.
"""

from __future__ import annotations

import contextlib
import inspect
from collections import defaultdict
from typing import Callable, Iterator, Sequence

import torch

from .config import resolve_device, seed_everything
from .losses import critic_loss, cycle_l1, gan_d_loss, gan_g_loss, gradient_penalty, least_squares, wgan_g_loss
from .models import MLP2D
from .train_core import conv_format, run_steps


@contextlib.contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """Inside the block, ``module``'s trainable weights get no gradient (the caller's own frozen ones stay frozen)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def gan_step(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True) -> dict:
    """One iteration of Algorithm 1 (Goodfellow et al., 2014) on a batch ``x_real: (B, ...)`` and noise ``z: (B, latent_dim)``.

    1. D ascends its objective (descends ``d_loss``) on the real batch and on fakes G(z), detached so
       that this step cannot change G; 2. with fresh noise, G descends ``g_loss(D(G(z)))``: gradients
       flow through D into G, while D's weights are frozen (their gradients would be thrown away).
    ``y``: labels of a conditional GAN (``G(z, y)``, ``D(x, y)``). ``update_g=False`` does step 1 only.
    Returns the losses and D's logits on the batch (``loss_d``, ``loss_g``, ``real_logits``, ``fake_logits``).
    """
    gen = (lambda z: G(z)) if y is None else (lambda z: G(z, y))
    disc = (lambda x: D(x)) if y is None else (lambda x: D(x, y))
    fake = gen(z).detach()
    real_logits, fake_logits = disc(x_real), disc(fake)
    loss_d = d_loss(real_logits, fake_logits)
    if d_penalty is not None:
        loss_d = loss_d + d_penalty(D, x_real, fake, y)
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        with frozen(D):
            loss_g = g_loss(disc(gen(torch.randn_like(z))))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
    return {"loss_d": loss_d, "loss_g": loss_g, "real_logits": real_logits, "fake_logits": fake_logits}


def batch_sampler(*tensors: torch.Tensor, seed: int = 0) -> Callable[[int], torch.Tensor | tuple[torch.Tensor, ...]]:
    """``sample(B)`` draws B random rows (with replacement) of ``tensors``: the ``sample_real`` of :func:`train_gan`."""
    g = torch.Generator().manual_seed(seed)

    def sample(batch_size: int):
        idx = torch.randint(len(tensors[0]), (batch_size,), generator=g)
        return tensors[0][idx] if len(tensors) == 1 else tuple(t[idx] for t in tensors)

    return sample


def train_gan(
    G: torch.nn.Module,
    D: torch.nn.Module,
    sample_real: Callable[[int], torch.Tensor | tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    d_steps: int = 1,
    lr_g: float = 2e-4,
    lr_d: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    batch_size: int = 64,
    device: torch.device | str | None = None,
    d_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = gan_d_loss,
    g_loss: Callable[[torch.Tensor], torch.Tensor] = gan_g_loss,
    d_penalty: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] | None = None,
    step: Callable[..., dict] = gan_step,
    callback: Callable[[int, torch.nn.Module, torch.nn.Module], None] | None = None,
    max_seconds: float | None = None,
    desc: str = "GAN",
) -> dict[str, list[float]]:
    """Alternating GAN training with Adam for both players: ``steps`` iterations of :func:`gan_step`
    (``step`` replaces it with your own, called as ``step(G, D, opt_g, opt_d, x_real, z, **kw)`` with only the keywords
    among ``y``, ``d_loss``, ``g_loss``, ``d_penalty``, ``update_g`` that it declares), each with ``d_steps`` D updates.

    ``sample_real(B)`` returns ``x: (B, ...)`` or ``(x, y)`` for a conditional GAN, which then
    calls ``G(z, y)`` and ``D(x, y)`` (fakes get the same labels as the real batch). ``G`` needs a
    ``latent_dim``. The losses are pluggable (WGAN: critic and generator losses on scores).
    ``callback(step, G, D)`` runs after every iteration (e.g. to save snapshots every N steps).
    Stops after ``steps`` iterations or ``max_seconds`` of wall time.

    Returns ``{"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"}`` lists, one entry per
    iteration; ``d_real``/``d_fake`` are the mean of sigmoid(D) on the last real/fake batch.
    """
    device = resolve_device(device, G)
    G.to(device, memory_format=conv_format(device)).train()
    D.to(device, memory_format=conv_format(device)).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    losses = dict(d_loss=d_loss, g_loss=g_loss, d_penalty=d_penalty)
    takes = _keywords(step, ("y", "d_loss", "g_loss", "d_penalty", "update_g"))
    needed = {"d_penalty": d_penalty is not None, "update_g": d_steps > 1, "d_loss": d_loss is not gan_d_loss, "g_loss": g_loss is not gan_g_loss}
    missing = [k for k, used in needed.items() if used and k not in takes]
    if missing:
        raise TypeError(f"train_gan: this training needs {missing}, which step={getattr(step, '__name__', step)!r} does not take")

    def real_batch():
        out = sample_real(batch_size)
        x, y = out if isinstance(out, (tuple, list)) else (out, None)
        return x.to(device), (y.to(device) if y is not None else None)

    def iteration(it: int, _) -> dict[str, float]:
        for k in range(d_steps):  # the last D update comes with the G update
            x, y = real_batch()
            if y is not None and "y" not in takes:
                raise TypeError(f"train_gan: the real batches have labels (a conditional GAN), but step={getattr(step, '__name__', step)!r} takes no y")
            given = dict(y=y, update_g=k == d_steps - 1, **losses)
            out = step(G, D, opt_g, opt_d, x, torch.randn(len(x), G.latent_dim, device=device), **{k: v for k, v in given.items() if k in takes})
        return {"d_loss": out["loss_d"].item(), "g_loss": out["loss_g"].item(),
                "d_real": torch.sigmoid(out["real_logits"].detach().float()).mean().item(),
                "d_fake": torch.sigmoid(out["fake_logits"].detach().float()).mean().item()}

    return run_steps(iteration, range(steps), modules=[G, D], desc=desc, steps=steps, max_seconds=max_seconds, watch=("d_loss", "g_loss"),
                     callback=None if callback is None else (lambda it: callback(it, G, D)))


def _keywords(fn: Callable, names: Sequence[str]) -> set[str]:
    """Which of ``names`` ``fn`` can take as keywords: all of them if it has ``**kwargs``."""
    params = inspect.signature(fn).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return set(names)
    return {p.name for p in params if p.name in names and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def toy_gan(
    method: str, real: torch.Tensor, *, steps: int, seed: int = 0, lam: float = 0.1, batch_size: int = 128, lr: float = 1e-3,
    critic_loss: Callable = critic_loss, gradient_penalty: Callable = gradient_penalty, log_every: int = 50,
    step: Callable[..., dict] | None = None, n_critic: int = 5, device: torch.device | str | None = None, desc: str | None = None,
) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    """One GAN on 2D points ``real: (N, 2)``, with the MLP2D nets of notebook 04 and :func:`train_gan`.

    ``method="gan"``: the non-saturating GAN, one D step per G step. ``method="wgan-gp"``: a critic,
    5 critic steps per G step, ``lam`` * gradient penalty, Adam betas (0.5, 0.9) (Gulrajani et al., 2017).
    Same G, same D/critic architecture, same batch size and number of G steps for both.
    Every ``log_every`` steps the history gets ``w_step`` and ``w_estimate`` = E[f(x)] - E[f(G(z))]
    on a fresh batch of 1000 (for the vanilla D, on its logits: not an estimate of anything).
    ``step`` (WGAN-GP only): a whole WGAN-GP iteration ``step(G, critic, opt_g, opt_c, x_real, z, *, n_critic, lam)
    -> {"loss_c", "loss_g"}`` (notebook 05's exercise) that takes its ``n_critic`` critic steps itself, on
    ``x_real: (n_critic * batch_size, 2)`` and ``z`` of as many rows; then ``critic_loss`` and ``gradient_penalty`` are unused.
    """
    if method not in ("gan", "wgan-gp"):
        raise ValueError(f"method must be 'gan' or 'wgan-gp', got {method!r}")
    seed_everything(seed)
    G, D = MLP2D(2, 2), MLP2D(2, 1)
    dev = resolve_device(device)
    g = torch.Generator().manual_seed(seed + 1000)
    log: dict[str, list[float]] = defaultdict(list)

    def watch(step: int, G: torch.nn.Module, D: torch.nn.Module) -> None:
        if step % log_every == 0:
            with torch.no_grad():
                x = real[torch.randint(len(real), (1000,), generator=g)].to(dev)
                z = torch.randn(1000, 2, generator=g).to(dev)
                log["w_step"].append(step)
                log["w_estimate"].append((D(x).mean() - D(G(z)).mean()).item())

    common = dict(steps=steps, batch_size=batch_size, lr_g=lr, lr_d=lr, callback=watch, device=dev, desc=desc or method)
    if method == "gan":
        hist = train_gan(G, D, batch_sampler(real, seed=seed), **common)
    elif step is None:
        hist = train_gan(G, D, batch_sampler(real, seed=seed), d_steps=n_critic, betas=(0.5, 0.9), d_loss=critic_loss, g_loss=wgan_g_loss,
                         d_penalty=lambda D, x, fake, y: lam * gradient_penalty(D, x, fake), **common)
    else:
        def wgan_gp_iteration(G, D, opt_g, opt_d, x, z, y=None, **unused) -> dict:
            out = step(G, D, opt_g, opt_d, x, z, n_critic=n_critic, lam=lam)
            nothing = torch.zeros(1, device=x.device)  # a critic's scores are not logits: no D(x) to record
            return {"loss_d": out["loss_c"], "loss_g": out["loss_g"], "real_logits": nothing, "fake_logits": nothing}

        common["batch_size"] = n_critic * batch_size  # one draw holds the real batches of all n_critic critic steps
        hist = train_gan(G, D, batch_sampler(real, seed=seed), betas=(0.5, 0.9), step=wgan_gp_iteration, **common)
        hist = {k: v for k, v in hist.items() if k not in ("d_real", "d_fake")}
    return G, {**hist, **log}


def train_conditional_gan(
    G: torch.nn.Module, D: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, schedule: list[tuple[float, int]],
    batch_size: int = 64, seed: int = 0, callback: Callable | None = None, device: torch.device | str | None = None,
) -> dict[str, list[float]]:
    """:func:`train_gan` on labelled data ``(x, y)`` for ``G(z, y)``, ``D(x, y)``, in phases of falling learning rate.

    ``schedule``: ``[(lr, steps), ...]``, e.g. ``[(8e-4, 2000), (2e-4, 1000)]``: a high rate learns the
    conditioning fast, lower ones then settle the game (a fixed high rate keeps it oscillating).
    ``callback(step, G, D)`` gets the step counted across phases. Returns the joined history.
    """
    device = resolve_device(device, G)
    sample, history, done = batch_sampler(x, y, seed=seed), defaultdict(list), 0
    for lr, steps in schedule:
        cb = None if callback is None else (lambda step, G, D, off=done: callback(off + step, G, D))
        hist = train_gan(G, D, sample, steps=steps, batch_size=batch_size, lr_g=lr, lr_d=lr, callback=cb, device=device,
                         desc=f"conditional GAN, lr {lr:g}")
        for k, v in hist.items():
            history[k] += [done + s for s in v] if k == "step" else v
        done += steps
    return dict(history)


def train_cyclegan(
    G_AB: torch.nn.Module, G_BA: torch.nn.Module, D_A: torch.nn.Module, D_B: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, *,
    steps: int, cycle_loss: Callable = cycle_l1, lam_cycle: float = 10.0, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    max_seconds: float | None = None, device: torch.device | str | None = None, desc: str = "CycleGAN",
    step: Callable[..., dict] | None = None, lam_id: float = 0.0,
) -> dict[str, list[float]]:
    """CycleGAN (Zhu et al., 2017) on two unpaired image sets ``a: (N, cA, H, W)``, ``b: (M, cB, H, W)`` in [0, 1].

    Least-squares GAN losses as in the paper. Per step the generators minimise
    ``(D_B(G_AB(a)) - 1)^2 + (D_A(G_BA(b)) - 1)^2 + lam_cycle * cycle_loss(G_AB, G_BA, a, b)``, then each
    discriminator minimises ``((D(real) - 1)^2 + D(fake)^2) / 2`` on the detached translations.
    Batches of a and b are drawn independently: the model never sees which b belongs to which a.
    ``step`` replaces the generators' half with your own ``step(G_AB, G_BA, D_A, D_B, opt_g, a, b, lam_cyc=, lam_id=)``
    returning ``{"loss_g", "adv", "cycle", "identity"}`` (the discriminators then judge fresh translations).
    Returns ``{"step", "g_adv", "cycle", "d_loss", "seconds"}`` lists, one entry per step.
    """
    gens, discs = [G_AB, G_BA], [D_A, D_B]
    device = resolve_device(device, G_AB)
    for m in gens + discs:
        m.to(device)
    opt_g = torch.optim.Adam([p for m in gens for p in m.parameters()], lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([p for m in discs for p in m.parameters()], lr=lr, betas=(0.5, 0.999))
    sample_a, sample_b = batch_sampler(a, seed=seed), batch_sampler(b, seed=seed + 1)

    def iteration(it: int, _) -> dict[str, float]:
        real_a, real_b = sample_a(batch_size).to(device), sample_b(batch_size).to(device)
        if step is not None:
            out = step(G_AB, G_BA, D_A, D_B, opt_g, real_a, real_b, lam_cyc=lam_cycle, lam_id=lam_id)
            adv, cyc = out["adv"], out["cycle"]
            with torch.no_grad():
                fake_b, fake_a = G_AB(real_a), G_BA(real_b)
        else:
            fake_b, fake_a = G_AB(real_a), G_BA(real_b)
            adv = least_squares(D_B(fake_b), 1.0) + least_squares(D_A(fake_a), 1.0)
            cyc = cycle_loss(G_AB, G_BA, real_a, real_b)
            opt_g.zero_grad(set_to_none=True)
            (adv + lam_cycle * cyc).backward()
            opt_g.step()
        loss_d = 0.5 * (least_squares(D_A(real_a), 1.0) + least_squares(D_A(fake_a.detach()), 0.0)
                        + least_squares(D_B(real_b), 1.0) + least_squares(D_B(fake_b.detach()), 0.0))
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        return {"g_adv": float(adv), "cycle": float(cyc), "d_loss": loss_d.item()}

    return run_steps(iteration, range(steps), modules=gens + discs, desc=desc, steps=steps, max_seconds=max_seconds,
                     watch=("g_adv", "cycle", "d_loss"))
