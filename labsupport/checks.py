"""Checks for the exercises: ``check_<exercise>(fn)`` calls the student's ``fn`` on cases it builds.

A check returns quietly after printing one ✓ line when ``fn`` is right. Otherwise it raises
:class:`CheckFailed` with a message that says what is wrong (expected shape vs got, wrong sign,
gradient not flowing, off by a factor of 2, ...). A crash inside ``fn`` is reported the same way,
naming the original error. Checks test properties and closed forms, so every correct way of
writing a function passes.

The grader (``labsupport.grading``) finds the check of exercise ``id`` as ``check_<id>``.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from . import diffusion, losses


class CheckFailed(AssertionError):
    """A student's function gave a wrong answer; the message explains what looks wrong."""


# --- helpers every check uses -------------------------------------------------------------------


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}"
    if isinstance(value, (tuple, list)):
        inner = ", ".join(_describe(v) for v in value)
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, torch.nn.Module):
        return type(value).__name__
    return type(value).__name__ if not isinstance(value, (int, float, bool)) else repr(value)


def call(fn: Callable, *args, **kwargs):
    """Call the student's ``fn``; turn any crash into a :class:`CheckFailed` that names the error."""
    name = getattr(fn, "__name__", "your function")
    if not callable(fn):
        raise CheckFailed(f"Expected a function, got {_describe(fn)}. Pass the function itself, e.g. check_x(x), not x(...).")
    try:
        return fn(*args, **kwargs)
    except NotImplementedError as err:
        raise CheckFailed(f"`{name}` is not written yet ({err}). Replace the `raise NotImplementedError` line with your code.") from None
    except CheckFailed:
        raise
    except Exception as err:  # the student's own bug: say what and where, not a traceback from here
        shown = ", ".join(_describe(a) for a in args)
        raise CheckFailed(f"`{name}` crashed with {type(err).__name__}: {err}\n  It was called with: ({shown}).") from None


def expect_tensor(out: Any, shape: tuple[int, ...] | None, what: str) -> torch.Tensor:
    """``out`` must be a finite float tensor of ``shape``; otherwise a clear :class:`CheckFailed`."""
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"{what} should be a torch.Tensor, but it is {_describe(out)}.")
    if shape is not None and tuple(out.shape) != tuple(shape):
        hint = ""
        if out.dim() == 0 and len(shape) > 0:
            hint = " It is a single number: did you average or sum over the batch too?"
        elif len(shape) == 0 and out.dim() > 0:
            hint = " Expected a single number (a scalar): take the mean over the batch."
        elif len(shape) == 1 and out.dim() == 2 and out.shape[0] == shape[0]:
            hint = " Did you forget to sum over the last dimension?"
        raise CheckFailed(f"{what} should have shape {tuple(shape)}, got {tuple(out.shape)}.{hint}")
    if out.is_floating_point() and not torch.isfinite(out).all():
        raise CheckFailed(f"{what} contains NaN or inf. Look for log(0), division by zero or exp overflow.")
    return out


def close(a: torch.Tensor | float, b: torch.Tensor | float, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=rtol, atol=atol))


def ratio_hint(got: torch.Tensor | float, want: torch.Tensor | float) -> str:
    """A hint when ``got`` is ``want`` times a tell-tale factor (2, 1/2, -1, ...)."""
    got, want = float(torch.as_tensor(got).double().sum()), float(torch.as_tensor(want).double().sum())
    if abs(want) < 1e-12:
        return ""
    r = got / want
    for factor, text in [(-1, "the sign is flipped"), (2, "it is twice too big (a missing 1/2?)"), (0.5, "it is half the expected value"),
                         (4, "it is 4x too big"), (0.25, "it is 4x too small")]:
        if abs(r - factor) < 1e-3 * max(1, abs(factor)):
            return f" Your value is {r:g} x the right one: {text}."
    return ""


STAGES: list[str] = []  # partial credit: the stages the running check has passed, in order (the grader reads and clears it)


def stage(name: str) -> None:
    """Mark a stage of partial credit as passed (its points are declared in ``labsupport/exercises.json``)."""
    STAGES.append(name)


def passed(name: str, detail: str = "") -> None:
    print(f"\u2713 {name}: all checks passed{' (' + detail + ')' if detail else ''}.")


# --- Notebook 00: start here --------------------------------------------------------------------


def check_normalize_images(fn: Callable) -> None:
    """``normalize_images(images: (B, 28, 28) uint8) -> (B, 1, 28, 28) float32 in [0, 1]``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), generator=g, dtype=torch.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    original = images.clone()
    out = call(fn, images)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"normalize_images should return a tensor, got {_describe(out)}.")
    if not torch.equal(images, original):
        raise CheckFailed("normalize_images changed its input in place. Build a new tensor instead (e.g. x = images.float()).")
    if out.dim() == 3:
        raise CheckFailed(f"Got shape {tuple(out.shape)}: add the channel dimension, e.g. with .unsqueeze(1), to get (B, 1, 28, 28).")
    expect_tensor(out, (5, 1, 28, 28), "normalize_images(images)")
    if out.dtype != torch.float32:
        raise CheckFailed(f"The result has dtype {out.dtype}; models need float32. Convert with .float() before dividing.")
    want = images.float().unsqueeze(1) / 255
    if close(out, images.float().unsqueeze(1) / 256, atol=1e-6) and not close(out, want, atol=1e-6):
        raise CheckFailed("You divided by 256: the largest pixel value is 255, so 255 must map to exactly 1.0.")
    if out.max() > 1 + 1e-6:
        raise CheckFailed(f"Values go up to {out.max().item():.1f}: divide by 255 so they lie in [0, 1].")
    if not close(out, want, atol=1e-6):
        raise CheckFailed("Values are in range but not images/255: each pixel should become its grey level divided by 255.")
    passed("normalize_images")


# --- Notebook 01: supervised vs unsupervised ----------------------------------------------------


def _pca_case(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``X: (n, d)`` float32 whose sample covariance has known eigenvectors and well-separated eigenvalues.

    Returns ``(X, mean: (d,), directions: (d, d) rows sorted by variance, variances: (d,))``, all float64 but X.
    The mean is large on purpose: forgetting to centre then gives visibly wrong directions.
    """
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    stds = 6.0 * 0.45 ** torch.arange(d, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z, _ = torch.linalg.qr(z - z.mean(0))  # exactly uncorrelated, zero-mean columns ...
    z = z * math.sqrt(n)  # ... with unit variance (1/n convention)
    mean = 8.0 + torch.randn(d, generator=g, dtype=torch.float64)
    X = (z * stds) @ q.T + mean
    X = X.float()
    return X, X.double().mean(0), q.T.contiguous(), stds**2


def check_pca(fn: Callable) -> None:
    """``pca(X, k) -> (mean, components)``: ``X: (N, D)``; ``mean: (D,)``; ``components: (k, D)`` orthonormal rows,
    the directions of largest variance first. Any sign of each row is accepted."""
    n, d, k = 300, 6, 3
    X, mean_true, dirs, variances = _pca_case(n, d, seed=0)
    original = X.clone()
    out = call(fn, X, k)
    if not torch.equal(X, original):
        raise CheckFailed("pca changed X in place (e.g. `X -= mean`). Centre a copy instead: `Xc = X - mean`.")
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"pca should return two things, (mean, components); it returned {_describe(out)}.")
    mean, comps = out
    if isinstance(mean, torch.Tensor) and tuple(mean.shape) == (n,):
        raise CheckFailed(f"mean has shape {(n,)}: one value per sample. Average over the samples instead: X.mean(dim=0) -> ({d},).")
    if isinstance(mean, torch.Tensor) and tuple(mean.shape) == (1, d):
        raise CheckFailed(f"mean has shape (1, {d}); return it as ({d},) (drop keepdim=True, or .squeeze(0)).")
    expect_tensor(mean, (d,), "mean")
    if isinstance(comps, torch.Tensor) and tuple(comps.shape) == (d, k):
        raise CheckFailed(f"components has shape (D, k) = {(d, k)}: the directions are in its columns. "
                          f"Return them as rows, shape (k, D) = {(k, d)} (transpose, e.g. `Vh[:k]` or `V[:, :k].T`).")
    if isinstance(comps, torch.Tensor) and comps.dim() == 2 and comps.shape[1] == n:
        raise CheckFailed(f"components has shape {tuple(comps.shape)}, one entry per sample: these look like rows of U. "
                          "In X_c = U S Vh the directions in feature space are the rows of Vh.")
    if isinstance(comps, torch.Tensor) and comps.dim() == 2 and comps.shape[0] != k and comps.shape[1] == d:
        raise CheckFailed(f"components has {comps.shape[0]} rows but k = {k} were asked for: keep only the first k.")
    expect_tensor(comps, (k, d), "components")
    mean, C = mean.detach().double(), comps.detach().double()
    if close(mean, torch.zeros(d), atol=1e-3):
        raise CheckFailed("mean is all zeros: return the mean of X over the samples, X.mean(dim=0).")
    if not close(mean, mean_true, rtol=1e-4, atol=1e-3):
        raise CheckFailed("mean is not the average of the rows of X: use X.mean(dim=0).")
    gram = C @ C.T
    if not close(gram, torch.eye(k), atol=1e-3):
        norms = C.norm(dim=1)
        if close(gram - torch.diag(gram.diagonal()), torch.zeros(k, k), atol=1e-3 * float(norms.max()) ** 2):
            raise CheckFailed(f"The rows of components are orthogonal but not of length 1 (lengths {[round(v, 3) for v in norms.tolist()]}). "
                              "Did you scale them by singular values or variances? Return the unit directions themselves.")
        raise CheckFailed("The rows of components are not orthonormal (components @ components.T should be the identity). "
                          "Take them from an SVD or eigendecomposition of the centred data.")
    match = (C @ dirs.T).abs()  # (k, d): |cos| between each returned row and each true direction
    best = match.argmax(1).tolist()
    if bool((match.max(1).values > 0.999).all()):
        if best == list(range(k)):
            one = call(fn, X, 1)
            C1 = one[1] if isinstance(one, (tuple, list)) and len(one) == 2 else one
            if not isinstance(C1, torch.Tensor) or tuple(C1.shape) != (1, d):
                raise CheckFailed(f"With k = 1, components should have shape (1, {d}), got {_describe(C1)}.")
            X2, m2, dirs2, _ = _pca_case(40, d, seed=1)
            m_out, C_all = call(fn, X2, d)
            expect_tensor(C_all, (d, d), f"components for k = D = {d}")
            if not close(m_out.detach().double(), m2, atol=1e-3) or not close((C_all.detach().double() @ dirs2.T).abs(), torch.eye(d), atol=2e-3):
                raise CheckFailed(f"Correct for k = {k} on 300 points, but wrong with k = D = {d} on 40 points. Is something fixed to one size?")
            passed("pca", "orthonormal, sorted by variance, any signs")
            return
        if sorted(best) == list(range(k)):
            raise CheckFailed(f"You found the right directions but in the wrong order (they are the true directions {best}). "
                              "Sort them by explained variance, largest first. torch.linalg.eigh returns eigenvalues in *ascending* order: flip it.")
        if sorted(best) == list(range(d - k, d)):
            raise CheckFailed("These are the directions of *smallest* variance. torch.linalg.eigh sorts eigenvalues in ascending "
                              "order, so the largest ones are the last columns: take eigenvectors[:, -k:] and flip to put the largest first.")
    Xc = X.double() - mean_true
    uncentred = torch.linalg.svd(X.double(), full_matrices=False).Vh[:k]
    if bool(((C * uncentred).sum(1).abs() > 0.99).all()):
        raise CheckFailed("These are the principal directions of X without subtracting the mean. Centre first: Xc = X - mean, then decompose Xc.")
    got = (Xc @ C.T).pow(2).mean(0)
    if close(torch.linalg.svdvals(C @ dirs[:k].T), torch.ones(k), atol=1e-3):
        raise CheckFailed("Your rows span the right subspace but are a rotated basis of it, not the principal directions. "
                          "Use the singular vectors / eigenvectors themselves, not e.g. a QR of them.")
    raise CheckFailed(f"The rows are not the directions of largest variance: the variance along them is "
                      f"{[round(v, 2) for v in got.tolist()]}, the top-{k} principal directions give {[round(v, 2) for v in variances[:k].tolist()]}.")


# --- Notebook 02: latent variables and autoencoders ---------------------------------------------


def check_reconstruction_error(fn: Callable) -> None:
    """``reconstruction_error(x, x_hat) -> (B,)``: squared error summed over the pixels of each image."""
    g = torch.Generator().manual_seed(2)
    x = torch.rand(5, 1, 28, 28, generator=g)
    x_hat = torch.rand(5, 1, 28, 28, generator=g).requires_grad_(True)
    out = call(fn, x, x_hat)
    if isinstance(out, torch.Tensor) and out.shape == x.shape:
        raise CheckFailed(f"Got shape {tuple(out.shape)}, one number per pixel: sum over the pixels of each image to get shape (5,).")
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == 5:
        raise CheckFailed(f"Got shape {tuple(out.shape)}: sum over *all* of (C, H, W), e.g. `.flatten(1).sum(1)`, to get shape (5,).")
    expect_tensor(out, (5,), "reconstruction_error(x, x_hat)")
    want = (x - x_hat.detach()).pow(2).flatten(1).sum(1)
    got = out.detach()
    if not close(got, want, rtol=1e-4, atol=1e-4):
        if close(got * 784, want, rtol=1e-4, atol=1e-4):
            raise CheckFailed("Your values are 784 times too small: you averaged over the pixels. Sum over them: the course reports "
                              "the squared error *per image* (as Hinton & Salakhutdinov, 2006).")
        if close(got, want.sqrt(), rtol=1e-4, atol=1e-4):
            raise CheckFailed("You returned the length of the error vector (a square root). Return the *squared* error: no sqrt.")
        if close(got, (x - x_hat.detach()).abs().flatten(1).sum(1), rtol=1e-4, atol=1e-4):
            raise CheckFailed("That is the absolute error. Square the differences: (x - x_hat) ** 2.")
        if close(got, (x - x_hat.detach()).flatten(1).sum(1).pow(2), rtol=1e-4, atol=1e-4):
            raise CheckFailed("You summed the differences and then squared the sum. Square each pixel's difference first, then sum.")
        raise CheckFailed(f"Wrong values: got {[round(v, 3) for v in got.tolist()]}, expected {[round(v, 3) for v in want.tolist()]}.{ratio_hint(got, want)}")
    if out.grad_fn is None:
        raise CheckFailed("The result does not track gradients (was it detached, or built with .item() / numpy?). We train on it: keep it in torch.")
    out.sum().backward()
    if x_hat.grad is None or not close(x_hat.grad, 2 * (x_hat.detach() - x), atol=1e-4):
        raise CheckFailed("The gradient with respect to x_hat is not 2 (x_hat - x). Compute it with plain torch operations.")
    perfect = call(fn, x, x.clone())
    if not close(perfect.detach(), torch.zeros(5), atol=1e-6):
        raise CheckFailed("A perfect reconstruction (x_hat = x) should give 0 error.")
    passed("reconstruction_error")


def check_add_noise(fn: Callable) -> None:
    """``add_noise(x, std) -> x_noisy``: ``x: (B, 1, 28, 28)`` in [0, 1] plus independent N(0, std^2) noise per pixel, clipped to [0, 1]."""
    grey = torch.full((64, 1, 28, 28), 0.5)
    original = grey.clone()
    out = call(fn, grey, 0.1)
    if not torch.equal(grey, original):
        raise CheckFailed("add_noise changed its input in place. Return a new tensor: the clean image is the training target.")
    expect_tensor(out, tuple(grey.shape), "add_noise(x, 0.1)")
    out = out.detach().double()
    mean, std = out.mean().item(), out.std().item()
    if std < 1e-6:
        raise CheckFailed("The output equals the input: no noise was added.")
    per_image = out.flatten(1).std(1)
    if bool((per_image < 0.2 * std).all()):
        raise CheckFailed("Inside one image all pixels got the same noise. Draw independent noise for every pixel (torch.randn_like(x)).")
    if torch.allclose(out[0], out[1]):
        raise CheckFailed("Every image in the batch got the same noise pattern. Draw noise of the full shape (B, 1, 28, 28).")
    if abs(mean - 0.5) > 0.01:
        raise CheckFailed(f"On grey images (0.5) the noisy mean is {mean:.3f}: the noise is not centred on 0. "
                          "torch.rand is uniform on [0, 1]; use torch.randn (or randn_like), which has mean 0.")
    if abs(std - 0.01) < 0.002:
        raise CheckFailed(f"The noise has std {std:.4f} = 0.1 squared: you multiplied by the variance std**2. Multiply randn by std.")
    sqrt_mistake = (0.5 + math.sqrt(0.1) * torch.randn(64 * 784, generator=torch.Generator().manual_seed(0), dtype=torch.float64)).clamp(0, 1)
    if abs(std - sqrt_mistake.std().item()) < 0.01:
        raise CheckFailed(f"The noise has std {std:.3f} = sqrt(0.1): std is already a standard deviation, multiply randn by it directly.")
    if abs(std - 0.1) > 0.005:
        raise CheckFailed(f"The noise should have standard deviation 0.1, got {std:.4f}. Add std * torch.randn_like(x).")
    again = call(fn, grey, 0.1)
    if torch.allclose(again.detach().double(), out):
        raise CheckFailed("Two calls gave identical noise: draw fresh random noise on every call (no fixed seed inside add_noise).")
    edges = torch.cat([torch.zeros(8, 1, 28, 28), torch.ones(8, 1, 28, 28)])
    clipped = expect_tensor(call(fn, edges, 0.5), tuple(edges.shape), "add_noise(x, 0.5)").detach()
    if clipped.min() < 0 or clipped.max() > 1:
        raise CheckFailed(f"Values range from {clipped.min().item():.2f} to {clipped.max().item():.2f}: clip the result to [0, 1] "
                          "(torch.clamp or .clamp(0, 1)), so noisy images are still images.")
    if not close(call(fn, edges, 0.0).detach(), edges):
        raise CheckFailed("With std = 0 the output should equal the input.")
    passed("add_noise")


