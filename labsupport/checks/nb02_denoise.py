"""Notebook 02's denoising autoencoder: its training step ``denoising_step(model, optimizer, x, std)``.

The check runs in stages of partial credit: ``noise`` (what the model is fed is the clean batch plus fresh Gaussian
noise of the given standard deviation per pixel, clipped to [0, 1], with ``x`` left unchanged), ``step`` (one optimizer
step with this call's gradients only, of the squared error against the *clean* batch, and the loss returned as a
float), then the whole check: a small autoencoder trained with the student's step on made-up digits (``fakes.discs``)
denoises new noisy ones about as well as the same network trained with the reference step.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, describe, named, passed, ratio_hint, stage
from .fakes import StepSGD, TinyAE, discs, flat, grads, ref_grad


def _twin(params: torch.Tensor) -> TinyAE:
    """A private, unwatched copy of the tiny autoencoder with the flat weights ``params``."""
    twin = TinyAE(0)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params.float(), twin.parameters())
    return twin


class _WatchedAE(TinyAE):
    """The tiny autoencoder, noting every input it is called on and the gradient that reaches each of its outputs."""

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.inputs: list[torch.Tensor] = []
        self.out_grads: dict[int, torch.Tensor] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index = len(self.inputs)
        self.inputs.append(x.detach().clone())
        out = super().forward(x)
        if out.requires_grad:
            out.register_hook(lambda g: self.out_grads.__setitem__(index, g.detach().clone()))
        return out


def _denoise_loss(model: torch.nn.Module, noisy: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    return (clean - model(noisy)).pow(2).flatten(1).sum(1).mean()


def _reference_denoising_step(model: torch.nn.Module, optimizer, x: torch.Tensor, std: float) -> float:
    noisy = (x + std * torch.randn_like(x)).clamp(0, 1)
    loss = _denoise_loss(model, noisy, x)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.item()


def _watched_call(fn: Callable, x: torch.Tensor, std: float, model: _WatchedAE, opt: StepSGD) -> dict:
    """One call of the student's step, watched: what the model saw, the gradients at each optimizer step, the result."""
    seen: list[torch.Tensor] = []
    opt.on_step = lambda: seen.append(grads(model))
    model.inputs, model.out_grads = [], {}
    before = flat(model.parameters())
    kept = Unchanged(x)
    try:
        out = call(fn, model, opt, x, std)
    finally:
        opt.on_step = None
    kept.verify("denoising_step changed `x` in place (an in-place `+=`, `add_` or `clamp_` on it?). `x` is the clean batch, the target: "
                "corrupt a new tensor and leave `x` as it was.")
    if not model.inputs:
        raise CheckFailed("denoising_step never called the model: reconstruct the noisy batch with model(noisy).")
    return {"out": out, "input": model.inputs[0], "out_grad": model.out_grads.get(0), "steps": seen, "before": before,
            "cleared_after": all(p.grad is None or not p.grad.any() for p in model.parameters())}


def _noise_checks(x: torch.Tensor, noisy: torch.Tensor, std: float, n_grey: int) -> None:
    """The model's input must be x plus fresh N(0, std^2) noise per pixel, clipped to [0, 1]."""
    if torch.equal(noisy, x):
        raise CheckFailed("The model was given the clean batch `x` itself: corrupt it first (Gaussian noise of standard deviation `std`), "
                          "feed the model the noisy copy, and compare its output with the clean `x`.")
    if noisy.shape != x.shape:
        raise CheckFailed(f"The model was given a tensor of shape {tuple(noisy.shape)}; the noisy batch has the shape of `x`, {tuple(x.shape)}.")
    if noisy.min() < 0 or noisy.max() > 1:
        raise CheckFailed(f"The noisy images the model got range from {noisy.min().item():.2f} to {noisy.max().item():.2f}: the noise is not "
                          "clipped. Clip the noisy batch back to [0, 1], so that it is still an image like the ones the model is asked "
                          "to output (and like the noisy digits it will be shown).")
    noise = (noisy[:n_grey] - x[:n_grey]).double()  # grey images (0.5): clipping is far away at this std
    mean, got = noise.mean().item(), noise.std().item()
    if got < 1e-6:
        raise CheckFailed("The grey images of the batch reached the model unchanged: add noise to every image.")
    if bool((noise.flatten(1).std(1) < 0.2 * got).all()):
        raise CheckFailed("Inside one image every pixel got the same noise: draw independent noise for every pixel (noise of x's full shape).")
    if torch.allclose(noise[0], noise[1]):
        raise CheckFailed("Every image in the batch got the same noise pattern: draw noise of the full batch shape, one pattern per image.")
    if abs(mean) > 0.1 * std:
        raise CheckFailed(f"On grey images the noise averages {mean:+.3f}, not 0: the noise must be centred (a standard normal draw, not a "
                          "uniform one on [0, 1]).")
    if abs(got - std**2) < 0.2 * std**2:
        raise CheckFailed(f"With std = {std} the noise has standard deviation {got:.4f} = std squared: `std` is a standard deviation, "
                          "not a variance. Scale standard normal noise by std itself.")
    if abs(got - std) > 0.1 * std:
        raise CheckFailed(f"With std = {std} the noise has standard deviation {got:.4f}: scale standard normal noise by `std`.")


