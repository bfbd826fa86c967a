"""Notebook 04, generative adversarial networks: discriminator_loss, generator_loss, gan_step, conv_out, conv_transpose_out."""

from __future__ import annotations

from typing import Callable

import torch

from .. import losses
from .core import CheckFailed, Unchanged, call, check, close, describe, expect_tensor, named, passed, ratio_hint
from .fakes import RecordingNet, StepSGD, expect_dict, flat, grads, ref_grad, twin, watch_step


def _gan_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Logits of D on a real and a fake batch: moderate values of both signs, and D fooled one way or the other."""
    g = torch.Generator().manual_seed(4)
    return [(2 * torch.randn(8, generator=g, dtype=torch.float64), 2 * torch.randn(8, generator=g, dtype=torch.float64) - 1),
            (torch.linspace(-3, 4, 6, dtype=torch.float64), torch.linspace(-5, 2, 6, dtype=torch.float64))]


_softplus = torch.nn.functional.softplus  # the mistakes below are written with it


def _gan_scalar(fn: Callable, args: tuple, what: str, grad: bool = True) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """Call ``fn`` on float32 copies of ``args`` that require grad; return (value as float64, grads)."""
    leaves = [a.detach().float().clone().requires_grad_(grad) for a in args]
    kept = Unchanged(*leaves)
    out = expect_tensor(call(fn, *leaves), (), what)
    kept.verify(f"{what} changed its input logits in place. Compute on new tensors instead.")
    grads: list[torch.Tensor | None] = [None] * len(leaves)
    if grad and out.requires_grad:
        grads = list(torch.autograd.grad(out, leaves, allow_unused=True))
    return out.detach().double(), grads



def _wrong_value(name: str, got: torch.Tensor, want: torch.Tensor, mistakes: list, formula: str) -> CheckFailed:
    """A GAN loss's wrong value: the catalogued mistake it matches, or else the value expected (``formula``)."""
    found = named(got, mistakes)
    if found:
        return CheckFailed(found + f"\n  (got {got.item():.4f}, expected {want.item():.4f})")
    near = " Nearly right: an epsilon or clamp inside a log changes the value; compute it from the logits instead." if close(got, want, rtol=2e-2) else ""
    return CheckFailed(f"{name} gave {got.item():.4f}, expected {want.item():.4f} = {formula} "
                       f"with D = sigmoid(logits).{ratio_hint(got, want)}{near}")


def _expect_gradients(grads: list[torch.Tensor | None], wants: list[torch.Tensor]) -> None:
    """A loss with the right value must also pass the right gradient to each of its logits (``wants``, float64)."""
    if any(g is None for g in grads):
        raise CheckFailed("The loss does not depend on the logits through autograd (no gradient reached them): "
                          "did you use .item(), .detach(), .numpy() or build a new tensor from the values?")
    if not all(close(g.double(), w, rtol=1e-3, atol=1e-6) for g, w in zip(grads, wants)):
        raise CheckFailed("The value is right but the gradient with respect to the logits is not: "
                          "avoid non-differentiable steps (rounding, clamping) inside the loss.")


