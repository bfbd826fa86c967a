"""Checks of notebooks 01 (pca) and 02 (reconstruction_error, add_noise) and the Autoencoder model:
correct versions pass, each planted mistake fails with a message that names it."""

import pytest
import torch

from labsupport import checks, models
from labsupport.checks import CheckFailed


# --- pca ------------------------------------------------------------------------------------------


def pca_svd(X, k):
    mean = X.mean(0)
    return mean, torch.linalg.svd(X - mean, full_matrices=False).Vh[:k]


def pca_eigh(X, k):
    mean = X.mean(dim=0)
    Xc = X - mean
    _, vecs = torch.linalg.eigh(Xc.T @ Xc / (len(X) - 1))
    return mean, vecs[:, -k:].flip(1).T


def pca_lowrank(X, k):
    _, _, V = torch.pca_lowrank(X, q=k, center=True, niter=6)
    return X.mean(0), V.T


def pca_flipped_signs(X, k):
    mean, C = pca_svd(X, k)
    return mean, C * torch.tensor([(-1.0) ** i for i in range(k)])[:, None]


def pca_float64(X, k):
    return pca_svd(X.double(), k)


@pytest.mark.parametrize("fn", [pca_svd, pca_eigh, pca_lowrank, pca_flipped_signs, pca_float64])
def test_pca_accepts_correct_versions(fn, capsys):
    checks.check_pca(fn)
    assert "\u2713 pca" in capsys.readouterr().out


def _in_place(X, k):
    X -= X.mean(0)
    return pca_svd(X, k)


def _no_centring(X, k):
    return X.mean(0), torch.linalg.svd(X, full_matrices=False).Vh[:k]


def _ascending(X, k):
    mean, C = pca_eigh(X, k)
    return mean, C.flip(0)


def _smallest(X, k):
    Xc = X - X.mean(0)
    return X.mean(0), torch.linalg.eigh(Xc.T @ Xc)[1][:, :k].T


def _scaled(X, k):
    Xc = X - X.mean(0)
    _, S, Vh = torch.linalg.svd(Xc, full_matrices=False)
    return X.mean(0), S[:k, None] * Vh[:k]


def _rotated(X, k):
    mean, C = pca_svd(X, k)
    angle = torch.tensor(0.6)
    R = torch.eye(k)
    R[:2, :2] = torch.tensor([[angle.cos(), -angle.sin()], [angle.sin(), angle.cos()]])
    return mean, R @ C


def _random_rows(X, k):
    q, _ = torch.linalg.qr(torch.randn(X.shape[1], k, generator=torch.Generator().manual_seed(0)))
    return X.mean(0), q.T


def _fixed_k(X, k):
    return pca_svd(X, 3)


@pytest.mark.parametrize("fn, message", [
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh[:k].T), r"\(D, k\)"),
    (lambda X, k: (X.mean(1), pca_svd(X, k)[1]), "wrong|over the samples"),
    (lambda X, k: (X.mean(0, keepdim=True), pca_svd(X, k)[1]), "keepdim"),
    (lambda X, k: (torch.zeros(X.shape[1]), pca_svd(X, k)[1]), "all zeros"),
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).U[:, :k].T), "rows of U"),
    (lambda X, k: (X.mean(0), torch.linalg.svd(X - X.mean(0), full_matrices=False).Vh), "first k"),
    (lambda X, k: pca_svd(X, k)[1], "two things"),
    (_in_place, "in place"),
    (_no_centring, "without subtracting the mean"),
    (_ascending, "wrong order"),
    (_smallest, "smallest"),
    (_scaled, "not of length 1"),
    (_rotated, "rotated basis"),
    (_random_rows, "not the directions of largest variance"),
    (_fixed_k, "k = 1"),
    (lambda X, k: (_ for _ in ()).throw(NotImplementedError("Exercise 1")), "not written yet"),
])
def test_pca_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_pca(fn)


def test_pca_non_orthogonal_rows_are_named():
    def skewed(X, k):
        mean, C = pca_svd(X, k)
        C = C.clone()
        C[1] = (C[0] + C[1]) / 2 ** 0.5
        return mean, C

    with pytest.raises(CheckFailed, match="not orthonormal"):
        checks.check_pca(skewed)


