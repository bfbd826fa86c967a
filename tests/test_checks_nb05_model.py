"""Notebook 05's model exercises (`labsupport.checks.nb05_model`): the `ConditionalGenerator` and `ConditionalDiscriminator`.

Every correct way passes (three each, written differently: one-hot concatenation, an embedding, a multiplicative
label; a projection, a concatenated label, a convolutional body), each catalogued mistake fails with its own message,
and partial credit stops at the stage that fails.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labsupport import checks
from labsupport.checks import CheckFailed


def generator_class(sigmoid=True, flat=False, tiny=False, batch_mix=False, unused=False, no_attributes=False, no_label=False,
                    no_noise=False, fixed_latent=False, embed=False, act=lambda: nn.LeakyReLU(0.2)):
    """The statement's generator, with one switch per known mistake (and harmless ones: an embedding, the activation)."""

    class ConditionalGenerator(nn.Module):
        def __init__(self, latent_dim=64, num_classes=10, hidden=256):
            super().__init__()
            if not no_attributes:
                self.latent_dim, self.num_classes = latent_dim, num_classes
            self.k, self.d = num_classes, latent_dim
            h = 2 if tiny else hidden
            self.embed = nn.Embedding(num_classes, num_classes) if embed else None
            self.net = nn.Sequential(nn.Linear((16 if fixed_latent else latent_dim) + num_classes, h), act(),
                                     nn.Linear(h, 2 * h), nn.BatchNorm1d(2 * h), act(), nn.Linear(2 * h, 784))
            if unused:
                self.extra = nn.Linear(2, 2)

        def forward(self, z, y):
            label = self.embed(y) if self.embed is not None else F.one_hot(y, self.k).float()
            if no_label:
                label = torch.zeros_like(label)
            if no_noise:
                z = torch.zeros_like(z)
            h = self.net[:2](torch.cat([z, label], 1))
            if batch_mix:
                h = h - h.mean(0, keepdim=True)
            out = self.net[2:](h)
            out = torch.sigmoid(out) if sigmoid else out
            return out if flat else out.view(-1, 1, 28, 28)

    return ConditionalGenerator


class FiLMGenerator(nn.Module):
    """Another design: the label scales and shifts the hidden features (an embedding per class), ReLU, layer norm."""

    def __init__(self, latent_dim=64, num_classes=10, hidden=256):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.inp = nn.Linear(latent_dim, 2 * hidden)
        self.film = nn.Embedding(num_classes, 4 * hidden)
        self.out = nn.Sequential(nn.LayerNorm(2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, 784), nn.Sigmoid())

    def forward(self, z, y):
        scale, shift = self.film(y).chunk(2, 1)
        return self.out(self.inp(z) * (1 + scale) + shift).view(-1, 1, 28, 28)


@pytest.mark.parametrize("cls", [generator_class(), generator_class(embed=True, act=nn.ReLU), FiLMGenerator], ids=["statement", "embedding-relu", "film"])
def test_every_correct_generator_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_ConditionalGenerator(cls)
    assert "\u2713 ConditionalGenerator" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sigmoid=False), "the images are in \\[0, 1\\]"),
    (dict(flat=True), "return images, \\(B, 1, 28, 28\\)"),
    (dict(no_label=True), "the label is ignored"),
    (dict(no_noise=True), "the noise is ignored"),
    (dict(fixed_latent=True), "sized with the constructor's latent_dim and num_classes"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(unused=True), "get no gradient"),
    (dict(batch_mix=True), "depends on the others in its batch"),
    (dict(no_attributes=True), "keep the constructor's latent_dim as an attribute"),
])
def test_each_generator_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message):
        checks.check_ConditionalGenerator(generator_class(**mistake))


def discriminator_class(sigmoid=False, keep_dim=False, tiny=False, batch_mix=False, unused=False, no_attributes=False, no_label=False,
                        weak_label=False):
    """The statement's projection discriminator, with one switch per known mistake."""

    class ConditionalDiscriminator(nn.Module):
        def __init__(self, num_classes=10, hidden=256):
            super().__init__()
            if not no_attributes:
                self.num_classes = num_classes
            h = 1 if tiny else hidden
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 2 * h), nn.LeakyReLU(0.2), nn.Linear(2 * h, h), nn.LeakyReLU(0.2))
            self.head, self.embed = nn.Linear(h, 1), nn.Embedding(num_classes, h)
            if unused:
                self.extra = nn.Linear(2, 2)

        def forward(self, x, y):
            h = self.body(2 * x - 1)
            if batch_mix:
                h = h - h.mean(0, keepdim=True)
            if no_label:
                out = self.head(h) + 0 * self.embed(y).sum(1, keepdim=True)
            elif weak_label:  # the label enters, but only as a shift of the logit: it cannot say whether the image fits
                out = self.head(h) + self.embed(y)[:, :1]
            else:
                out = self.head(h) + (self.embed(y) * h).sum(1, keepdim=True)
            out = out if keep_dim else out.squeeze(1)
            return torch.sigmoid(out) if sigmoid else out

    return ConditionalDiscriminator


