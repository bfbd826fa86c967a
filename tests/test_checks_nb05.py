"""Notebook 05's checks (labsupport/checks/nb05.py): critic_loss, gradient_penalty,
wgan_gp_step. Correct versions pass, each catalogued mistake fails with its own message."""

import re

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


# --- critic_loss ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [
    lambda r, f: f.mean() - r.mean(),
    lambda r, f: torch.mean(f) - torch.mean(r),
    lambda r, f: -(r.mean() - f.mean()),
])
def test_critic_loss_accepts_correct_versions(fn, capsys):
    checks.check_critic_loss(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda r, f: r.mean() - f.mean(), "sign is flipped"),
    (lambda r, f: f.sum() - r.sum(), "summed"),
    (lambda r, f: torch.nn.functional.softplus(-r).mean() + torch.nn.functional.softplus(f).mean(), "vanilla GAN"),
    (lambda r, f: f - r, r"shape \(\)"),
    (lambda r, f: torch.tensor(float(f.mean() - r.mean())), "no gradient"),
    (lambda r, f: (f - r).mean(), "3 real and 5 fake"),
    (lambda r, f: 2 * (f.mean() - r.mean()), "twice"),
])
def test_critic_loss_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_critic_loss(fn)


# --- gradient_penalty ------------------------------------------------------------------------------

def _eps(x, shared=False, per_pixel=False, normal=False, flat=False):
    if per_pixel:
        return torch.rand_like(x)
    shape = (1 if shared else len(x),) + (1,) * (x.dim() - 1)
    if flat:
        shape = (len(x), 1)
    return torch.randn(shape) if normal else torch.rand(shape)


def make_gp(shared=False, per_pixel=False, normal=False, flat=False, where="between", create_graph=True,
            norm="per_example", power=2, reduce="mean", minus_one=True, requires_grad=True):
    def gradient_penalty(critic, real, fake):
        eps = _eps(real, shared, per_pixel, normal, flat)
        x_hat = {"between": eps * real + (1 - eps) * fake, "real": real.clone(), "fake": fake.clone()}[where]
        if requires_grad:
            x_hat.requires_grad_(True)
        scores = critic(x_hat)
        (grad,) = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=create_graph)
        if norm == "per_example":
            n = grad.flatten(1).norm(dim=1)
        elif norm == "batch":
            n = grad.norm()
        elif norm == "squared":
            n = grad.flatten(1).pow(2).sum(1)
        else:  # norm over dim 1 only
            n = grad.norm(dim=1)
        d = n - 1 if minus_one else n
        pen = d.pow(2) if power == 2 else d.abs()
        return pen.mean() if reduce == "mean" else pen.sum()
    return gradient_penalty