@check
def check_discriminator_loss(fn: Callable) -> None:
    """``discriminator_loss(real_logits: (B,), fake_logits: (B,)) -> scalar`` = -E[log D(x)] - E[log(1 - D(G(z)))]."""
    name = "discriminator_loss(real_logits, fake_logits)"
    for real, fake in _gan_cases():
        B = len(real)
        want = losses.gan_d_loss(real, fake)
        got, grads = _gan_scalar(fn, (real, fake), name)
        if not close(got, want, rtol=1e-4, atol=1e-5):
            sig_r, sig_f = torch.sigmoid(real), torch.sigmoid(fake)
            mistakes = [
                ("The labels are swapped: real data should get label 1 (D(x) -> 1) and generated data label 0. "
                 "Your loss rewards D for calling real digits fake.",
                 _softplus(real).mean() + _softplus(-fake).mean()),
                ("The sign is flipped: the loss to minimise is -E[log D(x)] - E[log(1 - D(G(z)))], which is positive "
                 "(the log of a probability is negative).",
                 -want),
                ("The term for generated data is missing: add -E[log(1 - D(G(z)))] (D must also learn to reject fakes).",
                 _softplus(-real).mean()),
                ("The term for real data is missing: add -E[log D(x)] (D must also learn to accept real data).",
                 _softplus(fake).mean()),
                ("You applied a sigmoid to something that is already a probability (a sigmoid twice): the inputs are logits, and "
                 "binary_cross_entropy_with_logits (or logsigmoid/softplus) applies the sigmoid itself. Pass the logits directly.",
                 _softplus(-sig_r).mean() + _softplus(sig_f).mean()),
                ("This is a squared error on probabilities (the least-squares GAN loss), not the log-loss: use "
                 "-log D(x) and -log(1 - D(G(z))).",
                 ((sig_r - 1) ** 2).mean() + (sig_f ** 2).mean()),
                ("This is linear in the probabilities (1 - D(x) + D(G(z))), not the log-loss: take the log of the probabilities.",
                 (1 - sig_r).mean() + sig_f.mean()),
                ("This uses the raw scores (-E[logit(x)] + E[logit(G(z))], the Wasserstein critic loss), not the log-loss: "
                 "turn logits into log-probabilities with logsigmoid or BCE with logits.",
                 -real.mean() + fake.mean()),
                ("You summed over the batch instead of averaging: the loss is the sum of two batch MEANS.",
                 want * B),
                ("Your value is half the right one: you probably averaged over the 2B real and fake logits together. "
                 "Average each term over its own batch, then add the two means.",
                 want / 2),
            ]
            raise _wrong_value(name, got, want, mistakes, "-mean(log D(x)) - mean(log(1 - D(G(z))))")
        _expect_gradients(grads, [(torch.sigmoid(real) - 1) / B, torch.sigmoid(fake) / B])
    # D confidently wrong (and right): large logits must not give inf or lose the loss.
    real, fake = torch.tensor([-200.0, 30.0, 5.0]), torch.tensor([200.0, -30.0, 0.0])
    want = losses.gan_d_loss(real.double(), fake.double())
    out = call(fn, real.clone(), fake.clone())
    got = out.detach().double() if isinstance(out, torch.Tensor) else torch.tensor(float("nan"))
    if not torch.isfinite(got).all() or not close(got, want, rtol=1e-3):
        raise CheckFailed(f"Not numerically stable: with logits of +-200 (D very sure) your loss is {got.item():.4g}, "
                          f"the right value is {want.item():.4g}. log(sigmoid(l)) underflows to log(0) = -inf, and adding "
                          "a small epsilon caps the loss. Compute it from the logits: F.binary_cross_entropy_with_logits, "
                          "or F.logsigmoid(l) = -F.softplus(-l) and log(1 - sigmoid(l)) = -F.softplus(l).")
    passed("discriminator_loss")


