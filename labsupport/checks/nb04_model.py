"""Notebook 04, the DCGAN the student builds: the ``Generator`` and ``Discriminator`` classes.

Each class check runs in three stages of partial credit: ``interface`` (shapes, ranges, attributes, the latent size
and width honoured, a parameter count near the statement's), ``gradients`` (every weight learns, and in eval mode no
image's output depends on the rest of its batch), then the whole check: it *learns* on a fixed task for a fixed
budget, next to the statement's network trained the same way. A GAN's own losses say little about progress, so the
tasks are plain supervised ones that the class must be able to learn: the generator fits 64 fixed images from 64
fixed codes, the discriminator tells made-up "digits" (filled discs) from blurred noise.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .core import CheckFailed, call_explained, carries_gradient, check, expect_tensor, passed, stage
from .fakes import build_module, dead_parameters, discs, size_near

STEPS, LR = 120, 2e-3


class _ReferenceGenerator(nn.Module):
    """The statement's generator: z -> 2w x 7 x 7 -> w x 14 x 14 -> 1 x 28 x 28, batch norm and ReLU, sigmoid at the end."""

    def __init__(self, latent_dim: int = 16, width: int = 32):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.net = nn.Sequential(nn.Linear(latent_dim, 2 * width * 49), nn.Unflatten(1, (2 * width, 7, 7)), nn.BatchNorm2d(2 * width), nn.ReLU(),
                                 nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(), nn.ConvTranspose2d(width, 1, 4, 2, 1))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))


class _ReferenceDiscriminator(nn.Module):
    """The statement's discriminator: four strided 4x4 convolutions 28 -> 14 -> 7 -> 3 -> 1, leaky ReLU, a linear logit."""

    def __init__(self, width: int = 16, depth: int = 4):
        super().__init__()
        self.width = width
        layers, c, side = [nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2)], width, 14
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
            c, side = 2 * c, (side - 2) // 2 + 1
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).squeeze(1)


def _module(cls: Callable, what: str, **kwargs) -> nn.Module:
    """The DCGAN classes keep every constructor argument as an attribute."""
    return build_module(cls, what, tuple(kwargs), **kwargs)


def _size_check(net: nn.Module, reference: nn.Module, what: str) -> None:
    size_near(net, reference, what, "check the layer sizes and channel counts against the statement.")


def _learns_and_keeps_images_apart(net: nn.Module, out: torch.Tensor, inputs: torch.Tensor, call_text: str, who: str, what: str) -> None:
    """The gradients stage of both classes: ``out = net(inputs)`` carries a gradient to every weight, and in eval mode the
    first three inputs give the same outputs alone as in the whole batch."""
    carries_gradient(out, f"{call_text} does not track gradients (a .detach(), torch.no_grad() or .item() inside forward?): nothing could train.")
    out.pow(2).sum().backward()
    if dead_parameters(net):
        raise CheckFailed(f"These parameters of {who} get no gradient: {dead_parameters(net)[:4]}. Every layer you create must be used in forward.")
    net.eval()
    with torch.no_grad():
        alone, together = net(inputs[:3]), net(inputs)[:3]
    if not torch.allclose(alone, together, atol=1e-4):
        name, arg = call_text[:-1].split("(")
        raise CheckFailed(f"In eval mode {name}({arg}[:3]) differs from {call_text}[:3]: {what} depends on the others in its "
                          "batch. Batch norm must use its running statistics in eval mode; is something else normalising over the batch?")


def _fit_generator(G: nn.Module, z: torch.Tensor, x: torch.Tensor) -> float:
    """Fit G(z_i) to x_i by squared error for the check's budget; returns the final error per image (pixels summed)."""
    opt = torch.optim.Adam(G.parameters(), lr=LR)
    for _ in range(STEPS):
        loss = (G(z) - x).pow(2).flatten(1).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    G.eval()
    with torch.no_grad():
        return (G(z) - x).pow(2).flatten(1).sum(1).mean().item()


