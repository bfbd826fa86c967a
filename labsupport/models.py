"""Models shared by the notebooks, small enough to read in the margin.

Contracts every notebook, metric, widget and checkpoint relies on:

* images are ``(B, 1, 28, 28)`` floats in ``[0, 1]``, in and out;
* a VAE has ``latent_dim``, ``encode(x) -> (mu, logvar)`` each ``(B, latent_dim)`` and
  ``decode(z) -> logits (B, 1, 28, 28)`` of a Bernoulli over pixels (``sigmoid`` gives the mean image);
* a generator has ``latent_dim`` and maps ``z: (B, latent_dim)`` (and labels ``y: (B,)`` when
  conditional) to images in ``[0, 1]``; a discriminator or critic maps images to ``(B,)`` logits/scores.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .losses import gaussian_nll, kl_normal, marginal_over_labels, reparameterize


# --- The evaluation classifier (notebook 01 trains it; metrics judge generated digits with it) -----


class DigitClassifier(nn.Module):
    """CNN for 28x28 digits: three conv blocks -> 128 features -> 10 logits (about 130k parameters)."""

    def __init__(self):
        super().__init__()
        block = lambda i, o: nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(block(1, 32), block(32, 64), block(64, 64), nn.Flatten(), nn.Dropout(0.3),
                                  nn.Linear(64 * 3 * 3, 128), nn.ReLU())
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1, 28, 28) in [0, 1]`` -> penultimate features ``(B, 128)`` (used for Fréchet distances)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1, 28, 28) in [0, 1]`` -> logits ``(B, 10)``."""
        return self.head(self.body(x))


# --- Notebook 02: autoencoders ------------------------------------------------------------------


class Autoencoder(nn.Module):
    """Plain (deterministic) MLP autoencoder: 784 -> hidden... -> latent_dim -> ...hidden -> 784 logits.

    ``encode(x: (B, 1, 28, 28)) -> z: (B, latent_dim)``; ``decode(z) -> logits (B, 1, 28, 28)`` (the VAE
    contract, so the same plotting and metrics apply); ``forward(x)`` is the reconstruction in [0, 1].
    ``hidden=()`` leaves only the two linear maps (with a sigmoid on the output).
    """

    def __init__(self, latent_dim: int = 30, hidden: tuple[int, ...] = (512,)):
        super().__init__()
        if latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
        self.latent_dim = latent_dim

        def mlp(sizes: list[int]) -> list[nn.Module]:  # Linear, ReLU, ..., Linear (no activation on the last)
            layers: list[nn.Module] = []
            for a, b in zip(sizes, sizes[1:]):
                layers += [nn.Linear(a, b), nn.ReLU()]
            return layers[:-1]

        self.encoder = nn.Sequential(nn.Flatten(), *mlp([784, *hidden, latent_dim]))
        self.decoder = nn.Sequential(*mlp([latent_dim, *reversed(hidden), 784]), nn.Unflatten(1, (1, 28, 28)))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1, 28, 28)`` in [0, 1] -> codes ``z: (B, latent_dim)``."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
            raise ValueError(f"Autoencoder expects images of shape (B, 1, 28, 28), got {tuple(x.shape)}")
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (B, latent_dim)`` -> logits ``(B, 1, 28, 28)``; ``sigmoid`` gives the image."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1, 28, 28)`` -> reconstruction ``(B, 1, 28, 28)`` in [0, 1]."""
        return torch.sigmoid(self.decode(self.encode(x)))


# --- Notebook 03: variational autoencoders ------------------------------------------------------


class MLPVAE(nn.Module):
    """VAE with MLP encoder and decoder: 784 -> hidden -> hidden -> (mu, logvar) -> hidden -> hidden -> 784 logits."""

    def __init__(self, latent_dim: int = 32, hidden: int = 256):  # the shipped "vae" checkpoint's size (560k weights, 2.2 MB)
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 784))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, 1, 28, 28)`` -> ``mu, logvar: (B, latent_dim)`` of q(z|x)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (B, latent_dim)`` -> Bernoulli logits ``(B, 1, 28, 28)``."""
        return self.decoder(z).view(-1, 1, 28, 28)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(x_logits, mu, logvar)`` with z drawn by the reparameterization trick."""
        mu, logvar = self.encode(x)
        return self.decode(reparameterize(mu, logvar)), mu, logvar


