"""Notebook 05, the conditional GAN the student builds: the ``ConditionalGenerator`` and ``ConditionalDiscriminator`` classes.

Each class check runs in three stages of partial credit, as notebook 04's (``nb04_model``): ``interface`` (shapes,
ranges, attributes, the label and the noise both used, the sizes honoured, a parameter count near the statement's),
``gradients`` (every weight learns, and in eval mode no image's output depends on the rest of its batch), then the
whole check: it *learns* a task that needs the label, for a fixed budget, next to the statement's network trained the
same way. The generator fits fixed images from fixed (code, label) pairs, where the label says in which quarter of the
image the made-up digit (a filled disc) lies; the discriminator tells matching (image, label) pairs from mismatched ones.

``check_cyclegan_g_step``: the CycleGAN generators' step, watched on recording stand-in networks: one optimizer step
whose gradient is the one of the full loss (least-squares adversarial terms, cycle and identity terms), the
discriminators unchanged, the losses returned; each known mistake (a term missing, a direction or target wrong, stale
gradients, the weights ignored) is named by the gradient it would have applied.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses
from .core import CheckFailed, call_explained, carries_gradient, check, close, describe, expect_tensor, named, passed, stage
from .fakes import RecordingNet, StepSGD, build_module, dead_parameters, expect_dict, flat, size_near, twin

STEPS, LR, CLASSES = 150, 2e-3, 4


class _ReferenceGenerator(nn.Module):
    """The statement's generator: ``[z, one-hot(y)] -> hidden -> 2 hidden -> 784``, batch norm, leaky ReLU, sigmoid."""

    def __init__(self, latent_dim: int = 64, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = nn.Sequential(nn.Linear(latent_dim + num_classes, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, 784))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(torch.cat([z, F.one_hot(y, self.num_classes).to(z.dtype)], 1))).view(-1, 1, 28, 28)


class _ReferenceDiscriminator(nn.Module):
    """The statement's projection discriminator: features ``h(x)``, logit ``w . h(x) + e_y . h(x)``."""

    def __init__(self, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2))
        self.head, self.embed = nn.Linear(hidden, 1), nn.Embedding(num_classes, hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(2 * x - 1)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


def labelled_discs(n: int, seed: int, num_classes: int = CLASSES) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n, 1, 28, 28)`` filled discs and their labels ``(n,)``: label k puts the disc in quarter k of the image
    (random centre within it, random radius), so an image can be told to match its label or not."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    corner = torch.tensor([[4.0, 4.0], [4.0, 17.0], [17.0, 4.0], [17.0, 17.0]])[y % 4]
    centre = (corner + 7 * torch.rand(n, 2, generator=g))[:, :, None, None]
    radius = 2.5 + 2.5 * torch.rand(n, 1, 1, generator=g)
    rows, cols = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    inside = (rows - centre[:, 0]) ** 2 + (cols - centre[:, 1]) ** 2 < radius**2
    return inside.float()[:, None], y


def _size_check(net: nn.Module, reference: nn.Module, what: str) -> None:
    size_near(net, reference, what, "check the layer sizes against the statement and the constructor's hidden.")