def _ae_images(n: int, seed: int) -> torch.Tensor:
    """``(n, 1, 28, 28)`` digit-like images in [0, 1]: blurred random strokes, so that a code can compress them."""
    g = torch.Generator().manual_seed(seed)
    strokes = (torch.rand(n, 1, 28, 28, generator=g) > 0.93).float()
    return torch.nn.functional.avg_pool2d(strokes, 5, stride=1, padding=2).mul(3).clamp(0, 1)


def _ae_loss(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The course's training loss: squared error per image summed over its pixels, averaged over the batch."""
    return (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()


def check_Autoencoder(cls: Callable) -> None:
    """``Autoencoder(k)``: an ``nn.Module`` with ``encode(x: (B, 1, 28, 28)) -> (B, k)``, ``decode(z) -> (B, 1, 28, 28)``
    in [0, 1] and ``forward(x) = decode(encode(x))``; it must train (its loss falls on a small batch)."""
    # cls may reach the check wrapped (the grader guards every call), so it is judged by what calling it builds.
    torch.manual_seed(0)
    ae = call(cls, 3)
    if not isinstance(ae, torch.nn.Module):
        raise CheckFailed(f"Autoencoder(3) is a {_describe(ae)}, not a torch.nn.Module: subclass torch.nn.Module and call super().__init__().")
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
    if x_hat.grad_fn is None:
        raise CheckFailed("The reconstruction does not track gradients (a .detach(), torch.no_grad() or .item() in forward?): nothing could train.")
    x_hat.pow(2).sum().backward()
    dead = [n for n, p in ae.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    if dead:
        raise CheckFailed(f"These parameters get no gradient from the reconstruction: {dead[:4]}. Every layer you create must be used in forward.")
    if call(cls, 7).encode(x).shape != (6, 7):
        raise CheckFailed("Autoencoder(7).encode does not give codes of size 7: use the constructor's k for the code layer.")
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


class _TinyAE(torch.nn.Module):
    """A small linear-sigmoid autoencoder for check_ae_train_step."""

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


def check_ae_train_step(fn: Callable) -> None:
    """``ae_train_step(model, optimizer, inputs, targets) -> float``: one optimizer step on the mean over the batch of the squared
    error summed over pixels between ``targets`` and ``model(inputs)``; returns that loss (before the step)."""
    model = _TinyAE(0)
    opt = _StepSGD(model.parameters(), lr=0.01)
    clean = _ae_images(5, 2)
    noisy = (clean + 0.3 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    grads_at_step: list[torch.Tensor] = []
    opt.on_step = lambda: grads_at_step.append(_grads(model))
    junk = torch.Generator().manual_seed(4)
    for p in model.parameters():  # gradients left over from an earlier step, as in a real loop
        p.grad = torch.randn(p.shape, generator=junk)
    before = _flat(model.parameters())

    def grad_of(loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
        return _ref_grad(model, before, loss_of)

    want_loss = _ae_loss(model, noisy, clean).item()
    out = call(fn, model, opt, noisy, clean)
    if not grads_at_step:
        if torch.equal(before, _flat(model.parameters())):
            raise CheckFailed("The parameters did not change: call optimizer.step() after loss.backward().")
        raise CheckFailed("The parameters changed but not through the optimizer you were given: call optimizer.step().")
    if len(grads_at_step) > 1:
        raise CheckFailed(f"optimizer.step() was called {len(grads_at_step)} times: one training step is one optimizer step.")
    got = grads_at_step[0]
    want = grad_of(lambda m: _ae_loss(m, noisy, clean))
    if not close(got, want, rtol=1e-3, atol=1e-6):
        junk = torch.Generator().manual_seed(4)
        leftover = _flat([torch.randn(p.shape, generator=junk) for p in model.parameters()])
        if got.abs().max() == 0:
            raise CheckFailed("At optimizer.step() every gradient was zero: optimizer.zero_grad() ran after loss.backward() and "
                              "erased them. Order: zero_grad, loss, backward, step.")
        if close(got, want + leftover, rtol=1e-3, atol=1e-5):
            raise CheckFailed("At optimizer.step() the gradients were this step's plus those left from before: PyTorch adds "
                              "gradients up. Call optimizer.zero_grad() before loss.backward().")
        if close(got, leftover, rtol=1e-3, atol=1e-6):
            raise CheckFailed("At optimizer.step() the gradients were the old ones: call loss.backward() before optimizer.step() "
                              "(and optimizer.zero_grad() before both).")
        candidates = {
            "the mean over pixels too (e.g. F.mse_loss with its default reduction): that is 784 times smaller than the course's loss. "
            "Sum over each image's pixels, then average over the batch": lambda m: _ae_loss(m, noisy, clean) / 784,
            "the sum over the batch instead of its mean: average the per-image errors over the batch":
                lambda m: _ae_loss(m, noisy, clean) * len(clean),
            "the reconstruction compared with the noisy inputs: the target is `targets`, the clean images "
            "(a denoiser learns to output clean digits)": lambda m: _ae_loss(m, noisy, noisy),
            "the model run on the targets: feed it `inputs` (the noisy images), compare its output with `targets`":
                lambda m: _ae_loss(m, clean, clean),
            "the absolute error: square the differences": lambda m: (clean - m(noisy)).abs().flatten(1).sum(1).mean(),
        }
        for text, loss_of in candidates.items():
            if close(got, grad_of(loss_of), rtol=1e-3, atol=1e-7):
                raise CheckFailed(f"The gradients at optimizer.step() are those of {text}.")
        raise CheckFailed("The gradients at optimizer.step() are not those of the mean over the batch of "
                          "reconstruction_error(targets, model(inputs)).")
    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise CheckFailed(f"ae_train_step returned a tensor of shape {tuple(out.shape)}: return the loss, one number (loss.item()).")
        out = out.detach().item()
    if not isinstance(out, (int, float)):
        raise CheckFailed(f"ae_train_step returned {_describe(out)}: return the loss as a number (loss.item()), for the training curve.")
    if not close(out, want_loss, rtol=1e-4, atol=1e-4):
        raise CheckFailed(f"ae_train_step returned {out:.4g}, but this batch's loss before the step was {want_loss:.4g}."
                          f"{ratio_hint(out, want_loss)} Return the loss you called backward on.")
    # A second step on the same batch: the gradients must be the new ones only, whatever zero_grad style was used.
    before = _flat(model.parameters())
    grads_at_step.clear()
    call(fn, model, opt, noisy, clean)
    if grads_at_step and not close(grads_at_step[0], grad_of(lambda m: _ae_loss(m, noisy, clean)), rtol=1e-3, atol=1e-6):
        raise CheckFailed("In a second call the gradients at optimizer.step() included the first call's: call optimizer.zero_grad() "
                          "at the start of every step.")
    passed("ae_train_step", "zero_grad, loss, backward, step; returns the loss")

# --- Notebook 03: variational autoencoders ------------------------------------------------------


def _vae_case(b: int, d: int, seed: int, requires_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``mu, logvar: (b, d)`` with spread-out values (``logvar`` in [-2.5, 1.5], never 0), leaves that track gradients."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(b, d, generator=g)
    logvar = torch.empty(b, d).uniform_(0.3, 1.5, generator=g) * torch.where(torch.rand(b, d, generator=g) < 0.5, -1.7, 1.0)
    return mu.requires_grad_(requires_grad), logvar.requires_grad_(requires_grad)


def check_reparameterize(fn: Callable) -> None:
    """``reparameterize(mu, logvar) -> z``: ``mu, logvar: (B, D)``, z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    name = "reparameterize(mu, logvar)"
    mu, logvar = _vae_case(5, 3, seed=0)
    before = (mu.detach().clone(), logvar.detach().clone())
    z = expect_tensor(call(fn, mu, logvar), (5, 3), name)
    if not (torch.equal(mu.detach(), before[0]) and torch.equal(logvar.detach(), before[1])):
        raise CheckFailed("reparameterize changed mu or logvar in place (e.g. logvar.mul_(0.5)). Build new tensors instead.")
    # gradients: dz/dmu = 1 and dz/dlogvar = 0.5 * sigma * eps = 0.5 * (z - mu)
    if not z.requires_grad:
        raise CheckFailed("z does not track gradients back to mu and logvar: the sample blocks them. "
                          "Distribution.sample(), torch.no_grad() or .detach() cut the graph; write z = mu + sigma * eps "
                          "with eps = torch.randn_like(mu) (or use .rsample()).")
    z.sum().backward()
    if mu.grad is None or logvar.grad is None:
        missing = "mu" if mu.grad is None else "logvar"
        raise CheckFailed(f"No gradient reaches {missing}: z must be computed from both mu and logvar with differentiable operations.")
    if mu.grad.abs().max() < 1e-8 and logvar.grad.abs().max() < 1e-8:
        raise CheckFailed("The gradients of z with respect to mu and logvar are all zero: the sample blocks them. torch.normal(mu, std) "
                          "and Distribution.sample() give no gradient; write z = mu + std * eps with eps = torch.randn_like(mu).")
    if not close(mu.grad, torch.ones_like(mu), atol=1e-5):
        raise CheckFailed("dz/dmu should be 1 for every element (z = mu + sigma * eps moves one-for-one with mu); it is not.")
    zd, md, lvd = z.detach(), mu.detach(), logvar.detach()
    if not close(logvar.grad, 0.5 * (zd - md), rtol=1e-3, atol=1e-5):
        if close(logvar.grad, zd - md, rtol=1e-3, atol=1e-5):
            raise CheckFailed("The variance is used as the standard deviation: sigma = exp(logvar / 2) = sqrt(exp(logvar)), not exp(logvar).")
        if close(logvar.grad, (zd - md) / lvd, rtol=1e-3, atol=1e-5):
            raise CheckFailed("logvar itself is used as the standard deviation: sigma = exp(logvar / 2).")
        raise CheckFailed("dz/dlogvar should be 0.5 * sigma * eps = 0.5 * (z - mu) when sigma = exp(0.5 * logvar); yours is not. "
                          "Check how you turn logvar into the standard deviation (a missing 1/2?).")
    # statistics: standardised noise must be N(0, 1), fresh for every element and every call
    b, d = 4000, 4
    mu = torch.randn(b, d, generator=torch.Generator().manual_seed(1))
    logvar = torch.tensor([-2.0, -0.8, 0.7, 1.6]).repeat(b, 1)
    with torch.no_grad():
        z1 = expect_tensor(call(fn, mu, logvar), (b, d), name).double()
        z2 = expect_tensor(call(fn, mu, logvar), (b, d), name).double()
    noise = z1 - mu.double()
    if noise.abs().max() < 1e-7:
        raise CheckFailed("z equals mu: no noise was added. z = mu + sigma * eps with eps drawn from N(0, I).")
    if (noise.std(0) < 1e-4).any():
        raise CheckFailed("Every row got the same noise: the noise is shared across the batch (e.g. torch.randn(D)). "
                          "Draw eps with the full shape (B, D): torch.randn_like(mu).")
    if torch.corrcoef(noise.T)[0, 1:].min() > 0.99:  # each row's noise is one number times a per-dimension scale
        raise CheckFailed("All latent dimensions of an example got the same noise: the noise is shared across dimensions "
                          "(e.g. torch.randn(B, 1)). Draw eps with the full shape (B, D): torch.randn_like(mu).")
    if torch.equal(z1, z2):
        raise CheckFailed("Two calls gave exactly the same z: draw new noise every call (no fixed seed or stored eps inside).")
    sd = noise.std(0)
    if (noise.mean(0) / sd).abs().max() > 0.1:  # about 0.016 for N(0, 1) noise
        raise CheckFailed("The noise does not have mean 0: eps must come from a standard normal N(0, I) (torch.randn_like), "
                          "not a uniform draw (torch.rand).")
    for want, text in [((0.5 * logvar[0]).exp(), None), (logvar[0].exp(), "the variance exp(logvar) is used as the standard deviation; "
                       "sigma = exp(0.5 * logvar)"), (logvar[0].abs(), "logvar itself is used as the standard deviation; sigma = exp(0.5 * logvar)"),
                       ((0.25 * logvar[0]).exp(), "the square root is taken twice; sigma = exp(0.5 * logvar)")]:
        if (sd / want.double() - 1).abs().max() < 0.08:
            if text is None:
                break
            raise CheckFailed(f"The spread of z - mu per dimension is {[round(v, 2) for v in sd.tolist()]} but should be "
                              f"exp(logvar / 2) = {[round(v, 2) for v in (0.5 * logvar[0]).exp().tolist()]}: {text}.")
    else:
        raise CheckFailed(f"The spread of z - mu per dimension is {[round(v, 2) for v in sd.tolist()]} but should be "
                          f"exp(logvar / 2) = {[round(v, 2) for v in (0.5 * logvar[0]).exp().tolist()]}.")
    if (noise - noise.mean(0)).abs().max() / sd.max() < 2.5:
        raise CheckFailed("The noise never goes far from its mean: is it Gaussian? Use eps = torch.randn_like(mu).")
    passed("reparameterize", "z = mu + exp(logvar / 2) * eps, gradients reach mu and logvar")


def check_kl_divergence(fn: Callable) -> None:
    """``kl_divergence(mu, logvar) -> (B,)``: KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the D latent dims."""
    b, d = 6, 5
    mu, logvar = _vae_case(b, d, seed=2)
    with torch.no_grad():
        mu[0], logvar[0] = 0.0, 0.0   # q equals the prior: KL = 0
        logvar[1] = 0.0               # unit variance: KL = |mu|^2 / 2
    kl = expect_tensor(call(fn, mu, logvar), (b,), "kl_divergence(mu, logvar)")
    stage("shape")
    m, lv = mu.detach().double(), logvar.detach().double()
    want = losses.kl_normal(m, lv)
    got = kl.detach().double()
    if not close(got, want, rtol=1e-4, atol=1e-4):
        again = call(fn, mu, logvar).detach().double()
        mistakes = [
            (-want, "the sign is flipped: KL = 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar), which is never negative"),
            (2 * want, "the 1/2 in front is missing"),
            (want / d, "you took the mean over the latent dimensions; sum over them instead"),
            (0.5 * (m.pow(2) + (2 * lv).exp() - 1 - 2 * lv).sum(1), "logvar is treated as log(sigma) instead of log(sigma^2): "
             "the variance is exp(logvar)"),
            (0.5 * (m.pow(2) + (0.5 * lv).exp() - 1 - lv).sum(1), "the standard deviation exp(logvar / 2) is used where the variance exp(logvar) belongs"),
            (0.5 * (m.pow(2) + lv.exp() - lv).sum(1), "the -1 is missing (when q equals the prior the KL must be 0)"),
            (0.5 * (lv.exp() - 1 - lv).sum(1), "the mu^2 term is missing"),
            (0.5 * (m.pow(2) + lv.exp() - 1 + lv).sum(1), "the sign of the logvar term is wrong: it is - logvar"),
            (0.5 * (m.pow(2) + lv.exp() - 1 - lv).mean(), None),
        ]
        for value, text in mistakes:
            if text and close(got, value, rtol=1e-4, atol=1e-4):
                raise CheckFailed(f"kl_divergence is off: {text}.")
        if not close(got, again, rtol=1e-6, atol=1e-6):
            raise CheckFailed("kl_divergence gives a different answer each call: it looks like a Monte Carlo estimate. "
                              "Use the closed form 0.5 * sum(mu^2 + exp(logvar) - 1 - logvar).")
        if abs(got[0]) > 1e-4:
            raise CheckFailed(f"For mu = 0 and logvar = 0 (q equals the prior) the KL must be 0, got {got[0].item():.4g}.")
        raise CheckFailed(f"kl_divergence gives {[round(v, 3) for v in got.tolist()]}, expected "
                          f"{[round(v, 3) for v in want.tolist()]} (0.5 * sum over dims of mu^2 + exp(logvar) - 1 - logvar).{ratio_hint(got, want)}")
    stage("values")
    if not kl.requires_grad:
        raise CheckFailed("The KL does not track gradients (.item(), numpy or .detach() inside?): training needs them.")
    kl.sum().backward()
    if mu.grad is None or logvar.grad is None or not close(mu.grad, m.float(), atol=1e-4) or not close(logvar.grad, 0.5 * (lv.exp() - 1).float(), atol=1e-4):
        raise CheckFailed("The value is right but its gradients with respect to mu and logvar are not: is part of it detached?")
    passed("kl_divergence", "closed form, summed over latent dimensions")


def check_negative_elbo(fn: Callable) -> None:
    """``negative_elbo(x, x_logits, mu, logvar) -> scalar``: batch mean of (Bernoulli NLL summed over pixels + KL)."""
    import torch.nn.functional as F

    b, d = 8, 5
    g = torch.Generator().manual_seed(3)
    x = torch.bernoulli(torch.rand(b, 1, 28, 28, generator=g), generator=g)
    x_logits = (torch.randn(b, 1, 28, 28, generator=g) * 2.5).clamp(-6, 6).requires_grad_()
    mu, logvar = _vae_case(b, d, seed=4)
    try:
        out = call(fn, x, x_logits, mu, logvar)
    except CheckFailed as err:
        if "between 0 and 1" in str(err):
            raise CheckFailed(f"{err}\n  x_logits are logits, not probabilities: use F.binary_cross_entropy_with_logits "
                              "(or apply torch.sigmoid once before F.binary_cross_entropy).") from None
        raise
    loss = expect_tensor(out, (), "negative_elbo(x, x_logits, mu, logvar)")
    stage("shape")
    xl, m, lv = x_logits.detach().double(), mu.detach().double(), logvar.detach().double()
    xd = x.double()
    rec = losses.bernoulli_nll(xd, xl)
    kl = losses.kl_normal(m, lv)
    want = (rec + kl).mean()
    got = loss.detach().double()
    if not close(got, want, rtol=1e-4, atol=1e-3):
        twice = F.binary_cross_entropy_with_logits(torch.sigmoid(xl), xd, reduction="none").flatten(1).sum(1)
        mistakes = [
            (-want, "the sign is flipped: return the NEGATIVE ELBO (reconstruction NLL + KL), which training minimises"),
            ((rec - kl).mean(), "the KL has the wrong sign: the negative ELBO ADDS the KL to the reconstruction term"),
            ((rec / 784 + kl).mean(), "the reconstruction term is a per-pixel mean; sum the Bernoulli NLL over the 784 pixels "
             "(reduction='none' then .sum over pixels, or reduction='sum' divided by the batch size)"),
            ((rec / 784 + kl / d).mean(), "both terms are means over pixels / latent dimensions; sum over them, average only over the batch"),
            ((rec + kl / d).mean(), "the KL is a mean over latent dimensions; sum it over them"),
            ((twice + kl).mean(), "the sigmoid is applied twice: binary_cross_entropy_with_logits already applies it to the logits"),
            (rec.mean(), "the KL term is missing"),
            (kl.mean(), "the reconstruction term is missing"),
            ((rec + 2 * kl).mean(), "the KL is twice too big (its 1/2 is missing)"),
            ((rec + kl).sum(), "you summed over the batch; take the mean over the batch"),
            ((rec.sum() + kl.mean()), "the reconstruction term is summed over the batch too; average both terms over the batch"),
            (((torch.sigmoid(xl) - xd).pow(2).flatten(1).sum(1) + kl).mean(), "this is a squared error; the decoder is a Bernoulli, "
             "so the reconstruction term is the binary cross-entropy (F.binary_cross_entropy_with_logits)"),
        ]
        for value, text in mistakes:
            if close(got, value, rtol=1e-4, atol=1e-3):
                raise CheckFailed(f"negative_elbo is off: {text}.")
        raise CheckFailed(f"negative_elbo gives {got.item():.4f}, expected {want.item():.4f} "
                          f"(reconstruction {rec.mean().item():.2f} + KL {kl.mean().item():.2f}).{ratio_hint(got, want)}")
    stage("value")
    if not loss.requires_grad:
        raise CheckFailed("The loss does not track gradients (.item(), numpy or .detach() inside?): training needs them.")
    loss.backward()
    for t, n in [(x_logits, "x_logits"), (mu, "mu"), (logvar, "logvar")]:
        if t.grad is None or t.grad.abs().max() == 0:
            raise CheckFailed(f"No gradient reaches {n}: is part of the loss detached?")
    passed("negative_elbo", f"{got.item():.2f} nats on a test batch")


class _LossVAE(torch.nn.Module):
    """A linear VAE whose ``decode`` records every code it is given, so a check can see what was decoded.

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


def _vae_loss_call(fn: Callable, model: _LossVAE, x: torch.Tensor, beta: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the student's loss once; return the loss and the one code it decoded, after the checks on the call itself."""
    model.codes.clear()
    shown = "vae_loss(model, x)" if beta is None else f"vae_loss(model, x, beta={beta:g})"
    out = call(fn, model, x) if beta is None else call(fn, model, x, beta=beta)
    if isinstance(out, tuple):
        raise CheckFailed(f"{shown} returned a tuple {_describe(out)}: return the loss alone, one scalar tensor.")
    loss = expect_tensor(out, (), shown)
    if model.forward_calls:
        raise CheckFailed("You called model(x): its forward pass samples z with the course's own reparameterization, not yours. "
                          "Write the pass yourself: model.encode(x), your reparameterize, model.decode(z).")
    if not model.codes:
        raise CheckFailed("model.decode was never called: the reconstruction term needs the decoder's logits for a code z.")
    if len(model.codes) > 1:
        raise CheckFailed(f"model.decode ran {len(model.codes)} times for one batch: decode one sampled code per image, once.")
    z = model.codes[0]
    if tuple(z.shape) != (x.shape[0], model.latent_dim):
        raise CheckFailed(f"The code given to model.decode has shape {tuple(z.shape)}, expected (B, D) = {(x.shape[0], model.latent_dim)}.")
    return loss, z


def check_vae_loss(fn: Callable) -> None:
    """``vae_loss(model, x, beta=1.0) -> scalar``: encode, sample z with the reparameterization, decode, and return the
    batch mean of (Bernoulli NLL summed over pixels + beta * KL), in nats per image: negative_elbo's convention."""
    torch.manual_seed(0)
    model = _LossVAE()
    b = 512  # enough codes to measure the spread of z - mu per dimension within about 3%
    x = torch.bernoulli(torch.full((b, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(1))
    x_before = x.clone()
    loss, z = _vae_loss_call(fn, model, x, None)
    if not torch.equal(x, x_before):
        raise CheckFailed("vae_loss changed x in place: leave the batch as it is.")
    stage("call")
    with torch.no_grad():
        mu, logvar = (t.double() for t in model.encode(x))
    zd = z.double()
    noise = zd - mu
    if noise.abs().max() < 1e-6:
        raise CheckFailed("The decoder got mu itself: no noise, so this is an autoencoder's loss plus a KL. Decode a sample "
                          "z ~ q(z|x) drawn with your reparameterize(mu, logvar).")
    if torch.corrcoef(torch.stack([zd.flatten(), mu.flatten()]))[0, 1] < 0.2:
        raise CheckFailed("The decoded code z ignores mu: it looks drawn from the prior N(0, I), not from q(z|x) = N(mu, sigma^2). "
                          "Use your reparameterize(mu, logvar).")
    scales = [((0.5 * logvar).exp(), None),
              (torch.ones_like(logvar), "z - mu has spread 1 in every dimension: the noise is not scaled by the standard deviation "
               "(torch.randn without sigma). Sample with your reparameterize(mu, logvar), z = mu + exp(logvar / 2) * eps"),
              (logvar.exp(), "the variance exp(logvar) is used as the standard deviation; sigma = exp(logvar / 2). "
               "Sample with your reparameterize(mu, logvar)"),
              (logvar.abs(), "logvar itself is used as the standard deviation; sigma = exp(logvar / 2). "
               "Sample with your reparameterize(mu, logvar)")]
    spread = [(noise / s).std(0) for s, _ in scales]
    matched = [text for (s, text), sd in zip(scales, spread) if bool(((sd - 1).abs() < 0.12).all())]
    if not matched:
        raise CheckFailed(f"The spread of (z - mu) / exp(logvar / 2) per latent dimension is {[round(v, 2) for v in spread[0].tolist()]}, "
                          "expected 1 everywhere: z should be a draw from N(mu, exp(logvar)). Sample with your reparameterize(mu, logvar).")
    if matched[0] is not None:
        raise CheckFailed(f"The decoded code has the wrong spread: {matched[0]}.")
    stage("sample")
    with torch.no_grad():
        rec = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(z), x, reduction="none").flatten(1).sum(1).double()
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
    got = loss.detach().double()

    def judge(got: torch.Tensor, beta: float, rec: torch.Tensor, kl: torch.Tensor) -> None:
        want = (rec + beta * kl).mean()
        if close(got, want, rtol=1e-4, atol=1e-3):
            return
        mistakes = [
            (rec.mean(), "the KL term is missing: add KL(q(z|x) || N(0, I)), e.g. with your kl_divergence or negative_elbo"),
            ((rec - beta * kl).mean(), "the KL has the wrong sign: the negative ELBO ADDS the KL to the reconstruction NLL"),
            (kl.mean() * beta, "the reconstruction term is missing: add the Bernoulli NLL of x under the decoder's logits"),
            (-want, "the sign is flipped: return the NEGATIVE ELBO, which training minimises"),
            ((rec + beta * kl).sum(), "you summed over the batch; negative_elbo averages over it, so take the mean over the batch"),
            (rec.sum() + beta * kl.mean(), "the reconstruction term is summed over the batch and the KL averaged: average both over "
             "the batch, as negative_elbo does"),
            (rec.mean() + beta * kl.sum(), "the KL is summed over the batch and the reconstruction averaged: average both over "
             "the batch, as negative_elbo does"),
            ((rec / 784 + beta * kl).mean(), "the reconstruction term is a per-pixel mean; sum it over the 784 pixels, as negative_elbo does"),
        ]
        if beta != 1.0:
            mistakes += [((rec + kl).mean(), f"beta is ignored: with beta = {beta:g} the KL term is multiplied by beta"),
                         ((beta * rec + kl).mean(), "beta multiplies the reconstruction term; it weights the KL"),
                         (beta * (rec + kl).mean(), "beta multiplies the whole loss; it weights the KL term only")]
        for value, text in mistakes:
            if close(got, value, rtol=1e-4, atol=1e-3):
                raise CheckFailed(f"vae_loss is off: {text}.")
        raise CheckFailed(f"vae_loss(model, x{'' if beta == 1.0 else f', beta={beta:g}'}) gives {got.item():.3f}, expected {want.item():.3f} "
                          f"(reconstruction {rec.mean().item():.2f} + {beta:g} * KL {kl.mean().item():.2f}, batch means, for the z you "
                          f"decoded).{ratio_hint(got, want)}")

    judge(got, 1.0, rec, kl)
    stage("value")
    if not loss.requires_grad:
        raise CheckFailed("The loss does not track gradients (.item(), numpy, torch.no_grad or .detach() inside?): training needs them.")
    for p in model.parameters():
        p.grad = None
    loss.backward()
    enc, dec = model.encoder_params(), model.decoder_params()
    got_enc, got_dec = (_flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]) for ps in (enc, dec))

    def reference(detach_z: bool = False, detach_kl: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        m, lv = model.encode(x)
        eps = ((z - m) / (0.5 * lv).exp()).detach()
        code = m + (0.5 * lv).exp() * eps
        code = code.detach() if detach_z else code
        km, klv = (m.detach(), lv.detach()) if detach_kl else (m, lv)
        r = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(code), x, reduction="none").flatten(1).sum(1)
        total = (r + 0.5 * (km.pow(2) + klv.exp() - 1 - klv).sum(1)).mean()
        grads = torch.autograd.grad(total, enc + dec, allow_unused=True)
        return _flat([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, enc + dec)]).split([got_enc.numel(), got_dec.numel()])

    want_enc, want_dec = reference()
    scale = float(want_enc.abs().max())
    if got_enc.abs().max() < 1e-8 * max(scale, 1.0):
        raise CheckFailed("No gradient reaches the encoder: mu and logvar were detached (or computed under torch.no_grad). "
                          "The loss must train the encoder through both the sampled z and the KL.")
    if not close(got_dec, want_dec, rtol=1e-3, atol=1e-4 * float(want_dec.abs().max())):
        raise CheckFailed("The loss value is right but the decoder's gradients are not: is the reconstruction term detached?")
    if not close(got_enc, want_enc, rtol=1e-3, atol=1e-4 * scale):
        if close(got_enc, reference(detach_z=True)[0], rtol=1e-3, atol=1e-4 * scale):
            raise CheckFailed("The reconstruction's gradient does not reach the encoder: the sample z is detached from mu and logvar "
                              "(drawn with .sample(), torch.normal, under torch.no_grad or .detach()). Use your reparameterize.")
        if close(got_enc, reference(detach_kl=True)[0], rtol=1e-3, atol=1e-4 * scale):
            raise CheckFailed("The KL's gradient does not reach the encoder: mu and logvar were detached before the KL term.")
        raise CheckFailed("The loss value is right but the encoder's gradients are not: is part of mu or logvar detached?")
    stage("gradients")
    for beta in (3.0, 0.25):
        loss_b, z_b = _vae_loss_call(fn, model, x, beta)
        with torch.no_grad():
            rec_b = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(z_b), x, reduction="none").flatten(1).sum(1).double()
        judge(loss_b.detach().double(), beta, rec_b, kl)
    if torch.equal(z_b, z):
        raise CheckFailed("Two calls decoded exactly the same z: draw fresh noise every call (no fixed seed inside).")
    passed("vae_loss", f"{got.item():.1f} nats on a test batch; sample, both terms, beta and gradients as negative_elbo's convention")


# --- Notebook 04: generative adversarial networks -----------------------------------------------


def _gan_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logits of D on a real and a fake batch: moderate values of both signs, and D fooled one way or the other."""
    g = torch.Generator().manual_seed(4)
    return [(2 * torch.randn(8, generator=g, dtype=torch.float64), 2 * torch.randn(8, generator=g, dtype=torch.float64) - 1),
            (torch.linspace(-3, 4, 6, dtype=torch.float64), torch.linspace(-5, 2, 6, dtype=torch.float64))]


_softplus = torch.nn.functional.softplus  # the mistakes below are written with it


def _gan_scalar(fn: Callable, args: tuple, what: str, grad: bool = True) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Call ``fn`` on float32 copies of ``args`` that require grad; return (value as float64, grads)."""
    leaves = [a.detach().float().clone().requires_grad_(grad) for a in args]
    kept = [l.detach().clone() for l in leaves]
    out = expect_tensor(call(fn, *leaves), (), what)
    if any(not torch.equal(l.detach(), k) for l, k in zip(leaves, kept)):
        raise CheckFailed(f"{what} changed its input logits in place. Compute on new tensors instead.")
    grads: list[torch.Tensor | None] = [None] * len(leaves)
    if grad and out.requires_grad:
        grads = list(torch.autograd.grad(out, leaves, allow_unused=True))
    return out.detach().double(), grads


def _match(got: torch.Tensor, candidates: dict[str, torch.Tensor]) -> str | None:
    for message, value in candidates.items():
        if close(got, value, rtol=1e-3, atol=1e-4):
            return message
    return None


def check_discriminator_loss(fn: Callable) -> None:
    """``discriminator_loss(real_logits: (B,), fake_logits: (B,)) -> scalar`` = -E[log D(x)] - E[log(1 - D(G(z)))]."""
    name = "discriminator_loss(real_logits, fake_logits)"
    for real, fake in _gan_cases():
        B = len(real)
        want = losses.gan_d_loss(real, fake)
        got, grads = _gan_scalar(fn, (real, fake), name)
        if not close(got, want, rtol=1e-4, atol=1e-5):
            sig_r, sig_f = torch.sigmoid(real), torch.sigmoid(fake)
            mistakes = {
                "The labels are swapped: real data should get label 1 (D(x) -> 1) and generated data label 0. "
                "Your loss rewards D for calling real digits fake.": _softplus(real).mean() + _softplus(-fake).mean(),
                "The sign is flipped: the loss to minimise is -E[log D(x)] - E[log(1 - D(G(z)))], which is positive "
                "(the log of a probability is negative).": -want,
                "The term for generated data is missing: add -E[log(1 - D(G(z)))] (D must also learn to reject fakes).": _softplus(-real).mean(),
                "The term for real data is missing: add -E[log D(x)] (D must also learn to accept real data).": _softplus(fake).mean(),
                "You applied a sigmoid to something that is already a probability (a sigmoid twice): the inputs are logits, and "
                "binary_cross_entropy_with_logits (or logsigmoid/softplus) applies the sigmoid itself. Pass the logits directly.":
                    _softplus(-sig_r).mean() + _softplus(sig_f).mean(),
                "This is a squared error on probabilities (the least-squares GAN loss), not the log-loss: use "
                "-log D(x) and -log(1 - D(G(z))).": ((sig_r - 1) ** 2).mean() + (sig_f ** 2).mean(),
                "This is linear in the probabilities (1 - D(x) + D(G(z))), not the log-loss: take the log of the probabilities.":
                    (1 - sig_r).mean() + sig_f.mean(),
                "This uses the raw scores (-E[logit(x)] + E[logit(G(z))], the Wasserstein critic loss), not the log-loss: "
                "turn logits into log-probabilities with logsigmoid or BCE with logits.": -real.mean() + fake.mean(),
                "You summed over the batch instead of averaging: the loss is the sum of two batch MEANS.": want * B,
                "Your value is half the right one: you probably averaged over the 2B real and fake logits together. "
                "Average each term over its own batch, then add the two means.": want / 2,
            }
            found = _match(got, mistakes)
            if found:
                raise CheckFailed(found + f"\n  (got {got.item():.4f}, expected {want.item():.4f})")
            near = " Nearly right: an epsilon or clamp inside a log changes the value; compute it from the logits instead." if close(got, want, rtol=2e-2) else ""
            raise CheckFailed(f"{name} gave {got.item():.4f}, expected {want.item():.4f} = -mean(log D(x)) - mean(log(1 - D(G(z)))) "
                              f"with D = sigmoid(logits).{ratio_hint(got, want)}{near}")
        if grads[0] is None or grads[1] is None:
            raise CheckFailed("The loss does not depend on the logits through autograd (no gradient reached them): "
                              "did you use .item(), .detach(), .numpy() or build a new tensor from the values?")
        want_r, want_f = (torch.sigmoid(real) - 1) / B, torch.sigmoid(fake) / B
        if not (close(grads[0].double(), want_r, rtol=1e-3, atol=1e-6) and close(grads[1].double(), want_f, rtol=1e-3, atol=1e-6)):
            raise CheckFailed("The value is right but the gradient with respect to the logits is not: "
                              "avoid non-differentiable steps (rounding, clamping) inside the loss.")
    # D confidently wrong (and right): large logits must not give inf or lose the loss.
    real, fake = torch.tensor([-200.0, 30.0, 5.0]), torch.tensor([200.0, -30.0, 0.0])
    want = losses.gan_d_loss(real.double(), fake.double())
    out = call(fn, real.clone(), fake.clone())
    got = out.detach().double() if isinstance(out, torch.Tensor) else torch.tensor(float("nan"))
    if not torch.isfinite(got).all() or not close(got, want, rtol=1e-3):
        raise CheckFailed(f"Not numerically stable: with logits of +-200 (D very sure) your loss is {got.item():.4g}, "
                          f"the right value is {want.item():.4g}. log(sigmoid(l)) underflows to log(0) = -inf, and adding "
                          "a small epsilon caps the loss. Compute it from the logits: F.binary_cross_entropy_with_logits, "
                          "or F.logsigmoid(l) = -F.softplus(-l) and log(1 - sigmoid(l)) = -F.softplus(l).")
    passed("discriminator_loss")


def check_generator_loss(fn: Callable) -> None:
    """``generator_loss(fake_logits: (B,)) -> scalar`` = -E[log D(G(z))] (the non-saturating loss)."""
    name = "generator_loss(fake_logits)"
    for _, fake in _gan_cases():
        B = len(fake)
        want = losses.gan_g_loss(fake)
        got, grads = _gan_scalar(fn, (fake,), name)
        if not close(got, want, rtol=1e-4, atol=1e-5):
            sig = torch.sigmoid(fake)
            mistakes = {
                "This is the SATURATING loss E[log(1 - D(G(z)))] of the original min-max game. It has the same fixed point, "
                "but when D confidently rejects the fakes (D(G(z)) near 0, as early in training) its gradient vanishes "
                "(d/dl log(1 - sigmoid(l)) = -sigmoid(l) -> 0), so G stops learning. Use the non-saturating loss "
                "-E[log D(G(z))], whose gradient is largest exactly there.": losses.gan_g_loss_saturating(fake),
                "The target is the discriminator's: you labelled the fakes 0. G wants D to call its samples REAL (label 1): "
                "minimise -E[log D(G(z))].": _softplus(fake).mean(),
                "The sign is flipped: -E[log D(G(z))] is positive (the log of a probability is negative), and G minimises it.": -want,
                "You applied a sigmoid to something that is already a probability (a sigmoid twice): fake_logits are logits; "
                "binary_cross_entropy_with_logits (or logsigmoid/softplus) applies the sigmoid itself.": _softplus(-sig).mean(),
                "This is a squared error on the probability (the least-squares GAN loss), not the log-loss -log D(G(z)).": ((sig - 1) ** 2).mean(),
                "This is linear in the probability (-D(G(z)) or 1 - D(G(z))), not the log-loss -log D(G(z)).": -sig.mean(),
                "This is linear in the probability (1 - D(G(z))), not the log-loss -log D(G(z)).": (1 - sig).mean(),
                "This uses the raw scores (-E[logit], the Wasserstein generator loss), not the log-loss -log D(G(z)).": -fake.mean(),
                "You summed over the batch instead of averaging: the loss is a batch MEAN.": want * B,
            }
            found = _match(got, mistakes)
            if found:
                raise CheckFailed(found + f"\n  (got {got.item():.4f}, expected {want.item():.4f})")
            near = " Nearly right: an epsilon or clamp inside a log changes the value; compute it from the logits instead." if close(got, want, rtol=2e-2) else ""
            raise CheckFailed(f"{name} gave {got.item():.4f}, expected {want.item():.4f} = -mean(log D(G(z))) "
                              f"with D = sigmoid(logits).{ratio_hint(got, want)}{near}")
        if grads[0] is None:
            raise CheckFailed("The loss does not depend on the logits through autograd (no gradient reached them): "
                              "did you use .item(), .detach(), .numpy() or build a new tensor from the values?")
        if not close(grads[0].double(), (torch.sigmoid(fake) - 1) / B, rtol=1e-3, atol=1e-6):
            raise CheckFailed("The value is right but the gradient with respect to the logits is not: "
                              "avoid non-differentiable steps (rounding, clamping) inside the loss.")
    fake = torch.tensor([-200.0, -30.0, 0.0, 30.0])
    want = losses.gan_g_loss(fake.double())
    out = call(fn, fake.clone())
    got = out.detach().double() if isinstance(out, torch.Tensor) else torch.tensor(float("nan"))
    if not torch.isfinite(got).all() or not close(got, want, rtol=1e-3):
        raise CheckFailed(f"Not numerically stable: when D rejects a fake with logit -200 your loss is {got.item():.4g}, "
                          f"the right value is {want.item():.4g}. log(sigmoid(-200)) underflows to log(0) = -inf, and an "
                          "epsilon caps the loss exactly where G most needs a signal. Use F.softplus(-l) = -log sigmoid(l), "
                          "F.logsigmoid, or F.binary_cross_entropy_with_logits.")
    passed("generator_loss")


class _StepNet(torch.nn.Module):
    """A tiny linear network for check_gan_step: records every input it is called on."""

    def __init__(self, d_in: int, d_out: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = torch.nn.Linear(d_in, d_out)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(d_out, d_in, generator=g) * 0.8)
            self.lin.bias.copy_(torch.randn(d_out, generator=g) * 0.3)
        self.latent_dim, self.squeeze, self.inputs = d_in, d_out == 1, []

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        out = self.lin(x)
        return out.squeeze(-1) if self.squeeze else out


class _StepSGD:
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


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().reshape(-1).clone() for t in tensors]).double()


def _grads(net: torch.nn.Module) -> torch.Tensor:
    return _flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in net.parameters()])


