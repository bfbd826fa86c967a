"""Notebook 02, latent variables and autoencoders: Autoencoder, ae_train_step (the denoising step: ``nb02_denoise``)."""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, call, carries_gradient, check, close, describe, expect_tensor, named, passed, ratio_hint
from .fakes import StepSGD, TinyAE, flat, grads, ref_grad


def _ae_images(n: int, seed: int) -> torch.Tensor:
    """``(n, 1, 28, 28)`` digit-like images in [0, 1]: blurred random strokes, so that a code can compress them."""
    g = torch.Generator().manual_seed(seed)
    strokes = (torch.rand(n, 1, 28, 28, generator=g) > 0.93).float()
    return torch.nn.functional.avg_pool2d(strokes, 5, stride=1, padding=2).mul(3).clamp(0, 1)


def _ae_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The course's training loss: squared error per image summed over its pixels, averaged over the batch."""
    return (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()


@check
def check_Autoencoder(cls: Callable) -> None:
    """``Autoencoder(k)``: an ``nn.Module`` with ``encode(x: (B, 1, 28, 28)) -> (B, k)``, ``decode(z) -> (B, 1, 28, 28)``
    in [0, 1] and ``forward(x) = decode(encode(x))``; it must train (its loss falls on a small batch)."""
    # cls may reach the check wrapped (the grader guards every call), so it is judged by what calling it builds.
    torch.manual_seed(0)
    ae = call(cls, 3)
    if not isinstance(ae, torch.nn.Module):
        raise CheckFailed(f"Autoencoder(3) is a {describe(ae)}, not a torch.nn.Module: subclass torch.nn.Module and call super().__init__().")
    if not list(ae.parameters()):
        raise CheckFailed("Autoencoder(3) has no parameters: build its layers in __init__ as attributes (self.encoder = ...).")
    for name in ("encode", "decode"):
        if not callable(getattr(ae, name, None)):
            raise CheckFailed(f"Autoencoder has no method `{name}`: the notebook calls model.encode(x) and model.decode(z).")
    x = _ae_images(6, 0)
    z = call(ae.encode, x)
    if isinstance(z, torch.Tensor) and z.dim() == 2 and z.shape[0] == 6 and z.shape[1] != 3:
        raise CheckFailed(f"Autoencoder(3).encode gives codes of shape {tuple(z.shape)}: the code size must be the k the "
                          "constructor got (here 3), not a fixed number.")
    expect_tensor(z, (6, 3), "Autoencoder(3).encode(x) for x of shape (6, 1, 28, 28)")
    x_dec = call(ae.decode, z)
    if isinstance(x_dec, torch.Tensor) and tuple(x_dec.shape) == (6, 784):
        raise CheckFailed("decode(z) has shape (6, 784): reshape the output to images, (B, 1, 28, 28) "
                          "(x.view(-1, 1, 28, 28) or nn.Unflatten(1, (1, 28, 28))).")
    expect_tensor(x_dec, (6, 1, 28, 28), "decode(z) for z of shape (6, 3)")
    if x_dec.min() < 0 or x_dec.max() > 1:
        raise CheckFailed(f"decode(z) ranges from {x_dec.min().item():.2f} to {x_dec.max().item():.2f}: the reconstruction is an "
                          "image in [0, 1]. End the decoder with a sigmoid.")
    x_hat = call(ae, x)
    expect_tensor(x_hat, (6, 1, 28, 28), "Autoencoder(3)(x) for x of shape (6, 1, 28, 28)")
    if not close(x_hat.detach(), x_dec.detach(), rtol=1e-4, atol=1e-5):
        raise CheckFailed("forward(x) is not decode(encode(x)): the notebook decodes codes with decode, so both must agree.")
    carries_gradient(x_hat, "The reconstruction does not track gradients (a .detach(), torch.no_grad() or .item() in forward?): nothing could train.")
    x_hat.pow(2).sum().backward()
    dead = [n for n, p in ae.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    if dead:
        raise CheckFailed(f"These parameters get no gradient from the reconstruction: {dead[:4]}. Every layer you create must be used in forward.")
    if call(cls, 7).encode(x).shape != (6, 7):
        raise CheckFailed("Autoencoder(7).encode does not give codes of size 7: use the constructor's k for the code layer.")
    _nonlinear(ae)
    # Loss falls: a few Adam steps of the course's loss on one small batch (the same batch: it must fit it).
    torch.manual_seed(0)
    ae = call(cls, 3)
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    x = _ae_images(8, 1)
    first = None
    for _ in range(12):
        loss = _ae_loss(ae, x, x)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = _ae_loss(ae, x, x).item()
    if not last < 0.8 * first:
        raise CheckFailed(f"12 Adam steps (lr 3e-3) on one batch of 8 images took the squared error per image from {first:.1f} to "
                          f"{last:.1f} only: your model barely learns. Look for a layer without a non-linearity in between or a "
                          "very small hidden layer (the notebook's is 512 wide).")
    passed("Autoencoder", f"codes (B, k), images (B, 1, 28, 28) in [0, 1]; loss {first:.1f} -> {last:.1f} in 12 steps")


def _nonlinear(ae: torch.nn.Module) -> None:
    """The autoencoder must be non-linear (else it is PCA at best) and its codes must be free to take any sign."""
    with torch.no_grad():
        codes = ae.encode(_ae_images(64, 5))
        if bool((codes >= 0).all()):
            raise CheckFailed("Autoencoder(3).encode gave no negative code value on 64 images: is there a ReLU (or another "
                              "non-negative activation) on the code layer? Keep the code layer linear: a ReLU there switches code "
                              "units off (a unit at 0 passes no gradient) and confines the codes to one corner of the code space.")
        a, b = _ae_images(4, 6), _ae_images(4, 7)
        mix = [ae.encode(w * a + (1 - w) * b) - (w * ae.encode(a) + (1 - w) * ae.encode(b)) for w in (0.5, 0.2)]
        za, zb = torch.randn(4, 3, generator=torch.Generator().manual_seed(8)), torch.randn(4, 3, generator=torch.Generator().manual_seed(9))
        logit = lambda z: torch.logit(ae.decode(z).double().clamp(1e-6, 1 - 1e-6))  # noqa: E731
        mix_dec = [logit(w * za + (1 - w) * zb) - (w * logit(za) + (1 - w) * logit(zb)) for w in (0.5, 0.2)]
        scale_enc, scale_dec = float(codes.abs().max()) + 1e-6, float(logit(za).abs().max()) + 1e-6
    if all(float(m.abs().max()) < 1e-4 * scale_enc for m in mix) and all(float(m.abs().max()) < 1e-4 * scale_dec for m in mix_dec):
        raise CheckFailed("Your Autoencoder is linear: encode is an affine map of the image and decode a sigmoid of an affine map "
                          "of the code, with no non-linearity between the layers. A linear autoencoder can do no better than PCA "
                          "(the notebook compares the two): put a non-linearity such as nn.ReLU() after each hidden layer.")


@check
def check_ae_train_step(fn: Callable) -> None:
    """``ae_train_step(model, optimizer, inputs, targets) -> float``: one optimizer step on the mean over the batch of the squared
    error summed over pixels between ``targets`` and ``model(inputs)``; returns that loss (before the step)."""
    model = TinyAE(0)
    opt = StepSGD(model.parameters(), lr=0.01)
    clean = _ae_images(5, 2)
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    grads_at_step: list[torch.Tensor] = []
    opt.on_step = lambda: grads_at_step.append(grads(model))
    junk = torch.Generator().manual_seed(4)
    for p in model.parameters():  # gradients left over from an earlier step, as in a real loop
        p.grad = torch.randn(p.shape, generator=junk)
    before = flat(model.parameters())

    def grad_of(loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
        return ref_grad(model, before, loss_of)

    want_loss = _ae_loss(model, noisy, clean).item()
    out = call(fn, model, opt, noisy, clean)
    if not grads_at_step:
        if torch.equal(before, flat(model.parameters())):
            raise CheckFailed("The parameters did not change: call optimizer.step() after loss.backward().")
        raise CheckFailed("The parameters changed but not through the optimizer you were given: call optimizer.step().")
    if len(grads_at_step) > 1:
        raise CheckFailed(f"optimizer.step() was called {len(grads_at_step)} times: one training step is one optimizer step.")
    got = grads_at_step[0]
    want = grad_of(lambda m: _ae_loss(m, noisy, clean))
    junk = torch.Generator().manual_seed(4)
    leftover = flat([torch.randn(p.shape, generator=junk) for p in model.parameters()])
    # Clearing the gradients after the step (zero_grad at the end) is right in a loop: the planted ones were its only leftover.
    cleared_after = all(p.grad is None or not p.grad.any() for p in model.parameters())
    if not close(got, want, rtol=1e-3, atol=1e-6) and not (cleared_after and close(got, want + leftover, rtol=1e-3, atol=1e-5)):
        if got.abs().max() == 0:
            raise CheckFailed("At optimizer.step() every gradient was zero: optimizer.zero_grad() ran after loss.backward() and "
                              "erased them. Order: zero_grad, loss, backward, step.")
        mean_loss = lambda m: _ae_loss(m, noisy, clean)  # noqa: E731
        found = named(got, [
            ("At optimizer.step() the gradients were this step's plus those left from before: PyTorch adds "
             "gradients up. Call optimizer.zero_grad() before loss.backward().", want + leftover),
            ("At optimizer.step() the gradients were the old ones: call loss.backward() before optimizer.step() "
             "(and optimizer.zero_grad() before both).", leftover),
        ], rtol=1e-3, atol=1e-5) or named(got, [
            ("The gradients at optimizer.step() are those of the mean over pixels too (e.g. F.mse_loss with its default reduction): "
             "that is 784 times smaller than the course's loss. Sum over each image's pixels, then average over the batch.",
             lambda: grad_of(lambda m: mean_loss(m) / 784)),
            ("The gradients at optimizer.step() are those of the sum over the batch instead of its mean: average the per-image errors "
             "over the batch.", lambda: grad_of(lambda m: mean_loss(m) * len(clean))),
            ("The gradients at optimizer.step() are those of the reconstruction compared with the noisy inputs: the target is "
             "`targets`, the clean images (a denoiser learns to output clean digits).", lambda: grad_of(lambda m: _ae_loss(m, noisy, noisy))),
            ("The gradients at optimizer.step() are those of the model run on the targets: feed it `inputs` (the noisy images), "
             "compare its output with `targets`.", lambda: grad_of(lambda m: _ae_loss(m, clean, clean))),
            ("The gradients at optimizer.step() are those of the absolute error: square the differences.",
             lambda: grad_of(lambda m: (clean - m(noisy)).abs().flatten(1).sum(1).mean())),
        ], rtol=1e-3, atol=1e-7)
        raise CheckFailed(found or "The gradients at optimizer.step() are not those of the mean over the batch of "
                          "reconstruction_error(targets, model(inputs)).")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise CheckFailed(f"ae_train_step returned a tensor of shape {tuple(out.shape)}: return the loss, one number (loss.item()).")
        out = out.detach().item()
    if not isinstance(out, (int, float)):
        raise CheckFailed(f"ae_train_step returned {describe(out)}: return the loss as a number (loss.item()), for the training curve.")
    if not close(out, want_loss, rtol=1e-4, atol=1e-4):
        raise CheckFailed(f"ae_train_step returned {out:.4g}, but this batch's loss before the step was {want_loss:.4g}."
                          f"{ratio_hint(out, want_loss)} Return the loss you called backward on.")
    # A second step on the same batch: the gradients must be the new ones only, whatever zero_grad style was used.
    before = flat(model.parameters())
    grads_at_step.clear()
    call(fn, model, opt, noisy, clean)
    if grads_at_step and not close(grads_at_step[0], grad_of(lambda m: _ae_loss(m, noisy, clean)), rtol=1e-3, atol=1e-6):
        raise CheckFailed("In a second call the gradients at optimizer.step() included the first call's: call optimizer.zero_grad() "
                          "at the start of every step.")
    passed("ae_train_step", "zero_grad, loss, backward, step; returns the loss")

