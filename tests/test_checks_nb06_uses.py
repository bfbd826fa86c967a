"""check_impute (notebook 06, filling in missing pixels): correct versions written differently pass, each planted mistake
fails with its own message, and the check leaves the caller's random numbers alone."""

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


def impute_blend(vae, x, known, rounds=20):
    guess = x * known
    with torch.no_grad():
        for _ in range(rounds):
            mu, _ = vae.encode(guess)
            guess = known * x + (1 - known) * torch.sigmoid(vae.decode(mu))
    return guess


@torch.no_grad()
def impute_where(vae, x, known, rounds=20):
    observed = known.bool().expand_as(x)
    guess = torch.where(observed, x, torch.zeros_like(x))
    for _ in range(rounds):
        mean = vae.decode(vae.encode(guess)[0]).sigmoid().view_as(x)
        guess = torch.where(observed, x, mean)
    return guess


def impute_masked_copy(vae, x, known, rounds=20):  # indexing into its own copy
    hole = (known == 0).expand_as(x)
    guess = x.clone()
    guess[hole] = 0.0
    for _ in range(rounds):
        with torch.no_grad():
            mean = torch.sigmoid(vae.decode(vae.encode(guess)[0]))
        guess = guess.clone()
        guess[hole] = mean[hole]
    return guess


def impute_lerp(vae, x, known, rounds=20):
    with torch.no_grad():
        guess = x.mul(known)
        for _ in range(rounds):
            guess = torch.lerp(torch.sigmoid(vae.decode(vae.encode(guess)[0])), x, known)
    return guess


@pytest.mark.parametrize("fn", [impute_blend, impute_where, impute_masked_copy, impute_lerp])
def test_impute_accepts_correct_versions(fn, capsys):
    checks.check_impute(fn)
    assert "\u2713 impute" in capsys.readouterr().out


def _loop(fill, start=lambda x, known: x * known, rounds_of=lambda r: r, feed_back=True, squash=torch.sigmoid):
    @torch.no_grad()
    def fn(vae, x, known, rounds=20):
        first = start(x, known)
        guess = first
        for _ in range(rounds_of(rounds)):
            mean = squash(vae.decode(vae.encode(guess if feed_back else first)[0]))
            guess = fill(x, known, mean)
        return guess
    return fn


_RIGHT = lambda x, known, mean: known * x + (1 - known) * mean  # noqa: E731


def _in_place(vae, x, known, rounds=20):
    x.mul_(known)
    return impute_blend(vae, x, known, rounds)


def _with_graph(vae, x, known, rounds=20):
    guess = x * known
    for _ in range(rounds):
        guess = known * x + (1 - known) * torch.sigmoid(vae.decode(vae.encode(guess)[0]))
    return guess


def _sampled(vae, x, known, rounds=20):
    guess = x * known
    with torch.no_grad():
        for _ in range(rounds):
            guess = known * x + (1 - known) * torch.sigmoid(vae(guess)[0])
    return guess


def _per_image_mask_only(vae, x, known, rounds=20):  # indexes the mask per image: breaks on a shared (1, 1, 28, 28) mask
    out = []
    for i in range(len(x)):
        m = known[i] if len(known) == len(x) else torch.ones_like(x[i])
        out.append(impute_blend(vae, x[i : i + 1], m[None], rounds)[0])
    return torch.stack(out)


MISTAKES = {
    "known pixels overwritten": (_loop(lambda x, known, mean: mean), "known pixels were overwritten"),
    "mask inverted": (_loop(lambda x, known, mean: (1 - known) * x + known * mean), "mask is inverted"),
    "logits, not probabilities": (_loop(_RIGHT, squash=lambda t: t), "logits"),
    "one round only": (_loop(_RIGHT, feed_back=False), "result of one round"),
    "one round short": (_loop(_RIGHT, rounds_of=lambda r: r - 1), "Off by one round"),
    "one round too many": (_loop(_RIGHT, rounds_of=lambda r: r + 1), "Off by one round"),
    "starts from the truth": (_loop(_RIGHT, start=lambda x, known: x.clone()), "true values"),
    "in place": (_in_place, "in place"),
    "keeps the graph": (_with_graph, "gradient graph"),
    "sampled code": (_sampled, "not a sampled z"),
    "shared mask": (_per_image_mask_only, "shared by all the images"),
    "wrong shape": (lambda vae, x, known, rounds=20: impute_blend(vae, x, known, rounds).flatten(1), "should have shape"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_impute_names_each_mistake(name):
    fn, message = MISTAKES[name]
    with pytest.raises(CheckFailed, match=message):
        checks.check_impute(fn)


def test_impute_keeps_the_callers_random_numbers():
    torch.manual_seed(5)
    checks.check_impute(impute_where)
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
