"""Kingma et al. (2014)'s M2 (`SemiSupervisedVAE`), its losses and its training loop (`train_semisupervised`)."""

import math

import pytest
import torch

import labsupport.models as models
from labsupport.losses import gaussian_nll, marginal_over_labels
from labsupport.models import SemiSupervisedVAE
from labsupport.train import train_semisupervised


def test_gaussian_nll_is_the_diagonal_normals_log_density():
    g = torch.Generator().manual_seed(0)
    x, mu, logvar = (torch.randn(5, 7, generator=g) for _ in range(3))
    expected = -torch.distributions.Normal(mu, (0.5 * logvar).exp()).log_prob(x).sum(-1)
    assert torch.allclose(gaussian_nll(x, mu, logvar), expected, atol=1e-5)


def test_the_marginal_is_the_expected_loss_minus_the_entropy():
    g = torch.Generator().manual_seed(1)
    labelled, logits = torch.randn(6, 4, generator=g) * 3, torch.randn(6, 4, generator=g)
    q = logits.softmax(-1)
    entropy = -(q * q.log()).sum(-1)
    assert torch.allclose(marginal_over_labels(labelled, logits), (q * labelled).sum(-1) - entropy, atol=1e-5)
    # the best q is the posterior q(y) ∝ exp(-L(x, y)); there the bound is -log sum_y exp(-L(x, y)), lower than any other q
    best = marginal_over_labels(labelled, -labelled)
    assert torch.allclose(best, -torch.logsumexp(-labelled, -1), atol=1e-5)
    assert (marginal_over_labels(labelled, logits) >= best - 1e-5).all()
    # one label with certainty: no entropy left, the loss of that label
    sure = torch.full((6, 4), -1e4).scatter(1, torch.zeros(6, 1, dtype=torch.long), 0.0)
    assert torch.allclose(marginal_over_labels(labelled, sure), labelled[:, 0], atol=1e-4)


def test_shapes():
    m = SemiSupervisedVAE(x_dim=12, z_dim=3, num_classes=5, hidden=16)
    x, y = torch.randn(7, 12), torch.randint(5, (7,))
    assert m.classify(x).shape == (7, 5)
    mu, logvar = m.encode(x, m.onehot(y))
    assert mu.shape == logvar.shape == (7, 3)
    x_mu, x_logvar = m.decode(mu, m.onehot(y))
    assert x_mu.shape == x_logvar.shape == (7, 12)
    assert m.labelled_loss(x, y).shape == (7,)
    u, logits = m.unlabelled_loss(x)
    assert u.shape == (7,) and logits.shape == (7, 5)


def test_the_unlabelled_loss_sums_each_labels_loss_weighted_by_the_classifier(monkeypatch):
    # z = mu makes the one-sample ELBO deterministic, so the batched (B * K rows) version can be compared with K separate calls
    monkeypatch.setattr(models, "reparameterize", lambda mu, logvar: mu)
    torch.manual_seed(0)
    m = SemiSupervisedVAE(x_dim=6, z_dim=2, num_classes=3, hidden=8)
    x = torch.randn(4, 6)
    per_label = torch.stack([m.labelled_loss(x, torch.full((4,), k)) for k in range(3)], 1)  # (B, K)
    q = m.classify(x).softmax(-1)
    expected = (q * per_label).sum(-1) + (q * q.log()).sum(-1)
    u, _ = m.unlabelled_loss(x)
    assert torch.allclose(u, expected, atol=1e-5)
    assert torch.allclose(per_label[:, 1], m.labelled_loss(x, torch.ones(4, dtype=torch.long)))
    # -log p(y) of the uniform prior is part of every labelled loss
    m2 = SemiSupervisedVAE(x_dim=6, z_dim=2, num_classes=3, hidden=8)
    m2.load_state_dict(m.state_dict())
    y = torch.zeros(4, dtype=torch.long)
    mu, logvar = m2.encode(x, m2.onehot(y))
    x_mu, x_logvar = m2.decode(mu, m2.onehot(y))
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(-1)
    assert torch.allclose(m2.labelled_loss(x, y), gaussian_nll(x, x_mu, x_logvar) + kl + math.log(3), atol=1e-5)