def _fit_generator(G: nn.Module, z: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> float:
    """Fit G(z_i, y_i) to x_i by squared error for the check's budget; returns the final error per image (pixels summed)."""
    opt = torch.optim.Adam(G.parameters(), lr=LR)
    for _ in range(STEPS):
        loss = (G(z, y) - x).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    G.eval()
    with torch.no_grad():
        return (G(z, y) - x).pow(2).flatten(1).sum(1).mean().item()


@check
def check_ConditionalGenerator(cls: Callable) -> None:
    """``ConditionalGenerator(latent_dim, num_classes, hidden)``: ``G(z: (B, latent_dim), y: (B,) int64) -> (B, 1, 28, 28)`` in [0, 1],
    attributes ``latent_dim`` and ``num_classes``."""
    torch.manual_seed(0)
    G = build_module(cls, "ConditionalGenerator", ("latent_dim", "num_classes"), latent_dim=5, num_classes=4, hidden=16)
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(6, 5, generator=g), torch.tensor([0, 1, 2, 3, 1, 2])
    out = call_explained(G, lambda message, err: (f"G(z, y) crashed for z of shape (6, 5) and labels y of shape (6,) from ConditionalGenerator("
                                                  f"latent_dim=5, num_classes=4, hidden=16): {err}. Is the first layer sized with the "
                                                  "constructor's latent_dim and num_classes, not fixed numbers?"), z, y)
    if isinstance(out, torch.Tensor) and tuple(out.shape) in ((6, 784), (6, 28, 28)):
        raise CheckFailed(f"G(z, y) has shape {tuple(out.shape)}: return images, (B, 1, 28, 28).")
    expect_tensor(out, (6, 1, 28, 28), "ConditionalGenerator(latent_dim=5, num_classes=4, hidden=16)(z, y)")
    if out.min() < 0 or out.max() > 1:
        raise CheckFailed(f"G(z, y) ranges from {out.min().item():.2f} to {out.max().item():.2f}: the images are in [0, 1], like the data. "
                          "What must the generator's last step do to its outputs?")
    G.eval()
    with torch.no_grad():
        other_y, other_z = (y + 1) % 4, torch.randn(6, 5, generator=g)
        base, relabelled, renoised = G(z, y), G(z, other_y), G(other_z, y)
    G.train()
    if torch.allclose(base, relabelled, atol=1e-6):
        raise CheckFailed("G(z, y) does not change when y changes: the label is ignored, so the generator cannot draw the digit asked for. "
                          "Feed the label into the network.")
    if torch.allclose(base, renoised, atol=1e-6):
        raise CheckFailed("G(z, y) does not change when z changes: the noise is ignored, so each label gets one image only. "
                          "Feed z into the network.")
    _size_check(build_module(cls, "ConditionalGenerator", (), latent_dim=64, num_classes=10, hidden=256), _ReferenceGenerator(64, 10, 256),
                "ConditionalGenerator(latent_dim=64, num_classes=10, hidden=256)")
    stage("interface")
    carries_gradient(out, "G(z, y) does not track gradients (a .detach(), torch.no_grad() or .item() inside forward?): nothing could train.")
    (out - 0.5).pow(2).sum().backward()
    if dead_parameters(G):
        raise CheckFailed(f"These parameters of the generator get no gradient: {dead_parameters(G)[:4]}. Every layer you create must be used in forward.")
    G.eval()
    with torch.no_grad():
        alone, together = G(z[:3], y[:3]), G(z, y)[:3]
    if not torch.allclose(alone, together, atol=1e-5):
        raise CheckFailed("In eval mode G(z[:3], y[:3]) differs from G(z, y)[:3]: an image depends on the others in its batch. After "
                          "training, batch norm must use its running statistics (model.eval()); is something else normalising over the batch?")
    stage("gradients")
    codes = torch.randn(16, 8, generator=torch.Generator().manual_seed(7))
    z_fit, (x_fit, y_fit) = codes.repeat_interleave(CLASSES, 0), labelled_discs(16 * CLASSES, 8)  # each code with every label
    torch.manual_seed(0)
    want = _fit_generator(_ReferenceGenerator(8, CLASSES, 32), z_fit, y_fit, x_fit)
    torch.manual_seed(0)
    got = _fit_generator(build_module(cls, "ConditionalGenerator", (), latent_dim=8, num_classes=CLASSES, hidden=32), z_fit, y_fit, x_fit)
    start = (0.5 - x_fit).pow(2).flatten(1).sum(1).mean().item()
    if not got <= max(1.5 * want, want + 5):
        raise CheckFailed(f"Fitted to 64 fixed images from 16 fixed codes, each with every one of {CLASSES} labels (the label says where the "
                          f"disc is), for {STEPS} Adam steps, your generator's error per image ends at {got:.1f} (a grey image scores "
                          f"{start:.1f}); the statement's network reaches {want:.1f}. Does the label reach the layers with enough weight, "
                          "and do your layers and activations match the statement?")
    passed("ConditionalGenerator", f"fits 64 (code, label) pairs to an error of {got:.1f} per image in {STEPS} steps; the statement's network {want:.1f}")


def _mismatch(y: torch.Tensor, seed: int) -> torch.Tensor:
    shift = torch.randint(1, CLASSES, y.shape, generator=torch.Generator().manual_seed(seed))
    return (y + shift) % CLASSES


def _pairs(D: nn.Module, x: torch.Tensor, y: torch.Tensor, x_test: torch.Tensor, y_test: torch.Tensor) -> float:
    """Train D to tell matching (x, y) pairs (1) from mismatched ones (0) for half the budget; returns its held-out accuracy."""
    opt = torch.optim.Adam(D.parameters(), lr=LR)
    xs, ys = torch.cat([x, x]), torch.cat([y, _mismatch(y, 1)])
    targets = torch.cat([torch.ones(len(x)), torch.zeros(len(x))])
    for _ in range(STEPS // 2):
        loss = F.binary_cross_entropy_with_logits(D(xs, ys), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    with torch.no_grad():
        return torch.cat([D(x_test, y_test) > 0, D(x_test, _mismatch(y_test, 2)) <= 0]).float().mean().item()


@check
def check_ConditionalDiscriminator(cls: Callable) -> None:
    """``ConditionalDiscriminator(num_classes, hidden)``: ``D(x: (B, 1, 28, 28) in [0, 1], y: (B,) int64) -> logits (B,)``, attribute ``num_classes``."""
    torch.manual_seed(0)
    D = build_module(cls, "ConditionalDiscriminator", ("num_classes",), num_classes=4, hidden=16)
    x, y = labelled_discs(6, 9)
    out = call_explained(D, lambda message, err: (f"D(x, y) crashed for x of shape (6, 1, 28, 28) and labels y of shape (6,) from "
                                                  f"ConditionalDiscriminator(num_classes=4, hidden=16): {err}. Are the layers sized with the "
                                                  "constructor's num_classes and hidden?"), x, y)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (6, 1):
        raise CheckFailed("D(x, y) has shape (6, 1): return one logit per image, shape (B,) (squeeze the last dimension).")
    expect_tensor(out, (6,), "ConditionalDiscriminator(num_classes=4, hidden=16)(x, y)")
    if out.min() >= 0 and out.max() <= 1 and bool((out.detach() != out.detach()[0]).any()):
        raise CheckFailed(f"D(x, y) lies in [{out.min().item():.2f}, {out.max().item():.2f}]: those look like probabilities. Return logits: "
                          "the losses turn them into probabilities themselves, stably.")
    D.eval()
    with torch.no_grad():
        base, relabelled = D(x, y), D(x, (y + 1) % 4)
    D.train()
    if torch.allclose(base, relabelled, atol=1e-6):
        raise CheckFailed("D(x, y) does not change when y changes: the label is ignored, so the discriminator cannot catch a good image of "
                          "the wrong digit. Bring the label into the score.")
    _size_check(build_module(cls, "ConditionalDiscriminator", (), num_classes=10, hidden=256), _ReferenceDiscriminator(10, 256),
                "ConditionalDiscriminator(num_classes=10, hidden=256)")
    stage("interface")
    carries_gradient(out, "D(x, y) does not track gradients (a .detach(), torch.no_grad() or .item() inside forward?): nothing could train.")
    out.pow(2).sum().backward()
    if dead_parameters(D):
        raise CheckFailed(f"These parameters of the discriminator get no gradient: {dead_parameters(D)[:4]}. Every layer you create must be used in forward.")
    D.eval()
    with torch.no_grad():
        alone, together = D(x[:3], y[:3]), D(x, y)[:3]
    if not torch.allclose(alone, together, atol=1e-4):
        raise CheckFailed("In eval mode D(x[:3], y[:3]) differs from D(x, y)[:3]: an image's logit depends on the others in its batch. Batch "
                          "norm must use its running statistics in eval mode; is something else normalising over the batch?")
    stage("gradients")
    (x_fit, y_fit), (x_test, y_test) = labelled_discs(64, 10), labelled_discs(64, 11)
    torch.manual_seed(0)
    want = _pairs(_ReferenceDiscriminator(CLASSES, 32), x_fit, y_fit, x_test, y_test)
    torch.manual_seed(0)
    got = _pairs(build_module(cls, "ConditionalDiscriminator", (), num_classes=CLASSES, hidden=32), x_fit, y_fit, x_test, y_test)
    if got < min(want, 0.95) - 0.1:
        raise CheckFailed(f"Trained for {STEPS // 2} Adam steps to tell matching (image, label) pairs from mismatched ones (the label says "
                          f"where the disc is), your discriminator is right on {got:.0%} of new pairs (ignoring the label scores 50%); the "
                          f"statement's network on {want:.0%}. Does the label reach the score strongly enough?")
    passed("ConditionalDiscriminator", f"tells matching from mismatched (image, label) pairs on {got:.0%} of new pairs after {STEPS // 2} steps; "
           f"the statement's network {want:.0%}")


def _cycle_terms(G_AB, G_BA, D_A, D_B, a, b, identity: bool = True, target: float = 1.0, swap_cycle: bool = False, swap_identity: bool = False,
                 squared: bool = False, detach: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(adversarial, cycle, identity) of the generators' loss, or of one of its known mistakes (identity 0 when not asked for)."""
    err = (lambda u, v: (u - v).pow(2).mean()) if squared else (lambda u, v: (u - v).abs().mean())
    fake_b, fake_a = G_AB(a), G_BA(b)
    if detach:
        fake_b, fake_a = fake_b.detach(), fake_a.detach()
    adv = losses.least_squares(D_B(fake_b), target) + losses.least_squares(D_A(fake_a), target)
    cyc = err(G_AB(G_BA(a)), a) + err(G_BA(G_AB(b)), b) if swap_cycle else err(G_BA(fake_b), a) + err(G_AB(fake_a), b)
    idt = torch.zeros(())
    if identity:
        idt = err(G_AB(a), a) + err(G_BA(b), b) if swap_identity else err(G_BA(a), a) + err(G_AB(b), b)
    return adv, cyc, idt


def _cycle_grad(nets: list, params: torch.Tensor, loss_of: Callable) -> torch.Tensor:
    """The gradient of ``loss_of(G_AB, G_BA, D_A, D_B)`` w.r.t. both generators' weights ``params`` (flat), on private copies."""
    G_AB, G_BA, D_A, D_B = nets
    n = sum(p.numel() for p in G_AB.parameters())
    G_AB, G_BA = twin(G_AB, params[:n]), twin(G_BA, params[n:])
    D_A, D_B = twin(D_A, flat(D_A.parameters())), twin(D_B, flat(D_B.parameters()))
    weights = list(G_AB.parameters()) + list(G_BA.parameters())
    return flat(torch.autograd.grad(loss_of(G_AB, G_BA, D_A, D_B), weights, allow_unused=True, materialize_grads=True))


def _cyclegan_once(fn: Callable, a: torch.Tensor, b: torch.Tensor, lam_cyc: float, lam_id: float, seed: int, when: str) -> None:
    dim_a, dim_b, lr = a[0].numel(), b[0].numel(), 0.1
    G_AB, G_BA = RecordingNet(dim_a, tuple(b.shape[1:]), 0, seed, 0.4), RecordingNet(dim_b, tuple(a.shape[1:]), 0, seed + 1, 0.4)
    D_A, D_B = RecordingNet(dim_a, (), 6, seed + 2, 0.8), RecordingNet(dim_b, (), 6, seed + 3, 0.8)
    nets = [G_AB, G_BA, D_A, D_B]
    g_params = list(G_AB.parameters()) + list(G_BA.parameters())
    opt_g = StepSGD(g_params, lr)
    stale = [torch.full_like(p, 0.5) for p in g_params]
    for p, old in zip(g_params, stale):
        p.grad = old.clone()  # left over from an earlier step: the student's step must clear it
    start_g, start_d = flat(g_params), flat(list(D_A.parameters()) + list(D_B.parameters()))
    applied: list[torch.Tensor] = []
    opt_g.on_step = lambda: applied.append(flat([p.grad if p.grad is not None else torch.zeros_like(p) for p in g_params]))
    try:
        out = call_explained(fn, lambda message, err: (f"cyclegan_g_step crashed{when}: {type(err).__name__}: {err}. Here A examples have "
                                                       f"{dim_a} numbers and B examples {dim_b}: G_AB and D_A take A examples, G_BA and D_B "
                                                       "take B examples. Did you swap a direction, or compute the identity term although "
                                                       "lam_id is 0 (the domains may then differ in shape)?"),
                             G_AB, G_BA, D_A, D_B, opt_g, a, b, lam_cyc=lam_cyc, lam_id=lam_id)
    finally:
        opt_g.on_step = None
    if not torch.equal(flat(list(D_A.parameters()) + list(D_B.parameters())), start_d):
        raise CheckFailed(f"The discriminators' weights changed{when}: this step trains the generators only (the discriminators have "
                          "their own step afterwards).")
    if len(applied) != 1:
        raise CheckFailed(f"opt_g.step() was called {len(applied)} times{when}: take exactly one step for both generators together.")
    full = lambda *nets_, **kw: (lambda t: t[0] + lam_cyc * t[1] + lam_id * t[2])(_cycle_terms(*nets_, a, b, identity=bool(lam_id), **kw))
    want = _cycle_grad(nets, start_g, lambda *m: full(*m))
    got = applied[0]
    if not close(got, want, rtol=1e-3, atol=1e-5):
        only = lambda use_adv, use_cyc, use_id: (lambda *m: (lambda t: use_adv * t[0] + use_cyc * lam_cyc * t[1] + use_id * lam_id * t[2])(_cycle_terms(*m, a, b, identity=bool(lam_id))))
        grad_of = lambda loss_of: (lambda: _cycle_grad(nets, start_g, loss_of))
        stale_flat = flat(stale)
        found = named(got, [
            (f"The gradient still holds the gradients of an earlier step{when}: clear the generators' gradients before backward.", want + stale_flat),
            (f"The adversarial terms are missing{when} (or the translations were detached before D_B and D_A saw them): G_AB must "
             "make D_B score its outputs as real, and G_BA D_A.", grad_of(only(0, 1, 1))),
            (f"The translations G_AB(a) and G_BA(b) were detached{when}: the adversarial terms (and the cycles through them) must "
             "send their gradients back into the generators.", grad_of(lambda *m: full(*m, detach=True))),
            (f"The cycle terms are missing{when}: add lam_cyc times the two round-trip errors.", grad_of(only(1, 0, 1))),
            (f"The identity terms are missing{when}: add lam_id times how far G_BA moves an A example and G_AB a B example.",
             grad_of(only(1, 1, 0)) if lam_id else None),
            (f"The adversarial target is wrong{when}: the generators want the discriminators to call their translations real, "
             "so the least-squares target is 1, not 0.", grad_of(lambda *m: full(*m, target=0.0))),
            (f"A cycle runs the wrong way{when}: an A example goes through G_AB first and comes back through G_BA, and a B example "
             "the other way round.", grad_of(lambda *m: full(*m, swap_cycle=True))),
            (f"The identity terms use the wrong generators{when}: the identity term asks the generator *into* a domain to leave an "
             "example already of that domain unchanged (G_BA on A examples, G_AB on B examples).",
             grad_of(lambda *m: full(*m, swap_identity=True)) if lam_id else None),
            (f"The round-trip and identity errors are squared{when}: CycleGAN uses the L1 error, the mean absolute difference.",
             grad_of(lambda *m: full(*m, squared=True))),
            (f"The weights lam_cyc and lam_id are not applied as given{when}: the loss is adversarial + lam_cyc * cycle + lam_id * identity.",
             grad_of(lambda *m: (lambda t: t[0] + 10.0 * t[1] + 5.0 * t[2])(_cycle_terms(*m, a, b, identity=bool(lam_id))))),
        ])
        raise CheckFailed(found or f"The gradient applied to the generators{when} is not the one of adversarial + lam_cyc * cycle + lam_id * "
                                   "identity (least-squares adversarial terms with target 1, L1 cycle and identity terms, means over everything).")
    expect_dict(out, ("loss_g", "adv", "cycle", "identity"), "cyclegan_g_step", when)
    G_AB0, G_BA0 = twin(G_AB, start_g[:sum(p.numel() for p in G_AB.parameters())]), twin(G_BA, start_g[sum(p.numel() for p in G_AB.parameters()):])
    with torch.no_grad():
        adv, cyc, idt = _cycle_terms(G_AB0, G_BA0, twin(D_A, flat(D_A.parameters())), twin(D_B, flat(D_B.parameters())), a, b, identity=bool(lam_id))
    for key, value in (("loss_g", adv + lam_cyc * cyc + lam_id * idt), ("adv", adv), ("cycle", cyc), ("identity", idt if lam_id else None)):
        if value is None:
            continue
        given = out[key]
        if not isinstance(given, (torch.Tensor, float)):
            raise CheckFailed(f"out[{key!r}] is {describe(given)}{when}: return the loss values as tensors or floats.")
        if not close(torch.as_tensor(given).detach(), value, rtol=1e-3, atol=1e-5):
            raise CheckFailed(f"out[{key!r}] is {float(torch.as_tensor(given).detach()):.4f}{when}, expected {value.item():.4f}: its value before the step ('loss_g': "
                              "the whole weighted loss; 'adv', 'cycle', 'identity': each the sum of its two terms, unweighted).")


@check
def check_cyclegan_g_step(fn: Callable) -> None:
    """``cyclegan_g_step(G_AB, G_BA, D_A, D_B, opt_g, a, b, lam_cyc=10.0, lam_id=5.0) -> {"loss_g", "adv", "cycle", "identity"}``:
    one step of ``opt_g`` on adversarial + lam_cyc * cycle + lam_id * identity; the discriminators unchanged."""
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(5, 1, 2, 2, generator=g), torch.rand(5, 1, 2, 2, generator=g)
    _cyclegan_once(fn, a, b, 3.0, 2.0, 20, " (lam_cyc=3, lam_id=2)")
    a, b = torch.rand(5, 1, 2, 2, generator=g), torch.rand(5, 3, 2, 2, generator=g)
    _cyclegan_once(fn, a, b, 4.0, 0.0, 30, " (lam_cyc=4, lam_id=0, A with 1 channel and B with 3)")
    passed("cyclegan_g_step", "one step of both generators on the adversarial, cycle and identity terms; the discriminators unchanged")