@check
def check_generator_loss(fn: Callable) -> None:
    """``generator_loss(fake_logits: (B,)) -> scalar`` = -E[log D(G(z))] (the non-saturating loss)."""
    name = "generator_loss(fake_logits)"
    for _, fake in _gan_cases():
        B = len(fake)
        want = losses.gan_g_loss(fake)
        got, grads = _gan_scalar(fn, (fake,), name)
        if not close(got, want, rtol=1e-4, atol=1e-5):
            sig = torch.sigmoid(fake)
            mistakes = [
                ("This is the SATURATING loss E[log(1 - D(G(z)))] of the original min-max game. It has the same fixed point, "
                 "but when D confidently rejects the fakes (D(G(z)) near 0, as early in training) its gradient vanishes "
                 "(d/dl log(1 - sigmoid(l)) = -sigmoid(l) -> 0), so G stops learning. Use the non-saturating loss "
                 "-E[log D(G(z))], whose gradient is largest exactly there.",
                 losses.gan_g_loss_saturating(fake)),
                ("The target is the discriminator's: you labelled the fakes 0. G wants D to call its samples REAL (label 1): "
                 "minimise -E[log D(G(z))].",
                 _softplus(fake).mean()),
                ("The sign is flipped: -E[log D(G(z))] is positive (the log of a probability is negative), and G minimises it.",
                 -want),
                ("You applied a sigmoid to something that is already a probability (a sigmoid twice): fake_logits are logits; "
                 "binary_cross_entropy_with_logits (or logsigmoid/softplus) applies the sigmoid itself.",
                 _softplus(-sig).mean()),
                ("This is a squared error on the probability (the least-squares GAN loss), not the log-loss -log D(G(z)).",
                 ((sig - 1) ** 2).mean()),
                ("This is linear in the probability (-D(G(z)) or 1 - D(G(z))), not the log-loss -log D(G(z)).",
                 -sig.mean()),
                ("This is linear in the probability (1 - D(G(z))), not the log-loss -log D(G(z)).",
                 (1 - sig).mean()),
                ("This uses the raw scores (-E[logit], the Wasserstein generator loss), not the log-loss -log D(G(z)).",
                 -fake.mean()),
                ("You summed over the batch instead of averaging: the loss is a batch MEAN.",
                 want * B),
            ]
            raise _wrong_value(name, got, want, mistakes, "-mean(log D(G(z)))")
        _expect_gradients(grads, [(torch.sigmoid(fake) - 1) / B])
    fake = torch.tensor([-200.0, -30.0, 0.0, 30.0])
    want = losses.gan_g_loss(fake.double())
    out = call(fn, fake.clone())
    got = out.detach().double() if isinstance(out, torch.Tensor) else torch.tensor(float("nan"))
    if not torch.isfinite(got).all() or not close(got, want, rtol=1e-3):
        raise CheckFailed(f"Not numerically stable: when D rejects a fake with logit -200 your loss is {got.item():.4g}, "
                          f"the right value is {want.item():.4g}. log(sigmoid(-200)) underflows to log(0) = -inf, and an "
                          "epsilon caps the loss exactly where G most needs a signal. Use F.softplus(-l) = -log sigmoid(l), "
                          "F.logsigmoid, or F.binary_cross_entropy_with_logits.")
    passed("generator_loss")


