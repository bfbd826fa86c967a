"""Measurements: the evaluation classifier's read-outs, classifier FID and inception score, mode
coverage on 2D mixtures, VAE likelihoods (negative ELBO and importance-weighted NLL, in nats), and
the measurements behind notebook 06's uses. The classifier itself is ``models.DigitClassifier``.

Generated digits are judged with a small MNIST classifier (Inception features do not suit 28x28
digits and need a download). Fréchet distances depend on the layer used: compare only numbers
from this extractor, and report the real-vs-real floor beside every model's value.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from . import config
from .config import resolve_device
from .losses import bernoulli_nll, kl_normal, reparameterize


def report(name: str, value: float, unit: str = "") -> None:
    """Hand a number a notebook measured to ``python -m bench`` (a no-op unless ``$LABSUPPORT_REPORT`` names a file).

    The bench executes the notebooks and collects these lines, so its table holds the values the
    notebooks themselves computed, from the same code.
    """
    import json

    path = config.report_path()
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"name": name, "value": float(value), "unit": unit}) + "\n")


# --- classifier read-outs ---------------------------------------------------------------------------


@torch.no_grad()
def predict_proba(classifier: nn.Module, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Class probabilities ``(N, 10)`` for ``images: (N, 1, 28, 28) in [0, 1]``."""
    classifier.eval()
    dev = resolve_device(model=classifier)
    return torch.cat([F.softmax(classifier(images[i : i + batch_size].to(dev)).float(), 1).cpu() for i in range(0, len(images), batch_size)])


UNCLEAR_BELOW = 0.9  # notebook 04 and the bench: a sample is unclear when the classifier gives its top digit less than this


def unclear_fraction(probs: torch.Tensor, below: float = UNCLEAR_BELOW) -> float:
    """Fraction of the rows of ``probs: (N, classes)`` (e.g. from :func:`predict_proba`) whose top probability is under ``below``."""
    if probs.dim() != 2 or len(probs) == 0:
        raise ValueError(f"probs must be a non-empty (N, classes) tensor, got shape {tuple(probs.shape)}")
    return (probs.max(1).values < below).float().mean().item()