def _ref_grad(net: torch.nn.Module, params: torch.Tensor, loss_of: Callable[[torch.nn.Module], torch.Tensor]) -> torch.Tensor:
    """Gradient w.r.t. ``net``'s parameters set to the flat vector ``params``, on a private copy of ``net``."""
    twin = copy.deepcopy(net)
    twin.inputs = []
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params.float(), twin.parameters())
    for p in twin.parameters():
        p.requires_grad_(True)
        p.grad = None
    return _flat(torch.autograd.grad(loss_of(twin), list(twin.parameters())))


def _step_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The D loss check_gan_step passes as ``d_loss`` (the reference, wrapped so the grader sees a check's helper)."""
    return losses.gan_d_loss(real_logits, fake_logits)


def _step_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The G loss check_gan_step passes as ``g_loss``."""
    return losses.gan_g_loss(fake_logits)


def _gan_step_once(fn: Callable, G: _StepNet, D: _StepNet, opt_g, opt_d, x: torch.Tensor, z: torch.Tensor, lr_g: float, lr_d: float,
                   update_g: bool, call_no: int) -> None:
    """Run the student's step once, watching both optimizers and G's gradients, and compare with Algorithm 1."""
    G.inputs.clear(), D.inputs.clear()
    G0, D0 = _flat(G.parameters()), _flat(D.parameters())
    entry_g, entry_d = _grads(G), _grads(D)
    events: list[tuple] = []  # ("step", "g"/"d", grads of its net, params of D) or ("g_grad",)

    def on_step(which, net):
        return lambda: events.append(("step", which, _grads(net), _flat(D.parameters()), _flat(G.parameters())))

    opt_g.on_step, opt_d.on_step = on_step("g", G), on_step("d", D)
    hooks = [p.register_hook(lambda grad: events.append(("g_grad",))) for p in G.parameters()]
    try:
        out = call(fn, G, D, opt_g, opt_d, x, z, None, d_loss=_step_d_loss, g_loss=_step_g_loss, d_penalty=None, update_g=update_g)
    except CheckFailed as err:
        if "backward through the graph a second time" in str(err):
            raise CheckFailed(f"{err}\n  The fakes are not detached in the D step: loss_d.backward() went back into G and freed "
                              "that part of the graph, so the G step could not backpropagate through it again. Give D "
                              "fake.detach() in the D step.") from None
        raise
    finally:
        opt_g.on_step = opt_d.on_step = None
        for h in hooks:
            h.remove()
    when = f" (call {call_no}, update_g={update_g})"

    # the returned dict
    keys = ("loss_d", "loss_g", "real_logits", "fake_logits")
    if not isinstance(out, dict):
        raise CheckFailed(f"gan_step should return a dict with keys {list(keys)}, but it returned {_describe(out)}{when}.")
    missing = [k for k in keys if k not in out]
    if missing:
        raise CheckFailed(f"The dict gan_step returns lacks the key(s) {missing}: return {{'loss_d': ..., 'loss_g': ..., "
                          f"'real_logits': ..., 'fake_logits': ...}} (got keys {sorted(out)}){when}.")

    steps = [e for e in events if e[0] == "step"]
    n_d, n_g = sum(e[1] == "d" for e in steps), sum(e[1] == "g" for e in steps)
    if update_g and n_g == 0 and n_d >= 2:
        raise CheckFailed("One optimizer stepped both networks: opt_d.step() ran twice and opt_g.step() never. opt_d holds only "
                          "D's weights, so the G step did not change G (and moved D instead). Step G with opt_g." + when)
    if n_d == 0 and n_g >= 2:
        raise CheckFailed("One optimizer stepped both networks: opt_g.step() ran twice and opt_d.step() never. opt_g holds only "
                          "G's weights, so the D step did not change D (and moved G instead). Step D with opt_d." + when)
    if n_d == 0:
        raise CheckFailed("opt_d.step() was never called: the discriminator step must update D." + when)
    if n_d >= 2:
        raise CheckFailed(f"D was updated during the G step: opt_d.step() ran {n_d} times in one call. In the G step only opt_g "
                          "steps; D's weights stay as they are (freeze D, or just never call opt_d.step() there)." + when)
    if not update_g and n_g:
        raise CheckFailed("With update_g=False gan_step must do the D step only, but opt_g.step() was called." + when)
    if update_g and n_g == 0:
        raise CheckFailed("opt_g.step() was never called: with update_g=True the generator step must update G." + when)
    if update_g and n_g >= 2:
        raise CheckFailed(f"opt_g.step() ran {n_g} times in one call: G's weights changed in the D step. Only the G step "
                          "steps opt_g." + when)
    i_d = next(i for i, e in enumerate(events) if e[0] == "step" and e[1] == "d")
    if any(e[0] == "g_grad" for e in events[:i_d]) or (not update_g and any(e[0] == "g_grad" for e in events)):
        raise CheckFailed("The fakes are not detached in the D step: loss_d sent gradients into G's weights. The D step must "
                          "not touch G: use D(fake.detach()) (or make the fakes under torch.no_grad())." + when)
    if not close(events[i_d][4], G0):
        raise CheckFailed("G's weights changed in the D step, before opt_d.step(): only the G step may change G." + when)

    # D's gradient when opt_d steps: of the discriminator loss on real x and the fakes G(z) of the noise it was given
    fake = _ref_d(G, G0)(z).detach()
    ref_d = _ref_grad(D, D0, lambda net: losses.gan_d_loss(net(x), net(fake)))
    swapped = _ref_grad(D, D0, lambda net: losses.gan_d_loss(net(fake), net(x)))
    got_d = events[i_d][2]
    if not close(got_d, ref_d, rtol=1e-4, atol=1e-6):
        leftover = entry_d.abs().sum() > 0
        if close(got_d, swapped, rtol=1e-4, atol=1e-6) or (leftover and close(got_d, swapped + entry_d, rtol=1e-4, atol=1e-6)):
            raise CheckFailed("The labels are swapped in the D step: D is trained to call real data fake (0) and fakes real (1). "
                              "Real logits get target 1, fake logits target 0: d_loss(real_logits, fake_logits), in that order." + when)
        if leftover and close(got_d, ref_d + entry_d, rtol=1e-4, atol=1e-6):
            raise CheckFailed("Gradients accumulate across calls: D's gradient at opt_d.step() is this step's plus the gradient left "
                              "over from the previous call. Call opt_d.zero_grad() before loss_d.backward()." + when)
        raise CheckFailed("D's gradient at opt_d.step() is not the gradient of d_loss(D(x_real), D(G(z).detach())) on the batch "
                          "and noise gan_step was given: the D step should use x_real and z, real logits first." + when)
    D1 = D0 - lr_d * ref_d
    # G's gradient when opt_g steps: of the non-saturating loss through the updated D, on the noise of G's last call
    if update_g:
        i_g = next(i for i, e in enumerate(events) if e[0] == "step" and e[1] == "g")
        if i_g < i_d:
            raise CheckFailed("opt_g stepped before opt_d: do the D step first, then the G step." + when)
        if not close(events[i_g][3], D1, rtol=1e-5, atol=1e-6):
            raise CheckFailed("D's weights changed between its step and the G step: only opt_d.step() in the D step may change D." + when)
        if not G.inputs:
            raise CheckFailed("G was never called: the G step needs fakes G(z) with a graph back to G's weights." + when)
        z2 = G.inputs[-1]
        ref_g = _ref_grad(G, G0, lambda net: losses.gan_g_loss(_ref_d(D, D1)(net(z2))))
        sat = _ref_grad(G, G0, lambda net: losses.gan_g_loss_saturating(_ref_d(D, D1)(net(z2))))
        got_g = events[i_g][2]
        if not close(got_g, ref_g, rtol=1e-4, atol=1e-6):
            leftover = entry_g.abs().sum() > 0
            if close(got_g, sat, rtol=1e-4, atol=1e-6) or (leftover and close(got_g, sat + entry_g, rtol=1e-4, atol=1e-6)):
                raise CheckFailed("This is the SATURATING generator loss E[log(1 - D(G(z)))]: its gradient vanishes when D rejects the "
                                  "fakes. G minimises the non-saturating -E[log D(G(z))] = g_loss(D(G(z)))." + when)
            if close(got_g, -ref_g, rtol=1e-4, atol=1e-6):
                raise CheckFailed("G's gradient has the wrong sign: G minimises -E[log D(G(z))] (it wants D to call its fakes real)." + when)
            if leftover and close(got_g, ref_g + entry_g, rtol=1e-4, atol=1e-6):
                raise CheckFailed("Gradients accumulate across calls: G's gradient at opt_g.step() is this step's plus the gradient left "
                                  "over from the previous call. Call opt_g.zero_grad() before loss_g.backward()." + when)
            raise CheckFailed("G's gradient at opt_g.step() is not the gradient of g_loss(D(G(z))) through the updated D: the G step "
                              "should compute fakes from noise, score them with D after its step and backpropagate g_loss." + when)
        G1 = G0 - lr_g * ref_g
    else:
        G1 = G0
    if not close(_flat(D.parameters()), D1, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After gan_step D's weights are not those of one opt_d step on the D loss: something else changed D." + when)
    if not close(_flat(G.parameters()), G1, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After gan_step G's weights are not those of one opt_g step on the G loss: something else changed G." + when)

    # the values it returns
    with torch.no_grad():
        D_before = _ref_d(D, D0)
        real_l, fake_l = D_before(x).double(), D_before(fake).double()
    for key, want in (("real_logits", real_l), ("fake_logits", fake_l)):
        got = expect_tensor(out[key], tuple(want.shape), f"out['{key}']")
        if not close(got.detach().double(), want, rtol=1e-4, atol=1e-5):
            raise CheckFailed(f"out['{key}'] should be D's logits on the {key.split('_')[0]} batch in the D step." + when)
    loss_d = expect_tensor(out["loss_d"], (), "out['loss_d']")
    if not close(loss_d.detach().double(), losses.gan_d_loss(real_l, fake_l), rtol=1e-4, atol=1e-5):
        raise CheckFailed("out['loss_d'] should be the D step's loss d_loss(real_logits, fake_logits)." + when)
    if update_g:
        expect_tensor(out["loss_g"], (), "out['loss_g']")


def _ref_d(net: _StepNet, params: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    """``net`` with the flat weights ``params``, as a function (no recording; gradients flow to its input only)."""
    n = net.lin.weight.numel()
    w, b = params[:n].float().view_as(net.lin.weight), params[n:].float()
    return lambda x: (lambda out: out.squeeze(-1) if net.squeeze else out)(torch.nn.functional.linear(x, w, b))


def check_gan_step(fn: Callable) -> None:
    """``gan_step(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss, g_loss, d_penalty, update_g)`` -> dict: one iteration of Algorithm 1.

    Tiny linear G and D with plain SGD optimizers of known learning rates: the check watches every optimizer
    step (which one, with which gradients) and G's gradients, and compares with the D step on real and
    detached fakes followed by the non-saturating G step through the updated D.
    """
    g = torch.Generator().manual_seed(18)
    G, D = _StepNet(2, 2, seed=1), _StepNet(2, 1, seed=2)
    lr_g, lr_d = 0.3, 0.2
    opt_g, opt_d = _StepSGD(G.parameters(), lr=lr_g), _StepSGD(D.parameters(), lr=lr_d)
    B = 6
    rng_state = torch.random.get_rng_state()
    try:
        for call_no, update_g in enumerate([True, True, False, True], start=1):
            x = torch.randn(B, 2, generator=g) + torch.tensor([1.5, -1.0])
            z = torch.randn(B, 2, generator=g)
            _gan_step_once(fn, G, D, opt_g, opt_d, x, z, lr_g, lr_d, update_g, call_no)
    finally:
        torch.random.set_rng_state(rng_state)
    passed("gan_step", "4 calls on tiny linear networks with SGD")


def _conv_size(fn: Callable, args: tuple, name: str) -> int:
    """Call ``fn(*args)`` and insist on a plain int (sizes index tensors: 3.5 or 3.0 will not do)."""
    out = call(fn, *args)
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise CheckFailed(f"{name}{args} should return an int, got {_describe(out)}.")
    if isinstance(out, float):
        raise CheckFailed(f"{name}{args} returned the float {out}: a size is a whole number of pixels. Use // (floor division), "
                          "not /, so that the result is an int.")
    return out


def _conv_verdict(fn: Callable, name: str, cases: list[tuple[int, ...]], truth: Callable[..., int], params: str,
                  mistakes: dict[str, Callable[..., int]], layer: str) -> None:
    """Compare ``fn`` with PyTorch's ``truth`` on every case; name the mistake whose formula explains all its answers."""
    got = [_conv_size(fn, case, name) for case in cases]
    want = [truth(*case) for case in cases]
    if got == want:
        return
    found = next((m for m, f in mistakes.items() if [f(*case) for case in cases] == got), None)
    i = next(j for j in range(len(cases)) if got[j] != want[j])
    shown = ", ".join(f"{k}={v}" for k, v in zip(params.split(), cases[i]))
    raise CheckFailed((found + " " if found else "") + f"{name}({shown}) gave {got[i]}; {layer} gives {want[i]}.")


def check_conv_out(fn: Callable) -> None:
    """``conv_out(size, kernel, stride=1, padding=0) -> int``: the output side of ``nn.Conv2d`` on a ``size x size`` input."""
    cases = [(28, 4, 2, 1), (7, 4, 2, 1), (3, 4, 2, 1), (10, 3, 2, 0), (5, 3, 1, 0), (6, 5, 1, 2), (9, 3, 3, 1)]
    truth = lambda n, k, s, p: torch.nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, n, n)).shape[-1]  # PyTorch's own answer
    mistakes = {
        "It rounds up: when the windows do not tile the padded input exactly, the last partial window is dropped, so "
        "the division rounds DOWN (floor, //).": lambda n, k, s, p: -(-(n + 2 * p - k) // s) + 1,
        "The +1 is missing: (size + 2*padding - kernel) // stride counts the steps between window positions; the "
        "positions are one more (the first window counts too).": lambda n, k, s, p: (n + 2 * p - k) // s,
        "The padding is counted once: it is added on BOTH sides of the input, 2 * padding.": lambda n, k, s, p: (n + p - k) // s + 1,
        "The stride is ignored: a stride-s window lands on every s-th position, so divide by the stride.": lambda n, k, s, p: n + 2 * p - k + 1,
        "This is the transposed convolution's formula (it grows the image); an ordinary convolution shrinks it.":
            lambda n, k, s, p: (n - 1) * s - 2 * p + k,
    }
    _conv_verdict(fn, "conv_out", cases, truth, "size kernel stride padding", mistakes, "nn.Conv2d")
    passed("conv_out", f"{len(cases)} cases against nn.Conv2d")


def check_conv_transpose_out(fn: Callable) -> None:
    """``conv_transpose_out(size, kernel, stride=1, padding=0, output_padding=0) -> int``: the output side of ``nn.ConvTranspose2d``."""
    cases = [(7, 4, 2, 1, 0), (14, 4, 2, 1, 0), (3, 3, 2, 1, 1), (4, 5, 1, 2, 0), (5, 3, 2, 0, 1), (2, 4, 3, 0, 2)]
    truth = lambda n, k, s, p, op: torch.nn.ConvTranspose2d(1, 1, k, s, p, output_padding=op)(torch.zeros(1, 1, n, n)).shape[-1]
    right = lambda n, k, s, p, op: (n - 1) * s - 2 * p + k + op
    mistakes = {
        "output_padding is ignored: it adds that many pixels on one side of the output (it tells apart the input sizes "
        "that an ordinary convolution would map to the same output).": lambda n, k, s, p, op: right(n, k, s, p, op) - op,
        "output_padding is subtracted: it ADDS pixels to the output.": lambda n, k, s, p, op: right(n, k, s, p, op) - 2 * op,
        "This is the ordinary convolution's formula: a transposed convolution inverts it. Solve "
        "out = (n + 2*padding - kernel) // stride + 1 for n, the size that a convolution would shrink to `size`.":
            lambda n, k, s, p, op: (n + 2 * p - k) // s + 1,
        "The inversion went wrong: the signs of padding and kernel are swapped. Padding is removed from the grown "
        "image, and each input pixel spreads over a whole kernel.": lambda n, k, s, p, op: (n - 1) * s + 2 * p - k + op,
        "The -1 is missing: n input pixels are n - 1 strides apart, and the first kernel adds its full width, so "
        "(size - 1) * stride, not size * stride.": lambda n, k, s, p, op: n * s - 2 * p + k + op,
        "The padding is removed once: a transposed convolution trims it from BOTH sides, 2 * padding.":
            lambda n, k, s, p, op: (n - 1) * s - p + k + op,
    }
    _conv_verdict(fn, "conv_transpose_out", cases, truth, "size kernel stride padding output_padding", mistakes, "nn.ConvTranspose2d")
    passed("conv_transpose_out", f"{len(cases)} cases against nn.ConvTranspose2d")

# --- Notebook 05: GAN variants (conditional GAN, WGAN-GP, CycleGAN) ----------------------------


def check_critic_loss(fn: Callable) -> None:
    """``critic_loss(real_scores: (B,), fake_scores: (M,)) -> scalar`` = E[critic(fake)] - E[critic(real)]."""
    g = torch.Generator().manual_seed(5)
    real = (torch.randn(6, generator=g) + 2.0).requires_grad_()
    fake = (torch.randn(6, generator=g) - 1.0).requires_grad_()
    out = expect_tensor(call(fn, real, fake), (), "critic_loss(real_scores, fake_scores)")
    want = losses.critic_loss(real, fake)
    if out.grad_fn is None:
        raise CheckFailed("The loss has no gradient: keep it a torch expression of the scores (no .item(), .detach() or numpy).")
    if close(out, -want):
        raise CheckFailed("The sign is flipped: the critic *minimises* E[critic(fake)] - E[critic(real)], which pushes real scores up and fake scores down.")
    if close(out, fake.sum() - real.sum()):
        raise CheckFailed("You summed the scores: take the mean over each batch, so the loss does not grow with the batch size.")
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    vanilla = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    if close(out, vanilla, rtol=1e-3) or close(out, -(torch.nn.functional.logsigmoid(real).mean() + torch.nn.functional.logsigmoid(-fake).mean()), rtol=1e-3):
        raise CheckFailed("This is the vanilla GAN's cross-entropy loss. A critic's scores are not probabilities: no sigmoid, no log, just the two means.")
    if not close(out, want):
        raise CheckFailed(f"critic_loss gave {out.item():.4f}, expected E[fake] - E[real] = {want.item():.4f}.{ratio_hint(out, want)}")
    grad_r, grad_f = torch.autograd.grad(out, (real, fake))
    if not (close(grad_r, torch.full((6,), -1 / 6)) and close(grad_f, torch.full((6,), 1 / 6))):
        raise CheckFailed("The value is right but the gradient is not: each real score should get gradient -1/B and each fake score +1/B.")
    # A batch of fakes of another size: average each batch on its own (fake - real elementwise breaks here).
    r2, f2 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -0.5, 2.0, 4.0, 1.0])
    try:
        out2 = fn(r2, f2)
    except Exception as err:
        raise CheckFailed(f"With 3 real and 5 fake scores `critic_loss` crashed ({type(err).__name__}: {err}). "
                          "Average each batch on its own: fake_scores.mean() - real_scores.mean().") from None
    if not close(expect_tensor(out2, (), "critic_loss(3 real, 5 fake scores)"), f2.mean() - r2.mean()):
        raise CheckFailed(f"With 3 real and 5 fake scores you gave {float(out2):.4f}, expected {float(f2.mean() - r2.mean()):.4f}: average each batch on its own.")
    passed("critic_loss")