def _step_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The D loss check_gan_step passes as ``d_loss`` (the reference, wrapped so the grader sees a check's helper)."""
    return losses.gan_d_loss(real_logits, fake_logits)


def _step_g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The G loss check_gan_step passes as ``g_loss``."""
    return losses.gan_g_loss(fake_logits)


def _step_d_loss_ls(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Another D loss (least squares), for the call that tells whether gan_step uses the ``d_loss`` it is given."""
    return losses.least_squares(real_logits, 1.0) + losses.least_squares(fake_logits, 0.0)


def _step_g_loss_saturating(fake_logits: torch.Tensor) -> torch.Tensor:
    """Another G loss (notebook 04's saturating experiment), for the call that tells whether ``g_loss`` is used."""
    return losses.gan_g_loss_saturating(fake_logits)


def _explain_reuse(message: str, err: Exception) -> str | None:
    if "backward through the graph a second time" in message:
        return (f"{message}\n  The fakes are not detached in the D step: loss_d.backward() went back into G and freed "
                "that part of the graph, so the G step could not backpropagate through it again. Give D "
                "fake.detach() in the D step.")
    return None


def _gan_step_once(fn: Callable, G: RecordingNet, D: RecordingNet, opt_g: StepSGD, opt_d: StepSGD, x: torch.Tensor, z: torch.Tensor,
                   lr_g: float, lr_d: float, update_g: bool, call_no: int, d_loss: Callable = _step_d_loss,
                   g_loss: Callable = _step_g_loss) -> None:
    """Run the student's step once, watching both optimizers and G's gradients, and compare with Algorithm 1."""
    G0, D0 = flat(G.parameters()), flat(D.parameters())
    entry_g, entry_d = grads(G), grads(D)
    out, events = watch_step(fn, G, D, opt_g, opt_d, "d", _explain_reuse, x, z, d_loss=d_loss, g_loss=g_loss, update_g=update_g)
    when = f" (call {call_no}, update_g={update_g})"
    expect_dict(out, ("loss_d", "loss_g", "real_logits", "fake_logits"), "gan_step", when)

    steps = [e for e in events if e[0] == "step"]
    n_d, n_g = sum(e[1] == "d" for e in steps), sum(e[1] == "g" for e in steps)
    if update_g and n_g == 0 and n_d >= 2:
        raise CheckFailed("One optimizer stepped both networks: opt_d.step() ran twice and opt_g.step() never. opt_d holds only "
                          "D's weights, so the G step did not change G (and moved D instead). Step G with opt_g." + when)
    if n_d == 0 and n_g >= 2:
        raise CheckFailed("One optimizer stepped both networks: opt_g.step() ran twice and opt_d.step() never. opt_g holds only "
                          "G's weights, so the D step did not change D (and moved G instead). Step D with opt_d." + when)
    if n_d == 0:
        raise CheckFailed("opt_d.step() was never called: the discriminator step must update D." + when)
    if n_d >= 2:
        raise CheckFailed(f"D was updated during the G step: opt_d.step() ran {n_d} times in one call. In the G step only opt_g "
                          "steps; D's weights stay as they are (freeze D, or just never call opt_d.step() there)." + when)
    if not update_g and n_g:
        raise CheckFailed("With update_g=False gan_step must do the D step only, but opt_g.step() was called." + when)
    if update_g and n_g == 0:
        raise CheckFailed("opt_g.step() was never called: with update_g=True the generator step must update G." + when)
    if update_g and n_g >= 2:
        raise CheckFailed(f"opt_g.step() ran {n_g} times in one call: G's weights changed in the D step. Only the G step "
                          "steps opt_g." + when)
    i_d = next(i for i, e in enumerate(events) if e[0] == "step" and e[1] == "d")
    if any(e[0] == "g_grad" for e in events[:i_d]) or (not update_g and any(e[0] == "g_grad" for e in events)):
        raise CheckFailed("The fakes are not detached in the D step: loss_d.backward() also sent gradients into G's weights, work "
                          "that is thrown away at best and, unless the G step clears G's gradients first, is added to G's own "
                          "gradient. Give D fake.detach() (or make the fakes under torch.no_grad())." + when)
    if not close(events[i_d][4], G0):
        raise CheckFailed("G's weights changed in the D step, before opt_d.step(): only the G step may change G." + when)

    # D's gradient when opt_d steps: of the discriminator loss on real x and the fakes G(z) of the noise it was given
    fake = twin(G, G0)(z).detach()
    same = lambda got, want: close(got, want, rtol=1e-4, atol=1e-6)  # noqa: E731
    ref_d = ref_grad(D, D0, lambda net: d_loss(net(x), net(fake)))
    got_d = events[i_d][2]
    if not same(got_d, ref_d):
        leftover = entry_d.abs().sum() > 0
        swapped = ref_grad(D, D0, lambda net: d_loss(net(fake), net(x)))
        found = named(got_d, [
            ("gan_step ignores the d_loss it is given: D's gradient is that of the standard GAN loss, not of the d_loss argument "
             "(here a least-squares loss). Compute the D loss as d_loss(real_logits, fake_logits): notebook 04 trains with "
             "other losses through it.", (lambda: ref_grad(D, D0, lambda net: losses.gan_d_loss(net(x), net(fake))))
             if d_loss is not _step_d_loss else None),
            ("The labels are swapped in the D step: D is trained to call real data fake (0) and fakes real (1). "
             "Real logits get target 1, fake logits target 0: d_loss(real_logits, fake_logits), in that order.", swapped),
            ("The labels are swapped in the D step: D is trained to call real data fake (0) and fakes real (1). "
             "Real logits get target 1, fake logits target 0: d_loss(real_logits, fake_logits), in that order.",
             swapped + entry_d if leftover else None),
            ("Gradients accumulate across calls: D's gradient at opt_d.step() is this step's plus the gradient left "
             "over from the previous call. Call opt_d.zero_grad() before loss_d.backward().", ref_d + entry_d if leftover else None),
        ], rtol=1e-4, atol=1e-6)
        raise CheckFailed((found or "D's gradient at opt_d.step() is not the gradient of d_loss(D(x_real), D(G(z).detach())) on the "
                           "batch and noise gan_step was given: the D step should use x_real and z, real logits first.") + when)
    D1 = D0 - lr_d * ref_d
    # G's gradient when opt_g steps: of g_loss through the updated D, on the noise of G's last call
    if update_g:
        i_g = next(i for i, e in enumerate(events) if e[0] == "step" and e[1] == "g")
        if i_g < i_d:
            raise CheckFailed("opt_g stepped before opt_d: do the D step first, then the G step." + when)
        if not close(events[i_g][3], D1, rtol=1e-5, atol=1e-6):
            raise CheckFailed("D's weights changed between its step and the G step: only opt_d.step() in the D step may change D." + when)
        if not G.inputs:
            raise CheckFailed("G was never called: the G step needs fakes G(z) with a graph back to G's weights." + when)
        z2, d_after = G.inputs[-1][1], twin(D, D1)
        ref_g = ref_grad(G, G0, lambda net: g_loss(d_after(net(z2))))
        got_g = events[i_g][2]
        if not same(got_g, ref_g):
            leftover = entry_g.abs().sum() > 0
            sat = lambda: ref_grad(G, G0, lambda net: losses.gan_g_loss_saturating(d_after(net(z2))))  # noqa: E731
            standard = g_loss is _step_g_loss
            found = named(got_g, [
                ("gan_step ignores the g_loss it is given: G's gradient is that of the standard non-saturating loss, not of the "
                 "g_loss argument (here the saturating loss). Compute the G loss as g_loss(D(G(z))): notebook 04's saturating "
                 "experiment trains through it.", None if standard else lambda: ref_grad(G, G0, lambda net: losses.gan_g_loss(d_after(net(z2))))),
                ("This is the SATURATING generator loss E[log(1 - D(G(z)))]: its gradient vanishes when D rejects the "
                 "fakes. G minimises the non-saturating -E[log D(G(z))] = g_loss(D(G(z))).", sat if standard else None),
                ("This is the SATURATING generator loss E[log(1 - D(G(z)))]: its gradient vanishes when D rejects the "
                 "fakes. G minimises the non-saturating -E[log D(G(z))] = g_loss(D(G(z))).",
                 (lambda: sat() + entry_g) if standard and leftover else None),
                ("G's gradient has the wrong sign: G minimises -E[log D(G(z))] (it wants D to call its fakes real).", -ref_g),
                ("Gradients accumulate across calls: G's gradient at opt_g.step() is this step's plus the gradient left "
                 "over from the previous call. Call opt_g.zero_grad() before loss_g.backward().", ref_g + entry_g if leftover else None),
            ], rtol=1e-4, atol=1e-6)
            raise CheckFailed((found or "G's gradient at opt_g.step() is not the gradient of g_loss(D(G(z))) through the updated D: "
                               "the G step should compute fakes from noise, score them with D after its step and backpropagate "
                               "g_loss.") + when)
        G1 = G0 - lr_g * ref_g
    else:
        G1 = G0
    if not close(flat(D.parameters()), D1, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After gan_step D's weights are not those of one opt_d step on the D loss: something else changed D." + when)
    if not close(flat(G.parameters()), G1, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After gan_step G's weights are not those of one opt_g step on the G loss: something else changed G." + when)

    # the values it returns
    with torch.no_grad():
        D_before = twin(D, D0)
        real_l, fake_l = D_before(x).double(), D_before(fake).double()
    for key, want in (("real_logits", real_l), ("fake_logits", fake_l)):
        got = expect_tensor(out[key], tuple(want.shape), f"out['{key}']")
        if not close(got.detach().double(), want, rtol=1e-4, atol=1e-5):
            raise CheckFailed(f"out['{key}'] should be D's logits on the {key.split('_')[0]} batch in the D step." + when)
    loss_d = expect_tensor(out["loss_d"], (), "out['loss_d']")
    if not close(loss_d.detach().double(), d_loss(real_l, fake_l), rtol=1e-4, atol=1e-5):
        raise CheckFailed("out['loss_d'] should be the D step's loss d_loss(real_logits, fake_logits)." + when)
    if update_g:
        expect_tensor(out["loss_g"], (), "out['loss_g']")


@check
def check_gan_step(fn: Callable) -> None:
    """``gan_step(G, D, opt_g, opt_d, x_real, z, *, d_loss, g_loss, update_g)`` -> dict: one iteration of Algorithm 1.

    Tiny linear G and D with plain SGD optimizers of known learning rates: the check watches every optimizer
    step (which one, with which gradients) and G's gradients, and compares with the D step on real and
    detached fakes followed by the G step through the updated D, with the losses it passes (the last call
    passes a least-squares D loss and the saturating G loss: they must be the ones used).
    """
    g = torch.Generator().manual_seed(18)
    G, D = RecordingNet(2, (2,), 0, seed=1, scale=0.8), RecordingNet(2, (), 0, seed=2, scale=0.8)
    lr_g, lr_d = 0.3, 0.2
    opt_g, opt_d = StepSGD(G.parameters(), lr=lr_g), StepSGD(D.parameters(), lr=lr_d)
    B = 6
    for call_no, update_g in enumerate([True, True, False, True, True], start=1):
        x = torch.randn(B, 2, generator=g) + torch.tensor([1.5, -1.0])
        z = torch.randn(B, 2, generator=g)
        other = {"d_loss": _step_d_loss_ls, "g_loss": _step_g_loss_saturating} if call_no == 5 else {}
        _gan_step_once(fn, G, D, opt_g, opt_d, x, z, lr_g, lr_d, update_g, call_no, **other)
    passed("gan_step", "5 calls on tiny linear networks with SGD")


def _conv_size(fn: Callable, args: tuple, name: str) -> int:
    """Call ``fn(*args)`` and insist on a plain int (sizes index tensors: 3.5 or 3.0 will not do)."""
    out = call(fn, *args)
    if isinstance(out, torch.Tensor) and out.numel() == 1:
        out = out.item()
    if isinstance(out, bool) or not isinstance(out, (int, float)):
        raise CheckFailed(f"{name}{args} should return an int, got {describe(out)}.")
    if isinstance(out, float):
        raise CheckFailed(f"{name}{args} returned the float {out}: a size is a whole number of pixels. Use // (floor division), "
                          "not /, so that the result is an int.")
    return out


def _conv_verdict(fn: Callable, name: str, cases: list[tuple[int, ...]], truth: Callable[..., int], params: str,
                  mistakes: list[tuple[str, Callable[..., int]]], layer: str) -> None:
    """Compare ``fn`` with PyTorch's ``truth`` on every case; name the mistake whose formula explains all its answers."""
    got = [_conv_size(fn, case, name) for case in cases]
    want = [truth(*case) for case in cases]
    if got == want:
        return
    found = named(got, [(m, [f(*case) for case in cases]) for m, f in mistakes], rtol=0, atol=0)
    i = next(j for j in range(len(cases)) if got[j] != want[j])
    shown = ", ".join(f"{k}={v}" for k, v in zip(params.split(), cases[i]))
    raise CheckFailed((found + " " if found else "") + f"{name}({shown}) gave {got[i]}; {layer} gives {want[i]}.")


@check
def check_conv_out(fn: Callable) -> None:
    """``conv_out(size, kernel, stride=1, padding=0) -> int``: the output side of ``nn.Conv2d`` on a ``size x size`` input."""
    cases = [(28, 4, 2, 1), (7, 4, 2, 1), (3, 4, 2, 1), (10, 3, 2, 0), (5, 3, 1, 0), (6, 5, 1, 2), (9, 3, 3, 1)]
    truth = lambda n, k, s, p: torch.nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, n, n)).shape[-1]  # PyTorch's own answer
    mistakes = [
        ("It rounds up: when the windows do not tile the padded input exactly, the last partial window is dropped, so "
         "the division rounds DOWN (floor, //).",
         lambda n, k, s, p: -(-(n + 2 * p - k) // s) + 1),
        ("The +1 is missing: (size + 2*padding - kernel) // stride counts the steps between window positions; the "
         "positions are one more (the first window counts too).",
         lambda n, k, s, p: (n + 2 * p - k) // s),
        ("The padding is counted once: it is added on BOTH sides of the input, 2 * padding.",
         lambda n, k, s, p: (n + p - k) // s + 1),
        ("The stride is ignored: a stride-s window lands on every s-th position, so divide by the stride.",
         lambda n, k, s, p: n + 2 * p - k + 1),
        ("This is the transposed convolution's formula (it grows the image); an ordinary convolution shrinks it.",
         lambda n, k, s, p: (n - 1) * s - 2 * p + k),
    ]
    _conv_verdict(fn, "conv_out", cases, truth, "size kernel stride padding", mistakes, "nn.Conv2d")
    passed("conv_out", f"{len(cases)} cases against nn.Conv2d")


@check
def check_conv_transpose_out(fn: Callable) -> None:
    """``conv_transpose_out(size, kernel, stride=1, padding=0, output_padding=0) -> int``: the output side of ``nn.ConvTranspose2d``."""
    cases = [(7, 4, 2, 1, 0), (14, 4, 2, 1, 0), (3, 3, 2, 1, 1), (4, 5, 1, 2, 0), (5, 3, 2, 0, 1), (2, 4, 3, 0, 2)]
    truth = lambda n, k, s, p, op: torch.nn.ConvTranspose2d(1, 1, k, s, p, output_padding=op)(torch.zeros(1, 1, n, n)).shape[-1]
    right = lambda n, k, s, p, op: (n - 1) * s - 2 * p + k + op
    mistakes = [
        ("output_padding is ignored: it adds that many pixels on one side of the output (it tells apart the input sizes "
         "that an ordinary convolution would map to the same output).",
         lambda n, k, s, p, op: right(n, k, s, p, op) - op),
        ("output_padding is subtracted: it ADDS pixels to the output.",
         lambda n, k, s, p, op: right(n, k, s, p, op) - 2 * op),
        ("This is the ordinary convolution's formula: a transposed convolution inverts it. Solve "
         "out = (n + 2*padding - kernel) // stride + 1 for n, the size that a convolution would shrink to `size`.",
         lambda n, k, s, p, op: (n + 2 * p - k) // s + 1),
        ("The inversion went wrong: the signs of padding and kernel are swapped. Padding is removed from the grown "
         "image, and each input pixel spreads over a whole kernel.",
         lambda n, k, s, p, op: (n - 1) * s + 2 * p - k + op),
        ("The -1 is missing: n input pixels are n - 1 strides apart, and the first kernel adds its full width, so "
         "(size - 1) * stride, not size * stride.",
         lambda n, k, s, p, op: n * s - 2 * p + k + op),
        ("The padding is removed once: a transposed convolution trims it from BOTH sides, 2 * padding.",
         lambda n, k, s, p, op: (n - 1) * s - p + k + op),
    ]
    _conv_verdict(fn, "conv_transpose_out", cases, truth, "size kernel stride padding output_padding", mistakes, "nn.ConvTranspose2d")
    passed("conv_transpose_out", f"{len(cases)} cases against nn.ConvTranspose2d")