# --- reconstruction_error -------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda x, x_hat: ((x - x_hat) ** 2).flatten(1).sum(1),
    lambda x, x_hat: (x_hat - x).pow(2).sum(dim=(1, 2, 3)),
    lambda x, x_hat: torch.nn.functional.mse_loss(x_hat, x, reduction="none").view(len(x), -1).sum(-1),
])
def test_reconstruction_error_accepts_correct_versions(fn, capsys):
    checks.check_reconstruction_error(fn)
    assert "\u2713 reconstruction_error" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda x, x_hat: ((x - x_hat) ** 2).mean(), "single number"),
    (lambda x, x_hat: (x - x_hat) ** 2, "one number per pixel"),
    (lambda x, x_hat: ((x - x_hat) ** 2).sum(dim=(2, 3)), r"\*all\* of"),
    (lambda x, x_hat: ((x - x_hat) ** 2).flatten(1).mean(1), "784 times too small"),
    (lambda x, x_hat: (x - x_hat).flatten(1).norm(dim=1), "square root"),
    (lambda x, x_hat: (x - x_hat).abs().flatten(1).sum(1), "absolute error"),
    (lambda x, x_hat: (x - x_hat).flatten(1).sum(1) ** 2, "squared the sum"),
    (lambda x, x_hat: 0.5 * ((x - x_hat) ** 2).flatten(1).sum(1), "half"),
    (lambda x, x_hat: ((x - x_hat.detach()) ** 2).flatten(1).sum(1), "gradients"),
    (lambda x, x_hat: torch.tensor(((x - x_hat) ** 2).flatten(1).sum(1).tolist()), "gradients"),
])
def test_reconstruction_error_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_reconstruction_error(fn)


# --- add_noise ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [
    lambda x, std: (x + std * torch.randn_like(x)).clamp(0, 1),
    lambda x, std: torch.clamp(x + torch.normal(0.0, 1.0, size=x.shape) * std, 0.0, 1.0),
    lambda x, std: (x + std * torch.randn(x.shape)).clip(min=0, max=1),
])
def test_add_noise_accepts_correct_versions(fn, capsys):
    checks.check_add_noise(fn)
    assert "\u2713 add_noise" in capsys.readouterr().out


def _in_place_noise(x, std):
    return x.add_(std * torch.randn_like(x)).clamp_(0, 1)


def _seeded(x, std):
    return (x + std * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


@pytest.mark.parametrize("fn, message", [
    (lambda x, std: x.clone(), "no noise"),
    (lambda x, std: (x + std * torch.rand_like(x)).clamp(0, 1), "not centred"),
    (lambda x, std: (x + std ** 2 * torch.randn_like(x)).clamp(0, 1), "variance"),
    (lambda x, std: (x + std ** 0.5 * torch.randn_like(x)).clamp(0, 1), "sqrt"),
    (lambda x, std: (x + 2 * std * torch.randn_like(x)).clamp(0, 1), "standard deviation 0.1"),
    (lambda x, std: (x + std * torch.randn(len(x), 1, 1, 1)).clamp(0, 1), "same noise"),
    (lambda x, std: (x + std * torch.randn(1, *x.shape[1:])).clamp(0, 1), "same noise pattern"),
    (_seeded, "identical"),
    (lambda x, std: x + std * torch.randn_like(x), "clip"),
    (_in_place_noise, "in place"),
    (lambda x, std: (x + std * torch.randn_like(x)).clamp(0, 1)[:, 0], "shape"),
])
def test_add_noise_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_add_noise(fn)


# --- the autoencoder model ------------------------------------------------------------------------


@pytest.mark.parametrize("latent_dim, hidden", [(2, (64,)), (30, (128, 64)), (8, ())])
def test_autoencoder_shapes_range_and_gradients(latent_dim, hidden):
    ae = models.Autoencoder(latent_dim, hidden)
    x = torch.rand(4, 1, 28, 28)
    z = ae.encode(x)
    assert z.shape == (4, latent_dim) and ae.latent_dim == latent_dim
    assert ae.decode(z).shape == (4, 1, 28, 28)
    x_hat = ae(x)
    assert x_hat.shape == x.shape and x_hat.min() >= 0 and x_hat.max() <= 1
    ((x_hat - x) ** 2).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in ae.parameters())


def test_autoencoder_rejects_bad_input():
    with pytest.raises(ValueError, match="latent_dim"):
        models.Autoencoder(0)
    with pytest.raises(ValueError, match=r"\(B, 1, 28, 28\)"):
        models.Autoencoder(2).encode(torch.rand(3, 28, 28))