class ConcatDiscriminator(nn.Module):
    """Another design: the one-hot label concatenated with the flattened image, an MLP, ReLU."""

    def __init__(self, num_classes=10, hidden=256):
        super().__init__()
        self.num_classes = num_classes
        self.net = nn.Sequential(nn.Linear(784 + num_classes, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x, y):
        return self.net(torch.cat([x.flatten(1), F.one_hot(y, self.num_classes).float()], 1)).squeeze(1)


class ConvProjectionDiscriminator(nn.Module):
    """Another design: a strided convolutional body, then a projection of the label on its features."""

    def __init__(self, num_classes=10, hidden=256):
        super().__init__()
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(32, 64, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(),
                                  nn.Linear(64 * 49, hidden), nn.LeakyReLU(0.2))
        self.head, self.embed = nn.Linear(hidden, 1), nn.Embedding(num_classes, hidden)

    def forward(self, x, y):
        h = self.body(2 * x - 1)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


@pytest.mark.parametrize("cls", [discriminator_class(), ConcatDiscriminator, ConvProjectionDiscriminator], ids=["projection", "concat", "conv-projection"])
def test_every_correct_discriminator_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_ConditionalDiscriminator(cls)
    assert "\u2713 ConditionalDiscriminator" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sigmoid=True), "look like probabilities"),
    (dict(keep_dim=True), "shape \\(B,\\) \\(squeeze"),
    (dict(no_label=True), "the label is ignored"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(unused=True), "get no gradient"),
    (dict(batch_mix=True), "depends on the others in its batch"),
    (dict(no_attributes=True), "keep the constructor's num_classes as an attribute"),
    (dict(weak_label=True), "matching \\(image, label\\) pairs from mismatched"),
])
def test_each_discriminator_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message):
        checks.check_ConditionalDiscriminator(discriminator_class(**mistake))


def test_partial_credit_stops_at_the_failing_stage():
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_ConditionalGenerator(generator_class(batch_mix=True))
    assert checks.PASSED == ["interface"]
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_ConditionalDiscriminator(discriminator_class(weak_label=True))
    assert checks.PASSED == ["interface", "gradients"]
    checks.PASSED.clear()


# --- cyclegan_g_step -------------------------------------------------------------------------------

def cyclegan_step(clear=True, adv=True, detach=False, cycle=True, identity=True, target=1.0, swap_cycle=False, swap_identity=False,
                  squared=False, fixed_weights=False, step_d=False, steps=1, keys=("loss_g", "adv", "cycle", "identity"), always_identity=False,
                  freeze=False):
    """The solution's step, with one switch per known mistake (and harmless ones: D frozen, set_to_none=False)."""

    def cyclegan_g_step(G_AB, G_BA, D_A, D_B, opt_g, a, b, lam_cyc=10.0, lam_id=5.0):
        if fixed_weights:
            lam_cyc, lam_id = 10.0, 5.0
        err = (lambda u, v: (u - v).pow(2).mean()) if squared else F.l1_loss
        if freeze:
            D_A.requires_grad_(False), D_B.requires_grad_(False)
        fake_b, fake_a = G_AB(a), G_BA(b)
        if detach:
            fake_b, fake_a = fake_b.detach(), fake_a.detach()
        loss_adv = ((D_B(fake_b) - target) ** 2).mean() + ((D_A(fake_a) - target) ** 2).mean()
        loss_cyc = err(G_AB(G_BA(a)), a) + err(G_BA(G_AB(b)), b) if swap_cycle else err(G_BA(fake_b), a) + err(G_AB(fake_a), b)
        if lam_id or always_identity:
            loss_id = err(G_AB(a), a) + err(G_BA(b), b) if swap_identity else err(G_BA(a), a) + err(G_AB(b), b)
        else:
            loss_id = torch.zeros(())
        loss = adv * loss_adv + cycle * lam_cyc * loss_cyc + identity * lam_id * loss_id
        if clear:
            opt_g.zero_grad(set_to_none=not freeze)
        loss.backward()
        for _ in range(steps):
            opt_g.step()
        if step_d:
            with torch.no_grad():
                for p in D_A.parameters():
                    p.mul_(0.9)
        if freeze:
            D_A.requires_grad_(True), D_B.requires_grad_(True)
        values = {"loss_g": loss, "adv": loss_adv, "cycle": loss_cyc, "identity": loss_id}
        return {k: values.get(k, loss) for k in keys}

    return cyclegan_g_step


@pytest.mark.parametrize("fn", [cyclegan_step(), cyclegan_step(freeze=True)], ids=["plain", "frozen-D"])
def test_every_correct_cyclegan_step_passes(fn, capsys):
    checks.check_cyclegan_g_step(fn)
    assert "\u2713 cyclegan_g_step" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(clear=False), "earlier step"),
    (dict(adv=False), "adversarial terms are missing"),
    (dict(detach=True), "were detached"),
    (dict(cycle=False), "cycle terms are missing"),
    (dict(identity=False), "identity terms are missing"),
    (dict(target=0.0), "target is wrong"),
    (dict(swap_cycle=True), "cycle runs the wrong way"),
    (dict(swap_identity=True), "identity terms use the wrong generators"),
    (dict(squared=True), "L1 error"),
    (dict(fixed_weights=True), "not applied as given"),
    (dict(step_d=True), "discriminators' weights changed"),
    (dict(steps=2), "called 2 times"),
    (dict(keys=("loss", "adv", "cycle")), "lacks the key"),
    (dict(keys=("loss_g", "cycle", "adv", "identity_")), "lacks the key"),
    (dict(always_identity=True), "although lam_id is 0"),
])
def test_each_cyclegan_step_mistake_is_named(mistake, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_cyclegan_g_step(cyclegan_step(**mistake))


def test_cyclegan_step_returns_the_values_asked_for():
    def swapped(*args, **kwargs):
        out = cyclegan_step()(*args, **kwargs)
        return {**out, "adv": out["cycle"], "cycle": out["adv"]}

    with pytest.raises(CheckFailed, match="out\\['adv'\\]"):
        checks.check_cyclegan_g_step(swapped)
