"""Checks of notebook 08 (diffusion): three correct ways of writing each exercise pass, each catalogued mistake fails with its own message."""

import math

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks, diffusion
from labsupport.checks import CheckFailed


def _fails(check, fn, fragment: str) -> None:
    with pytest.raises(CheckFailed) as err:
        check(fn)
    assert fragment in str(err.value), str(err.value)


# --- q_sample ---------------------------------------------------------------------------------------

def q_view(x0, t, noise, s):
    ab = s.alpha_bar[t].to(x0.dtype).view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_index(x0, t, noise, s):
    ab = torch.cumprod(1 - s.beta, 0).float()[t][:, None, None, None]
    return torch.sqrt(ab) * x0 + torch.sqrt(1 - ab) * noise


def q_reshape(x0, t, noise, s):
    ab = s.alpha_bar.gather(0, t).reshape(-1, *[1] * (x0.dim() - 1)).float()
    return x0 * ab ** 0.5 + noise * (1 - ab) ** 0.5


@pytest.mark.parametrize("fn", [q_view, q_index, q_reshape, lambda x0, t, noise, s: diffusion.q_sample(x0, t, noise, s)])
def test_q_sample_accepts_correct_answers(fn):
    checks.check_q_sample(fn)


def _q(signal, noise_coef, at=lambda t, s: t, reshape=True, swap=False):
    def fn(x0, t, noise, s):
        ab, a = s.alpha_bar.float(), s.alpha.float()
        table = {"ab": ab, "a": a}
        cs, cn = signal(table, at(t, s)), noise_coef(table, at(t, s))
        if reshape:
            cs, cn = cs.view(-1, 1, 1, 1), cn.view(-1, 1, 1, 1)
        return cs * noise + cn * x0 if swap else cs * x0 + cn * noise
    return fn


right_s, right_n = (lambda T, t: T["ab"][t].sqrt()), (lambda T, t: (1 - T["ab"][t]).sqrt())


@pytest.mark.parametrize("fn, fragment", [
    (_q(lambda T, t: T["a"][t].sqrt(), lambda T, t: (1 - T["a"][t]).sqrt()), "one step's keep-rate"),
    (_q(lambda T, t: T["ab"][t], lambda T, t: 1 - T["ab"][t]), "Missing square roots"),
    (_q(right_s, lambda T, t: 1 - T["ab"][t]), "noise term is missing its square root"),
    (_q(lambda T, t: T["ab"][t], right_n), "signal term is missing its square root"),
    (_q(right_s, right_n, at=lambda t, s: t - 1), "at t - 1"),
    (_q(right_s, right_n, at=lambda t, s: (t + 1).clamp(max=s.T)), "at t + 1"),
    (_q(right_s, right_n, swap=True), "swapped"),
    (_q(right_s, right_n, reshape=False), "not reshaped"),
    (lambda x0, t, noise, s: s.alpha_bar[t].view(-1, 1, 1, 1).sqrt() * x0 + (1 - s.alpha_bar[t]).view(-1, 1, 1, 1).sqrt() * noise, "float64"),
    (lambda x0, t, noise, s: x0 + noise, "is wrong for image"),
])
def test_q_sample_names_each_mistake(fn, fragment):
    _fails(checks.check_q_sample, fn, fragment)


# --- diffusion_loss ----------------------------------------------------------------------------------

def loss_lib(eps_model, x0, s, y=None):
    t = torch.randint(1, s.T + 1, (len(x0),))
    noise = torch.randn_like(x0)
    return F.mse_loss(eps_model(q_view(x0, t, noise, s), t, y), noise)


def loss_manual(eps_model, x0, s, y=None):
    noise = torch.randn(x0.shape)
    t = 1 + torch.randint(s.T, (x0.shape[0],), device=x0.device)
    pred = eps_model(q_index(x0, t, noise, s), t, y)
    return ((noise - pred) ** 2).mean()


def loss_per_image(eps_model, x0, s, y=None):
    t = torch.randint(low=1, high=s.T + 1, size=(x0.size(0),), dtype=torch.long)
    noise = torch.randn_like(x0)
    err = (eps_model(diffusion.q_sample(x0, t, noise, s), t, y) - noise).pow(2)
    return err.mean(dim=(1, 2, 3)).mean()


@pytest.mark.parametrize("fn", [loss_lib, loss_manual, loss_per_image])
def test_diffusion_loss_accepts_correct_answers(fn):
    checks.check_diffusion_loss(fn)


