"""Training loops, and only loops: the generic :func:`fit`, VAEs, GANs (Algorithm 1 and its variants),
CycleGAN, diffusion models, M2 and the evaluation classifier. Losses live in :mod:`labsupport.losses`, devices and
seeds in :mod:`labsupport.config`, fitted-in-closed-form models (the semi-supervised EM) in :mod:`labsupport.models`.

Each idea is written once: :func:`run_steps` is the step loop of every trainer (time budget, progress bar and
history, the NaN guard, eval mode at the end), :func:`cosine_decay` their learning-rate schedule and
:func:`weight_average` their exponential moving average of the weights (torch's ``AveragedModel``).

Every loop follows one device rule (:func:`labsupport.config.resolve_device`): ``device=None`` means
the model's device, a string goes through ``get_device``; the models are moved there once, at the start.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import math
import time
from collections import defaultdict
from typing import Callable, Iterable, Iterator, Sequence

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from .config import resolve_device, seed_everything
from .data import TensorLoader, binarize, mnist_tensors
from .diffusion import Schedule, simple_loss, to_signal
from .losses import critic_loss, cycle_l1, gan_d_loss, gan_g_loss, gradient_penalty, least_squares, vae_objective, wgan_g_loss
from .metrics import accuracy
from .models import MLP2D, DigitClassifier


class Progress:
    """A progress bar that tells the truth about what bounds the run.

    Counted in steps when only ``steps`` bound it; when a time budget ``seconds`` is given, the bar
    shows elapsed / budgeted seconds (the step count goes in the postfix), never a made-up step total.
    """

    def __init__(self, desc: str, steps: int | None = None, seconds: float | None = None):
        self.by_time = seconds is not None
        self.start, self.steps, self.seconds = time.perf_counter(), steps, seconds
        if self.by_time:
            fmt = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]"
            self.bar = tqdm(total=float(seconds), desc=desc, bar_format=fmt, mininterval=0.5, leave=False)
        else:
            self.bar = tqdm(total=steps, desc=desc, unit="step", mininterval=0.5, leave=False)
        self.step = 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, **postfix) -> None:
        """One more step done; ``postfix`` numbers are shown beside the bar."""
        self.step += 1
        if self.by_time:
            self.bar.update(min(self.elapsed(), self.seconds) - self.bar.n)
            postfix = {"step": self.step if self.steps is None or self.steps > 10**5 else f"{self.step}/{self.steps}", **postfix}
        else:
            self.bar.update(1)
        if postfix and self.step % 20 == 1:
            self.bar.set_postfix(postfix, refresh=False)

    def done(self) -> bool:
        """Whether the time budget is used up."""
        return self.by_time and self.elapsed() >= self.seconds

    def record(self, history: dict[str, list[float]], postfix: dict[str, str] | None = None, **values: float) -> bool:
        """Append ``values`` and the elapsed seconds to ``history`` (one list per key), count the step
        (``postfix`` shown beside the bar); True when the time budget is used up."""
        for k, v in {**values, "seconds": self.elapsed()}.items():
            history[k].append(v)
        self.update(**(postfix or {}))
        return self.done()

    def close(self) -> None:
        self.bar.close()


def _to(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


def run_steps(
    step: Callable[[int, object], dict[str, float]], inputs: Iterable, *, modules: Sequence[torch.nn.Module], desc: str,
    steps: int | None = None, max_seconds: float | None = None, watch: Sequence[str] = ("loss",),
    callback: Callable[[int], None] | None = None,
) -> dict[str, list[float]]:
    """The step loop of every trainer here: ``step(i, item)`` for each ``item`` of ``inputs``, ``i`` counting from 1.

    ``step`` does one optimisation step and returns the numbers to log (floats); those named in ``watch`` must be
    finite, or the run stops with a :class:`FloatingPointError` (the one NaN guard; a step that can see its loss
    before updating returns it without updating, so the weights stay finite). ``callback(i)`` runs after
    every step. Stops when ``inputs`` run out or after ``max_seconds`` of wall time (checked after the callback:
    its time counts). ``modules`` are in train mode during the loop and in eval mode after it, even on an error.
    ``steps`` (the expected count, if known) only sizes the progress bar.

    Returns ``{"step": [...], <logged names>: [...], "seconds": [...]}``, one entry per step.
    """
    history: dict[str, list[float]] = defaultdict(list)
    for m in modules:
        m.train()
    bar = Progress(desc, steps=steps, seconds=max_seconds)
    try:
        for i, item in enumerate(inputs, start=1):
            values = step(i, item)
            for name in watch:
                if not math.isfinite(values[name]):
                    raise FloatingPointError(f"{name} became {values[name]} at step {i}: lower the learning rate")
            bar.record(history, postfix={name: f"{values[name]:.4g}" for name in watch}, step=i, **values)
            if callback is not None:
                callback(i)
            if bar.done():
                break
    finally:
        bar.close()
        for m in modules:
            m.eval()
    return dict(history)


def cosine_decay(optimizer: torch.optim.Optimizer, *, steps: int | None = None, seconds: float | None = None,
                 warmup: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """torch's ``LambdaLR`` taking each learning rate along a half cosine to 0 by the end of the run, after a linear
    warm-up over the first ``warmup`` steps (none by default; the warm-up multiplies the cosine).

    The run's progress is the larger of ``step / steps`` and ``elapsed / seconds`` (either may be None), so a run
    bounded by a time budget decays by the clock: ``CosineAnnealingLR`` counts steps only, and such a run has no
    step total. Step it after every optimizer step (:func:`fit` does).
    """
    start = time.perf_counter()

    def factor(step: int) -> float:
        done = max(step / steps if steps else 0.0, (time.perf_counter() - start) / seconds if seconds else 0.0)
        rise = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return rise * 0.5 * (1 + math.cos(math.pi * min(1.0, done)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def weight_average(model: torch.nn.Module, decay: float, device: torch.device | str | None = None) -> AveragedModel:
    """An exponential moving average of ``model``'s weights: torch's ``AveragedModel`` with ``get_ema_multi_avg_fn``.

    Call ``update_parameters(model)`` after every step: the first call copies the weights, the n-th one after it
    averages with decay ``min(decay, (1 + n) / (10 + n))``, a warm-up that keeps the average from clinging to
    where it started. Buffers are copied from ``model`` (batch-norm statistics belong to the raw weights: recompute
    them for the average with ``torch.optim.swa_utils.update_bn``). ``.module`` is the averaged network.
    """

    def ema(averaged: list[torch.Tensor], current: list[torch.Tensor], n: torch.Tensor) -> None:
        n = int(n)
        get_ema_multi_avg_fn(min(decay, (1 + n) / (10 + n)))(averaged, current, n)

    return AveragedModel(model, device=device, multi_avg_fn=ema)


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
    callback: Callable[[int, torch.nn.Module], None] | None = None,
    desc: str = "training",
) -> dict[str, list[float]]:
    """Train ``model`` by minimising ``loss_fn(model, batch)`` over ``loader`` and return the history.

    ``loss_fn`` returns a scalar loss, or ``(loss, {"name": value, ...})`` to log more numbers.
    ``scheduler`` (if any) steps after every optimizer step. Batches are moved to the device
    (tensors or tuples of tensors). Stops after ``epochs``, or earlier at ``max_steps`` optimizer
    steps or ``max_seconds`` of wall time. On CUDA the forward pass runs in bfloat16 autocast
    (``amp``), which needs no loss scaling. ``callback(step, model)`` runs after every optimizer step.

    Returns ``{"step": [...], "loss": [...], "seconds": [...], <logged names>: [...]}``, one entry per step.
    """
    device = resolve_device(device, model)
    model.to(device)
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    use_amp = amp and device.type == "cuda"
    total = epochs * len(loader) if hasattr(loader, "__len__") else None
    if max_steps is not None:
        total = max_steps if total is None else min(total, max_steps)

    def step(i: int, batch) -> dict[str, float]:
        batch = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            out = loss_fn(model, batch)
        loss, logs = out if isinstance(out, tuple) else (out, {})
        value = loss.item()
        if not math.isfinite(value):
            return {"loss": value}  # no step on a NaN: the weights stay as they were, and run_steps stops the run
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": value, **{k: float(v) for k, v in logs.items()}}

    batches = itertools.islice((batch for _ in range(epochs) for batch in loader), max_steps)
    return run_steps(step, batches, modules=[model], desc=desc, steps=total, max_seconds=max_seconds,
                     callback=None if callback is None else (lambda i: callback(i, model)))


# --- VAEs --------------------------------------------------------------------------------------------


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
    seed: int | None = None,
    lr_decay: bool = False,
    batch_loss: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, list[float]]:
    """Train ``vae`` on dynamically binarized ``x_train: (N, 1, 28, 28) in [0, 1]`` by minimising the negative ELBO.

    Each batch is re-binarized (:func:`labsupport.data.binarize`), so the model never sees the same
    draw twice. Stops after ``epochs`` (default 10 when ``max_seconds`` is not given either) or after
    ``max_seconds`` of wall time, whichever comes first. ``batch_loss`` optionally replaces the built-in
    objective (:func:`labsupport.losses.vae_objective` with ``beta``) by your own ``vae_loss(model, x) -> scalar``
    (encode, sample, decode and score one batch; put beta inside it, e.g. with ``functools.partial``;
    ``beta`` must then stay 1). ``lr_decay`` lowers the learning rate
    along a cosine to 0 by the end of the run (by steps, or by wall time under ``max_seconds``): the
    last epochs then fine-tune instead of bouncing around.

    Returns the :func:`fit` history, with ``rec`` and ``kl`` per step when the built-in loss is used.
    """
    if epochs is None:
        epochs = 10 if max_seconds is None else 10**6
    if batch_loss is not None and beta != 1.0:
        raise ValueError("beta only applies to the built-in loss: put beta inside your own `batch_loss` instead")
    if not (isinstance(x_train, torch.Tensor) and x_train.dim() == 4 and x_train.shape[1:] == (1, 28, 28)):
        raise ValueError(f"x_train should be a tensor (N, 1, 28, 28) in [0, 1], got {getattr(x_train, 'shape', type(x_train))}")
    if x_train.min() < 0 or x_train.max() > 1:
        raise ValueError("x_train should hold grey levels in [0, 1] (they are the probabilities of the binarization)")
    loader = TensorLoader(x_train, batch_size=batch_size, transform=binarize, seed=seed)

    def loss_fn(model: torch.nn.Module, xb: torch.Tensor):
        return vae_objective(model, xb, beta) if batch_loss is None else batch_loss(model, xb)

    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    total = epochs * len(loader) if epochs < 10**6 else None
    scheduler = cosine_decay(optimizer, steps=total, seconds=max_seconds) if lr_decay else None
    return fit(vae, loss_fn, loader, epochs=epochs, max_seconds=max_seconds, optimizer=optimizer, scheduler=scheduler,
               device=device, desc=desc)


# --- diffusion models ----------------------------------------------------------------------------


def _conv_format(device: torch.device) -> torch.memory_format:
    """On the CPU, oneDNN's convolutions are faster on channels-last weights (2 cores: a DCGAN step 15 -> 20
    steps/s, notebook 08's U-Net at batch 32 16.5 -> 18.3); only 4D weights change, so MLPs are untouched."""
    return torch.channels_last if device.type == "cpu" else torch.preserve_format


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
    model.to(device, memory_format=_conv_format(device))
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


