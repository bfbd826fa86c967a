"""check_gan_step (notebook 04): correct ways of writing one GAN iteration pass, each catalogued mistake fails with its own message."""

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks
from labsupport.checks import CheckFailed
from labsupport.losses import gan_d_loss, gan_g_loss, gan_g_loss_saturating
from labsupport.train import frozen, gan_step

bce = F.binary_cross_entropy_with_logits


def _out(loss_d, loss_g, real_logits, fake_logits):
    return {"loss_d": loss_d, "loss_g": loss_g, "real_logits": real_logits, "fake_logits": fake_logits}


def step_frozen(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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


def step_requires_grad(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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


def step_no_freeze(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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


def step_reuse_fake(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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

    def step(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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


def step_reused_undetached_fake(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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


def step_opt_g_for_d(G, D, opt_g, opt_d, x_real, z, y=None, *, d_loss=gan_d_loss, g_loss=gan_g_loss, d_penalty=None, update_g=True):
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