def _loss(t_low=1, t_high=None, fresh=False, target="noise", reduce="mean", give=None, labels=True, detach=False, same_t=False):
    def fn(eps_model, x0, s, y=None):
        high = s.T + 1 if t_high is None else t_high(s)
        t = torch.randint(t_low, high, (1,)).repeat(len(x0)) if same_t else torch.randint(t_low, high, (len(x0),))
        noise = torch.randn_like(x0)
        xt = q_view(x0, t.clamp(min=0), noise, s)
        inp = {"xt": xt, "x0": x0}[give or "xt"]
        pred = eps_model(inp, t, y if labels else None)
        if detach:
            pred = pred.detach()
        tgt = {"noise": torch.randn_like(x0) if fresh else noise, "x0": x0, "xt": xt}[target]
        err = (pred - tgt) ** 2
        return {"mean": err.mean(), "sum_pixels": err.flatten(1).sum(1).mean(), "sum": err.sum(), "per_image": err.mean((1, 2, 3))}[reduce]
    return fn


@pytest.mark.parametrize("fn, fragment", [
    (_loss(t_low=0, t_high=lambda s: s.T), "you drew t = 0"),
    (_loss(t_high=lambda s: s.T), "never reached T"),
    (_loss(fresh=True), "second, independent noise"),
    (_loss(target="x0"), "compares the prediction with x0"),
    (_loss(target="xt"), "compared with x_t"),
    (_loss(reduce="sum_pixels"), "summed over the pixels"),
    (_loss(reduce="sum"), "summed over everything"),
    (_loss(reduce="per_image"), "should have shape ()"),
    (_loss(give="x0"), "clean x0"),
    (_loss(labels=False), "did not receive the labels"),
    (_loss(detach=True), "No gradient"),
    (_loss(same_t=True), "same t"),
    (lambda eps_model, x0, s, y=None: loss_lib(eps_model, x0, s, y) + loss_lib(eps_model, x0, s, y), "called 2 times"),
])
def test_diffusion_loss_names_each_mistake(fn, fragment):
    _fails(checks.check_diffusion_loss, fn, fragment)


# --- ddpm_step ------------------------------------------------------------------------------------------

def step_lib(eps, x_t, t, s, noise):
    return diffusion.ddpm_step(eps, x_t, t, s, noise=noise)


def step_tensors(eps, x_t, t, s, noise):
    beta, alpha, ab = s.beta[t].float(), s.alpha[t].float(), s.alpha_bar[t].float()
    mean = (x_t - beta / torch.sqrt(1 - ab) * eps) / torch.sqrt(alpha)
    var = (1 - s.alpha_bar[t - 1].float()) / (1 - ab) * beta
    return mean + var.sqrt() * noise if t > 1 else mean


def step_via_x0(eps, x_t, t, s, noise):
    """Through the predicted x_0 and the posterior q(x_{t-1} | x_t, x_0)'s mean coefficients (the same step, rewritten)."""
    ab, ab_prev, beta, alpha = (float(v) for v in (s.alpha_bar[t], s.alpha_bar[t - 1], s.beta[t], s.alpha[t]))
    x0 = (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab)
    mean = math.sqrt(ab_prev) * beta / (1 - ab) * x0 + math.sqrt(alpha) * (1 - ab_prev) / (1 - ab) * x_t
    return mean + math.sqrt(float(s.posterior_variance()[t])) * noise


@pytest.mark.parametrize("fn", [step_lib, step_tensors, step_via_x0])
def test_ddpm_step_accepts_correct_answers(fn):
    checks.check_ddpm_step(fn)


def _step(**kw):
    at_shift = kw.pop("shift", 0)
    def fn(eps, x_t, t, s, noise):
        return checks.nb08._ddpm_reference(eps, x_t, t, s, noise, at=max(t + at_shift, 0) if at_shift else None, **kw).float()
    return fn


@pytest.mark.parametrize("fn, fragment", [
    (_step(mean_denominator="alpha_bar"), "divides by sqrt(alpha_bar_t)"),
    (_step(coef="alpha"), "uses alpha_t where alpha_bar_t belongs"),
    (_step(coef="nosqrt"), "square root in the noise coefficient"),
    (_step(mean_denominator="nosqrt"), "not alpha_t"),
    (_step(sign=-1.0), "sign of the noise term"),
    (_step(std_of="variance"), "scaled by the variance"),
    (_step(var="beta"), "sigma_t^2 = beta_t"),
    (_step(var="beta", std_of="variance"), "used as a standard deviation"),
    (_step(var="none"), "No noise was added"),
    (_step(shift=-1), "schedule at t - 1"),
    (lambda eps, x_t, t, s, noise: diffusion.ddpm_step(eps.double(), x_t.double(), t, s, noise=noise.double()), "float64"),
    (lambda eps, x_t, t, s, noise: x_t - eps, "is wrong"),
])
def test_ddpm_step_names_each_mistake(fn, fragment):
    _fails(checks.check_ddpm_step, fn, fragment)
