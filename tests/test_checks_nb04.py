"""Notebook 04's checks (labsupport/checks/nb04.py): discriminator_loss, generator_loss, conv_out, conv_transpose_out,
gan_step. Correct versions pass, each catalogued mistake fails with its own message."""

import math
import re

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks
from labsupport.checks import CheckFailed
from labsupport.losses import gan_d_loss, gan_g_loss, gan_g_loss_saturating
from labsupport.train import frozen, gan_step


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


@pytest.mark.parametrize("fn", [
    lambda n, k, s=1, p=0: (n + 2 * p - k) // s + 1,
    lambda n, k, s=1, p=0: math.floor((n + 2 * p - k) / s) + 1,
    lambda n, k, s=1, p=0: int((n + 2 * p - k) / s) + 1,  # truncation is the floor for non-negative spans
    lambda n, k, s=1, p=0: len(range(0, n + 2 * p - k + 1, s)),  # the window's start positions, counted
])
def test_conv_out_accepts_correct_versions(fn, capsys):
    checks.check_conv_out(fn)
    assert "\u2713 conv_out" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda n, k, s=1, p=0: math.ceil((n + 2 * p - k) / s) + 1, "rounds up"),
    (lambda n, k, s=1, p=0: (n + 2 * p - k) // s, "The +1 is missing"),
    (lambda n, k, s=1, p=0: (n + p - k) // s + 1, "counted once"),
    (lambda n, k, s=1, p=0: n + 2 * p - k + 1, "stride is ignored"),
    (lambda n, k, s=1, p=0: (n + 2 * p - k) / s + 1, "returned the float"),
    (lambda n, k, s=1, p=0: (n - 1) * s - 2 * p + k, "transposed convolution's formula"),
    (lambda n, k, s=1, p=0: None, "should return an int"),
])
def test_conv_out_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        checks.check_conv_out(fn)


@pytest.mark.parametrize("fn", [
    lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k + op,
    lambda n, k, s=1, p=0, op=0: s * n - s + k - 2 * p + op,
    lambda n, k, s=1, p=0, op=0: (n - 1) * s + 1 + (k - 1) - 2 * p + op,  # the stretched input, then a full convolution
])
def test_conv_transpose_out_accepts_correct_versions(fn, capsys):
    checks.check_conv_transpose_out(fn)
    assert "\u2713 conv_transpose_out" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k, "output_padding is ignored"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k - op, "output_padding is subtracted"),
    (lambda n, k, s=1, p=0, op=0: (n + 2 * p - k) // s + 1, "ordinary convolution's formula"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s + 2 * p - k + op, "signs of padding and kernel are swapped"),
    (lambda n, k, s=1, p=0, op=0: n * s - 2 * p + k + op, "The -1 is missing"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - p + k + op, "removed once"),
    (lambda n, k, s=1, p=0, op=0: float((n - 1) * s - 2 * p + k + op), "returned the float"),
])
def test_conv_transpose_out_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        checks.check_conv_transpose_out(fn)


def test_conv_checks_not_written_yet():
    def stub(*args):
        raise NotImplementedError("write it")

    for check in (checks.check_conv_out, checks.check_conv_transpose_out):
        with pytest.raises(CheckFailed, match="not written yet"):
            check(stub)


bce = F.binary_cross_entropy_with_logits


def _out(loss_d, loss_g, real_logits, fake_logits):
    return {"loss_d": loss_d, "loss_g": loss_g, "real_logits": real_logits, "fake_logits": fake_logits}


