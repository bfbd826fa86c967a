"""The k-nearest-neighbour density behind notebook 06's anomaly detector: it is a real density estimate."""

import math

import pytest
import torch

from labsupport import metrics


def gaussian_nll(x: torch.Tensor) -> torch.Tensor:
    """-log N(x; 0, I) in nats, per row of ``x: (M, D)``."""
    return 0.5 * x.pow(2).sum(1) + 0.5 * x.shape[1] * math.log(2 * math.pi)


def test_matches_a_known_density():
    # 20 000 draws of a 2-D standard normal: near the centre the estimate must agree with the true -log density
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(20_000, 2, generator=g)
    queries = torch.randn(500, 2, generator=g).clamp(-1.5, 1.5)
    est = metrics.knn_neg_log_density(reference, queries, k=20, standardize=False)
    err = est - gaussian_nll(queries)
    assert err.mean().abs() < 0.1 and err.abs().median() < 0.2, (err.mean(), err.abs().median())


def test_far_points_are_less_likely():
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(5000, 5, generator=g)
    radii = torch.tensor([0.0, 1.0, 2.0, 4.0, 8.0])
    queries = radii[:, None] * torch.ones(1, 5) / math.sqrt(5)  # same direction, growing distance from the mode
    est = metrics.knn_neg_log_density(reference, queries, k=5)
    assert (est.diff() > 0).all(), est


def test_standardize_is_a_change_of_variables():
    # stretching one coordinate by c divides the density by c: -log p rises by log c, exactly, when distances are standardized
    g = torch.Generator().manual_seed(2)
    reference, queries = torch.randn(3000, 3, generator=g, dtype=torch.float64), torch.randn(50, 3, generator=g, dtype=torch.float64)
    stretch = torch.tensor([1.0, 10.0, 1.0], dtype=torch.float64)
    a = metrics.knn_neg_log_density(reference, queries, k=5)
    b = metrics.knn_neg_log_density(reference * stretch, queries * stretch, k=5)
    torch.testing.assert_close(b - a, torch.full_like(a, math.log(10.0)))
    # without standardization the stretched coordinate dominates the distances and the neighbours change
    c = metrics.knn_neg_log_density(reference * stretch, queries * stretch, k=5, standardize=False)
    assert not torch.allclose(c - a, torch.full_like(a, math.log(10.0)), atol=1e-3)


def test_batches_do_not_matter_and_k_is_checked():
    g = torch.Generator().manual_seed(3)
    reference, queries = torch.randn(400, 4, generator=g), torch.randn(37, 4, generator=g)
    torch.testing.assert_close(metrics.knn_neg_log_density(reference, queries, batch_size=5),
                               metrics.knn_neg_log_density(reference, queries, batch_size=1000))
    assert metrics.knn_neg_log_density(reference, queries).shape == (37,)
    with pytest.raises(ValueError):
        metrics.knn_neg_log_density(reference, queries, k=401)
