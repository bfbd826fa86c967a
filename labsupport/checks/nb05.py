"""Notebook 05, GAN variants: critic_loss, gradient_penalty, wgan_gp_step (the conditional GAN's classes and the CycleGAN step: ``nb05_model``)."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .. import losses
from .core import CheckFailed, call, call_explained, carries_gradient, check, close, expect_tensor, named, passed, ratio_hint
from .fakes import RecordingNet, StepSGD, expect_dict, flat, grads, ref_grad, twin, watch_step


@check
def check_critic_loss(fn: Callable) -> None:
    """``critic_loss(real_scores: (B,), fake_scores: (M,)) -> scalar`` = E[critic(fake)] - E[critic(real)]."""
    g = torch.Generator().manual_seed(5)
    real = (torch.randn(6, generator=g) + 2.0).requires_grad_()
    fake = (torch.randn(6, generator=g) - 1.0).requires_grad_()
    out = expect_tensor(call(fn, real, fake), (), "critic_loss(real_scores, fake_scores)")
    want = losses.critic_loss(real, fake)
    carries_gradient(out, "The loss has no gradient: keep it a torch expression of the scores (no .item(), .detach() or numpy).")
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    vanilla = "This is the vanilla GAN's cross-entropy loss. A critic's scores are not probabilities: no sigmoid, no log, just the two means."
    found = named(out, [
        ("The sign is flipped: the critic *minimises* E[critic(fake)] - E[critic(real)], which pushes real scores up and fake scores down.", -want),
        ("You summed the scores: take the mean over each batch, so the loss does not grow with the batch size.", fake.sum() - real.sum()),
        (vanilla, bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))),
        (vanilla, -(torch.nn.functional.logsigmoid(real).mean() + torch.nn.functional.logsigmoid(-fake).mean())),
    ], rtol=1e-4, atol=1e-5)
    if found:
        raise CheckFailed(found)
    if not close(out, want):
        raise CheckFailed(f"critic_loss gave {out.item():.4f}, expected E[fake] - E[real] = {want.item():.4f}.{ratio_hint(out, want)}")
    grad_r, grad_f = torch.autograd.grad(out, (real, fake))
    if not (close(grad_r, torch.full((6,), -1 / 6)) and close(grad_f, torch.full((6,), 1 / 6))):
        raise CheckFailed("The value is right but the gradient is not: each real score should get gradient -1/B and each fake score +1/B.")
    # A batch of fakes of another size: average each batch on its own (fake - real elementwise breaks here).
    r2, f2 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.5, -0.5, 2.0, 4.0, 1.0])
    out2 = call_explained(fn, lambda message, err: f"With 3 real and 5 fake scores `critic_loss` crashed ({type(err).__name__}: {err}). "
                          "Average each batch on its own: fake_scores.mean() - real_scores.mean().", r2, f2)
    if not close(expect_tensor(out2, (), "critic_loss(3 real, 5 fake scores)"), f2.mean() - r2.mean()):
        raise CheckFailed(f"With 3 real and 5 fake scores you gave {float(out2):.4f}, expected {float(f2.mean() - r2.mean()):.4f}: average each batch on its own.")
    passed("critic_loss")


class _RecordingCritic(torch.nn.Module):
    """A critic that remembers what it was called on; ``linear=True`` makes grad_x critic = w exactly."""

    def __init__(self, dim: int, linear: bool, out_2d: bool = False, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        if linear:
            w = torch.randn(dim, generator=g)
            self.w = torch.nn.Parameter(3.0 * w / w.norm())  # |grad| = 3 everywhere: the penalty is (3 - 1)^2 = 4
            self.net = None
        else:
            self.net = torch.nn.Sequential(torch.nn.Linear(dim, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.out_2d, self.inputs = out_2d, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        flat = x.flatten(1)
        s = flat @ self.w if self.net is None else self.net(flat).squeeze(1)
        return s.unsqueeze(1) if self.out_2d else s


def _line_problem(x_hat: torch.Tensor, real: torch.Tensor, fake: torch.Tensor) -> str:
    """Why ``x_hat`` is not eps * real + (1 - eps) * fake with one eps ~ U[0, 1] per example ("" if it is).

    Shared by the gradient penalty's check and the WGAN-GP step's check."""
    d, r = (x_hat - fake).flatten(1), (real - fake).flatten(1)
    eps = (d * r).sum(1) / (r * r).sum(1)  # the eps that best explains each x_hat
    if not close(d, eps[:, None] * r, atol=1e-4):
        return ("The penalty's points x_hat are not on the line from each fake to its real example: the interpolation weight eps "
                f"must be one number per example, shape {(len(real),) + (1,) * (real.dim() - 1)} here "
                "(e.g. torch.rand(B, *[1] * (x.dim() - 1))), not one per coordinate or pixel.")
    if (eps < -1e-4).any() or (eps > 1 + 1e-4).any():
        return (f"The interpolation weight eps went outside [0, 1] (min {eps.min().item():.2f}, max {eps.max().item():.2f}): "
                "draw it uniformly (torch.rand), not from a normal (torch.randn).")
    if eps.max() - eps.min() < 1e-6:
        return ("Every example used the same eps: the whole batch got one random number. Draw one eps per example, "
                "e.g. torch.rand(B, 1) for (B, D) data.")
    return ""


def _interpolation_problems(critic: _RecordingCritic, real: torch.Tensor, fake: torch.Tensor) -> str:
    """Why the points the critic saw are not x_hat = eps*real + (1-eps)*fake with one eps ~ U[0,1] per example ("" if fine)."""
    seen = [x for x in critic.inputs if x.shape == real.shape]
    if not seen:
        shapes = ", ".join(str(tuple(x.shape)) for x in critic.inputs) or "nothing"
        return f"The critic was never called on a batch shaped like the data {tuple(real.shape)} (it saw {shapes})."
    x_hat = seen[-1]
    if close(x_hat, real, atol=1e-6):
        return ("The penalty was taken at the real data only. It must be taken at random points between real and fake "
                "samples: x_hat = eps * real + (1 - eps) * fake.")
    if close(x_hat, fake, atol=1e-6):
        return "The penalty was taken at the fake samples only: interpolate, x_hat = eps * real + (1 - eps) * fake."
    return _line_problem(x_hat, real, fake)


def _penalty_crash(err: Exception, what: str, shape: tuple[int, ...]) -> str:
    hint = ""
    text = str(err)
    if "does not require grad" in text or "One of the differentiated Tensors" in text:
        hint = " Make x_hat require gradients before calling the critic: x_hat.requires_grad_(True)."
    elif "must match the size" in text or "broadcast" in text or "size of tensor" in text:
        hint = (f" For images eps must broadcast over every pixel: shape {(shape[0],) + (1,) * (len(shape) - 1)}, "
                "e.g. torch.rand(B, *[1] * (real.dim() - 1)).")
    elif "grad can be implicitly created only for scalar" in text:
        hint = " The critic returns one score per example: pass grad_outputs=torch.ones_like(scores) to torch.autograd.grad."
    return f"On {what}, `gradient_penalty` crashed with {type(err).__name__}: {err}.{hint}"


@check
def check_gradient_penalty(fn: Callable) -> None:
    """``gradient_penalty(critic, real, fake) -> scalar``: mean over the batch of (||grad critic(x_hat)||_2 - 1)^2."""
    g = torch.Generator().manual_seed(7)
    B = 8
    # 1. A linear critic has the same gradient w everywhere (|w| = 3): the penalty is exactly (3 - 1)^2 = 4.
    for shape, out_2d, what in [((B, 2), False, "2D points (B, 2)"), ((6, 1, 28, 28), True, "images (B, 1, 28, 28) and a critic returning (B, 1)")]:
        critic = _RecordingCritic(math.prod(shape[1:]), linear=True, out_2d=out_2d)
        real, fake = torch.rand(shape, generator=g), torch.rand(shape, generator=g)
        out = call_explained(fn, lambda message, err: _penalty_crash(err, what, shape), critic, real, fake)
        out = expect_tensor(out, (), f"gradient_penalty on {what}")
        carries_gradient(out, "The penalty is not differentiable with respect to the critic's parameters, so adding it to the critic's loss "
                         "changes nothing. Pass create_graph=True to torch.autograd.grad (and do not .detach() the gradient).")
        n = shape[0]
        if not close(out, 4.0, rtol=1e-4):
            found = named(out, [
                ("You took the norm of the whole batch's gradient at once. Take one norm per example: grad.flatten(1).norm(dim=1).",
                 (math.sqrt(n) * 3 - 1) ** 2),
                ("You penalised the squared norm (||g||^2 - 1)^2. Take the norm itself, ||g||_2 = sqrt(sum of squares), then (||g|| - 1)^2.",
                 (9 - 1) ** 2),
                ("You took the absolute value |‖g‖ - 1|: the penalty squares it, (‖g‖ - 1)^2.", 2.0),
                ("You summed over the batch: take the mean over examples, so the penalty does not grow with the batch size.", 4.0 * n),
                ("You penalised ||g||^2 without subtracting 1: the target norm is 1, (||g|| - 1)^2.", 9.0),
            ], rtol=1e-4, atol=1e-5)
            if found:
                raise CheckFailed(f"On {what}: {found}")
            if len(shape) > 2:
                raise CheckFailed(f"On {what} the penalty is {out.item():.4f}, expected exactly 4 (a critic whose gradient has norm 3 everywhere). "
                                  "Take each example's norm over all its pixels: grad.flatten(1).norm(dim=1), not grad.norm(dim=1).")
            raise CheckFailed(f"On {what} the penalty is {out.item():.4f}, expected exactly 4: this critic's gradient has norm 3 everywhere, "
                              f"so (3 - 1)^2 = 4.{ratio_hint(out, 4.0)}")
        (grad_w,) = torch.autograd.grad(out, critic.w)
        want = 2 * (3 - 1) * critic.w.detach() / 3  # d/dw (|w| - 1)^2
        if not close(grad_w, want, rtol=1e-3, atol=1e-4):
            raise CheckFailed("The value is right but its gradient with respect to the critic's weights is not: "
                              "use create_graph=True and keep the penalty a torch expression of that gradient.")
        # 2. Where was the penalty taken? A non-linear critic records its inputs.
        critic = _RecordingCritic(math.prod(shape[1:]), linear=False, out_2d=out_2d)
        torch.manual_seed(0)
        out = expect_tensor(call(fn, critic, real, fake), (), f"gradient_penalty on {what}")
        problem = _interpolation_problems(critic, real, fake)
        if problem:
            raise CheckFailed(f"On {what}: {problem}")
    passed("gradient_penalty", "value, gradient, and eps drawn once per example, on points and on images")


# What the critic step's penalty term is, for the named mistakes: f(per-example gradient norms) -> (B,)
_PENALTY_FORMS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "right": lambda n: (n - 1) ** 2,
    "The penalty is missing its square: (||grad|| - 1) on its own can go negative, so the critic lowers its loss by making "
    "its slope small everywhere. Square it: (||grad|| - 1)^2.": lambda n: n - 1,
    "The penalty takes |‖grad‖ - 1| instead of its square: square it, (‖grad‖ - 1)^2.": lambda n: (n - 1).abs(),
    "The penalty lacks its (norm - 1): ||grad||^2 pulls the critic's slope towards 0, but WGAN-GP wants slope 1 "
    "between real and fake points. Penalise (||grad|| - 1)^2.": lambda n: n ** 2,
    "The penalty lacks its (norm - 1): ||grad|| pulls the critic's slope towards 0, but WGAN-GP wants slope 1. "
    "Penalise (||grad|| - 1)^2.": lambda n: n,
    "The penalty uses the squared norm, (||grad||^2 - 1)^2: take the norm itself (the square root of the sum of squares), "
    "then (||grad|| - 1)^2.": lambda n: (n ** 2 - 1) ** 2,
}


def _critic_objective(c: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor, at: torch.Tensor | None, lam: float,
                      sign: float = 1.0, form: str = "right") -> torch.Tensor:
    """sign * (E[c(fake)] - E[c(real)]) + lam * mean_i form(||grad_x c(at_i)||_2); no penalty when ``at`` is None."""
    loss = sign * (c(fake).mean() - c(real).mean())
    if at is None:
        return loss
    pts = at.detach().clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(c(pts).sum(), pts, create_graph=True)
    return loss + lam * _PENALTY_FORMS[form](grad.flatten(1).norm(dim=1)).mean()


def _rows(x: torch.Tensor, b: int) -> list[torch.Tensor]:
    """``x`` cut into blocks of ``b`` rows (a critic called on torch.cat([real, fake]) scored both batches)."""
    return list(x.split(b)) if len(x) % b == 0 else [x]


def _find(blocks: list[torch.Tensor], want: torch.Tensor) -> bool:
    return any(bl.shape == want.shape and close(bl, want, atol=1e-6) for bl in blocks)


def _wgan_step_once(fn: Callable, G: RecordingNet, C: RecordingNet, opt_g: StepSGD, opt_c: StepSGD, x: torch.Tensor, z: torch.Tensor,
                    n_critic: int, lam: float, lr_g: float, lr_c: float, what: str) -> None:
    """Run the student's step once, watching both optimizers, both networks' inputs and G's gradients."""
    G0, C0, entry_c = flat(G.parameters()), flat(C.parameters()), grads(C)
    out, events = watch_step(fn, G, C, opt_g, opt_c, "c", None, x, z, n_critic=n_critic, lam=lam)
    when = f" ({what}, n_critic={n_critic})"
    expect_dict(out, ("loss_c", "loss_g"), "wgan_gp_step", when)

    # how many steps of which optimizer, in which order
    steps = [(i, e[1]) for i, e in enumerate(events) if e[0] == "step"]
    c_at, g_at = [i for i, w in steps if w == "c"], [i for i, w in steps if w == "g"]
    if not c_at:
        raise CheckFailed("opt_c.step() was never called: the critic steps must update the critic." + when)
    if not g_at:
        raise CheckFailed("opt_g.step() was never called: after the critic steps, one generator step must update G." + when)
    if len(g_at) > 1 or g_at[0] < c_at[-1]:
        raise CheckFailed(f"G was updated in a critic step: opt_g.step() ran {len(g_at)} time(s), the first before the critic's "
                          f"last step. The critic takes all its n_critic steps with G fixed; then G takes ONE step." + when)
    if c_at[-1] > g_at[0]:
        raise CheckFailed("The critic was updated during (or after) the G step: opt_c.step() ran after opt_g.step(). In the G step "
                          "only opt_g steps." + when)
    if len(c_at) == 1 and n_critic > 1:
        raise CheckFailed(f"One critic step instead of n_critic = {n_critic}: opt_c.step() ran once. WGAN-GP trains the critic "
                          f"n_critic times per generator step (each on its own real batch and fakes), so that its score "
                          f"difference is close to the Wasserstein distance when G learns from it." + when)
    if len(c_at) != n_critic:
        raise CheckFailed(f"opt_c.step() ran {len(c_at)} times, expected n_critic = {n_critic}: use the n_critic argument, "
                          "one critic step per block of B = len(x_real) // n_critic real examples." + when)
    first_g = next((i for i, e in enumerate(events) if e[0] == "g_grad"), None)
    if first_g is not None and first_g < c_at[-1]:
        raise CheckFailed("The fakes are not detached in the critic steps: the critic's loss sent gradients into G's weights. A "
                          "critic step must not touch G: score G(z).detach() (or make the fakes under torch.no_grad())." + when)
    for i in c_at:
        if not close(events[i][4], G0):
            raise CheckFailed("G's weights changed during the critic steps: only the G step may change G." + when)

    # each critic step: its gradient when opt_c steps, against the WGAN-GP loss on its own batch
    b = len(x) // n_critic
    xs, zs = x.split(b), z.split(b)
    g_ref = twin(G, G0)
    C_k, prev_grad, last_value = C0, entry_c, None
    for k, at in enumerate(c_at):
        start = c_at[k - 1] if k else -1
        seen = [bl for pos, inp in C.inputs if start < pos <= at for bl in _rows(inp, b)]
        real = xs[k]
        if not _find(seen, real):
            raise CheckFailed(f"Critic step {k + 1} did not score its real batch x_real[{k * b}:{(k + 1) * b}]: step k of n_critic "
                              f"uses the k-th block of B = len(x_real) // n_critic = {b} real examples (x_real.split(B) or "
                              "x_real.chunk(n_critic))." + when)
        with torch.no_grad():
            fakes = [g_ref(zz) for pos, inp in G.inputs if pos <= at for zz in _rows(inp, b)] + [g_ref(zs[k])]
        fake = next((f for f in fakes if _find(seen, f)), None)
        if fake is None:
            raise CheckFailed(f"Critic step {k + 1} did not score a batch of {b} fakes G(z): the critic's loss needs its scores "
                              "on real examples and on fakes." + when)
        hats = [bl for bl in seen if bl.shape == real.shape and not close(bl, real, atol=1e-6) and not close(bl, fake, atol=1e-6)]
        x_hat = hats[-1] if hats else None
        c_ref = twin(C, C_k)

        def grad_of(at: Any = "x_hat", lam_: float = lam, **kw) -> torch.Tensor:
            pts = x_hat if isinstance(at, str) else at
            return ref_grad(C, C_k, lambda net: _critic_objective(net, real, fake, pts, lam_, **kw))

        got = events[at][2]
        if x_hat is None:
            only = ("It must be taken at random points between real and fake examples, x_hat = eps * real + (1 - eps) * fake: the "
                    "optimal critic has slope 1 on the lines joining them.")
            none = ("The critic's gradient has no gradient-penalty part, and the critic never scored points between real "
                    "and fake examples: add lam * gradient_penalty at interpolates x_hat to the critic's loss.")
            found = named(got, [(f"The gradient penalty was taken at the real examples only. {only}", lambda: grad_of(at=real)),
                                (f"The gradient penalty was taken at the fakes only. {only}", lambda: grad_of(at=fake)),
                                (none, lambda: grad_of(at=None)), (none, lambda: grad_of(at=None) + prev_grad)], rtol=1e-4, atol=1e-6)
            raise CheckFailed((found + when) if found else f"In critic step {k + 1} the critic only scored the real batch and the fakes: the penalty needs its scores "
                              "at interpolates x_hat = eps * real + (1 - eps) * fake (and their gradient)." + when)
        problem = _line_problem(x_hat, real, fake)
        if problem:
            raise CheckFailed(problem + when)
        ref = grad_of()
        if not close(got, ref, rtol=1e-4, atol=1e-6):
            found = named(got, [
                ("The penalty does not train the critic: its gradient carries none of the penalty. The penalty is a "
                 "function of a gradient, so torch.autograd.grad must build a graph of it (create_graph=True), "
                 "and nothing in between may .detach() it or call .item().", lambda: grad_of(at=None)),
                ("The critic's Wasserstein term has the wrong sign: the critic MINIMISES E[f(fake)] - E[f(real)] "
                 "(+ lam * penalty), pushing real scores up and fake scores down.", lambda: grad_of(sign=-1.0)),
            ] + [(form, lambda form=form: grad_of(form=form)) for form in _PENALTY_FORMS if form != "right"] + [
                (f"The penalty is not weighted by lam = {lam}: the critic's loss is W-term + lam * penalty.", lambda: grad_of(lam_=1.0)),
                ("Gradients accumulate across critic steps: the critic's gradient at opt_c.step() is this step's plus "
                 "the one left over from before. Call opt_c.zero_grad() before each backward().", ref + prev_grad),
            ], rtol=1e-4, atol=1e-6)
            if found:
                raise CheckFailed(found + when)
            raise CheckFailed(f"In critic step {k + 1} the critic's gradient at opt_c.step() is not that of E[f(fake)] - E[f(real)] + "
                              "lam * mean((||grad_x f(x_hat)|| - 1)^2) on this step's batch, fakes and interpolates." + when)
        last_value = _critic_objective(c_ref, real, fake, x_hat, lam).detach().double()
        prev_grad, C_k = got, C_k - lr_c * ref
    if not close(events[g_at[0]][3], C_k, rtol=1e-5, atol=1e-6):
        raise CheckFailed("The critic's weights changed between its last step and the G step: only opt_c.step() may change them." + when)

    # the G step: -E[f(G(z))] through the critic after its n_critic steps, on the noise of G's last call
    z2 = [inp for pos, inp in G.inputs if pos <= g_at[0]][-1]
    c_final = twin(C, C_k)
    ref_g = ref_grad(G, G0, lambda net: -c_final(net(z2)).mean())
    got_g = events[g_at[0]][2]
    if not close(got_g, ref_g, rtol=1e-4, atol=1e-6):
        found = named(got_g, [
            ("G's gradient has the wrong sign: the generator minimises -E[f(G(z))] (it wants HIGH critic scores).", -ref_g),
            ("The G step uses the vanilla GAN's loss -log sigmoid(f(G(z))): a critic's scores are not logits. "
             "The WGAN generator minimises -E[f(G(z))].", lambda: ref_grad(G, G0, lambda net: torch.nn.functional.softplus(-c_final(net(z2))).mean())),
        ], rtol=1e-4, atol=1e-6)
        raise CheckFailed((found + when) if found else "G's gradient at opt_g.step() is not that of -E[f(G(z))] through the critic after its last step: zero "
                          "opt_g's gradients, score fresh fakes G(z) with the critic and backpropagate -mean(scores)." + when)
    if not close(flat(C.parameters()), C_k, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After wgan_gp_step the critic's weights are not those of its n_critic steps: something else changed them." + when)
    if not close(flat(G.parameters()), G0 - lr_g * ref_g, rtol=1e-5, atol=1e-6):
        raise CheckFailed("After wgan_gp_step G's weights are not those of one opt_g step: something else changed G." + when)

    loss_c = expect_tensor(out["loss_c"], (), "out['loss_c']")
    if not close(loss_c.detach().double(), last_value, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"out['loss_c'] should be the last critic step's loss, W-term + lam * penalty = {last_value.item():.4f}; "
                          f"got {loss_c.item():.4f}." + when)
    with torch.no_grad():
        want_g = (-c_final(g_ref(z2)).mean()).double()
    loss_g = expect_tensor(out["loss_g"], (), "out['loss_g']")
    if not close(loss_g.detach().double(), want_g, rtol=1e-4, atol=1e-5):
        raise CheckFailed(f"out['loss_g'] should be the G step's loss -E[f(G(z))] = {want_g.item():.4f}; got {loss_g.item():.4f}." + when)


@check
def check_wgan_gp_step(fn: Callable) -> None:
    """``wgan_gp_step(G, critic, opt_g, opt_c, x_real, z, *, n_critic, lam) -> {"loss_c", "loss_g"}``: n_critic WGAN-GP critic steps, then one G step.

    Tiny networks (a linear G, a tanh critic) and plain SGD optimizers of known learning rates, on 2D points and on
    3x3 images: the check watches every optimizer step and every network input, and compares each critic step's
    gradient with that of the WGAN-GP loss at the interpolates it used.
    """
    g = torch.Generator().manual_seed(19)
    cases = [("2D points", (2,), 3, 0.7, 2), ("3x3 images", (1, 3, 3), 2, 2.0, 1)]
    for what, shape, n_critic, lam, calls in cases:
        d = math.prod(shape)
        G, C = RecordingNet(2, shape, 0, seed=1, scale=0.9), RecordingNet(d, (1,), 3, seed=2, scale=0.9)
        lr_g, lr_c = 0.3, 0.2
        opt_g, opt_c = StepSGD(G.parameters(), lr=lr_g), StepSGD(C.parameters(), lr=lr_c)
        B = 4
        for call_no in range(1, calls + 1):
            x = torch.randn(n_critic * B, *shape, generator=g) + 1.0
            z = torch.randn(n_critic * B, 2, generator=g)
            _wgan_step_once(fn, G, C, opt_g, opt_c, x, z, n_critic, lam, lr_g, lr_c, f"{what}, call {call_no}")
    passed("wgan_gp_step", "n_critic critic steps with the penalty at interpolates, then one G step, on points and images")
