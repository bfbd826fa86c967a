"""Notebook 02's convolutional autoencoder: the ``ConvAutoencoder`` class the student builds.

The check runs in three stages of partial credit, as the other model checks do: ``interface`` (codes ``(B, k)`` for
the ``k`` it is given, images ``(B, 1, 28, 28)`` in [0, 1], ``forward = decode(encode(x))``, a parameter count near
the statement's network), ``gradients`` (every weight learns from the reconstruction error, and in eval mode no
image's reconstruction depends on the rest of its batch), then the whole check: trained with the course's loss for
a fixed budget on made-up images (soft edges at random angles and offsets), its held-out error falls as the statement's
network's does. Not the made-up digits of the other model checks (``fakes.discs``): on images that are mostly
background, a convolutional autoencoder without normalisation first learns to paint everything black and stays
there for more steps than a check can afford (measured); half-dark, half-bright images have no such plateau.
"""

from __future__ import annotations

from typing import Callable

import math

import torch
from torch import nn

from .core import CheckFailed, call_explained, carries_gradient, check, close, expect_tensor, passed, stage
from .fakes import build_module, dead_parameters, discs, size_near

STEPS, BATCH, LR = 60, 16, 5e-3  # about 0.3 s per network on one core


class _ReferenceConvAE(nn.Module):
    """The statement's network: 28 -> 14 -> 7 by two stride-2 3x3 convolutions (32, 64 channels), a linear code, and back."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 49, k))
        self.decoder = nn.Sequential(nn.Linear(k, 64 * 49), nn.ReLU(), nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 3, 2, 1, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 1, 3, 2, 1, 1), nn.Sigmoid())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _edges(n: int, seed: int) -> torch.Tensor:
    """``(n, 1, 28, 28)`` in (0, 1): a soft straight edge, dark on one side and bright on the other, at a random angle and
    offset (two factors of variation, easy for a convolutional network to code in a few numbers)."""
    g = torch.Generator().manual_seed(seed)
    angle, offset = 2 * math.pi * torch.rand(n, 1, 1, generator=g), 8 * torch.rand(n, 1, 1, generator=g) - 4
    rows, cols = torch.meshgrid(torch.arange(28.0) - 13.5, torch.arange(28.0) - 13.5, indexing="ij")
    return torch.sigmoid(1.5 * (torch.cos(angle) * rows + torch.sin(angle) * cols - offset))[:, None]


def _error(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The course's loss: squared error per image summed over its pixels, averaged over the batch."""
    return (x - model(x)).pow(2).flatten(1).sum(1).mean()


def _explain(where: str) -> Callable[[str, Exception], str | None]:
    """A crash inside the network, said in its terms: a size that does not match is a layer sized for another input."""
    def explain(message: str, err: Exception) -> str | None:
        if "shapes cannot be multiplied" in str(err) or "size mismatch" in str(err):
            return (f"{where} crashed: {err}. A linear layer got a different number of inputs than it was built for: print the "
                    "shape after each convolution (a 28-pixel side halved twice) and size the layer after the flattening with it.")
        if "channels" in str(err):
            return f"{where} crashed: {err}. Each layer's input channels must be the previous layer's output channels."
        return None
    return explain


def _build(cls: Callable, k: int) -> nn.Module:
    net = build_module(cls, "ConvAutoencoder", (), k=k)
    for name in ("encode", "decode"):
        if not callable(getattr(net, name, None)):
            raise CheckFailed(f"ConvAutoencoder has no method `{name}`: the notebook calls model.encode(x) and model.decode(z).")
    return net


def _decoded_images(out: object, what: str) -> torch.Tensor:
    """``out`` must be ``(6, 1, 28, 28)``; a flat, many-channel or mis-sized output is named with its likely cause."""
    if isinstance(out, torch.Tensor) and tuple(out.shape) == (6, 784):
        raise CheckFailed(f"{what} has shape (6, 784): return images, (B, 1, 28, 28).")
    if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == 6 and tuple(out.shape[2:]) != (28, 28):
        raise CheckFailed(f"{what} has shape {tuple(out.shape)}: expected (6, 1, 28, 28), got images of {out.shape[2]}x{out.shape[3]} pixels. "
                          "A transposed convolution's output side is (in - 1) * stride - 2 * padding + kernel + output_padding: work it "
                          "out for each upsampling layer (7 -> 14 -> 28).")
    if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[0] == 6 and out.shape[1] != 1:
        raise CheckFailed(f"{what} has shape {tuple(out.shape)}: {out.shape[1]} channels, but an MNIST image has one. The last layer must "
                          "output one channel.")
    return expect_tensor(out, (6, 1, 28, 28), what)