class ConvVAE(MLPVAE):
    """Small convolutional VAE: 1x28x28 -> 32x14x14 -> 64x7x7 -> (mu, logvar), and back with transposed convs.

    Same contract as :class:`MLPVAE`; notebook 03 times it against the MLP to choose by measurement.
    """

    def __init__(self, latent_dim: int = 32, width: int = 32):
        nn.Module.__init__(self)
        self.latent_dim = latent_dim
        self.encoder = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 4, 2, 1), nn.ReLU(),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 7 * 7), nn.ReLU(), nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )


# --- Notebook 04: GANs --------------------------------------------------------------------------


class MLP2D(nn.Module):
    """Small MLP for 2D toy GANs: ``in_dim -> hidden x depth -> out_dim`` (generator or discriminator)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 128, depth: int = 3):
        super().__init__()
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.ReLU()]
            d = hidden
        self.net = nn.Sequential(*layers, nn.Linear(d, out_dim))
        self.latent_dim = in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.squeeze(1) if out.shape[1] == 1 else out


class DCGANGenerator(nn.Module):
    """DCGAN generator for 28x28 digits: z -> 128x7x7 -> 64x14x14 -> 1x28x28 (transposed convs, batch norm)."""

    def __init__(self, latent_dim: int = 64, width: int = 64):
        super().__init__()
        self.latent_dim, self.width = latent_dim, width
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 7 * 7), nn.Unflatten(1, (2 * width, 7, 7)), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z: (B, latent_dim)`` -> images ``(B, 1, 28, 28)`` in [0, 1]."""
        return torch.sigmoid(self.net(z))


class DCGANDiscriminator(nn.Module):
    """DCGAN discriminator: 1x28x28 -> 16x14x14 -> 32x7x7 -> 64x3x3 -> 128x1x1 -> logit (strided convs, leaky ReLU).

    ``depth`` strided convolutions, each halving the image and doubling the channels. With four, the
    last feature map is 1x1 and sees the whole digit (a 46-pixel receptive field). With two, each of
    its 7x7 features sees only 10x10 pixels and the logit is a linear read-out of stroke detectors, so
    malformed digits made of plausible strokes pass: ``python -m bench.dcgan_recipes`` measures both.
    """

    def __init__(self, width: int = 16, depth: int = 4):
        super().__init__()
        if depth not in (1, 2, 3, 4):  # a fifth halving would leave no pixels
            raise ValueError(f"depth must be 1 to 4 strided convolutions for 28x28 images, got {depth}")
        self.width = width
        layers, c, side = [nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2)], width, 14
        for _ in range(depth - 1):
            layers += [nn.Conv2d(c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.LeakyReLU(0.2)]
            c, side = 2 * c, side // 2
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, 1, 28, 28)`` in [0, 1] -> logits ``(B,)``."""
        return self.net(2 * x - 1).squeeze(1)


# --- Notebook 05: conditional GAN, WGAN-GP, CycleGAN --------------------------------------------


class ConditionalGenerator(nn.Module):
    """Conditional MLP generator: ``[z, one-hot(y)] -> hidden -> 2*hidden -> 784``, sigmoid.

    ``G(z: (B, latent_dim), y: (B,) int64) -> (B, 1, 28, 28) in [0, 1]``.
    """

    def __init__(self, latent_dim: int = 64, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = nn.Sequential(
            nn.Linear(latent_dim + num_classes, hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.LeakyReLU(0.2),
            nn.Linear(2 * hidden, 784),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        onehot = nn.functional.one_hot(y, self.num_classes).to(z.dtype)
        return torch.sigmoid(self.net(torch.cat([z, onehot], 1))).view(-1, 1, 28, 28)


class ConditionalDiscriminator(nn.Module):
    """Projection discriminator (Miyato & Koyama, 2018): ``D(x, y) = w . h(x) + embed(y) . h(x)``.

    The label enters as an inner product with the image features, so D must check that the image
    fits the label, not only that it looks real; this learns the conditioning faster than
    concatenating a one-hot vector. ``x: (B, 1, 28, 28) in [0, 1]``, ``y: (B,)`` -> logits ``(B,)``.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 2 * hidden), nn.LeakyReLU(0.2), nn.Linear(2 * hidden, hidden), nn.LeakyReLU(0.2))
        self.head = nn.Linear(hidden, 1)
        self.embed = nn.Embedding(num_classes, hidden)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(2 * x - 1)
        return self.head(h).squeeze(1) + (self.embed(y) * h).sum(1)


class CycleGenerator(nn.Module):
    """Small all-convolutional translator ``(B, c_in, H, W) -> (B, c_out, H, W) in [0, 1]``.

    Four 3x3 convolutions see a 9x9 neighbourhood: enough to recolour and thicken or thin strokes.
    """

    def __init__(self, c_in: int, c_out: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, c_out, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(2 * x - 1))