def reference_gp(critic, real, fake):
    """A differently written correct version (vector-Jacobian via backward on the sum)."""
    eps = torch.rand(real.shape[0], *[1] * (real.dim() - 1))
    x_hat = (fake + eps * (real - fake)).detach().requires_grad_()
    grad = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)[0]
    return ((grad.reshape(len(grad), -1).pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()


@pytest.mark.parametrize("fn", [make_gp(), reference_gp])
def test_gradient_penalty_accepts_correct_versions(fn, capsys):
    checks.check_gradient_penalty(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("kwargs, message", [
    (dict(create_graph=False), "not differentiable"),
    (dict(norm="batch"), "whole batch"),
    (dict(norm="squared"), "squared norm"),
    (dict(power=1), "absolute value"),
    (dict(shared=True), "same eps"),
    (dict(flat=True), r"eps must broadcast over every pixel"),
    (dict(per_pixel=True), "one number per example"),
    (dict(where="real"), "real data only"),
    (dict(where="fake"), "fake samples only"),
    (dict(normal=True), "outside"),
    (dict(reduce="sum"), "summed over the batch"),
    (dict(minus_one=False), "without subtracting 1"),
    (dict(norm="dim1"), r"flatten\(1\)"),
    (dict(requires_grad=False), "requires_grad_"),
])
def test_gradient_penalty_rejects_mistakes(kwargs, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_gradient_penalty(make_gp(**kwargs))


def test_gradient_penalty_not_written():
    def gradient_penalty(critic, real, fake):
        raise NotImplementedError("Exercise 2")
    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_gradient_penalty(gradient_penalty)


def penalty(critic, real, fake):
    eps = torch.rand(len(real), *[1] * (real.dim() - 1))
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    scores = critic(x_hat)
    (grad,) = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).pow(2).mean()


def step_like_solution(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
    """A penalty helper, x_real.chunk, requires_grad_(False) around the G step, fresh noise for G."""
    for x_k, z_k in zip(x_real.chunk(n_critic), z.chunk(n_critic)):
        fake = G(z_k).detach()
        loss_c = critic(fake).mean() - critic(x_k).mean() + lam * penalty(critic, x_k, fake)
        opt_c.zero_grad()
        loss_c.backward()
        opt_c.step()
    critic.requires_grad_(False)
    loss_g = -critic(G(torch.randn_like(z_k))).mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()
    critic.requires_grad_(True)
    return {"loss_c": loss_c, "loss_g": loss_g}


def step_inline_cat(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
    """Penalty inline, one critic call on torch.cat([real, fake, x_hat]), fakes under no_grad, x_real.view, no freezing,
    the interpolation written from the real side, grad of scores.sum(), norm as sqrt of a sum of squares."""
    B = len(x_real) // n_critic
    xs = x_real.view(n_critic, B, *x_real.shape[1:])
    for k in range(n_critic):
        with torch.no_grad():
            fake = G(torch.randn(B, z.shape[1]))
        eps = torch.rand(B).view(B, *[1] * (x_real.dim() - 1))
        x_hat = fake + eps * (xs[k] - fake)
        x_hat.requires_grad_()
        scores = critic(torch.cat([xs[k], fake, x_hat]))
        s_real, s_fake, s_hat = scores.split(B)
        (grad,) = torch.autograd.grad(s_hat.sum(), x_hat, create_graph=True)
        gp = ((grad.pow(2).flatten(1).sum(1)).sqrt() - 1).pow(2).mean()
        loss_c = s_fake.mean() - s_real.mean() + lam * gp
        opt_c.zero_grad(set_to_none=False)
        loss_c.backward()
        opt_c.step()
    opt_g.zero_grad()
    loss_g = -critic(G(torch.randn(B, z.shape[1]))).mean()
    loss_g.backward()
    opt_g.step()
    return {"loss_c": loss_c, "loss_g": loss_g, "penalty": gp}


def step_precomputed_fakes(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
    """All fakes made once before the loop (detached), x_real.split(B), eps via torch.rand_like on (B, 1) then reshaped,
    zero_grad after each step, parameters frozen by hand in the G step."""
    B = len(x_real) // n_critic
    fakes = G(z).detach().split(B)
    for x_k, fake in zip(x_real.split(B), fakes):
        eps = torch.rand_like(x_k[:, :1].flatten(1)[:, :1]).reshape(-1, *[1] * (x_k.dim() - 1))
        x_hat = torch.lerp(fake, x_k, eps).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x_hat), x_hat, torch.ones(B), create_graph=True)
        loss_c = torch.mean(critic(fake)) - torch.mean(critic(x_k)) + lam * torch.mean((torch.linalg.vector_norm(grad.flatten(1), dim=1) - 1) ** 2)
        loss_c.backward()
        opt_c.step()
        opt_c.zero_grad()
    for p in critic.parameters():
        p.requires_grad_(False)
    loss_g = -critic(G(torch.randn(B, z.shape[1]))).mean()
    loss_g.backward()
    opt_g.step()
    opt_g.zero_grad()
    for p in critic.parameters():
        p.requires_grad_(True)
    return {"loss_g": loss_g, "loss_c": loss_c}


@pytest.mark.parametrize("fn", [step_like_solution, step_inline_cat, step_precomputed_fakes])
def test_wgan_gp_step_accepts_correct_versions(fn, capsys):
    checks.check_wgan_gp_step(fn)
    assert "\u2713 wgan_gp_step" in capsys.readouterr().out


def mistake(*, where="between", per_pixel=False, create_graph=True, sign=1, detach=True, form="sq", one_step=False,
            g_in_critic_step=False, zero_c=True, g_sign=1, lam_used=True, ret=None):
    """The solution's step with one thing broken."""

    def gp(critic, real, fake):
        eps = torch.rand_like(real) if per_pixel else torch.rand(len(real), *[1] * (real.dim() - 1))
        x_hat = {"between": eps * real + (1 - eps) * fake, "real": real.detach().clone(), "fake": fake.detach().clone()}[where]
        x_hat.requires_grad_(True)
        scores = critic(x_hat)
        (grad,) = torch.autograd.grad(scores, x_hat, grad_outputs=torch.ones_like(scores), create_graph=create_graph)
        n = grad.flatten(1).norm(dim=1)
        return {"sq": (n - 1) ** 2, "nosq": n - 1, "norm2": n ** 2, "sqnorm": (n ** 2 - 1) ** 2}[form].mean()

    def g_step(G, critic, opt_g, z_k):
        critic.requires_grad_(False)
        loss_g = -g_sign * critic(G(torch.randn_like(z_k))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        critic.requires_grad_(True)
        return loss_g

    def step(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
        chunks = [(x_real, z)] if one_step else list(zip(x_real.chunk(n_critic), z.chunk(n_critic)))
        for x_k, z_k in chunks:
            fake = G(z_k).detach() if detach else G(z_k)
            loss_c = sign * (critic(fake).mean() - critic(x_k).mean()) + (lam if lam_used else 1.0) * gp(critic, x_k, fake)
            if zero_c:
                opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()
            if g_in_critic_step:
                loss_g = g_step(G, critic, opt_g, z_k)
        if not g_in_critic_step:
            loss_g = g_step(G, critic, opt_g, z_k)
        out = {"loss_c": loss_c, "loss_g": loss_g}
        return ret(out) if ret else out

    return step


@pytest.mark.parametrize("fn, message", [
    (mistake(where="real"), "penalty was taken at the real examples only"),
    (mistake(where="fake"), "penalty was taken at the fakes only"),
    (mistake(per_pixel=True), "one number per example"),
    (mistake(create_graph=False), "create_graph=True"),
    (mistake(sign=-1), "Wasserstein term has the wrong sign"),
    (mistake(detach=False), "fakes are not detached"),
    (mistake(form="nosq"), "missing its square"),
    (mistake(form="norm2"), "lacks its (norm - 1)"),
    (mistake(form="sqnorm"), "uses the squared norm"),
    (mistake(one_step=True), "One critic step instead of n_critic"),
    (mistake(g_in_critic_step=True), "G was updated in a critic step"),
    (mistake(zero_c=False), "opt_c.zero_grad()"),
    (mistake(g_sign=-1), "G's gradient has the wrong sign"),
    (mistake(lam_used=False), "not weighted by lam"),
    (mistake(ret=lambda out: (out["loss_c"], out["loss_g"])), "should return a dict"),
    (mistake(ret=lambda out: {"loss_c": out["loss_c"]}), "lacks the key"),
    (mistake(ret=lambda out: {**out, "loss_c": out["loss_c"] * 0}), "out['loss_c']"),
])
def test_wgan_gp_step_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        checks.check_wgan_gp_step(fn)


def test_wgan_gp_step_messages_are_distinct():
    """Each mistake of the catalogue gets its own message, not a shared generic one."""
    seen = set()
    for kw in [dict(where="real"), dict(where="fake"), dict(per_pixel=True), dict(create_graph=False), dict(sign=-1),
               dict(detach=False), dict(form="nosq"), dict(form="norm2"), dict(one_step=True), dict(g_in_critic_step=True)]:
        with pytest.raises(CheckFailed) as err:
            checks.check_wgan_gp_step(mistake(**kw))
        seen.add(str(err.value).split(" (")[0])
    assert len(seen) == 10


def test_wgan_gp_step_ignoring_n_critic():
    def fixed_five(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
        return step_like_solution(G, critic, opt_g, opt_c, x_real, z, n_critic=5, lam=lam)

    with pytest.raises(CheckFailed, match="expected n_critic = 3"):
        checks.check_wgan_gp_step(fixed_five)


def test_wgan_gp_step_not_written_yet():
    def stub(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
        raise NotImplementedError("write wgan_gp_step")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_wgan_gp_step(stub)


def test_toy_gan_trains_with_a_students_step():
    """toy_gan(step=...) hands the step n_critic blocks of real points per call and keeps its W-estimate log."""
    from labsupport import data, train

    seen = []

    def recording(G, critic, opt_g, opt_c, x_real, z, *, n_critic=5, lam=10.0):
        seen.append((x_real.shape, z.shape, n_critic, lam))
        return step_like_solution(G, critic, opt_g, opt_c, x_real, z, n_critic=n_critic, lam=lam)

    x, _ = data.ring_of_gaussians(500, seed=0)
    G, hist = train.toy_gan("wgan-gp", x, steps=4, seed=0, lam=0.3, step=recording, n_critic=3, batch_size=16, log_every=2)
    assert seen == [((48, 2), (48, 2), 3, 0.3)] * 4
    assert hist["w_step"] == [2, 4] and len(hist["g_loss"]) == 4 and "d_real" not in hist
