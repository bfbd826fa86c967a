"""Notebook 03's training-step check (labsupport/checks/nb03_step.py): vae_train_step, and train_vae running a whole
student step. Correct versions pass, each typical mistake fails with a message naming it."""

import time

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks, models, train
from labsupport.checks import CheckFailed


def reparameterize(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


def kl_divergence(mu, logvar):
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def negative_elbo(x, x_logits, mu, logvar):
    return (F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1) + kl_divergence(mu, logvar)).mean()


def vae_loss(model, x, beta=1.0):
    mu, logvar = model.encode(x)
    return negative_elbo(x, model.decode(reparameterize(mu, logvar)), mu, logvar) + (beta - 1) * kl_divergence(mu, logvar).mean()


def terms(model, x):
    """Batch means of the two terms, per image, for one code per image."""
    mu, logvar = model.encode(x)
    kl = kl_divergence(mu, logvar).mean()
    return negative_elbo(x, model.decode(reparameterize(mu, logvar)), mu, logvar) - kl, kl


# --- correct versions ---------------------------------------------------------------------------------


def step_pieces(model, optimizer, x, beta=1.0):
    rec, kl = terms(model, x)
    loss = rec + beta * kl
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def step_through_vae_loss(model, optimizer, x, beta=1.0):
    loss = vae_loss(model, x, beta)
    loss.backward()
    with torch.no_grad():  # the KL at the weights the loss was computed at: before the step
        kl = kl_divergence(*model.encode(x)).mean().item()
    optimizer.step()
    optimizer.zero_grad(set_to_none=False)
    return {"loss": loss.item(), "rec": loss.item() - beta * kl, "kl": kl}


def step_sum_reduction(model, optimizer, x, beta: float = 1.0) -> dict[str, float]:
    model.zero_grad(set_to_none=True)
    mu, logvar = model.encode(x)
    z = torch.distributions.Normal(mu, (0.5 * logvar).exp()).rsample()
    rec = F.binary_cross_entropy_with_logits(model.decode(z), x, reduction="sum") / len(x)
    kl = kl_divergence(mu, logvar).mean()
    total = rec + beta * kl
    total.backward()
    optimizer.step()
    return dict(loss=float(total.detach()), rec=float(rec.detach()), kl=float(kl.detach()), beta=beta)


@pytest.mark.parametrize("fn", [step_pieces, step_through_vae_loss, step_sum_reduction])
def test_vae_train_step_accepts_correct_versions(fn, capsys):
    start = time.perf_counter()
    checks.check_vae_train_step(fn)
    assert "\u2713 vae_train_step" in capsys.readouterr().out
    assert time.perf_counter() - start < 2.0  # < 0.5 s quiet; generous under load


# --- mistakes -----------------------------------------------------------------------------------------


def _no_step(model, optimizer, x, beta=1.0):
    rec, kl = terms(model, x)
    optimizer.zero_grad()
    (rec + beta * kl).backward()
    return {"loss": (rec + beta * kl).item(), "rec": rec.item(), "kl": kl.item()}


def _manual_update(model, optimizer, x, beta=1.0):
    out = _no_step(model, optimizer, x, beta)
    with torch.no_grad():
        for p in model.parameters():
            p -= 1e-3 * p.grad
    return out


def _two_steps(model, optimizer, x, beta=1.0):
    out = step_pieces(model, optimizer, x, beta)
    optimizer.step()
    return out


def _no_zero_grad(model, optimizer, x, beta=1.0):
    rec, kl = terms(model, x)
    loss = rec + beta * kl
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def _zero_grad_after_backward(model, optimizer, x, beta=1.0):
    rec, kl = terms(model, x)
    loss = rec + beta * kl
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def _stepped_on(combine, returned=lambda rec, kl, beta: rec + beta * kl):
    """A step that descends ``combine(rec, kl, beta)`` and returns ``returned(rec, kl, beta)`` as its loss."""
    def step(model, optimizer, x, beta=1.0):
        rec, kl = terms(model, x)
        optimizer.zero_grad()
        combine(rec, kl, beta).backward()
        optimizer.step()
        return {"loss": returned(rec, kl, beta).item(), "rec": rec.item(), "kl": kl.item()}
    return step


def _returns(make):
    """A right step whose returned dict is ``make(loss, rec, kl, beta, batch size)``."""
    def step(model, optimizer, x, beta=1.0):
        rec, kl = terms(model, x)
        loss = rec + beta * kl
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return make(loss, rec, kl, beta, len(x))
    return step