@check
def check_Generator(cls: Callable) -> None:
    """``Generator(latent_dim, width)``: ``G(z: (B, latent_dim)) -> (B, 1, 28, 28)`` in [0, 1], attributes ``latent_dim`` and ``width``."""
    torch.manual_seed(0)
    G = _module(cls, "Generator", latent_dim=5, width=8)
    z = torch.randn(6, 5)
    out = call_explained(G, lambda message, err: (f"G(z) crashed for z of shape (6, 5) from Generator(latent_dim=5, width=8): {err}. Is the first "
                                                  "layer sized with the constructor's latent_dim and width, not fixed numbers?"), z)
    if isinstance(out, torch.Tensor) and tuple(out.shape) in ((6, 784), (6, 28, 28)):
        raise CheckFailed(f"G(z) has shape {tuple(out.shape)}: return images, (B, 1, 28, 28).")
    if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] != 28:
        raise CheckFailed(f"G(z) has shape {tuple(out.shape)}: the transposed convolutions must take 7 -> 14 -> 28. Your conv_transpose_out "
                          "tells which kernel, stride and padding double a side.")
    expect_tensor(out, (6, 1, 28, 28), "Generator(latent_dim=5, width=8)(z) for z of shape (6, 5)")
    if out.min() < 0 or out.max() > 1:
        raise CheckFailed(f"G(z) ranges from {out.min().item():.2f} to {out.max().item():.2f}: the images are in [0, 1], like the data. "
                          "End the generator with a sigmoid.")
    _size_check(_module(cls, "Generator", latent_dim=16, width=32), _ReferenceGenerator(16, 32), "Generator(latent_dim=16, width=32)")
    stage("interface")
    _learns_and_keeps_images_apart(G, out, z, "G(z)", "the generator", "an image")
    stage("gradients")
    g = torch.Generator().manual_seed(7)
    z_fit, x_fit = torch.randn(64, 8, generator=g), discs(64, 8)
    torch.manual_seed(0)
    want = _fit_generator(_ReferenceGenerator(8, 16), z_fit, x_fit)
    torch.manual_seed(0)
    got = _fit_generator(_module(cls, "Generator", latent_dim=8, width=16), z_fit, x_fit)
    start = (0.5 - x_fit).pow(2).flatten(1).sum(1).mean().item()
    if not got <= max(1.5 * want, want + 5):
        raise CheckFailed(f"Fitted to 64 fixed images from 64 fixed codes for {STEPS} Adam steps, your generator's error per image ends at "
                          f"{got:.1f} (a grey image scores {start:.1f}); the statement's network reaches {want:.1f}. Compare your layers, "
                          "batch norms and activations with the statement.")
    passed("Generator", f"fits 64 images to an error of {got:.1f} per image in {STEPS} steps; the statement's network {want:.1f}")


def _classify(D: nn.Module, real: torch.Tensor, fake: torch.Tensor, real_test: torch.Tensor, fake_test: torch.Tensor) -> float:
    """Train D to tell real (1) from fake (0) for the check's budget; returns its held-out accuracy."""
    opt = torch.optim.Adam(D.parameters(), lr=LR)
    x, y = torch.cat([real, fake]), torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    for _ in range(STEPS // 2):
        loss = F.binary_cross_entropy_with_logits(D(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    D.eval()
    with torch.no_grad():
        right = torch.cat([D(real_test) > 0, D(fake_test) <= 0]).float().mean().item()
    return right


def _fakes(n: int, seed: int) -> torch.Tensor:
    """Blurred noise with the discs' brightness: what a GAN's first samples look like."""
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d((torch.rand(n, 1, 28, 28, generator=g) < 0.15).float(), 3, stride=1, padding=1)


@check
def check_Discriminator(cls: Callable) -> None:
    """``Discriminator(width, depth=4)``: ``D(x: (B, 1, 28, 28) in [0, 1]) -> logits (B,)``, attribute ``width``."""
    torch.manual_seed(0)
    D = _module(cls, "Discriminator", width=8)
    x = discs(6, 9)
    out = call_explained(D, lambda message, err: (f"D(x) crashed for x of shape (6, 1, 28, 28) from Discriminator(width=8): {err}. The Linear "
                                                  "layer's input size is channels x side x side after the last convolution: compute the side "
                                                  "with your conv_out, and the channels from width."), x)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (6, 1):
        raise CheckFailed("D(x) has shape (6, 1): return one logit per image, shape (B,) (squeeze the last dimension).")
    if isinstance(out, torch.Tensor) and out.dim() > 1 and out.shape[0] == 6:
        raise CheckFailed(f"D(x) has shape {tuple(out.shape)}: the features must end in one logit per image. The Linear layer's input size is "
                          "channels x side x side after the last convolution; your conv_out gives the side.")
    expect_tensor(out, (6,), "Discriminator(width=8)(x) for x of shape (6, 1, 28, 28)")
    if out.min() >= 0 and out.max() <= 1 and bool((out.detach() != out.detach()[0]).any()):
        raise CheckFailed(f"D(x) lies in [{out.min().item():.2f}, {out.max().item():.2f}]: those look like probabilities. Return logits "
                          "(no sigmoid): the losses apply it themselves, stably.")
    _size_check(_module(cls, "Discriminator", width=16), _ReferenceDiscriminator(16), "Discriminator(width=16)")
    stage("interface")
    _learns_and_keeps_images_apart(D, out, x, "D(x)", "the discriminator", "an image's logit")
    stage("gradients")
    real, fake, real_test, fake_test = discs(64, 10), _fakes(64, 11), discs(64, 12), _fakes(64, 13)
    torch.manual_seed(0)
    want = _classify(_ReferenceDiscriminator(8), real, fake, real_test, fake_test)
    torch.manual_seed(0)
    got = _classify(_module(cls, "Discriminator", width=8), real, fake, real_test, fake_test)
    if got < min(want, 0.95) - 0.1:
        raise CheckFailed(f"Trained for {STEPS // 2} Adam steps to tell made-up digits from blurred noise, your discriminator is right on "
                          f"{got:.0%} of new examples; the statement's network on {want:.0%}. Compare your layers with the statement.")
    passed("Discriminator", f"tells made-up digits from noise on {got:.0%} of new examples after {STEPS // 2} steps; the statement's network {want:.0%}")