class _RecordingCritic(torch.nn.Module):
    """A critic that remembers what it was called on; ``linear=True`` makes grad_x critic = w exactly."""

    def __init__(self, dim: int, linear: bool, out_2d: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        if linear:
            w = torch.randn(dim, generator=g)
            self.w = torch.nn.Parameter(3.0 * w / w.norm())  # |grad| = 3 everywhere: the penalty is (3 - 1)^2 = 4
            self.net = None
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.out_2d, self.inputs = out_2d, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        flat = x.flatten(1)
        s = flat @ self.w if self.net is None else self.net(flat).squeeze(1)
        return s.unsqueeze(1) if self.out_2d else s


def _line_problem(x_hat: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> str:
    """Why ``x_hat`` is not eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per example ("" if it is).

    Shared by the gradient penalty's check and the WGAN-GP step's check."""
    d, r = (x_hat - fake).flatten(1), (real - fake).flatten(1)
    eps = (d * r).sum(1) / (r * r).sum(1)  # the eps that best explains each x_hat
    if not close(d, eps[:, None] * r, atol=1e-4):
        return ("The penalty's points x_hat are not on the line from each fake to its real example: the interpolation weight eps "
                f"must be one number per example, shape {(len(real),) + (1,) * (real.dim() - 1)} here "
                "(e.g. torch.rand(B, *[1] * (x.dim() - 1))), not one per coordinate or pixel.")
    if (eps < -1e-4).any() or (eps > 1 + 1e-4).any():
        return (f"The interpolation weight eps went outside [0, 1] (min {eps.min().item():.2f}, max {eps.max().item():.2f}): "
                "draw it uniformly (torch.rand), not from a normal (torch.randn).")
    if eps.max() - eps.min() < 1e-6:
        return ("Every example used the same eps: the whole batch got one random number. Draw one eps per example, "
                "e.g. torch.rand(B, 1) for (B, D) data.")
    return ""


def _interpolation_problems(critic: _RecordingCritic, real: torch.Tensor, fake: torch.Tensor) -> str:
    """Why the points the critic saw are not x_hat = eps*real + (1-eps)*fake with one eps ~ U[0,1] per example ("" if fine)."""
    seen = [x for x in critic.inputs if x.shape == real.shape]
    if not seen:
        shapes = ", ".join(str(tuple(x.shape)) for x in critic.inputs) or "nothing"
        return f"The critic was never called on a batch shaped like the data {tuple(real.shape)} (it saw {shapes})."
    x_hat = seen[-1]
    if close(x_hat, real, atol=1e-6):
        return ("The penalty was taken at the real data only. It must be taken at random points between real and fake "
                "samples: x_hat = eps * real + (1 - eps) * fake.")
    if close(x_hat, fake, atol=1e-6):
        return "The penalty was taken at the fake samples only: interpolate, x_hat = eps * real + (1 - eps) * fake."
    return _line_problem(x_hat, real, fake)


def check_gradient_penalty(fn: Callable) -> None:
    """``gradient_penalty(critic, real, fake) -> scalar``: mean over the batch of (||grad critic(x_hat)||_2 - 1)^2."""
    g = torch.Generator().manual_seed(7)
    B = 8
    # 1. A linear critic has the same gradient w everywhere (|w| = 3): the penalty is exactly (3 - 1)^2 = 4.
    for shape, out_2d, what in [((B, 2), False, "2D points (B, 2)"), ((6, 1, 28, 28), True, "images (B, 1, 28, 28) and a critic returning (B, 1)")]:
        critic = _RecordingCritic(math.prod(shape[1:]), linear=True, out_2d=out_2d)
        real, fake = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        try:
            out = fn(critic, real, fake)
        except NotImplementedError as err:
            raise CheckFailed(f"`gradient_penalty` is not written yet ({err}). Replace the `raise NotImplementedError` line with your code.") from None
        except Exception as err:
            hint = ""
            text = str(err)
            if "does not require grad" in text or "One of the differentiated Tensors" in text:
                hint = " Make x_hat require gradients before calling the critic: x_hat.requires_grad_(True)."
            elif "must match the size" in text or "broadcast" in text or "size of tensor" in text:
                hint = (f" For images eps must broadcast over every pixel: shape {(shape[0],) + (1,) * (len(shape) - 1)}, "
                        "e.g. torch.rand(B, *[1] * (real.dim() - 1)).")
            elif "grad can be implicitly created only for scalar" in text:
                hint = " The critic returns one score per example: pass grad_outputs=torch.ones_like(scores) to torch.autograd.grad."
            raise CheckFailed(f"On {what}, `gradient_penalty` crashed with {type(err).__name__}: {err}.{hint}") from None
        out = expect_tensor(out, (), f"gradient_penalty on {what}")
        if out.grad_fn is None or not out.requires_grad:
            raise CheckFailed("The penalty is not differentiable with respect to the critic's parameters, so adding it to the critic's loss "
                              "changes nothing. Pass create_graph=True to torch.autograd.grad (and do not .detach() the gradient).")
        n = shape[0]
        wrong = {
            "You took the norm of the whole batch's gradient at once. Take one norm per example: grad.flatten(1).norm(dim=1).": (math.sqrt(n) * 3 - 1) ** 2,
            "You penalised the squared norm (||g||^2 - 1)^2. Take the norm itself, ||g||_2 = sqrt(sum of squares), then (||g|| - 1)^2.": (9 - 1) ** 2,
            "You took the absolute value |‖g‖ - 1|: the penalty squares it, (‖g‖ - 1)^2.": 2.0,
            "You summed over the batch: take the mean over examples, so the penalty does not grow with the batch size.": 4.0 * n,
            "You penalised ||g||^2 without subtracting 1: the target norm is 1, (||g|| - 1)^2.": 9.0,
        }
        if not close(out, 4.0, rtol=1e-4):
            for message, value in wrong.items():
                if close(out, value, rtol=1e-4):
                    raise CheckFailed(f"On {what}: {message}")
            if len(shape) > 2:
                raise CheckFailed(f"On {what} the penalty is {out.item():.4f}, expected exactly 4 (a critic whose gradient has norm 3 everywhere). "
                                  "Take each example's norm over all its pixels: grad.flatten(1).norm(dim=1), not grad.norm(dim=1).")
            raise CheckFailed(f"On {what} the penalty is {out.item():.4f}, expected exactly 4: this critic's gradient has norm 3 everywhere, "
                              f"so (3 - 1)^2 = 4.{ratio_hint(out, 4.0)}")
        (grad_w,) = torch.autograd.grad(out, critic.w)
        want = 2 * (3 - 1) * critic.w.detach() / 3  # d/dw (|w| - 1)^2
        if not close(grad_w, want, rtol=1e-3, atol=1e-4):
            raise CheckFailed("The value is right but its gradient with respect to the critic's weights is not: "
                              "use create_graph=True and keep the penalty a torch expression of that gradient.")
        # 2. Where was the penalty taken? A non-linear critic records its inputs.
        critic = _RecordingCritic(math.prod(shape[1:]), linear=False, out_2d=out_2d)
        torch.manual_seed(0)
        out = expect_tensor(call(fn, critic, real, fake), (), f"gradient_penalty on {what}")
        problem = _interpolation_problems(critic, real, fake)
        if problem:
            raise CheckFailed(f"On {what}: {problem}")
    passed("gradient_penalty", "value, gradient, and eps drawn once per example, on points and on images")


class _RecNet(torch.nn.Module):
    """A tiny network for check_wgan_gp_step that notes each input with its place in the check's event list.

    ``hidden=0``: linear (a generator, output ``out_shape`` per row); ``hidden>0``: a tanh critic with one
    score per row, whose input gradient changes from point to point (so where a penalty is taken matters).
    """

    def __init__(self, d_in: int, out_shape: tuple[int, ...], hidden: int, seed: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d_out = math.prod(out_shape)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(d_in, hidden or d_out)] + ([torch.nn.Linear(hidden, 1)] if hidden else []))
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) * 0.9)
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