def _summed(model, optimizer, x, beta=1.0):
    mu, logvar = model.encode(x)
    kl = kl_divergence(mu, logvar).sum()
    rec = F.binary_cross_entropy_with_logits(model.decode(reparameterize(mu, logvar)), x, reduction="sum")
    loss = rec + beta * kl
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def _in_place(model, optimizer, x, beta=1.0):
    x.clamp_(1e-4, 1 - 1e-4)
    return step_pieces(model, optimizer, x, beta)


def _calls_forward(model, optimizer, x, beta=1.0):
    model(x)
    return step_pieces(model, optimizer, x, beta)


def _decodes_twice(model, optimizer, x, beta=1.0):
    loss = vae_loss(model, x, beta)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        rec, kl = terms(model, x)
    return {"loss": loss.item(), "rec": rec.item(), "kl": kl.item()}


def _default_beta(model, optimizer, x, beta=3.0):
    return step_pieces(model, optimizer, x, beta)


@pytest.mark.parametrize("fn, message", [
    (_no_step, "did not change: call optimizer.step"),
    (_manual_update, "not through the optimizer"),
    (_two_steps, "called 2 times"),
    (_no_zero_grad, "left from before"),
    (_zero_grad_after_backward, "every gradient was zero"),
    (_stepped_on(lambda r, k, b: r + k), "ignores beta"),
    (_stepped_on(lambda r, k, b: b * r + k), "beta multiplies the reconstruction"),
    (_stepped_on(lambda r, k, b: b * (r + k)), "beta multiplies the whole loss"),
    (_stepped_on(lambda r, k, b: r - b * k), "KL has the wrong sign"),
    (_stepped_on(lambda r, k, b: r), "KL term is missing"),
    (_stepped_on(lambda r, k, b: b * k), "reconstruction term is missing"),
    (_summed, "summed over the batch: average it"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": b * loss.item(), "rec": b * rec.item(), "kl": b * kl.item()}),
     r"out\['loss'\] is summed over the batch"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss, "rec": rec, "kl": kl}), "still holds the autograd graph"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.detach(), "rec": rec.detach(), "kl": kl.detach()}), "return Python floats"),
    (_returns(lambda loss, rec, kl, beta, b: loss.item()), "should return a dict"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.item()}), r"lacks the key\(s\) \['rec', 'kl'\]"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": (rec + kl).item(), "rec": rec.item(), "kl": kl.item()}), "ignores beta: return the loss"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.item(), "rec": rec.item(), "kl": beta * kl.item()}), "is beta \\* KL"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.item(), "rec": loss.item(), "kl": kl.item()}), "is the whole loss"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.item(), "rec": (loss - kl).item(), "kl": kl.item()}), "do not fit together"),
    (_returns(lambda loss, rec, kl, beta, b: {"loss": loss.item(), "rec": rec.item(), "kl": kl.item() / 4}), "averaged over the latent"),
    (_in_place, "changed x in place"),
    (_calls_forward, "You called model"),
    (_decodes_twice, "model.decode ran 2 times"),
    (_default_beta, "default is beta = 1.0"),
])
def test_vae_train_step_names_each_mistake(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_vae_train_step(fn)


# --- train_vae runs a whole student step -------------------------------------------------------------


def test_train_vae_runs_a_students_step_like_the_built_in_loop():
    digits = torch.rand(300, 1, 28, 28)
    torch.manual_seed(0)
    built_in = train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, seed=0, batch_size=100)
    torch.manual_seed(0)
    student = train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, seed=0, batch_size=100, step=step_pieces, lr_decay=True)
    assert student["step"] == built_in["step"] == [1, 2, 3]
    assert {"loss", "rec", "kl", "seconds"} <= set(student) and all(isinstance(v, float) for v in student["rec"])
    assert student["loss"][0] == pytest.approx(built_in["loss"][0], rel=1e-5)  # same weights, same batch, same noise
    assert student["loss"][0] == pytest.approx(student["rec"][0] + student["kl"][0], rel=1e-6)
    with pytest.raises(ValueError, match="not both"):
        train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, step=step_pieces, batch_loss=vae_loss)
    with pytest.raises(ValueError, match="inside your own"):
        train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, step=step_pieces, beta=2.0)
    with pytest.raises(TypeError, match="at least 'loss'"):
        train.train_vae(models.MLPVAE(4, 16), digits, epochs=1, step=lambda m, o, x: 1.0)
