"""Training loops, and only loops: the course's one place to import a trainer from.

This module holds the VAE trainer, the evaluation classifier's and M2's (semi-supervised) and re-exports the others,
each in a module of its own job: the shared skeleton (:func:`run_steps`, :func:`cosine_decay`, :func:`weight_average`,
:func:`fit`) from :mod:`labsupport.train_core`, the GANs (Algorithm 1 as :func:`gan_step` + :func:`train_gan`, the toy
GAN and WGAN-GP, cGAN, CycleGAN) from :mod:`labsupport.train_gan`, diffusion from :mod:`labsupport.train_diffusion`.
Losses live in :mod:`labsupport.losses`, devices and seeds in :mod:`labsupport.config`, fitted-in-closed-form models
(the semi-supervised EM) in :mod:`labsupport.models`.

Every loop follows one device rule (:func:`labsupport.config.resolve_device`): ``device=None`` means
the model's device, a string goes through ``get_device``; the models are moved there once, at the start.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from .config import resolve_device, seed_everything
from .data import TensorLoader, binarize, mnist_tensors
from .losses import critic_loss, cycle_l1, gan_d_loss, gan_g_loss, gradient_penalty, least_squares, vae_objective, wgan_g_loss
from .metrics import accuracy
from .models import DigitClassifier
from .train_core import Progress, cosine_decay, fit, run_steps, weight_average
from .train_diffusion import train_diffusion
from .train_gan import batch_sampler, frozen, gan_step, toy_gan, train_conditional_gan, train_cyclegan, train_gan

__all__ = [
    "Progress", "run_steps", "cosine_decay", "weight_average", "fit",  # the skeleton (train_core)
    "train_vae", "train_classifier", "train_semisupervised",  # here
    "frozen", "gan_step", "batch_sampler", "train_gan", "toy_gan", "train_conditional_gan", "train_cyclegan",  # train_gan
    "train_diffusion",  # train_diffusion
    # the losses the GAN trainers take, importable from here as they always were (`from labsupport.train import gan_d_loss`)
    "critic_loss", "cycle_l1", "gan_d_loss", "gan_g_loss", "gradient_penalty", "least_squares", "wgan_g_loss",
]


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
    step: Callable[[torch.nn.Module, torch.optim.Optimizer, torch.Tensor], dict[str, float]] | None = None,
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

    ``step`` replaces the whole optimisation step by your own ``vae_train_step(model, optimizer, x) -> {"loss", "rec",
    "kl", ...}`` (notebook 03's exercise; put beta inside it, as for ``batch_loss``): called on each re-binarized batch,
    on the model's device, with this loop's Adam; it must return floats, all of them logged. No autocast then (your
    step runs as written); the learning-rate decay still follows it.

    Returns the :func:`fit` history, with ``rec`` and ``kl`` per step when the built-in loss or a ``step`` gives them.
    """
    if epochs is None:
        epochs = 10 if max_seconds is None else 10**6
    if batch_loss is not None and step is not None:
        raise ValueError("give train_vae a `batch_loss` or a whole `step`, not both")
    if (batch_loss is not None or step is not None) and beta != 1.0:
        raise ValueError("beta only applies to the built-in loss: put beta inside your own `batch_loss` or `step` instead")
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
    if step is not None:
        return _run_vae_step(vae, step, optimizer, scheduler, loader, epochs=epochs, total=total, max_seconds=max_seconds,
                             device=device, desc=desc)
    return fit(vae, loss_fn, loader, epochs=epochs, max_seconds=max_seconds, optimizer=optimizer, scheduler=scheduler,
               device=device, desc=desc)


def _run_vae_step(vae: torch.nn.Module, step: Callable, optimizer: torch.optim.Optimizer, scheduler, loader: TensorLoader, *,
                  epochs: int, total: int | None, max_seconds: float | None, device, desc: str) -> dict[str, list[float]]:
    """:func:`train_vae`'s loop around a student's whole step: :func:`fit`'s loop, with the step written by the student."""
    device = resolve_device(device, vae)
    vae.to(device)
    name = getattr(step, "__name__", None) or getattr(getattr(step, "func", None), "__name__", "step")

    def iteration(i: int, xb: torch.Tensor) -> dict[str, float]:
        out = step(vae, optimizer, xb.to(device))
        if not isinstance(out, dict) or "loss" not in out:
            raise TypeError(f"train_vae: {name} should return a dict of floats with at least 'loss', got {type(out).__name__}")
        if scheduler is not None:
            scheduler.step()
        return {k: float(v) for k, v in out.items()}

    batches = (xb for _ in range(epochs) for xb in loader)
    return run_steps(iteration, batches, modules=[vae], desc=desc, steps=total, max_seconds=max_seconds)


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
