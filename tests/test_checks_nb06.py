"""Checks of notebook 06: correct versions pass, each planted mistake fails with its message."""

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


def _auroc_pairs(scores, is_new):
    d = scores[is_new][:, None] - scores[~is_new][None, :]
    return ((d > 0).float() + 0.5 * (d == 0).float()).mean().item()


def _auroc_ranks(scores, is_new):
    # Mann-Whitney U from average ranks (tied scores share their mean rank)
    from scipy.stats import rankdata
    r = torch.tensor(rankdata(scores.numpy()))
    n1, n0 = int(is_new.sum()), int((~is_new).sum())
    return float((r[is_new].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auroc_loop(scores, is_new):
    normal = scores[~is_new]
    total = 0.0
    for s in scores[is_new]:
        total += (s > normal).sum().item() + 0.5 * (s == normal).sum().item()
    return total / (len(normal) * int(is_new.sum()))


def _auroc_sklearn(scores, is_new):
    from sklearn.metrics import roc_auc_score
    return roc_auc_score(is_new.numpy(), scores.numpy())


@pytest.mark.parametrize("fn", [_auroc_pairs, _auroc_ranks, _auroc_loop, _auroc_sklearn,
                                lambda s, m: torch.tensor(_auroc_pairs(s, m))],
                         ids=["pairs", "ranks", "loop", "sklearn", "0-dim tensor"])
def test_auroc_accepts_correct_versions(fn, capsys):
    checks.check_auroc(fn)
    assert "\u2713 auroc" in capsys.readouterr().out


def _pairs(scores, is_new):
    return scores[is_new][:, None] - scores[~is_new][None, :]


def _in_place(scores, is_new):
    out = _auroc_pairs(scores, is_new)
    scores[is_new] = 0.0
    return out


@pytest.mark.parametrize("fn, message", [
    (lambda s, m: _auroc_pairs(-s, m), "direction is reversed"),
    (lambda s, m: (_pairs(s, m) > 0).float().mean().item(), "counted as losses"),
    (lambda s, m: (_pairs(s, m) >= 0).float().mean().item(), "counted as wins"),
    (lambda s, m: ((_pairs(s, m) > 0).sum() + 0.5 * (_pairs(s, m) == 0).sum()).item() / len(s) ** 2, "divided by the wrong number"),
    (lambda s, m: (s[m].mean() - s[~m].mean()).item(), "size of the score differences"),
    (lambda s, m: torch.sigmoid(_pairs(s, m)).mean().item(), "size of the score differences"),
    (lambda s, m: ((_pairs(s, m) > 0).float() + 0.5 * (_pairs(s, m) == 0).float()).mean(1), "single number"),
    (lambda s, m: _auroc_pairs(s, m) if len(s) == 10 else 0.5, "Right on 10 examples"),
    (lambda s, m: ((s[m] > s[~m].mean()).float().mean() + (s[~m] < s[m].mean()).float().mean()).item() / 2, "Expected an AUROC"),
    (lambda s, m: ((_pairs(s, m) > 1e-2).float() + 0.5 * (_pairs(s, m).abs() <= 1e-2).float()).mean().item(), "changed from"),
    (_in_place, "in place"),
    (lambda s, m: "0.8", "a number"),
    (lambda s, m: s.nope(), "crashed"),
], ids=["reversed", "ties-lose", "ties-win", "wrong-denominator", "mean-difference", "sigmoid", "per-example", "hard-coded",
        "threshold", "tie-tolerance", "in-place", "string", "crash"])
def test_auroc_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_auroc(fn)