# --- the evaluation classifier --------------------------------------------------------------------


def train_classifier(
    epochs: int = 3, n_train: int | None = None, seed: int = 0, device: torch.device | str | None = None, root=None,
    n_test: int | None = None,
) -> tuple[DigitClassifier, dict]:
    """Train the evaluation classifier on MNIST (small random shifts as augmentation).

    ``n_train`` / ``n_test``: the first training / test digits used (default: all 60 000 / 10 000).
    Returns the model (in eval mode) and ``{"test_accuracy": ..., "epochs": ..., "n_train": ..., "n_test": ...}``.
    """
    seed_everything(seed)
    x, y = mnist_tensors(train=True, n=n_train, root=root)
    model = DigitClassifier().to(resolve_device(device))

    def shift(xb: torch.Tensor) -> torch.Tensor:  # up to 2 pixels: cheap, and makes it robust to off-centre samples
        dx, dy = torch.randint(-2, 3, (2,)).tolist()
        return torch.roll(xb, shifts=(dx, dy), dims=(2, 3))

    loader = TensorLoader(x, y, batch_size=128, transform=shift, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * len(loader))

    def loss_fn(m, batch):
        xb, yb = batch
        return torch.nn.functional.cross_entropy(m(xb), yb)

    fit(model, loss_fn, loader, epochs=epochs, optimizer=opt, scheduler=sched, desc="evaluation classifier")
    xt, yt = mnist_tensors(train=False, n=n_test, root=root)
    return model.eval(), {"test_accuracy": round(accuracy(model, xt, yt), 4), "epochs": epochs, "n_train": len(x), "n_test": len(xt)}