def _twin(net: _RecNet, params: torch.Tensor) -> _RecNet:
    """A private copy of ``net`` with the flat weights ``params``, not recording."""
    twin = copy.deepcopy(net)
    twin.inputs, twin.events = [], None
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(params.float(), twin.parameters())
    return twin


# What the critic step's penalty term is, for the named mistakes: f(per-example gradient norms) -> (B,)
_PENALTY_FORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "right": lambda n: (n - 1) ** 2,
    "The penalty is missing its square: (||grad|| - 1) on its own can go negative, so the critic lowers its loss by making "
    "its slope small everywhere. Square it: (||grad|| - 1)^2.": lambda n: n - 1,
    "The penalty takes |‖grad‖ - 1| instead of its square: square it, (‖grad‖ - 1)^2.": lambda n: (n - 1).abs(),
    "The penalty lacks its (norm - 1): ||grad||^2 pulls the critic's slope towards 0, but WGAN-GP wants slope 1 "
    "between real and fake points. Penalise (||grad|| - 1)^2.": lambda n: n ** 2,
    "The penalty lacks its (norm - 1): ||grad|| pulls the critic's slope towards 0, but WGAN-GP wants slope 1. "
    "Penalise (||grad|| - 1)^2.": lambda n: n,
    "The penalty uses the squared norm, (||grad||^2 - 1)^2: take the norm itself (the square root of the sum of squares), "
    "then (||grad|| - 1)^2.": lambda n: (n ** 2 - 1) ** 2,
}