def accuracy(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of ``images`` whose predicted digit equals ``labels``."""
    return (predict_proba(classifier, images).argmax(1) == labels.cpu()).float().mean().item()


# --- judging generated images -------------------------------------------------------------------


class _Features(nn.Module):
    """Wraps the classifier for torchmetrics' FID: accepts its uint8 RGB probe image, returns features."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier
        with torch.no_grad():  # known up front, torchmetrics skips its probe (a 299 x 299 forward pass)
            probe = torch.zeros(1, 1, 28, 28, device=next(classifier.parameters()).device)
            self.num_features = classifier.features(probe).shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
        x = x.mean(1, keepdim=True) if x.shape[1] != 1 else x
        if x.shape[-2:] != (28, 28):
            x = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
        return self.classifier.features(x)


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, classifier: nn.Module, batch_size: int = 1000) -> float:
    """Classifier FID between two image sets ``(N, 1, 28, 28) in [0, 1]``, on the classifier's features.

    Computed by torchmetrics' ``FrechetInceptionDistance`` with the evaluation classifier as the
    feature extractor. Only comparable to numbers from the same classifier.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    classifier.eval()
    dev = resolve_device(model=classifier)
    # float32 features (twice as fast as float64 on a CPU, same FID to ~1e-7): torchmetrics sums them and
    # their outer products in float64, where the precision matters. A copy: the metric owns its extractor.
    fid = FrechetInceptionDistance(feature=_Features(copy.deepcopy(classifier)).to(dev), normalize=True).to(dev)
    with torch.no_grad():
        for images, is_real in ((real, True), (fake, False)):
            for i in range(0, len(images), batch_size):
                fid.update(images[i : i + batch_size].to(dev).float(), real=is_real)
    return float(fid.compute())


def fid_floor(x_train: torch.Tensor, x_test: torch.Tensor, classifier: nn.Module, n: int, seed: int = 1) -> float:
    """The real-vs-real FID floor: ``n`` random training digits against the first ``n`` test digits (the protocol the
    models' FIDs use). Not two test halves: MNIST's first 5000 test digits come from other writers than the last 5000."""
    real = x_train[torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed))[:n]]
    return frechet_distance(x_test[:n], real, classifier)


def inception_score(images: torch.Tensor, classifier: nn.Module, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Classifier inception score exp(E_x KL(p(y|x) || p(y))): mean and std over ``splits`` (max 10 on MNIST).

    Samples are shuffled before splitting: class-sorted splits would give about 1.
    """
    p = predict_proba(classifier, images).double()
    p = p[torch.randperm(len(p), generator=torch.Generator().manual_seed(seed))]
    scores = []
    for part in p.chunk(splits):
        py = part.mean(0, keepdim=True)
        kl = (part * (part.clamp_min(1e-12).log() - py.clamp_min(1e-12).log())).sum(1).mean()
        scores.append(kl.exp().item())
    s = torch.tensor(scores)
    return s.mean().item(), (s.std().item() if len(s) > 1 else 0.0)


class ModeCoverage(NamedTuple):
    modes: int            # modes captured: nearest mode of at least one high-quality sample
    high_quality: float   # fraction of samples within 3 std of their nearest mode
    reverse_kl: float     # KL(sample mode histogram || uniform), in nats, over high-quality samples
    counts: torch.Tensor  # (K,) high-quality samples per mode


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor, std: float) -> ModeCoverage:
    """The VEEGAN/PacGAN protocol on a 2D mixture: ``samples: (N, 2)``, ``centers: (K, 2)``.

    A sample is high-quality if it lies within 3 ``std`` of its nearest mode; a mode is captured if
    it is the nearest mode of at least one high-quality sample (the papers use N = 2500).
    """
    samples, centers = samples.detach().float().cpu(), centers.float().cpu()
    d = torch.cdist(samples, centers)
    dist, nearest = d.min(1)
    good = dist <= 3 * std
    counts = torch.bincount(nearest[good], minlength=len(centers))
    q = counts.double() / counts.sum().clamp_min(1)
    rkl = (q[q > 0] * (q[q > 0] * len(centers)).log()).sum().item() if counts.sum() > 0 else float("inf")
    return ModeCoverage(int((counts > 0).sum()), good.float().mean().item(), rkl, counts)


class ModeTracker:
    """``callback`` for :func:`labsupport.train.train_gan` on a 2D mixture: every ``every`` steps, draw ``n``
    samples from fixed noise, measure :func:`mode_coverage` and keep the samples as a snapshot.

    After training: ``steps``, ``modes``, ``high_quality`` (lists, one entry per measurement) and
    ``snapshots`` (``{step: (n, 2) samples}``).
    """

    def __init__(self, centers: torch.Tensor, std: float, every: int = 100, n: int = 2500, seed: int = 0):
        self.centers, self.std, self.every, self.n, self.seed = centers, std, every, n, seed
        self.z: torch.Tensor | None = None
        self.steps: list[int] = []
        self.modes: list[int] = []
        self.high_quality: list[float] = []
        self.snapshots: dict[int, torch.Tensor] = {}

    @torch.no_grad()
    def __call__(self, step: int, G: nn.Module, D: nn.Module | None = None) -> None:
        if step % self.every:
            return
        dev = resolve_device(model=G)
        if self.z is None:
            self.z = torch.randn(self.n, G.latent_dim, generator=torch.Generator().manual_seed(self.seed))
        samples = G(self.z.to(dev)).float().cpu()
        m = mode_coverage(samples, self.centers, self.std)
        self.steps.append(step)
        self.modes.append(m.modes)
        self.high_quality.append(m.high_quality)
        self.snapshots[step] = samples


# --- VAE likelihoods ------------------------------------------------------------------------------


