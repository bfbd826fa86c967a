"""Device, seeds, threads and one compact training loop with a progress bar."""

from __future__ import annotations

import math
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


def vae_terms(vae: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One reparameterized pass: ``x: (B, 1, 28, 28)`` in {0, 1} -> ``(x_logits, mu, logvar, z)``.

    Works for any VAE with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``.
    """
    mu, logvar = vae.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # z = mu + sigma * eps: gradients reach mu and sigma
    return vae.decode(z), mu, logvar, z


def vae_loss(vae: torch.nn.Module, x: torch.Tensor, beta: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Negative (beta-)ELBO in nats per image, batch mean, and its two terms for the history.

    ``rec`` = Bernoulli NLL summed over pixels, ``kl`` = KL(q(z|x) || N(0, I)) summed over latent dims.
    """
    x_logits, mu, logvar, _ = vae_terms(vae, x)
    rec = torch.nn.functional.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    return (rec + beta * kl).mean(), {"rec": rec.mean().item(), "kl": kl.mean().item()}


def train_vae(
    vae: torch.nn.Module,
    x_train: torch.Tensor,
    *,
    epochs: int | None = None,
    max_seconds: float | None = None,
    beta: float = 1.0,
    batch_size: int = 128,
    lr: float = 1e-3,
    device: torch.device | str | None = None,
    desc: str = "VAE",
    loss: Callable | None = None,
    seed: int | None = None,
    lr_decay: bool = False,
) -> dict[str, list[float]]:
    """Train ``vae`` on dynamically binarized ``x_train: (N, 1, 28, 28) in [0, 1]`` by minimising the negative ELBO.

    Each batch is re-binarized (:func:`labsupport.data.binarize`), so the model never sees the same
    draw twice. Stops after ``epochs`` (default 10 when ``max_seconds`` is not given either) or after
    ``max_seconds`` of wall time, whichever comes first. ``loss`` optionally replaces the built-in
    objective with your own ``negative_elbo(x, x_logits, mu, logvar) -> scalar`` (then ``beta`` must be 1).
    ``lr_decay`` lowers the learning rate along a cosine to 0 by the end of the run (by steps, or by
    wall time under ``max_seconds``): the last epochs then fine-tune instead of bouncing around.

    Returns the :func:`fit` history, with ``rec`` and ``kl`` per step when the built-in loss is used.
    """
    from .data import TensorLoader, binarize

    if epochs is None:
        epochs = 10 if max_seconds is None else 10**6
    if loss is not None and beta != 1.0:
        raise ValueError("beta only applies to the built-in loss: put beta inside your own `loss` instead")
    if not (isinstance(x_train, torch.Tensor) and x_train.dim() == 4 and x_train.shape[1:] == (1, 28, 28)):
        raise ValueError(f"x_train should be a tensor (N, 1, 28, 28) in [0, 1], got {getattr(x_train, 'shape', type(x_train))}")
    if x_train.min() < 0 or x_train.max() > 1:
        raise ValueError("x_train should hold grey levels in [0, 1] (they are the probabilities of the binarization)")
    device = get_device(device) if device is not None else next(vae.parameters()).device
    loader = TensorLoader(x_train, batch_size=batch_size, transform=binarize, seed=seed)

    def loss_fn(model, xb):
        if loss is None:
            return vae_loss(model, xb, beta)
        x_logits, mu, logvar, _ = vae_terms(model, xb)
        return loss(xb, x_logits, mu, logvar)

    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    scheduler = None
    if lr_decay:
        total, start = (epochs * len(loader) if epochs < 10**6 else None), time.perf_counter()

        def cosine(step: int) -> float:  # progress through the run: the larger of the step and time fractions
            done = max(step / total if total else 0.0, (time.perf_counter() - start) / max_seconds if max_seconds else 0.0)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
    return fit(vae, loss_fn, loader, epochs=epochs, max_seconds=max_seconds, optimizer=optimizer, scheduler=scheduler, device=device, desc=desc)


# --- Notebook 04: GANs ---


def gan_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Discriminator loss -E[log D(x)] - E[log(1 - D(G(z)))] from logits ``(B,)`` (stable BCE)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))