def _critic_objective(c: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, at: torch.Tensor | None, lam: float,
                      sign: float = 1.0, form: str = "right") -> torch.Tensor:
    """sign * (E[c(fake)] - E[c(real)]) + lam * mean_i form(||grad_x c(at_i)||_2); no penalty when ``at`` is None."""
    loss = sign * (c(fake).mean() - c(real).mean())
    if at is None:
        return loss
    pts = at.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(c(pts).sum(), pts, create_graph=True)
    return loss + lam * _PENALTY_FORMS[form](grad.flatten(1).norm(dim=1)).mean()


def _rows(x: torch.Tensor, b: int) -> list[torch.Tensor]:
    """``x`` cut into blocks of ``b`` rows (a critic called on torch.cat([real, fake]) scored both batches)."""
    return list(x.split(b)) if len(x) % b == 0 else [x]


def _find(blocks: list[torch.Tensor], want: torch.Tensor) -> bool:
    return any(bl.shape == want.shape and close(bl, want, atol=1e-6) for bl in blocks)


def _wgan_step_once(fn: Callable, G: _RecNet, C: _RecNet, opt_g: _StepSGD, opt_c: _StepSGD, x: torch.Tensor, z: torch.Tensor,
                    n_critic: int, lam: float, lr_g: float, lr_c: float, what: str) -> None:
    """Run the student's step once, watching both optimizers, both networks' inputs and G's gradients."""
    events: list[tuple] = []  # ("step", "g"/"c", grads of its net, C's params, G's params) or ("g_grad",)
    G.inputs, C.inputs, G.events, C.events = [], [], events, events
    G0, C0, entry_c = _flat(G.parameters()), _flat(C.parameters()), _grads(C)

    def on_step(which: str, net: torch.nn.Module) -> Callable[[], None]:
        return lambda: events.append(("step", which, _grads(net), _flat(C.parameters()), _flat(G.parameters())))

    opt_g.on_step, opt_c.on_step = on_step("g", G), on_step("c", C)
    hooks = [p.register_hook(lambda grad: events.append(("g_grad",))) for p in G.parameters()]
    try:
        out = call(fn, G, C, opt_g, opt_c, x, z, n_critic=n_critic, lam=lam)
    finally:
        opt_g.on_step = opt_c.on_step = None
        G.events = C.events = None
        for h in hooks:
            h.remove()
    when = f" ({what}, n_critic={n_critic})"

    keys = ("loss_c", "loss_g")
    if not isinstance(out, dict):
        raise CheckFailed(f"wgan_gp_step should return a dict with keys {list(keys)}, but it returned {_describe(out)}{when}.")
    missing = [k for k in keys if k not in out]
    if missing:
        raise CheckFailed(f"The dict wgan_gp_step returns lacks the key(s) {missing}: return {{'loss_c': ..., 'loss_g': ...}} "
                          f"(got keys {sorted(out)}){when}.")

    # how many steps of which optimizer, in which order
    steps = [(i, e[1]) for i, e in enumerate(events) if e[0] == "step"]
    c_at, g_at = [i for i, w in steps if w == "c"], [i for i, w in steps if w == "g"]
    if not c_at:
        raise CheckFailed("opt_c.step() was never called: the critic steps must update the critic." + when)
    if not g_at:
        raise CheckFailed("opt_g.step() was never called: after the critic steps, one generator step must update G." + when)
    if len(g_at) > 1 or g_at[0] < c_at[-1]:
        raise CheckFailed(f"G was updated in a critic step: opt_g.step() ran {len(g_at)} time(s), the first before the critic's "
                          f"last step. The critic takes all its n_critic steps with G fixed; then G takes ONE step." + when)
    if c_at[-1] > g_at[0]:
        raise CheckFailed("The critic was updated during (or after) the G step: opt_c.step() ran after opt_g.step(). In the G step "
                          "only opt_g steps." + when)
    if len(c_at) == 1 and n_critic > 1:
        raise CheckFailed(f"One critic step instead of n_critic = {n_critic}: opt_c.step() ran once. WGAN-GP trains the critic "
                          f"n_critic times per generator step (each on its own real batch and fakes), so that its score "
                          f"difference is close to the Wasserstein distance when G learns from it." + when)
    if len(c_at) != n_critic:
        raise CheckFailed(f"opt_c.step() ran {len(c_at)} times, expected n_critic = {n_critic}: use the n_critic argument, "
                          "one critic step per block of B = len(x_real) // n_critic real examples." + when)
    first_g = next((i for i, e in enumerate(events) if e[0] == "g_grad"), None)
    if first_g is not None and first_g < c_at[-1]:
        raise CheckFailed("The fakes are not detached in the critic steps: the critic's loss sent gradients into G's weights. A "
                          "critic step must not touch G: score G(z).detach() (or make the fakes under torch.no_grad())." + when)
    for i in c_at:
        if not close(events[i][4], G0):
            raise CheckFailed("G's weights changed during the critic steps: only the G step may change G." + when)

    # each critic step: its gradient when opt_c steps, against the WGAN-GP loss on its own batch
    b = len(x) // n_critic
    xs, zs = x.split(b), z.split(b)
    g_ref = _twin(G, G0)
    C_k, prev_grad, last_value = C0, entry_c, None
    for k, at in enumerate(c_at):
        start = c_at[k - 1] if k else -1
        seen = [bl for pos, inp in C.inputs if start < pos <= at for bl in _rows(inp, b)]
        real = xs[k]
        if not _find(seen, real):
            raise CheckFailed(f"Critic step {k + 1} did not score its real batch x_real[{k * b}:{(k + 1) * b}]: step k of n_critic "
                              f"uses the k-th block of B = len(x_real) // n_critic = {b} real examples (x_real.split(B) or "
                              "x_real.chunk(n_critic))." + when)
        with torch.no_grad():
            fakes = [g_ref(zz) for pos, inp in G.inputs if pos <= at for zz in _rows(inp, b)] + [g_ref(zs[k])]
        fake = next((f for f in fakes if _find(seen, f)), None)
        if fake is None:
            raise CheckFailed(f"Critic step {k + 1} did not score a batch of {b} fakes G(z): the critic's loss needs its scores "
                              "on real examples and on fakes." + when)
        hats = [bl for bl in seen if bl.shape == real.shape and not close(bl, real, atol=1e-6) and not close(bl, fake, atol=1e-6)]
        x_hat = hats[-1] if hats else None
        c_ref = _twin(C, C_k)

        def grad_of(at: Any = "x_hat", lam_: float = lam, **kw) -> torch.Tensor:
            pts = x_hat if isinstance(at, str) else at
            return _ref_grad(C, C_k, lambda net: _critic_objective(net, real, fake, pts, lam_, **kw))

        got = events[at][2]
        same = lambda want: close(got, want, rtol=1e-4, atol=1e-6)
        if x_hat is None:
            for where, pts in (("real examples", real), ("fakes", fake)):
                if same(grad_of(at=pts)):
                    raise CheckFailed(f"The gradient penalty was taken at the {where} only. It must be taken at random points between "
                                      "real and fake examples, x_hat = eps * real + (1 - eps) * fake: the optimal critic has slope 1 "
                                      "on the lines joining them." + when)
            if same(grad_of(at=None)) or same(grad_of(at=None) + prev_grad):
                raise CheckFailed("The critic's gradient has no gradient-penalty part, and the critic never scored points between real "
                                  "and fake examples: add lam * gradient_penalty at interpolates x_hat to the critic's loss." + when)
            raise CheckFailed(f"In critic step {k + 1} the critic only scored the real batch and the fakes: the penalty needs its scores "
                              "at interpolates x_hat = eps * real + (1 - eps) * fake (and their gradient)." + when)
        problem = _line_problem(x_hat, real, fake)
        if problem:
            raise CheckFailed(problem + when)
        ref = grad_of()
        if not same(ref):
            if same(grad_of(at=None)):
                raise CheckFailed("The penalty does not train the critic: its gradient carries none of the penalty. The penalty is a "
                                  "function of a gradient, so torch.autograd.grad must build a graph of it (create_graph=True), "
                                  "and nothing in between may .detach() it or call .item()." + when)
            if same(grad_of(sign=-1.0)):
                raise CheckFailed("The critic's Wasserstein term has the wrong sign: the critic MINIMISES E[f(fake)] - E[f(real)] "
                                  "(+ lam * penalty), pushing real scores up and fake scores down." + when)
            for form in _PENALTY_FORMS:
                if form != "right" and same(grad_of(form=form)):
                    raise CheckFailed(form + when)
            if same(grad_of(lam_=1.0)):
                raise CheckFailed(f"The penalty is not weighted by lam = {lam}: the critic's loss is W-term + lam * penalty." + when)
            if same(ref + prev_grad):
                raise CheckFailed("Gradients accumulate across critic steps: the critic's gradient at opt_c.step() is this step's plus "
                                  "the one left over from before. Call opt_c.zero_grad() before each backward()." + when)
            raise CheckFailed(f"In critic step {k + 1} the critic's gradient at opt_c.step() is not that of E[f(fake)] - E[f(real)] + "
                              "lam * mean((||grad_x f(x_hat)|| - 1)^2) on this step's batch, fakes and interpolates." + when)
        last_value = _critic_objective(c_ref, real, fake, x_hat, lam).detach().double()
        prev_grad, C_k = got, C_k - lr_c * ref
    if not close(events[g_at[0]][3], C_k, rtol=1e-5, atol=1e-6):
        raise CheckFailed("The critic's weights changed between its last step and the G step: only opt_c.step() may change them." + when)

    # the G step: -E[f(G(z))] through the critic after its n_critic steps, on the noise of G's last call
    z2 = [inp for pos, inp in G.inputs if pos <= g_at[0]][-1]
    c_final = _twin(C, C_k)
    ref_g = _ref_grad(G, G0, lambda net: -c_final(net(z2)).mean())
    got_g = events[g_at[0]][2]
    if not close(got_g, ref_g, rtol=1e-4, atol=1e-6):
        if close(got_g, -ref_g, rtol=1e-4, atol=1e-6):
            raise CheckFailed("G's gradient has the wrong sign: the generator minimises -E[f(G(z))] (it wants HIGH critic scores)." + when)
        vanilla = _ref_grad(G, G0, lambda net: torch.nn.functional.softplus(-c_final(net(z2))).mean())
        if close(got_g, vanilla, rtol=1e-4, atol=1e-6):
            raise CheckFailed("The G step uses the vanilla GAN's loss -log sigmoid(f(G(z))): a critic's scores are not logits. "
                              "The WGAN generator minimises -E[f(G(z))]." + when)
        raise CheckFailed("G's gradient at opt_g.step() is not that of -E[f(G(z))] through the critic after its last step: zero "
                          "opt_g's gradients, score fresh fakes G(z) with the critic and backpropagate -mean(scores)." + when)
    if not close(_flat(C.parameters()), C_k, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After wgan_gp_step the critic's weights are not those of its n_critic steps: something else changed them." + when)
    if not close(_flat(G.parameters()), G0 - lr_g * ref_g, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After wgan_gp_step G's weights are not those of one opt_g step: something else changed G." + when)

    loss_c = expect_tensor(out["loss_c"], (), "out['loss_c']")
    if not close(loss_c.detach().double(), last_value, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"out['loss_c'] should be the last critic step's loss, W-term + lam * penalty = {last_value.item():.4f}; "
                          f"got {loss_c.item():.4f}." + when)
    with torch.no_grad():
        want_g = (-c_final(g_ref(z2)).mean()).double()
    loss_g = expect_tensor(out["loss_g"], (), "out['loss_g']")
    if not close(loss_g.detach().double(), want_g, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"out['loss_g'] should be the G step's loss -E[f(G(z))] = {want_g.item():.4f}; got {loss_g.item():.4f}." + when)


def check_wgan_gp_step(fn: Callable) -> None:
    """``wgan_gp_step(G, critic, opt_g, opt_c, x_real, z, *, n_critic, lam) -> {"loss_c", "loss_g"}``: n_critic WGAN-GP critic steps, then one G step.

    Tiny networks (a linear G, a tanh critic) and plain SGD optimizers of known learning rates, on 2D points and on
    3x3 images: the check watches every optimizer step and every network input, and compares each critic step's
    gradient with that of the WGAN-GP loss at the interpolates it used.
    """
    g = torch.Generator().manual_seed(19)
    rng_state = torch.random.get_rng_state()
    try:
        cases = [("2D points", (2,), 3, 0.7, 2), ("3x3 images", (1, 3, 3), 2, 2.0, 1)]
        for what, shape, n_critic, lam, calls in cases:
            d = math.prod(shape)
            G, C = _RecNet(2, shape, 0, seed=1), _RecNet(d, (1,), 3, seed=2)
            lr_g, lr_c = 0.3, 0.2
            opt_g, opt_c = _StepSGD(G.parameters(), lr=lr_g), _StepSGD(C.parameters(), lr=lr_c)
            B = 4
            for call_no in range(1, calls + 1):
                x = torch.randn(n_critic * B, *shape, generator=g) + 1.0
                z = torch.randn(n_critic * B, 2, generator=g)
                _wgan_step_once(fn, G, C, opt_g, opt_c, x, z, n_critic, lam, lr_g, lr_c, f"{what}, call {call_no}")
    finally:
        torch.random.set_rng_state(rng_state)
    passed("wgan_gp_step", "n_critic critic steps with the penalty at interpolates, then one G step, on points and images")


def check_cycle_consistency_loss(fn: Callable) -> None:
    """``cycle_consistency_loss(G_AB, G_BA, a: (B, cA, H, W), b: (B, cB, H, W)) -> scalar``:
    mean |G_BA(G_AB(a)) - a| + mean |G_AB(G_BA(b)) - b|."""
    g = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    G_AB, G_BA = torch.nn.Conv2d(1, 3, 1), torch.nn.Conv2d(3, 1, 1)  # A has 1 channel, B has 3: a swap cannot pass silently
    a, b = torch.rand(4, 1, 6, 6, generator=g), torch.rand(4, 3, 6, 6, generator=g)
    try:
        out = fn(G_AB, G_BA, a, b)
    except NotImplementedError as err:
        raise CheckFailed(f"`cycle_consistency_loss` is not written yet ({err}). Replace the `raise NotImplementedError` line with your code.") from None
    except Exception as err:
        raise CheckFailed(f"`cycle_consistency_loss` crashed with {type(err).__name__}: {err}.\n  Here A images have 1 channel and B images 3: "
                          "G_AB takes A images (and makes B images), G_BA takes B images. Did you swap them?") from None
    out = expect_tensor(out, (), "cycle_consistency_loss(G_AB, G_BA, a, b)")
    l1 = lambda u, v: (u - v).abs().mean()
    l2 = lambda u, v: (u - v).pow(2).mean()
    with torch.no_grad():
        fwd, bwd = l1(G_BA(G_AB(a)), a), l1(G_AB(G_BA(b)), b)
        wrong = {
            "Only the A -> B -> A cycle is there: add the B -> A -> B cycle, mean |G_AB(G_BA(b)) - b|.": fwd,
            "Only the B -> A -> B cycle is there: add the A -> B -> A cycle, mean |G_BA(G_AB(a)) - a|.": bwd,
            "You used the squared error: CycleGAN's cycle loss is the L1 error, mean |reconstruction - original|.": l2(G_BA(G_AB(a)), a) + l2(G_AB(G_BA(b)), b),
            "You summed the absolute errors: take the mean over pixels and examples.": (G_BA(G_AB(a)) - a).abs().sum() + (G_AB(G_BA(b)) - b).abs().sum(),
            "You averaged the two cycles: the loss is their sum (the weight lambda is applied outside).": (fwd + bwd) / 2,
        }
        want = losses.cycle_l1(G_AB, G_BA, a, b)
    if not close(out, want, rtol=1e-4):
        for message, value in wrong.items():
            if close(out, value, rtol=1e-4):
                raise CheckFailed(message)
        raise CheckFailed(f"The loss is {out.item():.4f}, expected {want.item():.4f} = mean|G_BA(G_AB(a)) - a| + mean|G_AB(G_BA(b)) - b|.{ratio_hint(out, want)}")
    if out.grad_fn is None:
        raise CheckFailed("The loss carries no gradient: do not wrap it in torch.no_grad() or .detach() the translations.")
    params = [G_AB.weight, G_BA.weight]
    grads = torch.autograd.grad(out, params, allow_unused=True)
    wanted = torch.autograd.grad(losses.cycle_l1(G_AB, G_BA, a, b), params)
    for grad, want_grad, name in zip(grads, wanted, ["G_AB", "G_BA"]):
        if grad is None or not close(grad, want_grad, rtol=1e-3, atol=1e-6):
            raise CheckFailed(f"No gradient (or only part of it) reaches {name}'s weights: each cycle must train both generators, "
                              "so do not .detach() the translation in the middle of a cycle.")
    passed("cycle_consistency_loss")


# --- Notebook 06: VAEs vs GANs and uses of generative models -----------------------------------


def _energy_reference(x: torch.Tensor) -> torch.Tensor:
    dx = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


def check_gradient_energy(fn: Callable) -> None:
    """``gradient_energy(x: (B, 1, 28, 28)) -> (B,)``: mean squared horizontal plus mean squared vertical neighbour difference."""
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 1, 28, 28), 0.7)
    checker = ((torch.arange(28)[:, None] + torch.arange(28)[None, :]) % 2).float().view(1, 1, 28, 28)
    stripes = (torch.arange(28) % 2).float().expand(28, 28).reshape(1, 1, 28, 28)  # columns alternate: only horizontal changes
    edge = torch.zeros(1, 1, 28, 28)
    edge[..., 0] = 1.0  # one bright left column: tells a wrap-around (torch.roll) apart from true neighbours
    x = torch.cat([flat, checker, stripes, edge, torch.rand(4, 1, 28, 28, generator=g)])
    original = x.clone()
    out = call(fn, x)
    expect_tensor(out, (8,), "gradient_energy(x) for x of shape (8, 1, 28, 28)")
    if not torch.equal(x, original):
        raise CheckFailed("gradient_energy changed its input in place. Compute differences into new tensors.")
    want = _energy_reference(x)
    if abs(out[0].item()) > 1e-6:
        raise CheckFailed(f"A flat grey image has no edges, so its energy must be 0; you gave {out[0].item():.4g}. Use differences of neighbouring pixels, not the pixel values themselves.")
    if close(out, want, rtol=1e-4, atol=1e-6):
        passed("gradient_energy", f"checkerboard {out[1].item():.3g}, stripes {out[2].item():.3g}")
        return
    abs_version = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1) + (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    roll = (x - x.roll(1, -1)).pow(2).flatten(1).mean(1) + (x - x.roll(1, -2)).pow(2).flatten(1).mean(1)
    only_h = (x[..., :, 1:] - x[..., :, :-1]).pow(2).flatten(1).mean(1)
    if close(out, abs_version, rtol=1e-4, atol=1e-6):
        raise CheckFailed("You averaged absolute differences: square them instead (energy = mean of squared differences).")
    if close(out, roll, rtol=1e-4, atol=1e-6):
        raise CheckFailed("Your version compares the last column (row) with the first, as torch.roll does: use only true neighbours, "
                          "e.g. x[..., :, 1:] - x[..., :, :-1] (27 differences per row).")
    if close(out, only_h, rtol=1e-4, atol=1e-6) or close(out, want - only_h, rtol=1e-4, atol=1e-6):
        raise CheckFailed("Only one direction is counted: add the horizontal and the vertical terms.")
    if close(out, want / 2, rtol=1e-4, atol=1e-6):
        raise CheckFailed("Your value is half the expected one: add the horizontal and vertical means, do not average them.")
    if close(out / want.clamp_min(1e-12), torch.full_like(want, 28 * 27), rtol=1e-3) or out[1].item() > 10:
        raise CheckFailed(f"The checkerboard gave {out[1].item():.4g} but should give 2 (every squared difference is 1): take the mean over pixels, not the sum.")
    raise CheckFailed(f"Wrong values: the checkerboard should give 2, vertical stripes 1 and one bright column 1/27 ≈ 0.037; "
                      f"you gave {out[1].item():.4g}, {out[2].item():.4g} and {out[3].item():.4g}.{ratio_hint(out, want)}")


def _auroc_reference(scores: torch.Tensor, is_new: torch.Tensor) -> float:
    """P(score of a new example > score of a normal one), ties counted half: the area under the ROC curve."""
    s_new, s_old = scores[is_new].double(), scores[~is_new].double()
    diff = s_new[:, None] - s_old[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


def check_auroc(fn: Callable) -> None:
    """``auroc(scores: (N,), is_new: (N,) bool) -> float``: the chance that a new example outscores a normal one, ties half."""
    # 4 new and 6 normal examples, with ties inside each group and across them; no two formulas below agree here
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 0.5, 2.0, 4.0, 1.0, 3.0])
    is_new = torch.tensor([True, False, False, True, True, False, False, True, False, False])
    s0, m0 = scores.clone(), is_new.clone()
    out = call(fn, scores, is_new)
    if not (torch.equal(scores, s0) and torch.equal(is_new, m0)):
        raise CheckFailed("auroc changed scores or is_new in place (e.g. a sort_ or a masked assignment): work on copies.")
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise CheckFailed(f"auroc should return a single number, got a tensor of shape {tuple(out.shape)}: average over all (new, normal) pairs.")
    if not isinstance(out, (float, int, torch.Tensor)):
        raise CheckFailed(f"auroc should return a number (a float), got {_describe(out)}.")
    got = float(out)
    want = _auroc_reference(scores, is_new)
    n_new, n_old = int(is_new.sum()), int((~is_new).sum())
    s_new, s_old = scores[is_new], scores[~is_new]
    diff = s_new[:, None] - s_old[None, :]
    wins, ties = (diff > 0).sum().item(), (diff == 0).sum().item()
    if abs(got - want) < 1e-6:
        pass
    elif abs(got - (1 - want)) < 1e-6:
        raise CheckFailed(f"Got {got:.3f} = 1 - AUROC: the direction is reversed. A high score means 'new', so count the pairs where the new "
                          "example's score is *above* the normal one's.")
    elif abs(got - wins / (n_new * n_old)) < 1e-6:
        raise CheckFailed(f"Got {got:.3f}: ties are counted as losses. A pair with equal scores is a coin flip for the detector: count it as 1/2.")
    elif abs(got - (wins + ties) / (n_new * n_old)) < 1e-6:
        raise CheckFailed(f"Got {got:.3f}: ties are counted as wins (>=). A pair with equal scores is a coin flip: count it as 1/2.")
    elif any(abs(got - (wins + 0.5 * ties) / d) < 1e-6 for d in (len(scores) ** 2, n_new * len(scores), n_old * len(scores), len(scores))):
        raise CheckFailed(f"Got {got:.3f}: the right count of wins, divided by the wrong number. There are n_new x n_normal = "
                          f"{n_new} x {n_old} (new, normal) pairs; pairs within one group do not count.")
    elif abs(got - (s_new.mean() - s_old.mean()).item()) < 1e-6 or abs(got - torch.sigmoid(diff).mean().item()) < 1e-6:
        raise CheckFailed(f"Got {got:.3f} from the size of the score differences: the AUROC only asks *which* score is higher in each "
                          "(new, normal) pair, so it does not change when the scores are rescaled.")
    else:
        raise CheckFailed(f"Expected an AUROC of {want:.4f} for scores {scores.tolist()} with is_new {is_new.int().tolist()}, got {got:.4f}. "
                          "Compare every new example with every normal one.")
    # a monotone change of the scores must not change a rank statistic; and it must follow the mask, not the order
    g = torch.Generator().manual_seed(1)
    big = torch.randn(400, generator=g)
    mask = torch.rand(400, generator=g) < 0.2
    big[mask] += 1.0
    base = float(call(fn, big, mask))
    for name, s in (("3 * scores + 100", 3 * big + 100), ("exp(scores)", big.exp())):
        other = float(call(fn, s, mask))
        if abs(other - base) > 1e-6:
            raise CheckFailed(f"The AUROC changed from {base:.4f} to {other:.4f} when the scores became {name}: it depends only on which "
                              "score is higher in each pair, never on the size of the difference (no tolerance for 'equal' either).")
    if abs(base - _auroc_reference(big, mask)) > 1e-6:
        raise CheckFailed(f"Right on 10 examples, wrong on 400 ({base:.4f} instead of {_auroc_reference(big, mask):.4f}): "
                          "do not assume the new examples come first, or a particular count.")
    passed("auroc", f"{want:.3f} on a small case with ties, invariant to rescaling the scores")