@pytest.mark.parametrize("linear_decoder", [True, False])
def test_gradients_reach_every_part_from_the_unlabelled_loss_and_not_the_classifier_from_the_labelled_one(linear_decoder):
    torch.manual_seed(0)
    m = SemiSupervisedVAE(x_dim=6, z_dim=2, num_classes=3, hidden=8, linear_decoder=linear_decoder)
    x = torch.randn(5, 6)
    m.unlabelled_loss(x)[0].mean().backward()
    decoder = [m.weight, m.bias, m.log_scale] if linear_decoder else list(m.decoder.parameters())
    for params in (list(m.classifier.parameters()), list(m.encoder.parameters()), decoder):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    m.zero_grad(set_to_none=True)
    m.labelled_loss(x, torch.zeros(5, dtype=torch.long)).mean().backward()
    assert all(p.grad is None for p in m.classifier.parameters())  # y is given: q(y|x) is not in L(x, y)
    assert all(p.grad is not None for p in m.encoder.parameters())


def _clusters(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four Gaussian clusters in 8-D, class = cluster: ``(n, 8)``, ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(4, 8, generator=torch.Generator().manual_seed(123)) * 2.5
    y = torch.randint(4, (n,), generator=g)
    return centres[y] + 0.5 * torch.randn(n, 8, generator=g), y


def test_a_short_run_learns_from_one_label_per_class():
    torch.set_num_threads(1)  # tiny matrices: extra threads only contend on a shared machine (conftest restores the count)
    torch.manual_seed(0)
    x_u, _ = _clusters(2000, seed=0)
    x_test, y_test = _clusters(1000, seed=1)
    x_l, y_l = _clusters(200, seed=2)
    first = torch.stack([torch.nonzero(y_l == k)[0, 0] for k in range(4)])  # one labelled example per class
    m = SemiSupervisedVAE(x_dim=8, z_dim=2, num_classes=4, hidden=32)
    before = (m.classify(x_test).argmax(1) == y_test).float().mean().item()
    hist = train_semisupervised(m, x_u, x_l[first], y_l[first], steps=60, batch_size=32, alpha=1.0, lr=1e-2, seed=0)
    after = (m.classify(x_test).argmax(1) == y_test).float().mean().item()
    assert len(hist["loss"]) == 60 and hist["unlabelled"][-1] < hist["unlabelled"][0]
    assert after >= 0.9 > before + 0.2, (before, after)
    assert not m.training  # handed back in eval mode


def test_sampled_inputs_need_both_spreads_and_train():
    torch.set_num_threads(1)
    m = SemiSupervisedVAE(x_dim=4, z_dim=2, num_classes=2, hidden=8)
    x, xl, yl = torch.randn(50, 4), torch.randn(2, 4), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="both"):
        train_semisupervised(m, x, xl, yl, steps=2, unlabelled_std=torch.ones(50, 4))
    hist = train_semisupervised(m, x, xl, yl, steps=3, batch_size=8, unlabelled_std=0.1 * torch.ones(50, 4), labelled_std=0.1 * torch.ones(2, 4))
    assert len(hist["step"]) == 3 and all(math.isfinite(v) for v in hist["loss"])


def test_semisupervised_em_labels_the_clusters_and_checks_its_input():
    """Two well-separated 2D blobs, one label each: EM finds both Gaussians and names them by the labels."""
    from labsupport.models import fit_semisupervised_gmm

    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-3.0, 0.0], [3.0, 1.0]])
    y = torch.arange(2).repeat_interleave(200)
    x = centres[y] + 0.5 * torch.randn(400, 2, generator=g)
    gmm = fit_semisupervised_gmm(x, x[[0, 200]], y[[0, 200]], num_classes=2, unlabelled_weight=1.0, iters=30)
    assert (gmm.classify(x).argmax(1) == y).float().mean() > 0.99
    assert torch.allclose(gmm.means.float(), centres, atol=0.2), gmm.means
    assert torch.allclose(gmm.log_prior.exp(), torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.02)
    with pytest.raises(ValueError, match="none for \\[1\\]"):
        fit_semisupervised_gmm(x, x[:2], y[:2], num_classes=2)


def test_semisupervised_em_stops_once_the_means_settle_and_that_changes_little():
    """``tol``: the early stop ends well before ``iters`` and lands close to the full run; ``tol=0`` runs every step."""
    from labsupport.models import fit_semisupervised_gmm

    g = torch.Generator().manual_seed(0)
    y = torch.arange(3).repeat_interleave(300)
    x = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.5]])[y] + 0.8 * torch.randn(900, 2, generator=g)
    few = torch.tensor([0, 300, 600])
    full = fit_semisupervised_gmm(x, x[few], y[few], num_classes=3, unlabelled_weight=1.0, iters=200, tol=0.0)
    early = fit_semisupervised_gmm(x, x[few], y[few], num_classes=3, unlabelled_weight=1.0, iters=200, tol=1e-3)
    assert full.n_iter == 200
    assert 1 < early.n_iter < 200, early.n_iter
    assert (early.means - full.means).abs().max() < 0.05, (early.means, full.means)
