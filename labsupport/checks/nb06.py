"""Notebook 06, VAEs vs GANs and uses: auroc (gradient_energy is a given helper there now: its check went with its exercise)."""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, describe, named, passed


def _auroc_reference(scores: torch.Tensor, is_new: torch.Tensor) -> float:
    """P(score of a new example > score of a normal one), ties counted half: the area under the ROC curve."""
    s_new, s_old = scores[is_new].double(), scores[~is_new].double()
    diff = s_new[:, None] - s_old[None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean().item()


@check
def check_auroc(fn: Callable) -> None:
    """``auroc(scores: (N,), is_new: (N,) bool) -> float``: the chance that a new example outscores a normal one, ties half."""
    # 4 new and 6 normal examples, with ties inside each group and across them; no two formulas below agree here
    scores = torch.tensor([3.0, 1.0, 2.0, 2.0, 5.0, 0.5, 2.0, 4.0, 1.0, 3.0])
    is_new = torch.tensor([True, False, False, True, True, False, False, True, False, False])
    kept = Unchanged(scores, is_new)
    out = call(fn, scores, is_new)
    kept.verify("auroc changed scores or is_new in place (e.g. a sort_ or a masked assignment): work on copies.")
    if isinstance(out, torch.Tensor) and out.numel() != 1:
        raise CheckFailed(f"auroc should return a single number, got a tensor of shape {tuple(out.shape)}: average over all (new, normal) pairs.")
    if not isinstance(out, (float, int, torch.Tensor)):
        raise CheckFailed(f"auroc should return a number (a float), got {describe(out)}.")
    got = float(out)
    want = _auroc_reference(scores, is_new)
    n_new, n_old = int(is_new.sum()), int((~is_new).sum())
    s_new, s_old = scores[is_new], scores[~is_new]
    diff = s_new[:, None] - s_old[None, :]
    wins, ties = (diff > 0).sum().item(), (diff == 0).sum().item()
    if not close(got, want, rtol=0, atol=1e-6):
        wrong_count = (f"Got {got:.3f}: the right count of wins, divided by the wrong number. There are n_new x n_normal = "
                       f"{n_new} x {n_old} (new, normal) pairs; pairs within one group do not count.")
        sizes = (f"Got {got:.3f} from the size of the score differences: the AUROC only asks *which* score is higher in each "
                 "(new, normal) pair, so it does not change when the scores are rescaled.")
        found = named(got, [
            (f"Got {got:.3f} = 1 - AUROC: the direction is reversed. A high score means 'new', so count the pairs where the new "
             "example's score is *above* the normal one's.", 1 - want),
            (f"Got {got:.3f}: ties are counted as losses. A pair with equal scores is a coin flip for the detector: count it as 1/2.",
             wins / (n_new * n_old)),
            (f"Got {got:.3f}: ties are counted as wins (>=). A pair with equal scores is a coin flip: count it as 1/2.",
             (wins + ties) / (n_new * n_old)),
        ] + [(wrong_count, (wins + 0.5 * ties) / d) for d in (len(scores) ** 2, n_new * len(scores), n_old * len(scores), len(scores))] + [
            (sizes, (s_new.mean() - s_old.mean()).item()),
            (sizes, torch.sigmoid(diff).mean().item()),
        ], rtol=0, atol=1e-6)
        raise CheckFailed(found or f"Expected an AUROC of {want:.4f} for scores {scores.tolist()} with is_new {is_new.int().tolist()}, got {got:.4f}. "
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
