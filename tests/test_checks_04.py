"""Checks of notebook 04: every correct GAN loss passes, each typical mistake fails with a message naming it."""

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks
from labsupport.checks import CheckFailed
from labsupport.losses import gan_d_loss, gan_g_loss

bce = F.binary_cross_entropy_with_logits
sig = torch.sigmoid


@pytest.mark.parametrize("fn", [
    gan_d_loss,
    lambda r, f: bce(r, torch.ones_like(r)) + bce(f, torch.zeros_like(f)),
    lambda r, f: -F.logsigmoid(r).mean() - F.logsigmoid(-f).mean(),
    lambda r, f: F.softplus(-r).mean() + F.softplus(f).mean(),
    lambda r, f: bce(torch.cat([r, f]), torch.cat([torch.ones_like(r), torch.zeros_like(f)])) * 2,
])
def test_discriminator_loss_accepts_correct_versions(fn, capsys):
    checks.check_discriminator_loss(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda r, f: bce(r, torch.zeros_like(r)) + bce(f, torch.ones_like(f)), "labels are swapped"),
    (lambda r, f: gan_d_loss(f, r), "labels are swapped"),
    (lambda r, f: -gan_d_loss(r, f), "sign is flipped"),
    (lambda r, f: bce(r, torch.ones_like(r)), "term for generated data is missing"),
    (lambda r, f: bce(f, torch.zeros_like(f)), "term for real data is missing"),
    (lambda r, f: gan_d_loss(sig(r), sig(f)), "already a probability"),
    (lambda r, f: -torch.log(sig(sig(r))).mean() - torch.log(1 - sig(sig(f))).mean(), "sigmoid twice"),
    (lambda r, f: ((sig(r) - 1) ** 2).mean() + (sig(f) ** 2).mean(), "not the log-loss"),
    (lambda r, f: (1 - sig(r)).mean() + sig(f).mean(), "not the log-loss"),
    (lambda r, f: -r.mean() + f.mean(), "not the log-loss"),
    (lambda r, f: F.softplus(-r).sum() + F.softplus(f).sum(), "summed over the batch"),
    (lambda r, f: bce(torch.cat([r, f]), torch.cat([torch.ones_like(r), torch.zeros_like(f)])), "half"),
    (lambda r, f: -torch.log(sig(r)).mean() - torch.log(1 - sig(f)).mean(), "numerically stable"),
    (lambda r, f: -torch.log(sig(r) + 1e-8).mean() - torch.log(1 - sig(f) + 1e-8).mean(), "numerically stable"),
    (lambda r, f: torch.tensor(gan_d_loss(r, f).item()), "no gradient"),
    (lambda r, f: gan_d_loss(r, f).reshape(1), "shape"),
    (lambda r, f: gan_d_loss(r, f).item(), "torch.Tensor"),
    (lambda r, f: gan_d_loss(r.round(), f.round()) + 0 * (r.sum() + f.sum()), "expected"),
])
def test_discriminator_loss_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_discriminator_loss(fn)


@pytest.mark.parametrize("fn", [
    gan_g_loss,
    lambda f: bce(f, torch.ones_like(f)),
    lambda f: -F.logsigmoid(f).mean(),
    lambda f: F.softplus(-f).mean(),
])
def test_generator_loss_accepts_correct_versions(fn, capsys):
    checks.check_generator_loss(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda f: torch.log(1 - sig(f)).mean(), "SATURATING"),
    (lambda f: -F.softplus(f).mean(), "SATURATING"),
    (lambda f: -bce(f, torch.zeros_like(f)), "SATURATING"),
    (lambda f: bce(f, torch.zeros_like(f)), "labelled the fakes 0"),
    (lambda f: F.logsigmoid(f).mean(), "sign is flipped"),
    (lambda f: bce(sig(f), torch.ones_like(f)), "already a probability"),
    (lambda f: -torch.log(sig(sig(f))).mean(), "sigmoid twice"),
    (lambda f: ((sig(f) - 1) ** 2).mean(), "not the log-loss"),
    (lambda f: -sig(f).mean(), "not the log-loss"),
    (lambda f: -f.mean(), "not the log-loss"),
    (lambda f: F.softplus(-f).sum(), "summed over the batch"),
    (lambda f: -torch.log(sig(f)).mean(), "numerically stable"),
    (lambda f: -torch.log(sig(f).clamp_min(1e-7)).mean(), "numerically stable"),
    (lambda f: gan_g_loss(f.detach()), "no gradient"),
    (lambda f: F.softplus(-f), "shape"),
])
def test_generator_loss_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_generator_loss(fn)


def test_saturating_message_explains_the_difference():
    with pytest.raises(CheckFailed) as info:
        checks.check_generator_loss(lambda f: torch.log(1 - sig(f)).mean())
    text = str(info.value)
    assert "gradient vanishes" in text and "-E[log D(G(z))]" in text


def test_unwritten_exercise_is_reported():
    def stub(real_logits, fake_logits):
        raise NotImplementedError("Exercise 1 (discriminator_loss): your code goes here")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_discriminator_loss(stub)
