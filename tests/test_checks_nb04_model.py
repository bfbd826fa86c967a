"""Notebook 04's model exercises (`labsupport.checks.nb04_model`): the DCGAN `Generator` and `Discriminator`.

Every correct way passes (three each, one of another architecture), each catalogued mistake fails with its own
message, and partial credit stops at the stage that fails.
"""

import pytest
import torch
from torch import nn

from labsupport import checks
from labsupport.checks import CheckFailed


def generator_class(sigmoid=True, flat=False, tiny=False, no_bn=False, batch_mix=False, unused=False, no_attributes=False, side=7,
                    fixed_latent=False, act=nn.ReLU):
    """The statement's generator, with one switch per known mistake (and a harmless one: the activation)."""

    class Generator(nn.Module):
        def __init__(self, latent_dim=16, width=32):
            super().__init__()
            if not no_attributes:
                self.latent_dim, self.width = latent_dim, width
            w = 2 if tiny else width
            norm = (lambda c: nn.Identity()) if no_bn else nn.BatchNorm2d
            self.fc, self.side, self.w = nn.Linear(16 if fixed_latent else latent_dim, 2 * w * side * side), side, w
            self.body = nn.Sequential(norm(2 * w), act(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1), norm(w), act(), nn.ConvTranspose2d(w, 1, 4, 2, 1))
            if unused:
                self.extra = nn.Linear(2, 2)

        def forward(self, z):
            h = self.fc(z).view(-1, 2 * self.w, self.side, self.side)
            if batch_mix:
                h = h - h.mean(0, keepdim=True)
            out = self.body(h)
            out = out.flatten(1) if flat else out
            return torch.sigmoid(out) if sigmoid else out

    return Generator


class UpsampleGenerator(nn.Module):
    """Another architecture: nearest-neighbour upsampling and 3x3 convolutions, group norm, SiLU."""

    def __init__(self, latent_dim=16, width=32):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.net = nn.Sequential(nn.Linear(latent_dim, 2 * width * 49), nn.Unflatten(1, (2 * width, 7, 7)), nn.GroupNorm(4, 2 * width), nn.SiLU(),
                                 nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, 1, 1), nn.GroupNorm(4, width), nn.SiLU(),
                                 nn.Upsample(scale_factor=2), nn.Conv2d(width, 1, 3, 1, 1), nn.Sigmoid())

    def forward(self, z):
        return self.net(z)


@pytest.mark.parametrize("cls", [generator_class(), generator_class(act=lambda: nn.LeakyReLU(0.2)), UpsampleGenerator],
                         ids=["statement", "leaky", "upsample-groupnorm"])
def test_every_correct_generator_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_Generator(cls)
    assert "\u2713 Generator" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sigmoid=False), "End the generator with a sigmoid"),
    (dict(flat=True), "return images, \\(B, 1, 28, 28\\)"),
    (dict(side=6), "must take 7 -> 14 -> 28"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(unused=True), "get no gradient"),
    (dict(batch_mix=True), "depends on the others in its batch"),
    (dict(no_attributes=True), "keep the constructor's latent_dim as an attribute"),
    (dict(fixed_latent=True), "sized with the constructor's latent_dim"),
    (dict(no_bn=True), "Fitted to 64 fixed images"),
])
def test_each_generator_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message):
        checks.check_Generator(generator_class(**mistake))


def discriminator_class(depth=4, sigmoid=False, keep_dim=False, tiny=False, batch_mix=False, unused=False, no_attributes=False,
                        wrong_linear=False):
    """The statement's discriminator, with one switch per known mistake (and a harmless one: three convolutions)."""

    class Discriminator(nn.Module):
        def __init__(self, width=16, depth=depth):
            super().__init__()
            if not no_attributes:
                self.width = width
            w = 1 if tiny else width
            layers, c, side = [nn.Conv2d(1, w, 4, 2, 1), nn.LeakyReLU(0.2)], w, 14
            for _ in range(depth - 1):
                layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
                c, side = 2 * c, (side - 2) // 2 + 1
            self.features = nn.Sequential(*layers, nn.Flatten())
            self.logit = nn.Linear(c * side * side * (4 if wrong_linear else 1), 1)
            if unused:
                self.extra = nn.Linear(2, 2)

        def forward(self, x):
            h = self.features(2 * x - 1)
            if batch_mix:
                h = h - h.mean(0, keepdim=True)
            out = self.logit(h)
            out = out if keep_dim else out.squeeze(1)
            return torch.sigmoid(out) if sigmoid else out

    return Discriminator


class SpectralDiscriminator(nn.Module):
    """Another architecture: three 3x3 strided convolutions under spectral norm, no batch norm."""

    def __init__(self, width=16, depth=4):
        super().__init__()
        self.width = width
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(sn(nn.Conv2d(1, width, 3, 2, 1)), nn.LeakyReLU(0.2), sn(nn.Conv2d(width, 2 * width, 3, 2, 1)), nn.LeakyReLU(0.2),
                                 sn(nn.Conv2d(2 * width, 4 * width, 3, 2, 1)), nn.LeakyReLU(0.2), nn.Flatten(), sn(nn.Linear(4 * width * 16, 1)))

    def forward(self, x):
        return self.net(x).squeeze(1)


@pytest.mark.parametrize("cls", [discriminator_class(), discriminator_class(depth=3), SpectralDiscriminator], ids=["statement", "depth-3", "spectral"])
def test_every_correct_discriminator_passes(cls, capsys):
    torch.set_num_threads(1)
    checks.check_Discriminator(cls)
    assert "\u2713 Discriminator" in capsys.readouterr().out


@pytest.mark.parametrize("mistake, message", [
    (dict(sigmoid=True), "look like probabilities"),
    (dict(keep_dim=True), "shape \\(B,\\) \\(squeeze"),
    (dict(tiny=True), "far from the statement's network"),
    (dict(unused=True), "get no gradient"),
    (dict(batch_mix=True), "depends on the others in its batch"),
    (dict(no_attributes=True), "keep the constructor's width as an attribute"),
    (dict(wrong_linear=True), "compute the side with your conv_out"),
])
def test_each_discriminator_mistake_is_named(mistake, message):
    torch.set_num_threads(1)
    with pytest.raises(CheckFailed, match=message):
        checks.check_Discriminator(discriminator_class(**mistake))


def test_partial_credit_stops_at_the_failing_stage():
    checks.PASSED.clear()
    with pytest.raises(CheckFailed):
        checks.check_Generator(generator_class(batch_mix=True))
    assert checks.PASSED == ["interface"]
    checks.PASSED.clear()