def _step_checks(run: dict, x: torch.Tensor, model: _WatchedAE, leftover: torch.Tensor | None, when: str) -> None:
    """One optimizer step with this call's gradients only, of the squared error against the clean x, before the step."""
    noisy, steps = run["input"], run["steps"]
    if not steps:
        if torch.equal(run["before"], flat(model.parameters())):
            raise CheckFailed(f"The model's weights did not change{when}: after loss.backward(), let the optimizer update them (optimizer.step()).")
        raise CheckFailed(f"The weights changed{when}, but not through the optimizer you were given: call optimizer.step().")
    if len(steps) > 1:
        raise CheckFailed(f"optimizer.step() was called {len(steps)} times{when}: one training step is one optimizer step.")
    got = steps[0]
    want = ref_grad(model, run["before"], lambda m: _denoise_loss(m, noisy, x))
    if close(got, want, rtol=1e-3, atol=1e-6):
        return
    if leftover is not None and run["cleared_after"] and close(got, want + leftover, rtol=1e-3, atol=1e-5):
        return  # zero_grad after the step, ready for the next one: right in a loop (the planted gradients were its only leftover)
    if got.abs().max() == 0:
        raise CheckFailed(f"At optimizer.step(){when} every gradient was zero: optimizer.zero_grad() ran after loss.backward() and erased "
                          "them. Order: zero_grad, loss, backward, step.")
    found = leftover is not None and named(got, [
        ("At optimizer.step() the gradients were this step's plus those left from before: PyTorch adds gradients up. "
         "Clear them (optimizer.zero_grad()) before loss.backward().", want + leftover),
        ("At optimizer.step() the gradients were the old ones: call loss.backward() before optimizer.step() (and "
         "optimizer.zero_grad() before both).", leftover),
    ], rtol=1e-3, atol=1e-5)
    if found:
        raise CheckFailed(found)
    if leftover is None:
        raise CheckFailed(f"At optimizer.step(){when} the gradients included an earlier call's: clear the gradients (optimizer.zero_grad()) "
                          "at the start of every step.")
    g_out, out = run["out_grad"], None
    if g_out is not None:
        with torch.no_grad():
            out = _twin(run["before"])(noisy).double()
        g, b = g_out.double(), len(x)
        found = named(g, [
            ("Your loss compares the reconstruction with the *noisy* input. The target is the clean `x`: a denoiser learns to output "
             "the digit without its noise (compared with the noisy copy it would learn to copy the noise).", 2 * (out - noisy) / b),
            ("Your loss is the mean over the pixels too (e.g. F.mse_loss with its default reduction): 784 times smaller than the "
             "course's loss. Sum the squared error over each image's pixels, then average over the batch.", 2 * (out - x) / (b * 784)),
            ("Your loss sums over the batch instead of averaging: sum over each image's pixels, then take the mean over the images.",
             2 * (out - x)),
            ("Your loss is the absolute error: square the differences.", torch.sign(out - x) / b),
        ], rtol=1e-3, atol=1e-7)
        if found:
            raise CheckFailed(found)
        target = out - g * b / 2  # the target a squared error averaged over the batch would imply
        if target.min() > -0.01 and target.max() < 1.01 and (target - x).abs().max() > 0.01:
            raise CheckFailed("Your loss compares the reconstruction with a noisy version of the target: noise was added to the target "
                              "too. Only the model's input is corrupted; the target is the clean `x`.")
    raise CheckFailed(f"The gradients at optimizer.step(){when} are not those of the squared error between model(noisy) and the clean "
                      "`x`, summed over each image's pixels and averaged over the batch.")


class _SmallAE(torch.nn.Module):
    """The learning stage's autoencoder: 784 -> 64 -> 16 -> 64 -> 784, ReLU, sigmoid at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16),
                                       torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 784), torch.nn.Sigmoid(),
                                       torch.nn.Unflatten(1, (1, 28, 28)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Adam:
    """Adam written out (Kingma & Ba, 2015), not torch.optim's: its first step in a process imports torch._dynamo, slow under
    the grader's memory limit, and re-wraps torch.manual_seed (see fakes.StepSGD)."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.params, self.lr, self.betas, self.eps, self.t = list(params), lr, betas, eps, 0
        self.param_groups = [{"params": self.params, "lr": lr}]
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is not None:
                p.grad = None if set_to_none else p.grad.detach().zero_()

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        loss = closure() if closure is not None else None
        self.t += 1
        (b1, b2), t = self.betas, self.t
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is not None:
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                p.addcdiv_(m / (1 - b1**t), (v / (1 - b2**t)).sqrt_().add_(self.eps), value=-self.lr)
        return loss