class PatchDiscriminator(nn.Module):
    """PatchGAN-style critic: scores overlapping patches of a ``(B, c, H, W)`` image (H, W >= 8), returns their mean ``(B,)``."""

    def __init__(self, c_in: int, width: int = 16):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, width, 4, 2, 1), nn.LeakyReLU(0.2),       # H/2
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),  # H/4
            nn.Conv2d(2 * width, 1, 3, padding=1),                    # one score per patch position
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(2 * x - 1).flatten(1).mean(1)


# --- Diffusion: denoisers eps(x_t, t, y) -----------------------------------------------------------


def time_embedding(t: torch.Tensor, dim: int, T: int = 1000) -> torch.Tensor:
    """Sinusoidal embedding of the diffusion time ``t: (B,)`` (1..T) -> ``(B, dim)`` (Transformer-style frequencies)."""
    half = dim // 2
    freqs = torch.exp(-torch.log(torch.tensor(10_000.0)) * torch.arange(half, device=t.device) / half)
    angles = (t.float() * (1000 / T))[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], 1)


class _ResBlock(nn.Module):
    """Two 3x3 convs with group norm and SiLU; the time (and label) embedding is added in between."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(min(8, c_in), c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(min(8, c_out), c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(nn.functional.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        return self.skip(x) + self.conv2(nn.functional.silu(self.norm2(h)))


class DiffusionUNet(nn.Module):
    """A small U-Net denoiser for 28x28 digits: 28 -> 14 -> 7 and back, skip connections, a time embedding
    and (with ``num_classes``) a label embedding whose extra row ``num_classes`` means "no label".

    ``forward(x_t: (B, 1, 28, 28), t: (B,) int64, y: (B,) int64 or None) -> eps: (B, 1, 28, 28)``.
    """

    def __init__(self, width: int = 32, num_classes: int | None = None, T: int = 1000):
        super().__init__()
        c, e = width, 4 * width
        self.T, self.num_classes = T, num_classes
        self.time = nn.Sequential(nn.Linear(c, e), nn.SiLU(), nn.Linear(e, e))
        self.label = nn.Embedding(num_classes + 1, e) if num_classes else None
        self.inc = nn.Conv2d(1, c, 3, padding=1)
        self.down1, self.pool1 = _ResBlock(c, c, e), nn.Conv2d(c, c, 4, 2, 1)              # 28 -> 14
        self.down2, self.pool2 = _ResBlock(c, 2 * c, e), nn.Conv2d(2 * c, 2 * c, 4, 2, 1)  # 14 -> 7
        self.mid = _ResBlock(2 * c, 2 * c, e)
        self.up2, self.res2 = nn.ConvTranspose2d(2 * c, 2 * c, 4, 2, 1), _ResBlock(4 * c, c, e)  # 7 -> 14
        self.up1, self.res1 = nn.ConvTranspose2d(c, c, 4, 2, 1), _ResBlock(2 * c, c, e)          # 14 -> 28
        self.out = nn.Sequential(nn.GroupNorm(min(8, c), c), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time(time_embedding(t, self.inc.out_channels, self.T))
        if self.label is not None:
            emb = emb + self.label(y if y is not None else torch.full_like(t, self.num_classes))
        h0 = self.inc(x)
        h1 = self.down1(h0, emb)                 # (B, c, 28, 28)
        h2 = self.down2(self.pool1(h1), emb)     # (B, 2c, 14, 14)
        h = self.mid(self.pool2(h2), emb)        # (B, 2c, 7, 7)
        h = self.res2(torch.cat([self.up2(h), h2], 1), emb)
        h = self.res1(torch.cat([self.up1(h), h1], 1), emb)
        return self.out(h)


class MLPDenoiser(nn.Module):
    """The simplest denoiser: an MLP on the 784 pixels with the time (and label) embedding concatenated.

    Same call as :class:`DiffusionUNet`; ``python -m bench.diffusion_recipes`` measures both in equal time.
    """

    def __init__(self, hidden: int = 1024, num_classes: int | None = None, T: int = 1000, emb_dim: int = 64):
        super().__init__()
        self.T, self.num_classes, self.emb_dim = T, num_classes, emb_dim
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.net = nn.Sequential(nn.Linear(784 + emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, 784))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        emb = time_embedding(t, self.emb_dim, self.T)
        if self.label is not None:
            emb = emb + self.label(y if y is not None else torch.full_like(t, self.num_classes))
        return self.net(torch.cat([x.flatten(1), emb], 1)).view_as(x)


# --- Semi-supervised learning: Kingma et al. (2014)'s M2, here on the codes of a VAE (their "M1+M2") -----


class SemiSupervisedVAE(nn.Module):
    """M2 (Kingma, Rezende, Mohamed & Welling, 2014) over vectors ``x: (B, x_dim)``; notebook 06 feeds it M1's codes.

    Generative story: ``y ~ Cat(1/K)``, ``z ~ N(0, I_z_dim)``, ``x | y, z ~ N(mu(y, z), diag sigma^2(y, z))``.
    Inference: a classifier ``q(y|x)`` and a label-conditioned encoder ``q(z|x, y) = N(mu(x, y), diag sigma^2(x, y))``.
    The classifier and the encoder are MLPs (one-hot labels concatenated to the encoder's input); the decoder is one
    linear-Gaussian map per class (``linear_decoder=True``, see ``__init__`` for why) or a third MLP.
    """

    def __init__(self, x_dim: int = 32, z_dim: int = 16, num_classes: int = 10, hidden: int = 256, linear_decoder: bool = True):
        super().__init__()
        self.x_dim, self.z_dim, self.num_classes, self.linear_decoder = x_dim, z_dim, num_classes, linear_decoder
        mlp = lambda i, o: nn.Sequential(nn.Linear(i, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, o))
        self.classifier = mlp(x_dim, num_classes)
        self.encoder = mlp(x_dim + num_classes, 2 * z_dim)
        if linear_decoder:
            # one linear-Gaussian map per class, p(x|y, z) = N(b_y + W_y z, diag exp(s_y)): marginally over z each class is a
            # Gaussian with covariance W_y W_y^T + diag exp(s_y) (factor analysis). Why not an MLP: in our runs on the VAE's codes
            # a flexible decoder learnt to explain x through z alone, and the classifier gained less than with this one.
            self.weight = nn.Parameter(0.1 * torch.randn(num_classes, x_dim, z_dim))
            self.bias = nn.Parameter(0.1 * torch.randn(num_classes, x_dim))
            self.log_scale = nn.Parameter(torch.zeros(num_classes, x_dim))
        else:
            self.decoder = mlp(z_dim + num_classes, 2 * x_dim)

    def onehot(self, y: torch.Tensor) -> torch.Tensor:
        """``y: (B,)`` int64 -> ``(B, K)`` float."""
        return nn.functional.one_hot(y, self.num_classes).float()

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, x_dim)`` -> logits of q(y|x), ``(B, K)``."""
        return self.classifier(x)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x: (B, x_dim)``, one-hot ``y: (B, K)`` -> ``mu, logvar: (B, z_dim)`` of q(z|x, y)."""
        return self.encoder(torch.cat([x, y], -1)).chunk(2, dim=-1)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z: (B, z_dim)``, one-hot ``y: (B, K)`` -> ``mu, logvar: (B, x_dim)`` of p(x|y, z)."""
        if self.linear_decoder:
            mu = torch.einsum("bk,kdz,bz->bd", y, self.weight, z) + y @ self.bias
            logvar = (y @ self.log_scale).expand_as(mu)
        else:
            mu, logvar = self.decoder(torch.cat([z, y], -1)).chunk(2, dim=-1)
        return mu, logvar.clamp(-12.0, 6.0)  # a dimension the data leaves constant would otherwise drive its variance to 0

    def labelled_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative ELBO ``L(x, y) = -log p(x|y,z) + KL(q(z|x,y) || p(z)) - log p(y)``, one z draw: ``x: (B, x_dim)``, ``y: (B,)`` -> ``(B,)``."""
        y1 = self.onehot(y)
        mu, logvar = self.encode(x, y1)
        x_mu, x_logvar = self.decode(reparameterize(mu, logvar), y1)
        return gaussian_nll(x, x_mu, x_logvar) + kl_normal(mu, logvar) + math.log(self.num_classes)

    def unlabelled_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative ELBO with y summed out: ``x: (B, x_dim)`` -> ``U(x): (B,)`` and the classifier's logits ``(B, K)``.

        Every class is tried for every x in one batch of ``B * K`` rows (:func:`labsupport.losses.marginal_over_labels`).
        """
        B, K = len(x), self.num_classes
        ys = torch.arange(K, device=x.device).repeat(B)                                        # (B*K,): 0..K-1 for each x
        labelled = self.labelled_loss(x.repeat_interleave(K, dim=0), ys).view(B, K)           # (B, K)
        logits = self.classify(x)
        return marginal_over_labels(labelled, logits), logits


class GaussianClasses(nn.Module):
    """One full-covariance Gaussian per class, ``p(x, y) = pi_y N(x; mu_y, Sigma_y)``, over vectors ``x: (B, D)``.

    The generative classifier behind :func:`fit_semisupervised_gmm` (M2 without its ``z_2``:
    each class's codes are one Gaussian, fitted exactly by EM instead of by gradient steps on an ELBO).
    Buffers: ``means: (K, D)``, ``covs: (K, D, D)``, ``log_prior: (K,)``, float64.
    """

    def __init__(self, means: torch.Tensor, covs: torch.Tensor, log_prior: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means.double())
        self.register_buffer("covs", covs.double())
        self.register_buffer("log_prior", log_prior.double())

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, D)`` -> ``log p(x, y): (B, K)`` for every class ``y``."""
        gaussians = torch.distributions.MultivariateNormal(self.means, scale_tril=torch.linalg.cholesky(self.covs))  # batch (K,)
        return self.log_prior + gaussians.log_prob(x.double()[:, None, :])                   # (B, 1, D) against (K,) -> (B, K)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, D)`` -> log posterior ``log p(y|x): (B, K)`` (use like logits)."""
        return self.log_joint(x).log_softmax(-1)