def gan_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss -E[log D(G(z))] from logits ``(B,)``: softplus(-l) = -log sigmoid(l)."""
    return torch.nn.functional.softplus(-fake_logits).mean()


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
    callback: Callable[[int, torch.nn.Module, torch.nn.Module], None] | None = None,
    max_seconds: float | None = None,
    desc: str = "GAN",
) -> dict[str, list[float]]:
    """Alternating GAN training (Goodfellow et al. 2014, Algorithm 1) with Adam for both players.

    Each of the ``steps`` iterations:
      1. ``d_steps`` times: draw B real samples and B noise vectors z ~ N(0, I); update D on
         ``d_loss(D(x), D(G(z)))`` (+ ``d_penalty(D, x, G(z), y)`` if given), with G(z) detached;
      2. draw fresh noise and update G on ``g_loss(D(G(z)))``, gradients flowing through D into G.

    ``sample_real(B)`` returns ``x: (B, ...)`` or ``(x, y)`` for a conditional GAN, which then
    calls ``G(z, y)`` and ``D(x, y)`` (fakes get the same labels as the real batch). ``G`` needs a
    ``latent_dim``. The losses are pluggable (WGAN: critic and generator losses on scores).
    ``callback(step, G, D)`` runs after every iteration (e.g. to save snapshots every N steps).
    Stops after ``steps`` iterations or ``max_seconds`` of wall time.

    Returns ``{"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"}`` lists, one entry per
    iteration; ``d_real``/``d_fake`` are the mean of sigmoid(D) on the last real/fake batch.
    """
    device = torch.device(device) if device is not None else next(G.parameters()).device
    # On the CPU, oneDNN's convolutions are faster on channels-last weights (a DCGAN step: 15 -> 20
    # steps/s on 2 cores); this changes only 4D weights, so MLPs are untouched.
    fmt = torch.channels_last if device.type == "cpu" else torch.preserve_format
    G.to(device, memory_format=fmt).train()
    D.to(device, memory_format=fmt).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
    d_params = [p for p in D.parameters() if p.requires_grad]  # the ones the G step freezes and thaws
    history: dict[str, list[float]] = defaultdict(list)

    def real_batch():
        out = sample_real(batch_size)
        x, y = out if isinstance(out, (tuple, list)) else (out, None)
        return x.to(device), (y.to(device) if y is not None else None)

    def gen(z, y):
        return G(z) if y is None else G(z, y)

    def disc(x, y):
        return D(x) if y is None else D(x, y)

    start = time.perf_counter()
    bar = progress(total=steps, desc=desc)
    try:
        for step in range(1, steps + 1):
            for _ in range(d_steps):  # 1. the discriminator ascends its objective (descends d_loss)
                x, y = real_batch()
                fake = gen(torch.randn(len(x), G.latent_dim, device=device), y).detach()
                real_logits, fake_logits = disc(x, y), disc(fake, y)
                loss_d = d_loss(real_logits, fake_logits)
                if d_penalty is not None:
                    loss_d = loss_d + d_penalty(D, x, fake, y)
                opt_d.zero_grad(set_to_none=True)
                loss_d.backward()
                opt_d.step()
            # 2. the generator: fresh noise, gradients flow through D into G; D's weights are frozen
            #    meanwhile, because their gradients would be thrown away (a DCGAN step ~7% faster)
            z = torch.randn(len(x), G.latent_dim, device=device)
            _freeze(d_params, True)
            loss_g = g_loss(disc(gen(z, y), y))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
            _freeze(d_params, False)
            if not (torch.isfinite(loss_d) and torch.isfinite(loss_g)):
                raise FloatingPointError(f"GAN losses became {loss_d.item()}, {loss_g.item()} at step {step}: lower the learning rates")
            history["step"].append(step)
            history["d_loss"].append(loss_d.item())
            history["g_loss"].append(loss_g.item())
            history["d_real"].append(torch.sigmoid(real_logits.detach().float()).mean().item())
            history["d_fake"].append(torch.sigmoid(fake_logits.detach().float()).mean().item())
            history["seconds"].append(time.perf_counter() - start)
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(d=f"{loss_d.item():.3f}", g=f"{loss_g.item():.3f}", refresh=False)
            if callback is not None:
                callback(step, G, D)
            if max_seconds is not None and history["seconds"][-1] >= max_seconds:
                break
    finally:
        bar.close()
        _freeze(d_params, False)  # also after an error inside the G step
        G.eval()
        D.eval()
    return dict(history)


def _freeze(params: list[torch.nn.Parameter], frozen: bool) -> None:
    for p in params:
        p.requires_grad_(not frozen)


class ModeTracker:
    """``callback`` for :func:`train_gan` on a 2D mixture: every ``every`` steps, draw ``n`` samples from
    fixed noise, measure :func:`labsupport.metrics.mode_coverage` and keep the samples as a snapshot.

    After training: ``steps``, ``modes``, ``high_quality`` (lists, one entry per measurement) and
    ``snapshots`` (``{step: (n, 2) samples}``).
    """

    def __init__(self, centers: torch.Tensor, std: float, every: int = 100, n: int = 2500, seed: int = 0):
        self.centers, self.std, self.every, self.n, self.seed = centers, std, every, n, seed
        self.z: torch.Tensor | None = None
        self.steps: list[int] = []
        self.modes: list[int] = []
        self.high_quality: list[float] = []
        self.snapshots: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, step: int, G: torch.nn.Module, D: torch.nn.Module | None = None) -> None:
        from .metrics import mode_coverage

        if step % self.every:
            return
        dev = next(G.parameters()).device
        if self.z is None:
            self.z = torch.randn(self.n, G.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        samples = G(self.z.to(dev)).float().cpu()
        m = mode_coverage(samples, self.centers, self.std)
        self.steps.append(step)
        self.modes.append(m.modes)
        self.high_quality.append(m.high_quality)
        self.snapshots[step] = samples

# --- Notebook 05: GAN variants ---


def critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """WGAN critic loss E[f(G(z))] - E[f(x)] from scores ``(B,)`` (the critic minimises it)."""
    return fake_scores.mean() - real_scores.mean()


def gradient_penalty(critic: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP penalty: mean of (||grad critic(x_hat)||_2 - 1)^2 at x_hat = eps*real + (1-eps)*fake, one eps ~ U[0,1] per example."""
    eps = torch.rand(len(real), *[1] * (real.dim() - 1), device=real.device)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def toy_gan(
    method: str, real: torch.Tensor, *, steps: int, seed: int = 0, lam: float = 0.1, batch_size: int = 128, lr: float = 1e-3,
    critic_loss: Callable = critic_loss, gradient_penalty: Callable = gradient_penalty, log_every: int = 50, desc: str | None = None,
) -> tuple[torch.nn.Module, dict[str, list[float]]]:
    """One GAN on 2D points ``real: (N, 2)``, with the MLP2D nets of notebook 04 and :func:`train_gan`.

    ``method="gan"``: the non-saturating GAN, one D step per G step. ``method="wgan-gp"``: a critic,
    5 critic steps per G step, ``lam`` * gradient penalty, Adam betas (0.5, 0.9) (Gulrajani et al., 2017).
    Same G, same D/critic architecture, same batch size and number of G steps for both.
    Every ``log_every`` steps the history gets ``w_step`` and ``w_estimate`` = E[f(x)] - E[f(G(z))]
    on a fresh batch of 1000 (for the vanilla D, on its logits: not an estimate of anything).
    """
    from .models import MLP2D

    if method not in ("gan", "wgan-gp"):
        raise ValueError(f"method must be 'gan' or 'wgan-gp', got {method!r}")
    seed_everything(seed)
    G, D = MLP2D(2, 2), MLP2D(2, 1)
    g = torch.Generator().manual_seed(seed + 1000)
    log: dict[str, list[float]] = defaultdict(list)

    def watch(step: int, G: torch.nn.Module, D: torch.nn.Module) -> None:
        if step % log_every == 0:
            with torch.no_grad():
                x = real[torch.randint(len(real), (1000,), generator=g)]
                log["w_step"].append(step)
                log["w_estimate"].append((D(x).mean() - D(G(torch.randn(1000, 2, generator=g))).mean()).item())

    common = dict(steps=steps, batch_size=batch_size, lr_g=lr, lr_d=lr, callback=watch, device="cpu", desc=desc or method)
    if method == "gan":
        hist = train_gan(G, D, batch_sampler(real, seed=seed), **common)
    else:
        hist = train_gan(G, D, batch_sampler(real, seed=seed), d_steps=5, betas=(0.5, 0.9), d_loss=critic_loss,
                         g_loss=lambda fake_scores: -fake_scores.mean(), d_penalty=lambda D, x, fake, y: lam * gradient_penalty(D, x, fake), **common)
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
    sample, history, done = batch_sampler(x, y, seed=seed), defaultdict(list), 0
    for phase, (lr, steps) in enumerate(schedule):
        cb = None if callback is None else (lambda step, G, D, off=done: callback(off + step, G, D))
        hist = train_gan(G, D, sample, steps=steps, batch_size=batch_size, lr_g=lr, lr_d=lr, callback=cb, device=device,
                         desc=f"conditional GAN, lr {lr:g}")
        for k, v in hist.items():
            history[k] += [done + s for s in v] if k == "step" else v
        done += steps
    return dict(history)


