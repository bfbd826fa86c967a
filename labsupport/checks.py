"""Checks for the exercises: ``check_<exercise>(fn)`` calls the student's ``fn`` on cases it builds.

A check returns quietly after printing one ✓ line when ``fn`` is right. Otherwise it raises
:class:`CheckFailed` with a message that says what is wrong (expected shape vs got, wrong sign,
gradient not flowing, off by a factor of 2, ...). A crash inside ``fn`` is reported the same way,
naming the original error. Checks test properties and closed forms, so every correct way of
writing a function passes.

The grader (``labsupport.grading``) finds the check of exercise ``id`` as ``check_<id>``.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch


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

# --- Notebook 02: latent variables and autoencoders ---------------------------------------------

# --- Notebook 03: variational autoencoders ------------------------------------------------------

# --- Notebook 04: generative adversarial networks -----------------------------------------------

# --- Notebook 05: GAN variants (conditional GAN, WGAN-GP, CycleGAN) ----------------------------

# --- Notebook 06: VAEs vs GANs and uses of generative models -----------------------------------
