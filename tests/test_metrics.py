import math

import pytest
import torch

from labsupport import data, metrics, pretrained
from labsupport.models import MLPVAE


def test_mode_coverage_protocol():
    centers = data.ring_centers(8)
    x, _ = data.ring_of_gaussians(2500, std=0.01, seed=0)
    r = metrics.mode_coverage(x, centers, std=0.01)
    assert r.modes == 8 and r.high_quality > 0.98 and r.reverse_kl < 0.01
    collapsed = centers[[0, 1]].repeat(500, 1) + 0.01 * torch.randn(1000, 2)
    r = metrics.mode_coverage(collapsed, centers, std=0.01)
    assert r.modes == 2 and abs(r.reverse_kl - math.log(4)) < 0.01
    between = torch.zeros(100, 2)  # the centre of the ring is far from every mode
    r = metrics.mode_coverage(between, centers, std=0.01)
    assert r.modes == 0 and r.high_quality == 0


class _Oracle(torch.nn.Module):
    """A fake classifier: 'predicts' the mean pixel bucket, to test the scores without MNIST."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def features(self, x):
        return torch.stack([x.mean((1, 2, 3)), x.std((1, 2, 3)), x[:, :, :14].mean((1, 2, 3))], 1) * 10

    def forward(self, x):
        k = (x.mean((1, 2, 3)) * 10).long().clamp(0, 9)
        return torch.nn.functional.one_hot(k, 10).float() * 50


def test_inception_score_bounds():
    clf = _Oracle()
    levels = torch.arange(10).repeat_interleave(100).float() / 10 + 0.05
    diverse = levels[:, None, None, None].expand(-1, 1, 28, 28).contiguous()
    assert metrics.inception_score(diverse, clf, splits=1)[0] == pytest.approx(10, rel=1e-4)
    assert 9 < metrics.inception_score(diverse, clf, splits=10)[0] < 10  # splits of 100 are not exactly balanced
    same = torch.full((1000, 1, 28, 28), 0.55)
    assert metrics.inception_score(same, clf)[0] == pytest.approx(1, rel=1e-3)


def test_frechet_distance_zero_for_same_and_positive_for_shifted():
    clf = _Oracle()
    a = torch.rand(400, 1, 28, 28)
    assert metrics.frechet_distance(a, a, clf) == pytest.approx(0, abs=1e-3)
    assert metrics.frechet_distance(a, (a * 0.5), clf) > 1


def test_frechet_distance_is_the_closed_form_on_the_classifiers_features():
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) on the features, computed here in float64 with scipy."""
    import numpy as np
    from scipy import linalg

    clf = _Oracle()
    a, b = torch.rand(300, 1, 28, 28), torch.rand(200, 1, 28, 28) * 0.7 + 0.1
    fa, fb = (clf.features(x).double().numpy() for x in (a, b))
    ca, cb = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    expected = ((fa.mean(0) - fb.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * linalg.sqrtm(ca @ cb).real)
    assert metrics.frechet_distance(a, b, clf, batch_size=128) == pytest.approx(expected, rel=1e-4)


def test_iw_nll_is_tighter_than_elbo_and_finite():
    torch.manual_seed(0)
    vae = MLPVAE(latent_dim=4, hidden=32)
    x = (torch.rand(6, 1, 28, 28) > 0.5).float()
    nll1 = metrics.importance_weighted_nll(vae, x, k=1).mean()
    nll = metrics.importance_weighted_nll(vae, x, k=500, batch=300)
    assert nll.shape == (6,) and torch.isfinite(nll).all()
    assert nll.mean() < nll1
    assert abs(metrics.dataset_negative_elbo(vae, x) - nll1.item()) < 30  # both single-sample bounds of the same quantity
    assert nll.mean() > 0


def test_shipped_classifier_is_accurate(mnist_available):
    clf = pretrained.load("classifier")
    x, y = data.mnist_tensors(train=False, n=2000)
    assert metrics.accuracy(clf, x, y) >= 0.985
    feats = clf.features(x[:8])
    assert feats.shape == (8, 128)
    mean, _ = metrics.inception_score(x, clf)
    assert mean > 9.0, "real digits should score close to 10"


def test_report_hands_numbers_to_the_bench(tmp_path, monkeypatch):
    import json

    monkeypatch.delenv("LABSUPPORT_REPORT", raising=False)
    metrics.report("ignored", 1.0)  # no file named: a no-op
    f = tmp_path / "r.jsonl"
    monkeypatch.setenv("LABSUPPORT_REPORT", str(f))
    metrics.report("AUROC", 0.75)
    metrics.report("accuracy", 93.0, "%")
    rows = [json.loads(line) for line in f.read_text().splitlines()]
    assert rows == [{"name": "AUROC", "value": 0.75, "unit": ""}, {"name": "accuracy", "value": 93.0, "unit": "%"}]


def test_unclear_fraction_counts_rows_whose_top_probability_is_under_the_threshold():
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.1, 0.9], [0.3, 0.7]])
    assert metrics.unclear_fraction(probs) == 0.5  # 0.9 itself is not under 0.9
    assert metrics.unclear_fraction(probs, below=0.6) == 0.25
    with pytest.raises(ValueError, match="shape"):
        metrics.unclear_fraction(torch.tensor([0.5, 0.5]))