def train_cyclegan(
    G_AB: torch.nn.Module, G_BA: torch.nn.Module, D_A: torch.nn.Module, D_B: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, *,
    steps: int, cycle_loss: Callable, lam_cycle: float = 10.0, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    max_seconds: float | None = None, desc: str = "CycleGAN",
) -> dict[str, list[float]]:
    """CycleGAN (Zhu et al., 2017) on two unpaired image sets ``a: (N, cA, H, W)``, ``b: (M, cB, H, W)`` in [0, 1].

    Least-squares GAN losses as in the paper. Per step the generators minimise
    ``(D_B(G_AB(a)) - 1)^2 + (D_A(G_BA(b)) - 1)^2 + lam_cycle * cycle_loss(G_AB, G_BA, a, b)``, then each
    discriminator minimises ``((D(real) - 1)^2 + D(fake)^2) / 2`` on the detached translations.
    Batches of a and b are drawn independently: the model never sees which b belongs to which a.
    Returns ``{"step", "g_adv", "cycle", "d_loss", "seconds"}`` lists, one entry per step.
    """
    mse = lambda scores, target: (scores - target).pow(2).mean()
    gens, discs = [G_AB, G_BA], [D_A, D_B]
    opt_g = torch.optim.Adam([p for m in gens for p in m.parameters()], lr=lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam([p for m in discs for p in m.parameters()], lr=lr, betas=(0.5, 0.999))
    sample_a, sample_b = batch_sampler(a, seed=seed), batch_sampler(b, seed=seed + 1)
    for m in gens + discs:
        m.train()
    history: dict[str, list[float]] = defaultdict(list)
    start = time.perf_counter()
    bar = progress(total=steps, desc=desc)
    try:
        for step in range(1, steps + 1):
            real_a, real_b = sample_a(batch_size), sample_b(batch_size)
            fake_b, fake_a = G_AB(real_a), G_BA(real_b)
            adv = mse(D_B(fake_b), 1.0) + mse(D_A(fake_a), 1.0)
            cyc = cycle_loss(G_AB, G_BA, real_a, real_b)
            opt_g.zero_grad(set_to_none=True)
            (adv + lam_cycle * cyc).backward()
            opt_g.step()
            loss_d = 0.5 * (mse(D_A(real_a), 1.0) + mse(D_A(fake_a.detach()), 0.0) + mse(D_B(real_b), 1.0) + mse(D_B(fake_b.detach()), 0.0))
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            for k, v in (("step", step), ("g_adv", adv.item()), ("cycle", cyc.item()), ("d_loss", loss_d.item()), ("seconds", time.perf_counter() - start)):
                history[k].append(v)
            bar.update(1)
            if max_seconds is not None and history["seconds"][-1] >= max_seconds:
                break
    finally:
        bar.close()
        for m in gens + discs:
            m.eval()
    return dict(history)

# --- Notebook 06: VAEs vs GANs and uses ---
