"""Notebook 06's measurement helpers in labsupport.metrics: GAN inversion, interpolation, probes, PNG size."""

import torch
from torch import nn

from labsupport import metrics, models


class _LinearGenerator(nn.Module):
    def __init__(self, latent_dim=3):
        super().__init__()
        self.latent_dim = latent_dim
        self.lin = nn.Linear(latent_dim, 784)

    def forward(self, z):
        return torch.sigmoid(self.lin(z)).view(-1, 1, 28, 28)


def test_invert_generator_recovers_the_code_and_freezes_the_generator():
    torch.manual_seed(0)
    G = _LinearGenerator()
    before = [p.detach().clone() for p in G.parameters()]
    z = torch.randn(5, 3)
    with torch.no_grad():
        x = G(z)
    z_hat, info = metrics.invert_generator(G, x, steps=300, lr=0.05, restarts=2)
    assert z_hat.shape == (5, 3)
    assert torch.allclose(z_hat, z, atol=1e-3)
    assert info["mse"][-1] < 1e-8 < info["mse"][0] and info["steps"] == 600 and info["seconds"] > 0
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_invert_generator_rejects_bad_shapes():
    import pytest

    with pytest.raises(ValueError, match="28, 28"):
        metrics.invert_generator(_LinearGenerator(), torch.rand(2, 784))


def test_interpolation_jumpiness_even_vs_jump():
    z0, z1 = torch.zeros(2, 1), torch.ones(2, 1)
    even = metrics.interpolation_jumpiness(lambda z: z.view(-1, 1, 1, 1).expand(-1, 1, 28, 28), z0, z1, steps=11)
    assert torch.allclose(even, torch.ones(2))
    step = metrics.interpolation_jumpiness(lambda z: (z > 0.5).float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28), z0, z1, steps=11)
    assert torch.allclose(step, torch.full((2,), 10.0))  # all change happens in one of the 10 steps


def test_linear_probe_separable_and_random():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(300) % 3
    z = torch.randn(300, 4, generator=g) * 0.1 + torch.eye(4)[y] * 5
    assert metrics.linear_probe_accuracy(z[:200], y[:200], z[200:], y[200:]) == 1.0
    noise = torch.randn(300, 4, generator=g)
    assert metrics.linear_probe_accuracy(noise[:200], y[:200], noise[200:], y[200:]) < 0.6


def test_generated_label_probe_on_a_decoder_that_encodes_the_sign():
    class SignClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):  # class 1 when the image is bright
            m = x.mean((1, 2, 3))
            return torch.stack([-m + 0.5, m - 0.5], 1) * 50

    decode = lambda z: (z[:, :1] > 0).float().view(-1, 1, 1, 1).expand(-1, 1, 28, 28)
    assert metrics.generated_label_probe(decode, 2, SignClassifier(), n=600) > 0.97


def test_png_bytes_blank_smaller_than_noise():
    sizes = metrics.png_bytes(torch.cat([torch.zeros(1, 1, 28, 28), torch.rand(1, 1, 28, 28)]))
    assert sizes.dtype == torch.int64 and sizes.shape == (2,)
    assert 50 < sizes[0] < 120 < 700 < sizes[1]


def test_frechet_distance_with_the_real_classifier_architecture_keeps_it_float32():
    clf = models.DigitClassifier().eval()
    a = torch.rand(64, 1, 28, 28)
    assert abs(metrics.frechet_distance(a, a, clf)) < 1e-3
    assert metrics.frechet_distance(a, a * 0.3, clf) > 0
    assert next(clf.parameters()).dtype == torch.float32


def test_linear_probe_with_one_class_predicts_it():
    z = torch.randn(20, 3)
    assert metrics.linear_probe_accuracy(z[:10], torch.full((10,), 8), z[10:], torch.tensor([8] * 5 + [1] * 5)) == 0.5