def fit_semisupervised_gmm(
    x_unlabelled: torch.Tensor, x_labelled: torch.Tensor, y_labelled: torch.Tensor, *, num_classes: int = 10,
    unlabelled_weight: float = 0.01, iters: int = 100, tol: float = 1e-3, ridge: float = 1e-4,
) -> GaussianClasses:
    """Semi-supervised EM (Nigam, McCallum, Thrun & Mitchell, 2000) for one full-covariance Gaussian per class.

    ``x_unlabelled: (N, D)``, ``x_labelled: (L, D)``, ``y_labelled: (L,)`` -> a fitted :class:`GaussianClasses`.
    E step: each unlabelled row's class responsibilities under the current Gaussians; a labelled row's are its
    one-hot label. M step: weighted means, covariances (plus ``ridge * I``) and class frequencies, with each
    unlabelled row weighted ``unlabelled_weight``. Why not weight 1: with 60 000 unlabelled rows against 100
    labelled ones the likelihood of the unlabelled data alone decides, and EM drifts towards clusters that
    explain the codes better than the classes do (the bench's `semisupervised` suite measures the drift and
    picks the weight on label draws and test digits it does not report). Starts from the labelled class means,
    half the data's covariance for every class and a uniform prior. Stops after ``iters`` steps, or earlier once no
    mean moves by ``tol`` or more in any coordinate in a step; the returned model's ``n_iter`` says how many ran.
    """
    xu, xl = x_unlabelled.double(), x_labelled.double()
    if xu.shape[1] != xl.shape[1] or len(xl) != len(y_labelled):
        raise ValueError(f"expected x_unlabelled (N, D), x_labelled (L, D), y_labelled (L,), got {tuple(xu.shape)}, "
                         f"{tuple(xl.shape)}, {tuple(y_labelled.shape)}")
    missing = sorted(set(range(num_classes)) - set(y_labelled.tolist()))
    if missing:
        raise ValueError(f"every class needs at least one labelled row to start from; none for {missing}")
    D = xu.shape[1]
    means = torch.stack([xl[y_labelled == k].mean(0) for k in range(num_classes)])
    gmm = GaussianClasses(means, (0.5 * torch.cov(xu.T)).expand(num_classes, D, D), torch.full((num_classes,), -math.log(num_classes)))
    x_all = torch.cat([xu, xl])
    r_labelled = torch.nn.functional.one_hot(y_labelled, num_classes).double()
    n_iter = 0
    while n_iter < iters:
        n_iter += 1
        with torch.no_grad():
            r = torch.cat([unlabelled_weight * gmm.classify(xu).exp(), r_labelled])  # (N + L, K) weighted responsibilities
            n_k = r.sum(0)                                                              # (K,)
            means = (r.T @ x_all) / n_k[:, None]
            diff = x_all[:, None, :] - means[None]                                       # (N + L, K, D)
            covs = torch.einsum("nk,nkd,nke->kde", r, diff, diff) / n_k[:, None, None] + ridge * torch.eye(D, dtype=torch.float64)
            moved = (means - gmm.means).abs().max().item()
            gmm = GaussianClasses(means, covs, (n_k / n_k.sum()).log())
        if moved < tol:
            break
    gmm.n_iter = n_iter
    return gmm
