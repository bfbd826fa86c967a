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
) -> dict[str, list[float]]:
    """Train ``vae`` on dynamically binarized ``x_train: (N, 1, 28, 28) in [0, 1]`` by minimising the negative ELBO.

    Each batch is re-binarized (:func:`labsupport.data.binarize`), so the model never sees the same
    draw twice. Stops after ``epochs`` (default 10 when ``max_seconds`` is not given either) or after
    ``max_seconds`` of wall time, whichever comes first. ``loss`` optionally replaces the built-in
    objective with your own ``negative_elbo(x, x_logits, mu, logvar) -> scalar`` (then ``beta`` must be 1).

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

    return fit(vae, loss_fn, loader, epochs=epochs, max_seconds=max_seconds, lr=lr, device=device, desc=desc)


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
    G.to(device).train()
    D.to(device).train()
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=betas)
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
            # 2. the generator: fresh noise, gradients flow through D (only G's optimizer steps)
            z = torch.randn(len(x), G.latent_dim, device=device)
            loss_g = g_loss(disc(gen(z, y), y))
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
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
        G.eval()
        D.eval()
    return dict(history)

# --- Notebook 05: GAN variants ---

# --- Notebook 06: VAEs vs GANs and uses ---
