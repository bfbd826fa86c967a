"""Notebook 03's shared pieces: train_vae / losses.vae_objective, the VAE models, evaluate_vae, the shipped VAEs."""

import pytest
import torch
import torch.nn.functional as F

from labsupport import config, data, losses, metrics, models, pretrained, train


@pytest.fixture(scope="module")
def digits(mnist_available):
    x, _ = data.mnist_tensors(train=True, n=1500, seed=1)
    return x


@pytest.mark.parametrize("build", [lambda: models.MLPVAE(8, 64), lambda: models.ConvVAE(8, 8)])
def test_vae_contract(build):
    vae = build()
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (3, vae.latent_dim)
    assert vae.decode(mu).shape == (3, 1, 28, 28)


class _Fixed(torch.nn.Module):
    """A 'VAE' with a near-zero posterior variance, so one sample of z equals mu: the loss is deterministic."""

    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(2, 784)

    def encode(self, x):
        mu = x.flatten(1)[:, :2] + 0.5
        return mu, torch.full_like(mu, -40.0)

    def decode(self, z):
        return self.lin(z).view(-1, 1, 28, 28)


def test_vae_objective_is_bernoulli_nll_summed_plus_kl():
    torch.manual_seed(0)
    vae, x = _Fixed(), torch.bernoulli(torch.full((4, 1, 28, 28), 0.3))
    loss, logs = losses.vae_objective(vae, x, beta=1.0)
    mu, logvar = vae.encode(x)
    rec = F.binary_cross_entropy_with_logits(vae.decode(mu), x, reduction="sum") / 4
    kl = (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)).mean()
    assert torch.allclose(loss, rec + kl, rtol=1e-4)
    assert logs["rec"] == pytest.approx(rec.item(), rel=1e-4) and logs["kl"] == pytest.approx(kl.item(), rel=1e-4)
    loss3, _ = losses.vae_objective(vae, x, beta=3.0)
    assert torch.allclose(loss3, rec + 3 * kl, rtol=1e-4)


def test_train_vae_lowers_the_negative_elbo(digits):
    config.seed_everything(0)
    vae = models.MLPVAE(16, 128)
    held_out = metrics.binarized_test_set(500)
    before = metrics.dataset_negative_elbo(vae, held_out)
    hist = train.train_vae(vae, digits, epochs=4, seed=0, lr_decay=True)
    after = metrics.dataset_negative_elbo(vae, held_out)
    assert before > 500 and after < 230, (before, after)  # an untrained decoder gives about 543 nats (784 ln 2)
    assert {"loss", "rec", "kl", "step", "seconds"} <= set(hist) and len(hist["loss"]) == 4 * 12
    assert sum(hist["loss"][-5:]) < sum(hist["loss"][:5])
    assert not vae.training


def test_train_vae_takes_the_students_loss_and_checks_its_inputs(digits):
    seen = []

    def my_loss(model, x):
        seen.append(set(x.unique().tolist()))  # every batch is binarized
        mu, logvar = model.encode(x)
        x_logits = model.decode(mu + (0.5 * logvar).exp() * torch.randn_like(mu))
        rec = F.binary_cross_entropy_with_logits(x_logits, x, reduction="none").flatten(1).sum(1)
        return (rec + 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)).mean()

    hist = train.train_vae(models.MLPVAE(4, 32), digits[:256], epochs=1, batch_loss=my_loss)
    assert len(hist["loss"]) == 2 and all(s <= {0.0, 1.0} for s in seen)
    with pytest.raises(ValueError, match="beta"):
        train.train_vae(models.MLPVAE(4, 32), digits[:256], epochs=1, batch_loss=my_loss, beta=2.0)
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        train.train_vae(models.MLPVAE(4, 32), digits[:256].flatten(1), epochs=1)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        train.train_vae(models.MLPVAE(4, 32), digits[:256] * 255, epochs=1)


def test_train_vae_respects_the_time_budget(digits):
    hist = train.train_vae(models.MLPVAE(4, 32), digits, max_seconds=0.5, lr_decay=True)
    assert 0.5 <= hist["seconds"][-1] < 3 and len(hist["loss"]) < 10**4


def test_evaluate_vae_repeats_and_iw_is_tighter(digits):
    config.seed_everything(0)
    vae = models.MLPVAE(8, 64)
    train.train_vae(vae, digits, epochs=2, seed=0)
    a = metrics.evaluate_vae(vae, n_elbo=300, n_iw=30, k=50)
    b = metrics.evaluate_vae(vae, n_elbo=300, n_iw=30, k=50)
    assert a == b
    x = metrics.binarized_test_set(30)
    torch.manual_seed(0)
    elbo = metrics.dataset_negative_elbo(vae, x)
    assert a["test_iw_nll"] < elbo  # the importance-weighted bound is tighter than the ELBO


@pytest.mark.parametrize("name, latent_dim, max_nll", [("vae", 32, 100.0), ("vae2d", 2, 160.0)])
def test_shipped_vaes_load_and_are_good(name, latent_dim, max_nll, mnist_available):
    vae = pretrained.load(name)
    assert vae.latent_dim == latent_dim
    assert pretrained.path_of(name).stat().st_size < 2_500_000
    torch.manual_seed(0)
    nll = metrics.importance_weighted_nll(vae, metrics.binarized_test_set(100), k=100).mean().item()
    assert nll < max_nll, f"{name}: IW-NLL {nll:.1f} nats"
    recorded = pretrained.manifest()[name]["metrics"]
    assert recorded["test_iw_nll"] <= recorded["test_neg_elbo"] and recorded["iw_k"] >= 1000