def step_frozen(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """Like the course's: detach, frozen(D) in the G step, zero_grad before each backward."""
    fake = G(z).detach()
    real_logits, fake_logits = D(x_real), D(fake)
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        with frozen(D):
            loss_g = g_loss(D(G(torch.randn_like(z))))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


def step_requires_grad(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """no_grad for the fakes, D.requires_grad_(False) / back around the G step, zero_grad(set_to_none=False)."""
    with torch.no_grad():
        fake = G(z)
    real_logits, fake_logits = D(x_real), D(fake)
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad(set_to_none=False)
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        D.requires_grad_(False)
        loss_g = g_loss(D(G(torch.randn_like(z))))
        opt_g.zero_grad(set_to_none=False)
        loss_g.backward()
        opt_g.step()
        D.requires_grad_(True)
    return _out(loss_d, loss_g, real_logits, fake_logits)


def step_no_freeze(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """No freezing at all: D collects gradients in the G step, which the next opt_d.zero_grad() throws away."""
    opt_d.zero_grad()
    opt_g.zero_grad()
    real_logits, fake_logits = D(x_real), D(G(z).detach())
    loss_d = d_loss(real_logits, fake_logits)
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        loss_g = g_loss(D(G(torch.randn_like(z))))
        loss_g.backward()
        opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


def step_reuse_fake(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """The PyTorch DCGAN tutorial's way: one batch of fakes, detached for D, scored again by the updated D for G; zero_grad after the steps."""
    fake = G(z)
    real_logits, fake_logits = D(x_real), D(fake.detach())
    loss_d = d_loss(real_logits, fake_logits)
    loss_d.backward()
    opt_d.step()
    opt_d.zero_grad()
    loss_g = None
    if update_g:
        loss_g = g_loss(D(fake))
        loss_g.backward()
        opt_g.step()
        opt_g.zero_grad()
        opt_d.zero_grad()
    return _out(loss_d, loss_g, real_logits, fake_logits)


@pytest.mark.parametrize("fn", [gan_step, step_frozen, step_requires_grad, step_no_freeze, step_reuse_fake])
def test_gan_step_accepts_correct_versions(fn, capsys):
    checks.check_gan_step(fn)
    assert "\u2713 gan_step" in capsys.readouterr().out


def mistake(*, detach=True, d_in_g_step=False, saturating=False, zero_d=True, zero_g=True, swap=False, one_opt=False, ret=None):
    """The course's step with one thing broken."""

    def step(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
        fake = G(z).detach() if detach else G(z)
        real_logits, fake_logits = D(x_real), D(fake)
        loss_d = d_loss(fake_logits, real_logits) if swap else d_loss(real_logits, fake_logits)
        if zero_d:
            opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        loss_g = None
        if update_g:
            opt = opt_d if one_opt else opt_g
            loss_g = (gan_g_loss_saturating if saturating else g_loss)(D(G(torch.randn_like(z))))
            if zero_g:
                opt.zero_grad()
            loss_g.backward()
            opt.step()
            if d_in_g_step:
                opt_d.step()
        out = _out(loss_d, loss_g, real_logits, fake_logits)
        return ret(out) if ret else out

    return step


@pytest.mark.parametrize("fn, message", [
    (mistake(detach=False), "fakes are not detached"),
    (mistake(d_in_g_step=True), "D was updated during the G step"),
    (mistake(saturating=True), "SATURATING"),
    (mistake(zero_d=False), "opt_d.zero_grad()"),
    (mistake(zero_g=False), "opt_g.zero_grad()"),
    (mistake(swap=True), "labels are swapped"),
    (mistake(one_opt=True), "One optimizer stepped both networks"),
    (mistake(ret=lambda out: (out["loss_d"], out["loss_g"])), "should return a dict"),
    (mistake(ret=lambda out: {"d": out["loss_d"], "g": out["loss_g"]}), "lacks the key"),
    (mistake(ret=lambda out: {**out, "real_logits": out["fake_logits"]}), "out['real_logits']"),
])
def test_gan_step_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        checks.check_gan_step(fn)


def step_reused_undetached_fake(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    fake = G(z)
    real_logits, fake_logits = D(x_real), D(fake)
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = g_loss(D(fake))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


def step_opt_g_for_d(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    real_logits, fake_logits = D(x_real), D(G(z).detach())
    loss_d = d_loss(real_logits, fake_logits)
    opt_g.zero_grad()
    loss_d.backward()
    opt_g.step()
    loss_g = g_loss(D(G(torch.randn_like(z))))
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


@pytest.mark.parametrize("fn, message", [
    (step_reused_undetached_fake, "fakes are not detached"),
    (step_opt_g_for_d, "opt_g.step\\(\\) ran twice and opt_d.step\\(\\) never"),
])
def test_gan_step_rejects_other_forms_of_the_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_gan_step(fn)


def test_gan_step_not_written_yet():
    def stub(G, D, opt_g, opt_d, x_real, z, y=None, **kwargs):
        raise NotImplementedError("write gan_step")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_gan_step(stub)


# --- blind spots closed in issue 35: the losses gan_step is given must be the ones it trains with ---------------------


def step_bce_inline(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """Right for the standard losses, but writes them inline: notebook 04's saturating experiment would train the wrong loss."""
    fake = G(z).detach()
    real_logits, fake_logits = D(x_real), D(fake)
    loss_d = bce(real_logits, torch.ones_like(real_logits)) + bce(fake_logits, torch.zeros_like(fake_logits))
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        with frozen(D):
            loss_g = g_loss(D(G(torch.randn_like(z))))
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


def step_g_loss_inline(G, D, opt_g, opt_d, x_real, z, *, d_loss=gan_d_loss, g_loss=gan_g_loss, update_g=True):
    """Uses d_loss, but the non-saturating G loss is written inline."""
    fake = G(z).detach()
    real_logits, fake_logits = D(x_real), D(fake)
    loss_d = d_loss(real_logits, fake_logits)
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = None
    if update_g:
        with frozen(D):
            loss_g = F.softplus(-D(G(torch.randn_like(z)))).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
    return _out(loss_d, loss_g, real_logits, fake_logits)


@pytest.mark.parametrize("fn, message", [(step_bce_inline, "ignores the d_loss it is given"),
                                         (step_g_loss_inline, "ignores the g_loss it is given")])
def test_gan_step_rejects_ignoring_the_losses_it_is_given(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_gan_step(fn)


def test_gan_step_message_for_undetached_fakes_does_not_overstate():
    """An undetached D step whose G step zeroes G's gradients first still ends at the reference's weights: the
    message says what the missing detach costs, not that G's result is wrong."""
    with pytest.raises(CheckFailed, match="unless the G step clears G's gradients first"):
        checks.check_gan_step(mistake(detach=False))