@torch.no_grad()
def dataset_negative_elbo(vae: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean negative ELBO in nats per image of ``vae`` over a whole set ``x: (N, 1, 28, 28)`` in {0, 1} (one z sample each),
    in batches (notebook 03's exercise ``negative_elbo(x, x_logits, mu, logvar)`` scores one batch's outputs)."""
    vae.eval()
    dev, total = resolve_device(model=vae), 0.0
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(dev)
        mu, logvar = vae.encode(xb)
        total += (kl_normal(mu, logvar) + bernoulli_nll(xb, vae.decode(reparameterize(mu, logvar)))).sum().item()
    return total / len(x)


@torch.no_grad()
def importance_weighted_nll(vae: nn.Module, x: torch.Tensor, k: int = 1000, batch: int = 4096) -> torch.Tensor:
    """Importance-weighted estimate of -log p(x) in nats, per image: ``x: (N, 1, 28, 28)`` in {0, 1} -> ``(N,)``.

    -log (1/K) sum_k p(x|z_k) p(z_k) / q(z_k|x) with z_k ~ q(z|x). An upper bound on the true NLL
    that tightens as K grows (Burda et al., 2016, use K = 5000). ``batch`` bounds the decodes per pass.
    """
    vae.eval()
    dev = resolve_device(model=vae)
    chunk = min(k, batch)
    per = max(1, batch // chunk)  # images per pass
    out = []
    for i in range(0, len(x), per):
        xb = x[i : i + per].to(dev)
        mu, logvar = vae.encode(xb)  # (b, D)
        std = (0.5 * logvar).exp()
        logw = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            eps = torch.randn(len(xb), n, mu.shape[1], device=dev)
            z = mu[:, None] + std[:, None] * eps  # (b, n, D)
            log_q = (-0.5 * eps.pow(2) - 0.5 * logvar[:, None] - 0.5 * math.log(2 * math.pi)).sum(-1)
            log_p = (-0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)).sum(-1)
            logits = vae.decode(z.flatten(0, 1)).view(len(xb), n, *xb.shape[1:])
            logw.append(log_p - log_q - bernoulli_nll(xb[:, None], logits))
        out.append(math.log(k) - torch.logsumexp(torch.cat(logw, 1), 1))
    return torch.cat(out).cpu()



def binarized_test_set(n: int | None = None, seed: int = 0, root=None) -> torch.Tensor:
    """The first ``n`` MNIST test images (all by default), binarized once with ``seed``: ``(n, 1, 28, 28)`` in {0, 1}.

    One fixed draw, so every VAE in the course (notebooks, checkpoints, bench) is scored on the same pixels.
    """
    from .data import binarize, mnist_tensors

    x, _ = mnist_tensors(train=False, root=root)
    x = x[:n] if n is not None else x
    return binarize(x, generator=torch.Generator().manual_seed(seed))


def evaluate_vae(vae: nn.Module, n_elbo: int = 10_000, n_iw: int = 1000, k: int = 1000, seed: int = 0) -> dict:
    """Test negative ELBO (``n_elbo`` images) and IW-NLL with ``k`` samples (first ``n_iw`` images), in nats.

    Uses :func:`binarized_test_set` and a fixed seed for the Monte Carlo draws, so numbers repeat.
    """
    x = binarized_test_set(max(n_elbo, n_iw), seed=seed)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        elbo = dataset_negative_elbo(vae, x[:n_elbo])
        iw = importance_weighted_nll(vae, x[:n_iw], k=k).mean().item() if n_iw > 0 else float("nan")
    finally:
        torch.random.set_rng_state(state)
    return {"test_neg_elbo": round(elbo, 2), "test_iw_nll": round(iw, 2), "iw_k": k, "n_elbo": n_elbo, "n_iw": n_iw}


# --- conditional generators ----------------------------------------------------------------------


@torch.no_grad()
def conditional_samples(generator: nn.Module, n_per_class: int, seed: int = 0, batch_size: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_per_class`` digits of every class from ``generator(z, y)``, with fixed noise (``seed``).

    Returns ``images: (K * n_per_class, 1, 28, 28)`` on the CPU and the requested ``labels: (K * n_per_class,)``.
    """
    was_training = generator.training  # may be called from inside a training loop: put the mode back
    generator.eval()
    dev = resolve_device(model=generator)
    labels = torch.arange(generator.num_classes).repeat_interleave(n_per_class)
    z = torch.randn(len(labels), generator.latent_dim, generator=torch.Generator().manual_seed(seed))
    images = torch.cat([generator(z[i : i + batch_size].to(dev), labels[i : i + batch_size].to(dev)).float().cpu() for i in range(0, len(labels), batch_size)])
    generator.train(was_training)
    return images, labels


def label_accuracy(generator: nn.Module, classifier: nn.Module, n_per_class: int = 500, seed: int = 0) -> float:
    """How often the evaluation classifier reads the digit that was asked of a conditional generator."""
    images, labels = conditional_samples(generator, n_per_class, seed)
    return accuracy(classifier, images, labels)


# --- what generative models are for (notebook 06): inversion, latent paths, probes, compression ---


def invert_generator(
    generator: nn.Module, x: torch.Tensor, steps: int = 300, lr: float = 0.05, restarts: int = 4, seed: int = 0
) -> tuple[torch.Tensor, dict]:
    """A GAN has no encoder: find ``z`` with ``generator(z) ≈ x`` by gradient descent on the squared error.

    ``x: (B, 1, 28, 28)`` in [0, 1]. Runs ``restarts`` random starts per image in one batch (Adam on z
    only, the generator is frozen) and keeps the best. Returns ``z: (B, latent_dim)`` and
    ``{"mse": per-step mean squared error per pixel of the best start, "seconds": wall time, "steps": steps * restarts}``.
    """
    import time

    if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
        raise ValueError(f"x should be (B, 1, 28, 28), got {tuple(x.shape)}")
    generator.eval()
    dev = resolve_device(model=generator)
    x = x.to(dev)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(restarts, len(x), generator.latent_dim, generator=g).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    curve, start = [], time.perf_counter()
    for _ in range(steps):
        err = (generator(z.flatten(0, 1)).view(restarts, *x.shape) - x).pow(2).flatten(2).mean(2)  # (restarts, B)
        opt.zero_grad(set_to_none=True)
        err.sum().backward()  # each (start, image) pair has its own z: summing keeps their gradients separate
        opt.step()
        curve.append(err.detach().min(0).values.mean().item())
    with torch.no_grad():
        err = (generator(z.flatten(0, 1)).view(restarts, *x.shape) - x).pow(2).flatten(2).mean(2)
        best = err.argmin(0)
        z_best = z.detach()[best, torch.arange(len(x), device=dev)]
    return z_best, {"mse": curve, "seconds": time.perf_counter() - start, "steps": steps * restarts}


@torch.no_grad()
def interpolation_jumpiness(decode, z0: torch.Tensor, z1: torch.Tensor, steps: int = 16) -> torch.Tensor:
    """How unevenly images change along the straight line from ``z0`` to ``z1`` (both ``(B, D)``).

    ``decode(z: (N, D)) -> images (N, 1, 28, 28)``. Returns ``(B,)``: the largest pixel-space step
    between neighbouring images divided by the mean step. 1 means an even morph; large values mean
    the image stays put and then jumps.
    """
    t = torch.linspace(0, 1, steps, device=z0.device)[:, None, None]  # (T, 1, 1)
    path = (1 - t) * z0 + t * z1  # (T, B, D)
    images = decode(path.flatten(0, 1)).view(steps, len(z0), -1)
    step = (images[1:] - images[:-1]).norm(dim=2)  # (T-1, B)
    return step.max(0).values / step.mean(0).clamp_min(1e-12)


def linear_probe_accuracy(z_train: torch.Tensor, y_train: torch.Tensor, z_test: torch.Tensor, y_test: torch.Tensor,
                          max_iter: int = 2000) -> float:
    """Test accuracy of a logistic-regression classifier fit on ``z_train: (N, D)`` -> ``y_train: (N,)``.

    Plain L2-regularized logistic regression (scikit-learn, lbfgs, C=1) on the features as they are:
    standardizing would blow up a VAE's inactive latent dimensions (codes near 0, pure noise). With a
    single class in ``y_train`` (e.g. a collapsed GAN) the probe can only predict that class.
    """
    from sklearn.linear_model import LogisticRegression

    if len(y_train.unique()) < 2:
        return (y_test.cpu() == y_train[0].cpu()).float().mean().item()
    clf = LogisticRegression(max_iter=max_iter)
    clf.fit(z_train.detach().double().cpu().numpy(), y_train.cpu().numpy())
    return float(clf.score(z_test.detach().double().cpu().numpy(), y_test.cpu().numpy()))


@torch.no_grad()
def generated_label_probe(decode, latent_dim: int, classifier: nn.Module, n: int = 3000, seed: int = 0) -> float:
    """Are digit classes linearly separable in a model's latent space? The same test for a VAE and a GAN.

    Draws ``n`` codes z ~ N(0, I), labels each ``decode(z)`` with the evaluation classifier, fits a
    linear probe z -> label on two thirds and returns its accuracy on the last third.
    """
    z = torch.randn(n, latent_dim, generator=torch.Generator().manual_seed(seed))
    dev = resolve_device(model=classifier)
    labels = predict_proba(classifier, decode(z.to(dev)).cpu()).argmax(1)
    cut = 2 * n // 3
    return linear_probe_accuracy(z[:cut], labels[:cut], z[cut:], labels[cut:])


@torch.no_grad()
def knn_neg_log_density(reference: torch.Tensor, queries: torch.Tensor, k: int = 5, standardize: bool = True,
                        batch_size: int = 500) -> torch.Tensor:
    """-log p_hat(q) in nats from the k-nearest-neighbour density estimate of ``reference: (N, D)``, at ``queries: (M, D)`` -> ``(M,)``.

    p_hat(q) = k / (N * V_D * r_k(q)^D), with r_k(q) the distance from q to its k-th nearest reference
    point and V_D the volume of the unit ball in D dimensions: the fraction k/N of the data lies in a ball
    of radius r_k, so the density there is about that fraction over the ball's volume. No fitting and no
    assumption on the shape of the distribution (a VAE's aggregate posterior is far from its N(0, I) prior).
    ``standardize`` measures distances after dividing each dimension by the reference's standard deviation,
    so that a dimension with a large spread does not drown the others; the Jacobian of that rescaling is
    added back, so the result is still a density of the unscaled ``queries``. A query that is itself a
    reference point finds itself at distance 0: score held-out points, not the reference set.
    """
    queries = queries.to(reference.device, reference.dtype)
    n, d = reference.shape
    if not 1 <= k <= n:
        raise ValueError(f"k={k} needs 1 <= k <= the {n} reference points")
    scale = reference.std(0).clamp_min(1e-12) if standardize else torch.ones(d, dtype=reference.dtype, device=reference.device)
    ref = reference / scale
    r_k = torch.cat([torch.cdist(b / scale, ref).topk(k, dim=1, largest=False).values[:, -1] for b in queries.split(batch_size)])
    log_unit_ball = 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)
    log_r = r_k.double().clamp_min(1e-300).log()  # in double: D * log r is large and r may be tiny
    return (math.log(n) - math.log(k) + log_unit_ball + d * log_r + scale.double().log().sum()).to(reference.dtype)


def png_bytes(images: torch.Tensor) -> torch.Tensor:
    """Size of each image saved as an 8-bit greyscale PNG (best compression): ``(B, 1, 28, 28)`` in [0, 1] -> ``(B,)`` int64."""
    import io

    from PIL import Image

    arr = (images.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    sizes = []
    for a in arr:
        buf = io.BytesIO()
        Image.fromarray(a[0], mode="L").save(buf, format="PNG", optimize=True)
        sizes.append(buf.tell())
    return torch.tensor(sizes)