def _interface(cls: Callable) -> nn.Module:
    torch.manual_seed(0)
    net = _build(cls, 3)
    x = discs(6, 30)
    z = call_explained(net.encode, _explain("ConvAutoencoder(3).encode(x) for x of shape (6, 1, 28, 28)"), x)
    if isinstance(z, torch.Tensor) and z.dim() == 2 and z.shape[0] == 6 and z.shape[1] != 3:
        raise CheckFailed(f"ConvAutoencoder(3).encode gives codes of shape {tuple(z.shape)}: the code size must be the k the "
                          "constructor got (here 3), not a fixed number.")
    expect_tensor(z, (6, 3), "ConvAutoencoder(3).encode(x) for x of shape (6, 1, 28, 28)")
    if tuple(call_explained(_build(cls, 7).encode, _explain("ConvAutoencoder(7).encode(x)"), x).shape) != (6, 7):
        raise CheckFailed("ConvAutoencoder(7).encode does not give codes of size 7: size the code layer with the constructor's k.")
    x_dec = _decoded_images(call_explained(net.decode, _explain("decode(z) for z of shape (6, 3)"), z), "decode(z) for z of shape (6, 3)")
    far = call_explained(net.decode, _explain("decode(z)"), 4 * torch.randn(6, 3, generator=torch.Generator().manual_seed(31)))
    for images in (x_dec, _decoded_images(far, "decode(z) for z of shape (6, 3)")):
        if images.min() < 0 or images.max() > 1:
            raise CheckFailed(f"decode(z) ranges from {images.min().item():.2f} to {images.max().item():.2f}: a reconstruction is an image "
                              "in [0, 1], compared pixel by pixel with the input. End the decoder with a sigmoid.")
    x_hat = _decoded_images(call_explained(net, _explain("ConvAutoencoder(3)(x)"), x), "ConvAutoencoder(3)(x) for x of shape (6, 1, 28, 28)")
    if not close(x_hat.detach(), x_dec.detach(), rtol=1e-4, atol=1e-5):
        raise CheckFailed("forward(x) is not decode(encode(x)): the notebook encodes and decodes with encode and decode, and trains "
                          "forward, so the three must agree.")
    size_near(_build(cls, 30), _ReferenceConvAE(30), "ConvAutoencoder(30)", "the budget is the statement's network's, within a factor "
              "8: downsample before the linear code layer (a 28x28 map of many channels makes it huge), and keep more than a few channels.")
    return net


def _gradients(net: nn.Module) -> None:
    x = discs(8, 32)
    loss = _error(net, x)
    carries_gradient(loss, "The reconstruction does not track gradients (a .detach(), torch.no_grad() or .item() inside encode or "
                           "decode?): nothing could train.")
    loss.backward()
    if dead_parameters(net):
        raise CheckFailed(f"These parameters get no gradient from the reconstruction error: {dead_parameters(net)[:4]}. Every layer you "
                          "create must be used in encode or decode.")
    net.eval()
    with torch.no_grad():
        alone, together = net(x[:3]), net(x)[:3]
        codes_alone, codes_together = net.encode(x[:3]), net.encode(x)[:3]
    net.train()
    if not (torch.allclose(alone, together, atol=1e-4, rtol=1e-3) and torch.allclose(codes_alone, codes_together, atol=1e-4, rtol=1e-3)):
        raise CheckFailed("In eval mode, model(x[:3]) differs from model(x)[:3]: an image's reconstruction depends on the other images "
                          "in its batch. Batch norm must use its running statistics in eval mode; is something else (a mean over the "
                          "batch, track_running_stats=False) normalising over the batch?")


def _train(net: nn.Module, x: torch.Tensor, x_test: torch.Tensor) -> tuple[float, float]:
    """Adam on the course's loss for the check's fixed budget (seeded batches); held-out error per image before and after."""
    def score() -> float:
        net.eval()
        with torch.no_grad():
            value = _error(net, x_test).item()
        net.train()
        return value

    before = score()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    g = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        loss = _error(net, x[torch.randint(len(x), (BATCH,), generator=g)])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return before, score()


@check
def check_ConvAutoencoder(cls: Callable) -> None:
    """``ConvAutoencoder(k)``: an ``nn.Module`` with ``encode(x: (B, 1, 28, 28)) -> (B, k)``, ``decode(z) -> (B, 1, 28, 28)`` in
    [0, 1] and ``forward(x) = decode(encode(x))``, near the statement's size; trained briefly, it learns as the statement's network does."""
    net = _interface(cls)
    stage("interface")
    _gradients(net)
    stage("gradients")
    x, x_test = _edges(512, 33), _edges(64, 34)
    torch.manual_seed(0)
    ref_before, ref_after = _train(_ReferenceConvAE(8), x, x_test)
    torch.manual_seed(0)
    student = _build(cls, 8)
    before, after = _train(student, x, x_test)
    tolerance = max(ref_after, 15.0)  # measured: four sound designs end within 6 of it; global pooling before the code 34 above, a ReLU before the sigmoid 85
    if not after <= ref_after + tolerance:
        with torch.no_grad():
            darkest = student.eval()(x_test).min().item()
        floor = (f" Its reconstructions never go below {darkest:.2f}, though the images' dark side is near 0: an activation before the "
                 "final sigmoid that is never negative (a ReLU?) keeps the sigmoid above 0.5.") if darkest >= 0.5 else ""
        raise CheckFailed(f"Trained for {STEPS} Adam steps (lr {LR:g}, batches of {BATCH}) on made-up images (soft edges), your ConvAutoencoder(8) takes the "
                          f"held-out error per image from {before:.1f} to {after:.1f}; the statement's network goes from {ref_before:.1f} to "
                          f"{ref_after:.1f} in the same steps, and yours must end within {tolerance:.1f} of it.{floor} Compare your layers "
                          "and activations with the statement.")
    passed("ConvAutoencoder", f"trained {STEPS} steps on made-up images: error per image {before:.1f} -> {after:.1f}, the statement's "
           f"network {ref_after:.1f}")
