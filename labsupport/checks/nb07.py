"""Notebook 07, latent space explorer: slerp."""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, call_explained, check, close, expect_tensor, named, passed


def _slerp_reference(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor, omega: torch.Tensor | None = None) -> torch.Tensor:
    """The textbook slerp in float64 (the straight line where the angle vanishes); ``omega`` overrides the angle."""
    z0, z1, t = z0.double(), z1.double(), t.double()[:, None]
    if omega is None:
        omega = torch.acos(((z0 / z0.norm()) * (z1 / z1.norm())).sum().clamp(-1, 1))
    if omega.abs() < 1e-6:
        return (1 - t) * z0 + t * z1
    return (torch.sin((1 - t) * omega) * z0 + torch.sin(t * omega) * z1) / torch.sin(omega)


def _explain_slerp_crash(message: str, err: Exception) -> str | None:
    if "must match the size" in message:
        return ("t (shape (5,)) did not broadcast against the codes (shape (6,)): you want one code "
                "per value of t, so make t a column, t[:, None], before multiplying.")
    return None


@check
def check_slerp(fn: Callable) -> None:
    """``slerp(z0: (D,), z1: (D,), t: (T,)) -> (T, D)``: spherical interpolation, row k at t[k], in the codes' dtype."""
    g = torch.Generator().manual_seed(7)
    D = 6
    z0, z1 = torch.randn(D, generator=g) * 0.3, torch.randn(D, generator=g) * 0.3  # short codes: z0 . z1 alone is a valid cosine too
    t = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    kept = Unchanged(z0, z1, t)
    out = call_explained(fn, _explain_slerp_crash, z0, z1, t)
    kept.verify("slerp changed z0, z1 or t in place (e.g. z0 /= z0.norm()): normalise into new tensors, the caller still needs its codes.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (D, len(t)):
        raise CheckFailed(f"Got shape (D, T) = {(D, len(t))}: one row per value of t is wanted, (T, D). Make t a column, t[:, None].")
    out = expect_tensor(out, (len(t), D), f"slerp(z0, z1, t) with D = {D} and {len(t)} values of t")
    if out.dtype != z0.dtype:
        raise CheckFailed(f"slerp returned {str(out.dtype).replace('torch.', '')} for float32 codes: the generator that decodes them is "
                          "float32 and refuses it. Keep the codes' dtype (numpy, math on Python floats or torch.tensor(0.5, "
                          "dtype=torch.float64) bring float64 in; convert back with .to(z0.dtype)).")
    # long codes, like samples of N(0, I) in many dimensions: an unnormalised cosine is far outside [-1, 1]
    y0, y1 = z0 * 15, torch.randn(D, generator=g) * 2.0
    big = call(fn, y0, y1, t)
    if isinstance(big, torch.Tensor) and big.is_floating_point() and big.shape == out.shape and not torch.isfinite(big).all():
        raise CheckFailed(f"NaN or inf for codes of norm {y0.norm().item():.0f} and {y1.norm().item():.0f}: compute the cosine from the "
                          "*normalised* codes, (z0 / |z0|) . (z1 / |z1|), or acos gets a number outside [-1, 1].")
    want = _slerp_reference(z0, z1, t)
    omega = torch.acos(((z0 / z0.norm()) @ (z1 / z1.norm())).clamp(-1, 1)).double()
    tc = t[:, None]
    if not close(out, want, rtol=1e-3, atol=1e-4):
        found = named(out, [
            ("This is the straight line (1 - t) z0 + t z1, not the spherical path: weight z0 by sin((1 - t) omega) / sin(omega) "
             "and z1 by sin(t omega) / sin(omega), omega the angle between them.", (1 - tc) * z0 + tc * z1),
            ("Your path runs from z1 to z0: at t = 0 it should be z0, at t = 1 z1 (the weight of z0 is sin((1 - t) omega)).", want.flip(0)),
            ("At t = 0 you get sin(omega) z0, not z0: divide both weights by sin(omega).", want * torch.sin(omega)),
            (f"Every point has norm 1, but z0 has norm {z0.norm().item():.2f}: normalise only to compute the angle, "
             "then combine the original z0 and z1.", _slerp_reference(z0 / z0.norm(), z1 / z1.norm(), t)),
            ("The angle is acos(z0 . z1), which is only the angle between unit vectors: use the cosine of the normalised "
             "codes, (z0 / |z0|) . (z1 / |z1|).", _slerp_reference(z0, z1, t, omega=torch.acos((z0 @ z1).clamp(-1, 1)))),
        ], rtol=1e-3, atol=1e-4)
        if found:
            raise CheckFailed(found)
        if not close(out[0], z0, rtol=1e-3, atol=1e-4) or not close(out[-1], z1, rtol=1e-3, atol=1e-4):
            raise CheckFailed("The ends are wrong: slerp(z0, z1, t) must give exactly z0 at t = 0 and z1 at t = 1.")
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
    _parallel(fn, z0, t, g)
    passed("slerp", "the arc, its ends, long codes, a batch of t, equal and parallel codes")


def _parallel(fn: Callable, z0: torch.Tensor, t: torch.Tensor, g: torch.Generator) -> None:
    """Parallel codes of different lengths (the angle is 0 but the codes differ), and many nearly parallel pairs."""
    longer = call(fn, z0, 2 * z0, t)
    longer = expect_tensor(longer, (len(t), len(z0)), "slerp(z0, z1, t) with z1 = 2 z0")
    if not close(longer, _slerp_reference(z0, 2 * z0, t), rtol=1e-3, atol=1e-4):
        if close(longer, z0.expand(len(t), -1), rtol=1e-3, atol=1e-4):
            raise CheckFailed("With z1 = 2 z0 (parallel codes of different lengths) your path stays at z0 for every t: the angle is 0, "
                              "but the codes differ. Where sin(omega) is tiny use the straight line (1 - t) z0 + t z1, which runs "
                              "from z0 to z1 (returning z0 is only right when z1 = z0).")
        raise CheckFailed("Wrong path for z1 = 2 z0 (parallel codes of different lengths): the angle is 0, so the path is the "
                          "straight line (1 - t) z0 + t z1.")
    # nearly parallel pairs, like nearby codes of a trained model: in float32 the cosine of the normalised codes often
    # rounds to just above 1, and acos of it is NaN unless it is clamped
    bad = 0
    for _ in range(200):
        a = torch.randn(len(z0) * 8, generator=g)
        b = a * (0.5 + torch.rand((), generator=g)) + 1e-4 * torch.randn(len(a), generator=g)
        pair = call(fn, a, b, t)
        if isinstance(pair, torch.Tensor) and pair.is_floating_point() and not torch.isfinite(pair).all():
            bad += 1
    if bad:
        raise CheckFailed(f"NaN or inf for {bad} of 200 random nearly parallel pairs of codes: rounding puts the cosine of the "
                          "normalised codes just above 1 (or below -1), and acos of it is NaN. Clamp the cosine to [-1, 1] "
                          "before torch.acos, and use the straight line where sin(omega) is tiny.")
