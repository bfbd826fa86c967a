"""labsupport.debias: the biased training set, the DB-VAE's resampling weights, its training loop and the per-group measurement."""

import pytest
import torch

from labsupport import data, debias


def _codes(n: int = 500, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_weights_are_probabilities_one_per_example():
    w = debias.resampling_weights(_codes())
    assert w.shape == (500,) and w.dtype == torch.float64
    assert (w > 0).all() and abs(w.sum().item() - 1) < 1e-12


def test_weights_on_a_hand_computed_case():
    # one dimension, 4 codes, 2 bins [0, 0.5), [0.5, 1]: shares 3/4 and 1/4
    mu = torch.tensor([[0.0], [0.1], [0.2], [1.0]])
    w = debias.resampling_weights(mu, bins=2, smoothing=0.0, alpha=1.0)
    raw = torch.tensor([4 / 3, 4 / 3, 4 / 3, 4.0], dtype=torch.float64)
    assert torch.allclose(w, raw / raw.sum())
    w2 = debias.resampling_weights(mu, bins=2, smoothing=0.25, alpha=2.0)
    raw2 = torch.tensor([1.0, 1.0, 1.0, 4.0], dtype=torch.float64)  # (3/4 + 1/4)^-2 and (1/4 + 1/4)^-2
    assert torch.allclose(w2, raw2 / raw2.sum())


def test_the_rare_get_more_weight_and_alpha_sharpens_it():
    mu = _codes()
    mu[:5] += 6.0  # five codes far from the rest in every dimension
    w1 = debias.resampling_weights(mu, alpha=1.0)
    w0 = debias.resampling_weights(mu, alpha=0.0)
    w2 = debias.resampling_weights(mu, alpha=2.0)
    assert torch.allclose(w0, torch.full_like(w0, 1 / len(mu)))  # alpha = 0: no debiasing at all
    assert w1[:5].min() > 10 * w1[5:].median()
    assert w2[:5].sum() > w1[:5].sum()


def test_weights_ignore_order_scale_and_shift_of_the_codes():
    mu = _codes()
    w = debias.resampling_weights(mu)
    perm = torch.randperm(len(mu), generator=torch.Generator().manual_seed(3))
    assert torch.allclose(debias.resampling_weights(mu[perm]), w[perm])
    assert torch.allclose(debias.resampling_weights(3 * mu + 5), w)


def test_smoothing_caps_what_one_example_can_take():
    mu = _codes(1000, 2)
    mu[0] = 50.0  # alone in its bins
    loose = debias.resampling_weights(mu, smoothing=0.0)
    smooth = debias.resampling_weights(mu, smoothing=0.05)
    assert loose[0] > 0.2 and smooth[0] < 0.02


def test_a_constant_dimension_does_not_break_the_weights():
    mu = _codes()
    mu[:, 1] = 0.7
    w = debias.resampling_weights(mu)
    assert torch.isfinite(w).all() and abs(w.sum().item() - 1) < 1e-12


def test_biased_mnist_inverts_a_share_and_keeps_labels():
    x, y = torch.rand(5000, 1, 28, 28), torch.randint(10, (5000,))
    xb, yb, rare = debias.biased_mnist(x, y, share=0.02, seed=1)
    assert 0.01 < rare.double().mean().item() < 0.03
    assert torch.equal(xb[rare], 1 - x[rare]) and torch.equal(xb[~rare], x[~rare]) and torch.equal(yb, y)
    assert torch.equal(debias.biased_mnist(x, y, share=0.02, seed=1)[2], rare)


def test_model_shapes():
    m = debias.DebiasingVAE(latent_dim=6, hidden=32)
    logits, mu, logvar = m(torch.rand(3, 1, 28, 28))
    assert logits.shape == (3, 10) and mu.shape == logvar.shape == (3, 6)
    assert m.decode(mu).shape == (3, 784)


@pytest.fixture(scope="module")
def mnist_small():
    x, y = data.mnist_tensors(train=True, n=2000)
    xt, yt = data.mnist_tensors(train=False, n=300)
    return x, y, xt, yt


def test_debiased_training_draws_the_rare_group_more_often(mnist_small):
    x, y, xt, yt = mnist_small
    runs = debias.compare(x, y, xt, yt, seeds=[0], epochs=1, share=0.02)
    base, deb = runs
    assert base["method"] == "baseline" and deb["method"] == "debiased"
    assert base["history"]["weights"][-1] is None
    assert abs(base["rare_seen"] - base["rare_train"]) < 1e-12  # a shuffle draws every digit once
    assert deb["rare_seen"] > 2 * deb["rare_train"]
    for r in runs:
        assert 0 <= r["worst"] <= r["average"] <= 1 and r["worst"] == min(r["common"], r["rare"])
    s = debias.summary(runs)
    assert s["gain"]["worst"][0] == pytest.approx(100 * (deb["worst"] - base["worst"]))


def test_training_uses_the_weights_function_it_is_given(mnist_small):
    x, y, _, _ = mnist_small
    calls = []

    def only_the_first(mu):
        calls.append(mu.shape)
        w = torch.zeros(len(mu), dtype=torch.float64)
        w[0] = 1.0
        return w

    hist = debias.train_debiasing(debias.DebiasingVAE(4, 32), x[:300], y[:300], weights_fn=only_the_first, epochs=2)
    assert calls == [(300, 4), (300, 4)]
    assert all((d == 0).all() for d in hist["drawn"])


def test_training_uses_the_loss_it_is_given(mnist_small):
    """Notebook 06 trains with the student's db_vae_loss: train_debiasing must step on the loss it is given, and the
    default is the reference."""
    x, y, _, _ = mnist_small
    seen = []

    def recording(model, xb, yb, vae_weight):
        seen.append((len(xb), vae_weight))
        return debias.reference_loss(model, xb, yb, vae_weight)

    torch.manual_seed(0)
    hist = debias.train_debiasing(debias.DebiasingVAE(4, 32), x[:256], y[:256], epochs=1, batch_size=128, loss_fn=recording, vae_weight=0.5)
    torch.manual_seed(0)
    default = debias.train_debiasing(debias.DebiasingVAE(4, 32), x[:256], y[:256], epochs=1, batch_size=128, vae_weight=0.5)
    assert seen == [(128, 0.5), (128, 0.5)]
    assert hist["loss"] == default["loss"]
