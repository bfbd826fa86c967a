"""Notebook 07, latent space explorer: slerp, attribute_direction (latent arithmetic), nearest_neighbours (does a model copy?)."""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, call_explained, check, close, describe, expect_tensor, named, passed


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


# --- attribute_direction: a latent direction from the codes of the images high and low in an attribute -----------------


def _attribute_case(seed: int, n: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes: (n, 5)`` and a shuffled ``attribute: (n,)`` whose quarters are set apart by gaps (low quarter in [0, 1),
    middle in [1.5, 9), top quarter in [9.5, 10)): every way of taking the q = 0.25 quantiles (torch.quantile, a sort, topk
    with k = q n) picks the same codes. The codes depend on the attribute and have a mean far from 0, so that every
    mistake below gives another direction."""
    g = torch.Generator().manual_seed(seed)
    k = n // 4
    attribute = torch.cat([torch.rand(k, generator=g), 1.5 + 7.5 * torch.rand(n - 2 * k, generator=g), 9.5 + 0.5 * torch.rand(k, generator=g)])
    attribute = attribute[torch.randperm(n, generator=g)]
    slope = torch.tensor([0.3, -0.2, 0.1, 0.0, 0.25])
    codes = 2.0 + torch.randn(n, 5, generator=g) + attribute[:, None] * slope + (attribute[:, None] - 5).pow(2) * slope.flip(0) / 10
    return codes, attribute


def _direction(codes: torch.Tensor, attribute: torch.Tensor, high: torch.Tensor, low: torch.Tensor, unit: bool = True) -> torch.Tensor:
    """The mean code of the rows in ``high`` minus that of the rows in ``low`` (boolean masks), float64, of length 1 if ``unit``."""
    d = codes.double()[high].mean(0) - codes.double()[low].mean(0)
    return d / d.norm() if unit else d


def _direction_mistakes(codes: torch.Tensor, attribute: torch.Tensor, q: float) -> list[tuple[str, object]]:
    a = attribute.double()
    hi, lo = a >= torch.quantile(a, 1 - q), a <= torch.quantile(a, q)
    everyone = torch.ones_like(hi)
    return [
        ("Your direction points the wrong way, from the images high in the attribute to those low in it: it is the mean code "
         "of the high ones *minus* that of the low ones.", -_direction(codes, a, hi, lo)),
        ("Right direction, but not of length 1: divide the difference of the two mean codes by its norm.", _direction(codes, a, hi, lo, unit=False)),
        ("You subtracted the mean code of *all* the images (or of all those not high in the attribute), not of those low in "
         "it: the other side is only the images at or below the q-quantile.", _direction(codes, a, hi, everyone)),
        ("You compared the images low in the attribute with *all* the images: the first mean is that of the images at or above "
         "the (1 - q)-quantile.", _direction(codes, a, everyone, lo)),
        ("The groups come from fractions of the attribute's largest value, not from quantiles: use the q- and (1 - q)-quantiles "
         "of the attribute's values (torch.quantile), so that each group holds a share q of the images.",
         _direction(codes, a, a >= (1 - q) * a.max(), a <= q * a.max())),
    ]


@check
def check_attribute_direction(fn: Callable) -> None:
    """``attribute_direction(codes: (N, D), attribute: (N,), q) -> (D,)``: the unit vector along (mean code of the images
    at or above the (1 - q)-quantile of the attribute) - (mean code of those at or below its q-quantile), codes' dtype."""
    codes, attribute = _attribute_case(0)
    n, d = codes.shape
    kept = Unchanged(codes, attribute)
    out = call(fn, codes, attribute, 0.25)
    kept.verify("attribute_direction changed codes or attribute in place (e.g. a sort_ on them): work on new tensors.")
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (1, d):
        raise CheckFailed(f"Got shape (1, {d}): return the direction as ({d},) (drop keepdim=True, or squeeze).")
    if isinstance(out, torch.Tensor) and out.dim() == 1 and len(out) != d:
        raise CheckFailed(f"Got shape {tuple(out.shape)}, one number per image: average the codes of each group over the images "
                          f"(dim 0), which leaves one code of D = {d} numbers.")
    out = expect_tensor(out, (d,), f"attribute_direction(codes, attribute, 0.25) for {n} codes of D = {d}")
    if out.dtype != codes.dtype:
        raise CheckFailed(f"attribute_direction returned {str(out.dtype).replace('torch.', '')} for float32 codes: the decoder that "
                          "reads code + alpha * direction is float32. Keep the codes' dtype.")
    a = attribute.double()
    want = _direction(codes, a, a >= torch.quantile(a, 0.75), a <= torch.quantile(a, 0.25))
    if not close(out, want, rtol=1e-3, atol=1e-4):
        found = named(out, _direction_mistakes(codes, attribute, 0.25), rtol=1e-3, atol=1e-4)
        if found:
            raise CheckFailed(found)
        if abs(out.double().norm().item() - 1) > 1e-3:
            raise CheckFailed(f"The direction should have length 1, got {out.double().norm().item():.3g}: divide by its (Euclidean) norm.")
        raise CheckFailed(f"Wrong direction: got {[round(v, 3) for v in out.tolist()]}, expected {[round(v, 3) for v in want.tolist()]} "
                          "(the unit vector along the high group's mean code minus the low group's).")
    codes2, _ = _attribute_case(1, n=100)
    attribute2 = torch.randperm(100, generator=torch.Generator().manual_seed(1)).float() / 10  # values 0.1 apart, shuffled
    other = expect_tensor(call(fn, codes2, attribute2, 0.1), (d,), "attribute_direction(codes, attribute, 0.1)")
    a2 = attribute2.double()
    if not close(other, _direction(codes2, a2, a2 >= torch.quantile(a2, 0.9), a2 <= torch.quantile(a2, 0.1)), rtol=1e-3, atol=1e-4):
        raise CheckFailed("Right for q = 0.25, wrong for q = 0.1: is the share q fixed somewhere? The groups are the images at "
                          "or above the (1 - q)-quantile and at or below the q-quantile.")
    passed("attribute_direction", "unit length, from the low group's mean code to the high group's, any q")


# --- nearest_neighbours: the training images closest to generated ones, without an (M, N, D) tensor ---------------------


class _Watched(torch.Tensor):
    """A tensor that records the largest number of elements any torch operation on it (or on what came from it) returned:
    building every difference between M samples and N training images shows as M * N * D elements at once."""

    largest = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        out = super().__torch_function__(func, types, args, kwargs or {})
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                _Watched.largest = max(_Watched.largest, t.numel())
        return out


def _plain(value: object) -> object:
    """A watched tensor (or a pair of them) back as plain tensors, so the checks' own arithmetic is not recorded."""
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value.as_subclass(torch.Tensor) if isinstance(value, torch.Tensor) else value


def _neighbours_case(seed: int, m: int, n: int = 5000, d: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples: (m, d)`` and ``train: (n, d)``: half the samples are near copies of training rows, half are new points;
    every sample's nearest training row is ahead of the second nearest by over 1% (any correct float32 sum agrees)."""
    g = torch.Generator().manual_seed(seed)
    while True:
        train = torch.randn(n, d, generator=g)
        copies = train[torch.randint(n, (m // 2,), generator=g)] + 0.05 * torch.randn(m // 2, d, generator=g)
        samples = torch.cat([copies, 0.8 * torch.randn(m - m // 2, d, generator=g) + 0.3])
        two = torch.cdist(samples.double(), train.double()).topk(2, dim=1, largest=False).values
        if bool((two[:, 1] > 1.01 * two[:, 0]).all()):
            return samples, train


def _neighbours_pair(out: object, m: int, n: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``out`` must be ``(distances: (m,) float, indices: (m,) integers)``; returns them, or names what is wrong."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"nearest_neighbours should return two tensors, (distances, indices); it returned {describe(out)}.")
    dist, idx = out
    if isinstance(dist, torch.Tensor) and isinstance(idx, torch.Tensor) and not dist.is_floating_point() and idx.is_floating_point():
        raise CheckFailed("The first thing returned holds integers and the second floats: return (distances, indices).")
    for name, value in (("distances", dist), ("indices", idx)):
        if isinstance(value, torch.Tensor) and tuple(value.shape) == (n,) and n != m:
            raise CheckFailed(f"{name} has shape ({n},), one entry per *training* image: for each of the {m} samples you want the "
                              f"nearest training image, so take the minimum over the training images' axis, leaving ({m},).")
    if not isinstance(idx, torch.Tensor) or idx.is_floating_point() or idx.dtype == torch.bool:
        raise CheckFailed(f"indices should be a tensor of integers (positions in train), got {describe(idx)}.")
    if tuple(idx.shape) != (m,):
        raise CheckFailed(f"indices should have shape ({m},) for {m} samples, got {tuple(idx.shape)}"
                          f"{' (a squeeze() that also dropped the samples axis?)' if m == 1 else ''}.")
    return expect_tensor(dist, (m,), f"distances of {what}").detach().double(), idx.detach().long()


@check
def check_nearest_neighbours(fn: Callable) -> None:
    """``nearest_neighbours(samples: (M, D), train: (N, D)) -> (distances: (M,), indices: (M,))``: for each sample the
    Euclidean distance to its nearest training row and that row's index, without ever holding an (M, N, D) tensor."""
    m, n, d = 6, 5000, 16
    samples, train = _neighbours_case(0, m, n, d)
    kept = Unchanged(samples, train)
    _Watched.largest = 0
    out = _plain(call(fn, samples.as_subclass(_Watched), train.as_subclass(_Watched)))
    largest = _Watched.largest
    kept.verify("nearest_neighbours changed samples or train in place: the caller still needs them.")
    dist, idx = _neighbours_pair(out, m, n, f"nearest_neighbours for {m} samples and {n} training rows")
    if not ((idx >= 0) & (idx < n)).all():
        raise CheckFailed(f"indices hold values outside 0 ... {n - 1}: they should be positions of rows of train.")
    table = torch.cdist(samples.double(), train.double())  # (m, n), float64
    want_dist, want_idx = table.min(1)
    if not torch.equal(idx, want_idx):
        if torch.equal(idx, table.argmax(1)):
            raise CheckFailed("These are the *farthest* training images: the nearest one has the smallest distance (argmin, not argmax).")
        if torch.equal(idx, torch.cdist(samples.double(), train.double(), p=1).argmin(1)):
            raise CheckFailed("These are the nearest training images by the sum of absolute differences (L1): the statement asks "
                              "for the Euclidean (L2) distance.")
        wrong = (idx != want_idx).nonzero().flatten().tolist()
        raise CheckFailed(f"Wrong indices for samples {wrong}: e.g. sample {wrong[0]} is nearest to training row {want_idx[wrong[0]].item()} "
                          f"(distance {want_dist[wrong[0]].item():.3f}), you returned row {idx[wrong[0]].item()} (distance "
                          f"{table[wrong[0], idx[wrong[0]]].item():.3f}).")
    if not close(dist, want_dist, rtol=1e-3, atol=1e-4):
        raise CheckFailed(named(dist, [
            ("These are squared distances: take the square root (the statement asks for the Euclidean distance).", want_dist**2),
            ("These are mean squared differences per pixel (the squared distance divided by D): the distance sums over the "
             "pixels and takes the square root.", want_dist**2 / d),
            ("These are the distances divided by sqrt(D) (a root of the *mean* squared difference): sum over the pixels, do "
             "not average.", want_dist / d**0.5),
        ], rtol=1e-3, atol=1e-4) or f"Right indices, wrong distances: got {[round(v, 3) for v in dist.tolist()]}, expected "
                                    f"{[round(v, 3) for v in want_dist.tolist()]}.")
    if largest >= m * n * d:
        raise CheckFailed(f"Right answers, but one step built a tensor of {largest:,} numbers, the M x N x D = {m} x {n} x {d} "
                          "differences of every sample with every training image at once. With 16 samples and 60 000 MNIST images that "
                          "is 3 GB. Work through train in chunks, or use a formula that needs only the (M, N) table of distances.")
    one, one_train = _neighbours_case(1, 1, 300, d)
    dist1, idx1 = _neighbours_pair(call(fn, one, one_train), 1, 300, "nearest_neighbours for one sample")
    if idx1.item() != torch.cdist(one.double(), one_train.double()).argmin().item():
        raise CheckFailed("Right for 6 samples, wrong for one sample and 300 training rows: is a size fixed somewhere?")
    passed("nearest_neighbours", "Euclidean distances, the nearest rows, no (M, N, D) tensor")
