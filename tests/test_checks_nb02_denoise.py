"""Notebook 02's denoising step (`labsupport.checks.nb02_denoise`): `denoising_step(model, optimizer, x, std)`.

Every correct way passes (four, written differently), each catalogued mistake fails with its own message, and partial
credit stops at the stage that fails.
"""

import pytest
import torch
import torch.nn.functional as F

from labsupport import checks
from labsupport.checks import CheckFailed


def step_reference(model, optimizer, x, std):
    noisy = (x + std * torch.randn_like(x)).clamp(0, 1)
    optimizer.zero_grad()
    loss = (model(noisy) - x).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_normal_mse_zero_after(model, optimizer, x, std):
    """torch.normal around x, F.mse_loss summed then divided by the batch, gradients cleared after the step."""
    noisy = torch.normal(x, std).clip(0.0, 1.0)
    loss = F.mse_loss(model(noisy), x, reduction="sum") / x.shape[0]
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def _train_on(model, optimizer, inputs, targets):
    model.zero_grad()
    loss = ((targets - model(inputs)) ** 2).sum(dim=(1, 2, 3)).mean()
    loss.backward()
    optimizer.step()
    return loss.detach().item()


def step_through_helper(model, optimizer, x, std):
    """An in-place corruption of a copy, then a plain training step on (noisy input, clean target)."""
    noisy = x.clone()
    noisy.add_(torch.randn(x.shape, device=x.device) * std).clamp_(0, 1)
    return _train_on(model, optimizer, noisy, x)


def step_clamp_where(model, optimizer, x, std):
    noise = std * torch.randn(x.size())
    noisy = torch.clamp(x + noise, min=0.0, max=1.0)
    optimizer.zero_grad(set_to_none=False)
    per_image = (model(noisy) - x).square().reshape(len(x), -1).sum(-1)
    per_image.mean().backward()
    optimizer.step()
    return per_image.mean().item()


@pytest.mark.parametrize("fn", [step_reference, step_normal_mse_zero_after, step_through_helper, step_clamp_where],
                         ids=["reference", "normal-mse-sum", "helper-in-place-copy", "clamp-square"])
def test_every_correct_denoising_step_passes(fn, capsys):
    torch.set_num_threads(1)
    checks.check_denoising_step(fn)
    assert "\u2713 denoising_step" in capsys.readouterr().out


def mistake(noise=lambda x, std: (x + std * torch.randn_like(x)).clamp(0, 1), target=lambda x, noisy, std: x,
            loss=lambda out, t: (out - t).pow(2).flatten(1).sum(1).mean(), zero_grad=True, step=True, item=True):
    """The reference step with one part swapped for a known mistake."""

    def denoising_step(model, optimizer, x, std):
        noisy = noise(x, std)
        if zero_grad:
            optimizer.zero_grad()
        out = loss(model(noisy), target(x, noisy, std))
        out.backward()
        if step:
            optimizer.step()
        return out.item() if item else out

    return denoising_step


def _seeded(x, std):
    torch.manual_seed(0)
    return (x + std * torch.randn_like(x)).clamp(0, 1)


def _generator_seeded(x, std):
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def _in_place(model, optimizer, x, std):
    x.add_(std * torch.randn_like(x)).clamp_(0, 1)
    optimizer.zero_grad()
    loss = (model(x) - x).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def _zero_grad_after_backward(model, optimizer, x, std):
    noisy = (x + std * torch.randn_like(x)).clamp(0, 1)
    loss = (model(noisy) - x).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def _clean_input(model, optimizer, x, std):
    optimizer.zero_grad()
    loss = (model(x) - x).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


@pytest.mark.parametrize("fn, message", [
    (mistake(target=lambda x, noisy, std: noisy), "compares the reconstruction with the \\*noisy\\* input"),
    (mistake(noise=lambda x, std: x + std * torch.randn_like(x)), "the noise is not clipped"),
    (mistake(noise=_seeded), "is a seed set inside"),
    (mistake(noise=_generator_seeded), "is a seed set inside"),
    (mistake(target=lambda x, noisy, std: (x + std * torch.randn_like(x)).clamp(0, 1)), "noise was added to the target too"),
    (mistake(noise=lambda x, std: (x + std**2 * torch.randn_like(x)).clamp(0, 1)), "std squared"),
    (mistake(zero_grad=False), "Clear them \\(optimizer.zero_grad\\(\\)\\) before loss.backward"),
    (mistake(step=False), "did not change: after loss.backward\\(\\), let the optimizer update them"),
    (mistake(item=False), "returned a tensor"),
    (_in_place, "changed `x` in place"),
    # beyond the brief's list
    (mistake(noise=lambda x, std: (x + std * torch.rand_like(x)).clamp(0, 1)), "must be centred"),
    (mistake(noise=lambda x, std: (x + 2 * std * torch.randn_like(x)).clamp(0, 1)), "scale standard normal noise by `std`"),
    (mistake(noise=lambda x, std: (x + std * torch.randn(1, *x.shape[1:])).clamp(0, 1)), "same noise pattern"),
    (mistake(loss=lambda out, t: F.mse_loss(out, t)), "784 times smaller"),
    (mistake(loss=lambda out, t: (out - t).pow(2).sum()), "sums over the batch"),
    (mistake(loss=lambda out, t: (out - t).abs().flatten(1).sum(1).mean()), "absolute error"),
    (_zero_grad_after_backward, "erased them"),
    (_clean_input, "given the clean batch"),
])
def test_each_denoising_mistake_is_named(fn, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message):
        checks.check_denoising_step(fn)


def test_partial_credit_stops_at_the_failing_stage():
    torch.set_num_threads(1)
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_denoising_step(mistake(noise=lambda x, std: x + std * torch.randn_like(x)))
    assert checks.PASSED == []
    with pytest.raises(CheckFailed, match="noisy"):
        checks.check_denoising_step(mistake(target=lambda x, noisy, std: noisy))
    assert checks.PASSED == ["noise"]
    checks.PASSED.clear()


def test_a_step_that_does_not_learn_fails_the_last_stage():
    """Right on the watched calls, but from then on it never steps: only the learning stage can tell."""
    calls = []

    def lazy(model, optimizer, x, std):
        calls.append(1)
        if len(calls) <= 2:
            return step_reference(model, optimizer, x, std)
        noisy = (x + std * torch.randn_like(x)).clamp(0, 1)
        with torch.no_grad():
            return (model(noisy) - x).pow(2).flatten(1).sum(1).mean().item()

    torch.set_num_threads(1)
    checks.PASSED.clear()
    with pytest.raises(CheckFailed, match="trained with the reference step"):
        checks.check_denoising_step(lazy)
    assert checks.PASSED == ["noise", "step"]
    checks.PASSED.clear()
