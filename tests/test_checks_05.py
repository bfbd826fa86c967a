"""Notebook 05 checks: correct versions pass, each typical mistake fails with a message naming it."""

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


# --- cycle_consistency_loss ------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [
    lambda G_AB, G_BA, a, b: (G_BA(G_AB(a)) - a).abs().mean() + (G_AB(G_BA(b)) - b).abs().mean(),
    lambda G_AB, G_BA, a, b: torch.nn.functional.l1_loss(G_BA(G_AB(a)), a) + torch.nn.functional.l1_loss(G_AB(G_BA(b)), b),
])
def test_cycle_consistency_accepts_correct_versions(fn, capsys):
    checks.check_cycle_consistency_loss(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda G_AB, G_BA, a, b: (G_BA(G_AB(a)) - a).abs().mean(), "Only the A -> B -> A"),
    (lambda G_AB, G_BA, a, b: (G_AB(G_BA(b)) - b).abs().mean(), "Only the B -> A -> B"),
    (lambda G_AB, G_BA, a, b: (G_BA(G_AB(a)) - a).pow(2).mean() + (G_AB(G_BA(b)) - b).pow(2).mean(), "squared error"),
    (lambda G_AB, G_BA, a, b: (G_BA(G_AB(a)) - a).abs().sum() + (G_AB(G_BA(b)) - b).abs().sum(), "summed"),
    (lambda G_AB, G_BA, a, b: ((G_BA(G_AB(a)) - a).abs().mean() + (G_AB(G_BA(b)) - b).abs().mean()) / 2, "averaged"),
    (lambda G_AB, G_BA, a, b: (G_AB(G_BA(a)) - a).abs().mean() + (G_BA(G_AB(b)) - b).abs().mean(), "swap"),
    (lambda G_AB, G_BA, a, b: (G_BA(G_AB(a).detach()) - a).abs().mean() + (G_AB(G_BA(b).detach()) - b).abs().mean(), "only part of it"),
    (lambda G_AB, G_BA, a, b: ((G_BA(G_AB(a)) - a).abs().mean() + (G_AB(G_BA(b)) - b).abs().mean()).detach(), "no gradient"),
    (lambda G_AB, G_BA, a, b: (G_AB(a) - b).abs().mean() + (G_BA(b) - a).abs().mean(), "expected"),
])
def test_cycle_consistency_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_cycle_consistency_loss(fn)
