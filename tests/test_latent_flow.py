"""labsupport.latent_flow: the velocity MLP's shapes, encoding and decoding through a VAE, training that learns, seeded sampling."""

import pytest
import torch

from labsupport import flow
from labsupport import latent_flow as lf
from labsupport.models import MLPVAE


def test_velocity_maps_codes_to_codes_with_or_without_labels():
    v = lf.LatentVelocity(latent_dim=6, num_classes=10, hidden=32, depth=2, emb_dim=8)
    z, t = torch.randn(5, 6), torch.rand(5)
    labelled, unlabelled = v(z, t, torch.arange(5)), v(z, t)
    assert labelled.shape == unlabelled.shape == (5, 6)
    assert torch.allclose(unlabelled, v(z, t, torch.full((5,), 10)))  # no label = the extra label row, as guidance needs
    assert lf.LatentVelocity(latent_dim=6, num_classes=None, hidden=32)(z, t).shape == (5, 6)


def test_encode_and_decode_go_through_the_vae():
    torch.manual_seed(0)
    vae = MLPVAE(latent_dim=4, hidden=16).eval()
    x = torch.rand(7, 1, 28, 28)
    mu = lf.encode(vae, x, batch_size=3)  # batches give the same codes as one call
    assert mu.shape == (7, 4) and torch.allclose(mu, vae.encode(x)[0].detach(), atol=1e-6)
    drawn = lf.encode(vae, x, sample=True, seed=1)
    assert torch.equal(drawn, lf.encode(vae, x, sample=True, seed=1)) and not torch.allclose(drawn, mu)
    images = lf.decode(vae, mu, batch_size=3)
    assert images.shape == (7, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    assert torch.allclose(images, torch.sigmoid(vae.decode(mu)).detach(), atol=1e-6)


def _two_point_codes(n: int = 2048) -> tuple[torch.Tensor, torch.Tensor]:
    """A toy code set: class 0 at (2, 0, ...), class 1 at (-2, 0, ...), a little spread."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    centres = torch.zeros(2, 4)
    centres[:, 0] = torch.tensor([2.0, -2.0])
    return centres[y] + 0.1 * torch.randn(n, 4, generator=g), y


def test_training_lowers_the_loss_and_the_samples_reach_their_class():
    z, y = _two_point_codes()
    torch.manual_seed(0)
    model = lf.LatentVelocity(latent_dim=4, num_classes=2, hidden=64, depth=2, emb_dim=16)
    torch.manual_seed(1)
    before = flow.loss(model, z, y).item()
    hist, ema = lf.train_latent_flow(model, z, y, steps=400, batch_size=128, lr=3e-3, ema_decay=0.99, seed=0, device="cpu")
    assert len(hist["loss"]) == 400 and not ema.training
    torch.manual_seed(1)
    after = flow.loss(ema, z, y).item()
    assert after < 0.5 * before, (before, after)
    labels = torch.tensor([0, 1]).repeat(50)
    codes = lf.sample_codes(ema, 100, steps=10, method="heun", y=labels, guidance=1.0, num_classes=2, seed=0)
    assert codes.shape == (100, 4)
    side = torch.where(labels == 0, 1.0, -1.0)
    assert (codes[:, 0] * side > 1).float().mean() > 0.9  # each class lands on its own side


def test_training_needs_an_end():
    z, y = _two_point_codes(64)
    with pytest.raises(ValueError, match="steps or max_seconds"):
        lf.train_latent_flow(lf.LatentVelocity(latent_dim=4, num_classes=2, hidden=8), z, y)


def test_sampling_is_determined_by_its_seed_and_leaves_the_global_generator_alone():
    torch.manual_seed(0)
    model = lf.LatentVelocity(latent_dim=3, num_classes=10, hidden=16, depth=2, emb_dim=8)
    vae = MLPVAE(latent_dim=3, hidden=16)
    y = torch.arange(10)
    state = torch.get_rng_state()
    a = lf.generate(model, vae, 10, steps=2, y=y, guidance=0.5, seed=3, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    b = lf.generate(model, vae, 10, steps=2, y=y, guidance=0.5, seed=3)
    c = lf.generate(model, vae, 10, steps=2, y=y, guidance=0.5, seed=4)
    assert a.shape == (10, 1, 28, 28) and torch.allclose(a, b, atol=1e-6) and not torch.allclose(a, c)
    assert model.training  # sampling puts the model back in the mode it found it in


def test_training_is_determined_by_its_seed():
    z, y = _two_point_codes(512)

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        model = lf.LatentVelocity(latent_dim=4, num_classes=2, hidden=16, depth=2, emb_dim=8)
        return lf.train_latent_flow(model, z, y, steps=20, batch_size=64, seed=0, device="cpu")[1].net[0].weight.detach().clone()

    assert torch.equal(run(), run())