# --- Notebook 07: latent space explorer ---------------------------------------------------------


def _slerp_reference(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, omega: torch.Tensor | None = None) -> torch.Tensor:
    """The textbook slerp in float64 (the straight line where the angle vanishes); ``omega`` overrides the angle."""
    z0, z1, t = z0.double(), z1.double(), t.double()[:, None]
    if omega is None:
        omega = torch.acos(((z0 / z0.norm()) * (z1 / z1.norm())).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def check_slerp(fn: Callable) -> None:
    """``slerp(z0: (D,), z1: (D,), t: (T,)) -> (T, D)``: spherical interpolation, row k at t[k]."""
    g = torch.Generator().manual_seed(7)
    D = 6
    z0, z1 = torch.randn(D, generator=g) * 0.3, torch.randn(D, generator=g) * 0.3  # short codes: z0 . z1 alone is a valid cosine too
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    a0, b0, t0 = z0.clone(), z1.clone(), t.clone()
    try:
        out = call(fn, z0, z1, t)
    except CheckFailed as err:
        if "must match the size" in str(err):
            raise CheckFailed(f"t (shape {tuple(t.shape)}) did not broadcast against the codes (shape {tuple(z0.shape)}): you want one code "
                              "per value of t, so make t a column, t[:, None], before multiplying.") from None
        raise
    if not (torch.equal(z0, a0) and torch.equal(z1, b0) and torch.equal(t, t0)):
        raise CheckFailed("slerp changed z0, z1 or t in place (e.g. z0 /= z0.norm()): normalise into new tensors, the caller still needs its codes.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (D, len(t)):
        raise CheckFailed(f"Got shape (D, T) = {(D, len(t))}: one row per value of t is wanted, (T, D). Make t a column, t[:, None].")
    out = expect_tensor(out, (len(t), D), f"slerp(z0, z1, t) with D = {D} and {len(t)} values of t")
    # long codes, like samples of N(0, I) in many dimensions: an unnormalised cosine is far outside [-1, 1]
    y0, y1 = z0 * 15, torch.randn(D, generator=g) * 2.0
    big = call(fn, y0, y1, t)
    if isinstance(big, torch.Tensor) and big.is_floating_point() and big.shape == out.shape and not torch.isfinite(big).all():
        raise CheckFailed(f"NaN or inf for codes of norm {y0.norm().item():.0f} and {y1.norm().item():.0f}: compute the cosine from the "
                          "*normalised* codes, (z0 / |z0|) . (z1 / |z1|), or acos gets a number outside [-1, 1].")
    want = _slerp_reference(z0, z1, t)
    omega = torch.acos(((z0 / z0.norm()) @ (z1 / z1.norm())).clamp(-1, 1)).double()
    tc = t[:, None]
    if close(out, (1 - tc) * z0 + tc * z1, atol=1e-4):
        raise CheckFailed("This is the straight line (1 - t) z0 + t z1, not the spherical path: weight z0 by sin((1 - t) omega) / sin(omega) "
                          "and z1 by sin(t omega) / sin(omega), omega the angle between them.")
    if close(out, want.flip(0), rtol=1e-3, atol=1e-4):
        raise CheckFailed("Your path runs from z1 to z0: at t = 0 it should be z0, at t = 1 z1 (the weight of z0 is sin((1 - t) omega)).")
    if close(out, want * torch.sin(omega), rtol=1e-3, atol=1e-4):
        raise CheckFailed("At t = 0 you get sin(omega) z0, not z0: divide both weights by sin(omega).")
    if close(out, _slerp_reference(z0 / z0.norm(), z1 / z1.norm(), t), rtol=1e-3, atol=1e-4):
        raise CheckFailed(f"Every point has norm 1, but z0 has norm {z0.norm().item():.2f}: normalise only to compute the angle, "
                          "then combine the original z0 and z1.")
    if close(out, _slerp_reference(z0, z1, t, omega=torch.acos((z0 @ z1).clamp(-1, 1))), rtol=1e-3, atol=1e-4):
        raise CheckFailed("The angle is acos(z0 . z1), which is only the angle between unit vectors: use the cosine of the normalised "
                          "codes, (z0 / |z0|) . (z1 / |z1|).")
    if not close(out[0], z0, rtol=1e-3, atol=1e-4) or not close(out[-1], z1, rtol=1e-3, atol=1e-4):
        raise CheckFailed("The ends are wrong: slerp(z0, z1, t) must give exactly z0 at t = 0 and z1 at t = 1.")
    if not close(out, want, rtol=1e-3, atol=1e-4):
        raise CheckFailed("The ends are right but the points in between are not on the spherical path "
                          "(sin((1 - t) omega) z0 + sin(t omega) z1) / sin(omega), omega the angle between z0 and z1.")
    big = expect_tensor(big, (len(t), D), f"slerp(z0, z1, t) with codes of norm {y0.norm().item():.0f} and {y1.norm().item():.0f}")
    if not close(big, _slerp_reference(y0, y1, t), rtol=1e-3, atol=1e-3):
        raise CheckFailed(f"Right for short codes, wrong for codes of norm {y0.norm().item():.0f} and {y1.norm().item():.0f}: "
                          "the angle must come from the normalised codes, (z0 / |z0|) . (z1 / |z1|), whatever their length.")
    # as many values of t as coordinates: a t that is not a column pairs t[k] with coordinate k, without an error
    t6 = torch.linspace(0, 1, D)
    six = call(fn, z0, z1, t6)
    if isinstance(six, torch.Tensor) and six.dim() == 2 and six.shape[0] != D:
        raise CheckFailed(f"Asked for {D} values of t, got {six.shape[0]} rows: do not hard-code the number of steps; one row per t.")
    if isinstance(six, torch.Tensor) and tuple(six.shape) == (D,):
        raise CheckFailed(f"With {D} values of t and D = {D} you returned shape ({D},): t[k] was paired with coordinate k instead of "
                          "giving one code per t. Broadcast t as a column, t[:, None], to get (T, D).")
    six = expect_tensor(six, (D, D), f"slerp(z0, z1, t) with {D} values of t and D = {D}")
    if not close(six, _slerp_reference(z0, z1, t6), rtol=1e-3, atol=1e-4):
        raise CheckFailed(f"Right for 5 values of t, wrong for {D}: do not hard-code the number of steps.")
    # two (nearly) equal codes: omega = 0, so sin(omega) = 0
    for name, near in (("z1 = z0", z0.clone()), ("z1 = z0 + 1e-5 noise", z0 + 1e-5 * torch.randn(D, generator=g))):
        same = call(fn, z0, near, t)
        if isinstance(same, torch.Tensor) and same.is_floating_point() and same.shape == out.shape and not torch.isfinite(same).all():
            raise CheckFailed(f"NaN or inf when {name}: the angle is (nearly) 0, so you divide by sin(omega) = 0, and rounding can put the "
                              "cosine just above 1. Clamp the cosine to [-1, 1] and use the straight line when sin(omega) is tiny.")
        same = expect_tensor(same, (len(t), D), f"slerp(z0, z1, t) with {name}")
        if not close(same, _slerp_reference(z0, near, t), rtol=1e-3, atol=1e-4):
            raise CheckFailed(f"Wrong path when {name}: the path should stay at z0 (arc and straight line agree there).")
    passed("slerp", "the arc, its ends, long codes, a batch of t, equal codes")


# --- Notebook 08: diffusion models ----------------------------------------------------------------
# A short linear chain (T = 50) so that alpha_t and alpha_bar_t, and t and t - 1, give clearly different numbers.


def _diffusion_case(B: int, seed: int = 0):
    s = diffusion.linear_schedule(50)
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(B, 1, 28, 28, generator=g) * 2 - 1
    noise = torch.randn(B, 1, 28, 28, generator=g)
    return s, g, x0, noise


def _float_output(out: torch.Tensor, like: torch.Tensor, name: str) -> None:
    if out.dtype != like.dtype:
        raise CheckFailed(f"{name} returned {str(out.dtype).replace('torch.', '')}, but its inputs are "
                          f"{str(like.dtype).replace('torch.', '')}. The schedule is stored in float64 for accuracy: convert what you "
                          "take from it to the images' dtype (`.to(x.dtype)` or `.float()`), or the network will refuse the input.")


def check_q_sample(fn: Callable) -> None:
    """``q_sample(x0: (B, 1, 28, 28), t: (B,) int64 in 1..T, noise: (B, 1, 28, 28), schedule) -> x_t: (B, 1, 28, 28)``
    = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise."""
    name = "q_sample(x0, t, noise, schedule)"
    B = 28  # as many images as pixels in a row: a (B,) factor that is not reshaped would broadcast along the width
    s, g, x0, noise = _diffusion_case(B)
    t = torch.randint(2, s.T, (B,), generator=g)
    t[:2] = torch.tensor([1, s.T])
    out = expect_tensor(call(fn, x0.clone(), t.clone(), noise.clone(), s), (B, 1, 28, 28), f"{name}")
    _float_output(out, x0, name)
    want = diffusion.q_sample(x0, t, noise, s)
    if not close(out, want, rtol=1e-4, atol=1e-5):
        col = lambda v: v.float().view(-1, 1, 1, 1)  # noqa: E731
        ab, a = s.alpha_bar.float(), s.alpha.float()
        form = lambda cs, cn: col(cs) * x0 + col(cn) * noise  # noqa: E731
        mistakes = {
            "You used alpha_t = 1 - beta_t, one step's keep-rate, where the closed form needs alpha_bar_t = prod_{s<=t} alpha_s: "
            "q(x_t | x_0) jumps all t steps at once, so its signal is scaled by the product of all of them.": form(a[t].sqrt(), (1 - a[t]).sqrt()),
            "Missing square roots: sqrt(alpha_bar_t) scales the signal and sqrt(1 - alpha_bar_t) the noise. (1 - alpha_bar_t) is the "
            "noise's VARIANCE; a standard normal times s has variance s^2.": form(ab[t], 1 - ab[t]),
            "The noise term is missing its square root: the noise's variance is 1 - alpha_bar_t, so it is scaled by sqrt(1 - alpha_bar_t).":
                form(ab[t].sqrt(), 1 - ab[t]),
            "The signal term is missing its square root: x_0 is scaled by sqrt(alpha_bar_t).": form(ab[t], (1 - ab[t]).sqrt()),
            "t is off by one: you read alpha_bar at t - 1. The schedule arrays have T + 1 entries with index 0 = no noise, so "
            "alpha_bar[t] is already the value for step t.": form(ab[t - 1].sqrt(), (1 - ab[t - 1]).sqrt()),
            "t is off by one: you read alpha_bar at t + 1. The schedule arrays have T + 1 entries with index 0 = no noise, so "
            "alpha_bar[t] is already the value for step t.": form(ab[(t + 1).clamp(max=s.T)].sqrt(), (1 - ab[(t + 1).clamp(max=s.T)]).sqrt()),
            "x0 and noise are swapped: the SIGNAL is scaled by sqrt(alpha_bar_t) (near 1 for small t) and the noise by sqrt(1 - alpha_bar_t).":
                col(ab[t].sqrt()) * noise + col((1 - ab[t]).sqrt()) * x0,
            "alpha_bar[t] has shape (B,) and was not reshaped: it broadcast along the images' last axis (the width), not over the batch. "
            "Give it shape (B, 1, 1, 1), e.g. with .view(-1, 1, 1, 1).": ab[t].sqrt() * x0 + (1 - ab[t]).sqrt() * noise,
        }
        found = _match(out, mistakes)
        if found:
            raise CheckFailed(found)
        first = int((~torch.isclose(out, want, rtol=1e-4, atol=1e-5)).flatten(1).any(1).nonzero()[0])
        raise CheckFailed(f"{name} is wrong for image {first} (t = {int(t[first])}): expected sqrt(alpha_bar_t) * x0 + "
                          f"sqrt(1 - alpha_bar_t) * noise, with alpha_bar_t = schedule.alpha_bar[t].")
    passed("q_sample", "the closed form of q(x_t | x_0)")


class _RecordingDenoiser(torch.nn.Module):
    """eps(x_t, t, y) = w * x_t with one learnable w, recording every call's inputs and output."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))
        self.calls: list[tuple] = []

    def forward(self, x, t, y=None):
        out = self.w * x
        self.calls.append((x.detach().clone(), t.detach().clone() if isinstance(t, torch.Tensor) else t, y, out.detach().clone()))
        return out


def check_diffusion_loss(fn: Callable) -> None:
    """``diffusion_loss(eps_model, x0: (B, 1, 28, 28), schedule, y: (B,) or None) -> scalar``
    = mean over the batch and pixels of (eps - eps_model(x_t, t, y))^2, with t ~ U{1..T} and x_t = q_sample(x0, t, eps)."""
    name = "diffusion_loss(eps_model, x0, schedule, y)"
    B = 512  # enough draws of t in 1..50 that each end of the range shows up
    s, _, x0, _ = _diffusion_case(B, seed=1)
    y = torch.randint(0, 10, (B,), generator=torch.Generator().manual_seed(2))
    model = _RecordingDenoiser()
    torch.manual_seed(3)
    out = expect_tensor(call(fn, model, x0.clone(), s, y.clone()), (), f"{name}")
    if not model.calls:
        raise CheckFailed("eps_model was never called: the loss compares the network's prediction eps_model(x_t, t, y) with the noise.")
    if len(model.calls) > 1:
        raise CheckFailed(f"eps_model was called {len(model.calls)} times; call it once, on the whole noisy batch x_t.")
    xt, t, y_seen, pred = model.calls[0]
    if not isinstance(t, torch.Tensor) or t.shape != (B,) or t.dtype not in (torch.int64, torch.int32):
        raise CheckFailed(f"t should be a (B,) = ({B},) integer tensor, one time step per image; got {_describe(t)}.")
    if len(t.unique()) == 1:
        raise CheckFailed("Every image got the same t: draw one time step per image, shape (B,).")
    if int(t.min()) == 0:
        raise CheckFailed("t is off by one: you drew t = 0, which means no noise at all (alpha_bar[0] = 1). Draw t from 1..T, e.g. "
                          "torch.randint(1, schedule.T + 1, ...): randint's upper bound is exclusive.")
    if int(t.max()) > s.T:
        raise CheckFailed(f"t went up to {int(t.max())}, beyond T = {s.T}: draw t from 1..T.")
    if int(t.max()) < s.T:
        raise CheckFailed("t never reached T: randint's upper bound is exclusive, so draw with torch.randint(1, schedule.T + 1, ...).")
    if y_seen is None or not torch.equal(torch.as_tensor(y_seen), y):
        raise CheckFailed("eps_model did not receive the labels y: pass them through, eps_model(x_t, t, y), so the network can learn "
                          "to draw the digit it is asked for.")
    if torch.allclose(xt, x0):
        raise CheckFailed("eps_model was given the clean x0: give it the noisy x_t = q_sample(x0, t, noise, schedule).")
    ab = s.alpha_bar.float()[t].view(-1, 1, 1, 1)
    eps = (xt - ab.sqrt() * x0) / (1 - ab).sqrt()  # the noise that made the x_t the network saw
    if abs(eps.mean().item()) > 0.02 or abs(eps.std().item() - 1) > 0.02:
        raise CheckFailed(f"The x_t given to eps_model is not sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps with eps ~ N(0, I) and the same t: "
                          f"solving for eps gives mean {eps.mean().item():.3f} and std {eps.std().item():.3f} (expected 0 and 1). "
                          "Use your q_sample with a standard normal noise (torch.randn_like(x0)) and the t you pass to the model.")
    want = ((eps - pred) ** 2).mean()
    if not close(out, want, rtol=1e-3, atol=1e-5):
        independent = 1 + (pred ** 2).mean()  # E||eps' - pred||^2 per pixel when eps' is a fresh draw, independent of x_t
        mistakes = {
            "You summed over the pixels (and averaged over the batch): average over pixels AND batch, so the loss does not scale "
            "with the image size (F.mse_loss does this).": want * 784,
            "You summed over everything: take the mean over the batch and the pixels.": want * 784 * B,
            "The loss compares the prediction with x0: the network predicts the NOISE eps that made x_t (DDPM's simple loss).":
                ((x0 - pred) ** 2).mean(),
            "The prediction is compared with x_t: the target is the noise eps that made x_t.": ((xt - pred) ** 2).mean(),
        }
        found = _match(out.detach(), {k: v.detach() for k, v in mistakes.items()})
        if found:
            raise CheckFailed(found)
        if abs(out.item() - independent.item()) < 0.02 * independent.item():
            raise CheckFailed("The target is not the noise that made x_t: you drew a second, independent noise for the loss. Draw eps "
                              "once, use it in q_sample AND as the target, or the network can only learn to predict zero.")
        raise CheckFailed(f"{name} gave {out.item():.4f}, expected {want.item():.4f} = mean((eps - eps_model(x_t, t, y))^2) over the batch "
                          f"and pixels.{ratio_hint(out, want)}")
    (grad,) = torch.autograd.grad(out, model.w, allow_unused=True) if out.requires_grad else (None,)
    if grad is None:
        raise CheckFailed("No gradient reaches the network's parameters: did you compute the prediction under torch.no_grad(), or use "
                          ".detach() / .item() on it?")
    passed("diffusion_loss", "the noise-prediction loss, with t from 1..T")


def _ddpm_reference(eps, xt, t: int, s, noise, var: str = "tilde", at: int | None = None, mean_denominator: str = "alpha",
                    coef: str = "sqrt", sign: float = 1.0, std_of: str = "sqrt"):
    """The reverse step with one ingredient changed (for the mistake catalogue); the defaults are the right step."""
    k = t if at is None else at
    beta, alpha, ab = (float(v) for v in (s.beta[k], s.alpha[k], s.alpha_bar[k]))
    c = beta / math.sqrt(1 - ab) if coef == "sqrt" else (beta / (1 - ab) if coef == "nosqrt" else beta / math.sqrt(1 - alpha))
    d = {"alpha": math.sqrt(alpha), "alpha_bar": math.sqrt(ab), "nosqrt": alpha}[mean_denominator]
    mean = (xt - sign * c * eps) / d
    v = float(s.posterior_variance()[k]) if var == "tilde" else (beta if var == "beta" else 0.0)
    return mean + (math.sqrt(v) if std_of == "sqrt" else v) * noise


def check_ddpm_step(fn: Callable) -> None:
    """``ddpm_step(eps: (B, 1, 28, 28), x_t: (B, 1, 28, 28), t: int in 1..T, schedule, noise: (B, 1, 28, 28)) -> x_{t-1}``
    = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t) + sqrt(beta_tilde_t) noise (no noise at t = 1)."""
    name = "ddpm_step(eps, x_t, t, schedule, noise)"
    B = 6
    s, g, xt, noise = _diffusion_case(B, seed=4)
    eps = torch.randn(B, 1, 28, 28, generator=g)
    for t in (2, 25, s.T, 1):  # small t first: there beta_tilde_t and beta_t, alpha_t and alpha_bar_t differ most
        out = expect_tensor(call(fn, eps.clone(), xt.clone(), t, s, noise.clone()), (B, 1, 28, 28), f"{name} at t = {t}")
        _float_output(out, xt, name)
        want = diffusion.ddpm_step(eps, xt, t, s, noise=noise)
        if close(out, want, rtol=1e-4, atol=1e-5):
            continue
        ref = lambda **kw: _ddpm_reference(eps, xt, t, s, noise, **kw)  # noqa: E731
        mistakes = {
            "The mean divides by sqrt(alpha_bar_t); one reverse step undoes ONE forward step, so it divides by sqrt(alpha_t) "
            "(alpha_bar belongs only in the noise coefficient beta_t / sqrt(1 - alpha_bar_t)).": ref(mean_denominator="alpha_bar"),
            "The noise coefficient uses alpha_t where alpha_bar_t belongs: eps is the noise of the whole path from x_0, so the "
            "coefficient is beta_t / sqrt(1 - alpha_bar_t).": ref(coef="alpha"),
            "Missing square root in the noise coefficient: it is beta_t / sqrt(1 - alpha_bar_t).": ref(coef="nosqrt"),
            "Missing square root: the mean divides by sqrt(alpha_t), not alpha_t.": ref(mean_denominator="nosqrt"),
            "The sign of the noise term is flipped: the step REMOVES the predicted noise, x_t - beta_t / sqrt(1 - alpha_bar_t) * eps.":
                ref(sign=-1.0),
            "The added noise is scaled by the variance beta_tilde_t; a standard normal must be scaled by the standard deviation "
            "sqrt(beta_tilde_t).": ref(std_of="variance"),
            "You used sigma_t^2 = beta_t. Ho et al. allow it (an upper bound), but this exercise and the course's sampler use the "
            "posterior's variance beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) * beta_t (schedule.posterior_variance()).":
                ref(var="beta"),
            "The variance beta_t is used as a standard deviation, and it is not the posterior's variance: scale the noise by "
            "sqrt(beta_tilde_t).": ref(var="beta", std_of="variance"),
            "No noise was added: DDPM's reverse step samples x_{t-1} ~ N(mean, beta_tilde_t I); only the last step (t = 1) is the "
            "plain mean. (Noise-free steps are DDIM's, with a different mean.)": ref(var="none"),
            "t is off by one: you read the schedule at t - 1. Index 0 of every schedule array means no noise, so step t uses "
            "beta[t], alpha[t] and alpha_bar[t].": ref(at=t - 1) if t > 1 else None,
        }
        found = _match(out, {k: v for k, v in mistakes.items() if v is not None})
        if found:
            raise CheckFailed(found + f"\n  (seen at t = {t})")
        raise CheckFailed(f"{name} at t = {t} is wrong: expected (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps) / sqrt(alpha_t) "
                          f"+ sqrt(beta_tilde_t) * noise{' (beta_tilde_1 = 0: no noise at the last step)' if t == 1 else ''}.")
    passed("ddpm_step", "mean and posterior variance at t = 2, 25, T and 1")