# --- GANs --------------------------------------------------------------------------------------------


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
    G.to(device, memory_format=_conv_format(device)).train()
    D.to(device, memory_format=_conv_format(device)).train()
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


# --- semi-supervised learning (Kingma et al., 2014, M2; notebook 06 and the bench's `semisupervised`) ---------


def train_semisupervised(
    model: torch.nn.Module, x_unlabelled: torch.Tensor, x_labelled: torch.Tensor, y_labelled: torch.Tensor, *,
    steps: int = 1000, batch_size: int = 128, alpha: float = 1.0, lr: float = 3e-3, seed: int = 0,
    max_seconds: float | None = None, device: torch.device | str | None = None, desc: str = "M2",
    unlabelled_std: torch.Tensor | None = None, labelled_std: torch.Tensor | None = None,
) -> dict[str, list[float]]:
    """Train a :class:`labsupport.models.SemiSupervisedVAE` on ``x_unlabelled: (N, D)`` and the few ``x_labelled: (L, D)``, ``y_labelled: (L,)``.

    Per step it minimises ``mean L(x, y)`` over a labelled batch ``+ mean U(x)`` over ``batch_size`` unlabelled rows
    ``+ alpha * mean CE(q(y|x), y)`` over the labelled batch. The labelled rows (all of them when ``L <= batch_size``)
    are in every step: with 100 labels that is the only way the classification term is heard against 60 000 unlabelled
    rows. ``alpha`` weighs the classifier's own supervised loss, as Kingma et al.'s alpha does (their ``0.1 * N`` on
    sums; on these means it is ``0.1 * L``, i.e. 10 for 100 labels; on notebook 06's codes 1 did better than 10, with
    the defaults, which are notebook 06's). The learning rate decays along a cosine to 0.
    A per-class linear decoder starts at the labelled class means (see the code for why).
    ``unlabelled_std: (N, D)``, ``labelled_std: (L, D)`` (optional, both or neither): the spread of each row, as M1's
    ``exp(logvar / 2)``; every step then sees a fresh draw ``x + std * eps`` (Kingma et al. feed M2 samples of M1's
    posterior, not its means), which for the few labelled rows is data augmentation.
    Stops after ``steps`` or ``max_seconds``. Returns ``{"step", "loss", "labelled", "unlabelled", "ce", "seconds"}``, one entry per step.
    """
    device = resolve_device(device, model)
    model.to(device)
    if (unlabelled_std is None) != (labelled_std is None):
        raise ValueError("give both unlabelled_std and labelled_std, or neither")
    x_unlabelled, x_labelled, y_labelled = x_unlabelled.to(device), x_labelled.to(device), y_labelled.to(device)
    if unlabelled_std is not None:
        unlabelled_std, labelled_std = unlabelled_std.to(device), labelled_std.to(device)
    if getattr(model, "linear_decoder", False):
        # start each class's Gaussian at its labelled examples' mean and the data's spread (as EM for a mixture would):
        # from random means the unlabelled term first sorts the data into clusters that need not be the classes
        with torch.no_grad():
            for k in range(model.num_classes):
                model.bias[k] = x_labelled[y_labelled == k].mean(0)
            model.log_scale.copy_(x_unlabelled.var(0).log().expand_as(model.log_scale))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = cosine_decay(opt, steps=steps)  # by steps only, also under max_seconds
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # the reparameterization noise

    def iteration(step: int, _) -> dict[str, float]:
        iu = torch.randint(len(x_unlabelled), (batch_size,), generator=g).to(device)
        il = (torch.randint(len(x_labelled), (batch_size,), generator=g) if len(x_labelled) > batch_size
              else torch.arange(len(x_labelled))).to(device)
        u, xl, yl = x_unlabelled[iu], x_labelled[il], y_labelled[il]
        if unlabelled_std is not None:
            u, xl = u + unlabelled_std[iu] * torch.randn_like(u), xl + labelled_std[il] * torch.randn_like(xl)
        lab = model.labelled_loss(xl, yl).mean()
        unlab = model.unlabelled_loss(u)[0].mean()
        ce = torch.nn.functional.cross_entropy(model.classify(xl), yl)
        loss = lab + unlab + alpha * ce
        if not math.isfinite(loss.item()):
            return {"loss": loss.item()}  # no step on a NaN: the weights stay as they were, and run_steps stops the run
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        return {"loss": loss.item(), "labelled": lab.item(), "unlabelled": unlab.item(), "ce": ce.item()}

    return run_steps(iteration, range(steps), modules=[model], desc=desc, steps=steps, max_seconds=max_seconds)