DENOISE_STEPS, DENOISE_STD = 40, 0.4


def _train_denoiser(step: Callable, clean: torch.Tensor, noisy_test: torch.Tensor, clean_test: torch.Tensor) -> float:
    """Train the small autoencoder with ``step`` on batches of ``clean`` (Adam); its error on ``noisy_test`` against ``clean_test``."""
    torch.manual_seed(0)
    model = _SmallAE()
    opt = _Adam(model.parameters(), lr=1e-2)
    for i in range(DENOISE_STEPS):  # few calls: under the grader's watch every call of the student's step costs
        batch = clean[(i * 64) % len(clean):][:64]
        call(step, model, opt, batch, DENOISE_STD)
    with torch.no_grad():
        return (model(noisy_test) - clean_test).pow(2).flatten(1).sum(1).mean().item()


@check
def check_denoising_step(fn: Callable) -> None:
    """``denoising_step(model, optimizer, x, std) -> float``: corrupt the clean batch ``x`` with fresh N(0, std^2) noise per pixel,
    clipped to [0, 1]; one optimizer step on the squared error between ``model(noisy)`` and the clean ``x`` (summed over pixels,
    averaged over the batch); returns that loss (before the step) as a Python float. ``x`` is left unchanged."""
    n_grey, std = 16, 0.1
    x = torch.cat([torch.full((n_grey, 1, 28, 28), 0.5), discs(16, 21)])  # grey images measure the noise, discs (0 and 1) need the clipping
    model = _WatchedAE(0)
    opt = StepSGD(model.parameters(), lr=0.01)
    junk = torch.Generator().manual_seed(4)
    for p in model.parameters():  # gradients left over from an earlier step, as in a real loop
        p.grad = torch.randn(p.shape, generator=junk)
    junk = torch.Generator().manual_seed(4)
    leftover = flat([torch.randn(p.shape, generator=junk) for p in model.parameters()])
    first = _watched_call(fn, x, std, model, opt)
    second = _watched_call(fn, x, std, model, opt)
    _noise_checks(x, first["input"], std, n_grey)
    if torch.equal(first["input"], second["input"]):
        raise CheckFailed("Two calls corrupted the same batch with exactly the same noise: is a seed set inside denoising_step? Draw fresh "
                          "noise at every call; with one fixed noise pattern the model learns to undo that pattern only.")
    stage("noise")
    _step_checks(first, x, model, leftover, "")
    out = first["out"]
    if isinstance(out, torch.Tensor):
        raise CheckFailed(f"denoising_step returned a tensor ({describe(out)}): return the loss as a Python float (loss.item()). The training "
                          "curve stores numbers, and a tensor kept from every step would keep its whole graph alive.")
    if not isinstance(out, (int, float)) or isinstance(out, bool):
        raise CheckFailed(f"denoising_step returned {describe(out)}: return the loss as a Python float (loss.item()), for the training curve.")
    with torch.no_grad():
        want_loss = _denoise_loss(_twin(first["before"]), first["input"], x).item()
    if not close(out, want_loss, rtol=1e-4, atol=1e-4):
        raise CheckFailed(f"denoising_step returned {out:.4g}, but this batch's loss before the step was {want_loss:.4g}."
                          f"{ratio_hint(out, want_loss)} Return the loss you called backward on.")
    _step_checks(second, x, model, None, " in a second call")
    stage("step")
    clean = discs(256, 22)
    clean_test = discs(128, 23)
    noisy_test = (clean_test + DENOISE_STD * torch.randn(clean_test.shape, generator=torch.Generator().manual_seed(24))).clamp(0, 1)
    want = _train_denoiser(_reference_denoising_step, clean, noisy_test, clean_test)
    got = _train_denoiser(fn, clean, noisy_test, clean_test)
    as_is = (noisy_test - clean_test).pow(2).flatten(1).sum(1).mean().item()
    if not got <= max(1.25 * want, want + 3):
        raise CheckFailed(f"Trained with your step for {DENOISE_STEPS} Adam steps on made-up digits (noise std {DENOISE_STD}), a small "
                          f"autoencoder denoises new ones to an error of {got:.1f} per image; trained with the reference step, {want:.1f} "
                          f"(the noisy images themselves: {as_is:.1f}).")
    passed("denoising_step", f"a small autoencoder trained with it takes noisy made-up digits from {as_is:.1f} to {got:.1f} per image "
           f"in {DENOISE_STEPS} steps; with the reference step {want:.1f}")
