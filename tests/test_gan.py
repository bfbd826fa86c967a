"""The GAN training loop and the mode-coverage machinery of notebook 04."""

import pytest
import torch
from torch import nn

from labsupport import data, models
from labsupport.config import seed_everything
from labsupport.losses import gan_d_loss, gan_g_loss
from labsupport.metrics import ModeTracker
from labsupport.train import batch_sampler, train_gan


def test_losses_match_closed_forms():
    r, f = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    want_d = -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean()
    assert torch.allclose(gan_d_loss(r, f), want_d)
    assert torch.allclose(gan_g_loss(f), -torch.log(torch.sigmoid(f)).mean())
    # at the equilibrium D = 1/2 everywhere: L_D = 2 log 2, L_G = log 2
    z = torch.zeros(5)
    assert torch.allclose(gan_d_loss(z, z), 2 * torch.log(torch.tensor(2.0)))


def test_2d_gan_moves_samples_toward_the_data():
    seed_everything(0)
    real = torch.tensor([3.0, -2.0]) + 0.1 * torch.randn(4000, 2)
    G, D = models.MLP2D(2, 2, hidden=32, depth=2), models.MLP2D(2, 1, hidden=32, depth=2)
    z = torch.randn(500, 2)
    with torch.no_grad():
        before = (G(z).mean(0) - real.mean(0)).norm().item()
    hist = train_gan(G, D, batch_sampler(real), steps=300, batch_size=64, lr_g=2e-3, lr_d=2e-3, device="cpu")
    with torch.no_grad():
        after = (G(z).mean(0) - real.mean(0)).norm().item()
    assert after < 0.25 * before, (before, after)
    assert set(hist) >= {"step", "d_loss", "g_loss", "d_real", "d_fake", "seconds"}
    assert len(hist["d_loss"]) == 300 and hist["step"][-1] == 300
    assert not G.training and not D.training


class _Counting(nn.Module):
    """Wraps a module and counts its forward calls (and remembers whether labels came along)."""

    def __init__(self, net, latent_dim=None):
        super().__init__()
        self.net, self.calls, self.with_labels = net, 0, 0
        if latent_dim is not None:
            self.latent_dim = latent_dim

    def forward(self, x, y=None):
        self.calls += 1
        self.with_labels += y is not None
        return self.net(x if y is None else x + y[:, None].float())


def test_d_steps_and_conditional_batches():
    x, y = torch.randn(256, 2), torch.randint(0, 3, (256,))
    G = _Counting(models.MLP2D(2, 2, hidden=8, depth=1), latent_dim=2)
    D = _Counting(models.MLP2D(2, 1, hidden=8, depth=1))
    train_gan(G, D, batch_sampler(x, y), steps=4, d_steps=3, batch_size=16, device="cpu")
    assert D.calls == 4 * (3 * 2 + 1)  # per iteration: real + fake for each D step, then one for the G step
    assert G.calls == 4 * (3 + 1)
    assert D.with_labels == D.calls and G.with_labels == G.calls


def test_a_custom_step_gets_only_the_arguments_it_declares():
    """Notebook 04's gan_step takes no y and no d_penalty: train_gan calls a step with the keywords it declares, and says
    so when the training needs one the step does not take (labels, a penalty, several D steps)."""
    from labsupport.train import gan_step

    seen = []

    def student_step(G, D, opt_g, opt_d, x_real, z, *, d_loss, g_loss, update_g=True):
        seen.append(update_g)
        return gan_step(G, D, opt_g, opt_d, x_real, z, d_loss=d_loss, g_loss=g_loss, update_g=update_g)

    def bare_step(G, D, opt_g, opt_d, x_real, z):
        return gan_step(G, D, opt_g, opt_d, x_real, z)

    G, D = models.MLP2D(2, 2, hidden=8, depth=1), models.MLP2D(2, 1, hidden=8, depth=1)
    x, y = torch.randn(100, 2), torch.randint(0, 3, (100,))
    train_gan(G, D, batch_sampler(x), steps=2, d_steps=2, batch_size=8, device="cpu", step=student_step)
    assert seen == [False, True, False, True]
    train_gan(G, D, batch_sampler(x), steps=1, batch_size=8, device="cpu", step=bare_step)
    with pytest.raises(TypeError, match="takes no y"):
        train_gan(G, D, batch_sampler(x, y), steps=1, batch_size=8, device="cpu", step=student_step)
    with pytest.raises(TypeError, match="d_penalty"):
        train_gan(G, D, batch_sampler(x), steps=1, batch_size=8, device="cpu", step=student_step, d_penalty=lambda D, x, f, y: 0.0)
    with pytest.raises(TypeError, match="update_g"):
        train_gan(G, D, batch_sampler(x), steps=1, d_steps=2, batch_size=8, device="cpu", step=bare_step)


def test_discriminator_step_leaves_generator_alone():
    G, D = models.MLP2D(2, 2, hidden=8, depth=1), models.MLP2D(2, 1, hidden=8, depth=1)
    before = [p.detach().clone() for p in G.parameters()]
    # lr_g = 0: only the discriminator may change
    train_gan(G, D, batch_sampler(torch.randn(100, 2)), steps=3, lr_g=0.0, lr_d=1e-2, batch_size=8, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(before, G.parameters()))


def test_generator_step_leaves_discriminator_alone_and_thaws_it():
    G, D = models.MLP2D(2, 2, hidden=8, depth=1), models.MLP2D(2, 1, hidden=8, depth=1)
    D.net[0].bias.requires_grad_(False)  # frozen by the caller: must stay frozen
    before = [p.detach().clone() for p in D.parameters()]
    seen = []

    def g_loss(fake_logits):  # runs inside the G step: D's trainable weights are frozen there
        seen.append([p.requires_grad for p in D.parameters()])
        return gan_g_loss(fake_logits)

    # lr_d = 0: only the generator may change
    train_gan(G, D, batch_sampler(torch.randn(100, 2)), steps=3, lr_g=1e-2, lr_d=0.0, g_loss=g_loss, batch_size=8, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(before, D.parameters()))
    assert seen and not any(any(step) for step in seen)
    assert [p.requires_grad for p in D.parameters()] == [p is not D.net[0].bias for p in D.parameters()]


def test_discriminator_is_thawed_after_an_error_in_the_generator_step():
    G, D = models.MLP2D(2, 2, hidden=8, depth=1), models.MLP2D(2, 1, hidden=8, depth=1)

    def broken(fake_logits):
        raise RuntimeError("student bug")

    with pytest.raises(RuntimeError, match="student bug"):
        train_gan(G, D, batch_sampler(torch.randn(100, 2)), steps=2, g_loss=broken, batch_size=8, device="cpu")
    assert all(p.requires_grad for p in D.parameters())


@pytest.mark.parametrize("depth, side", [(2, 7), (3, 3), (4, 1)])
def test_dcgan_discriminator_depth(depth, side):
    D = models.DCGANDiscriminator(width=4, depth=depth)
    convs = [m for m in D.net if isinstance(m, nn.Conv2d)]
    assert len(convs) == depth and convs[-1].out_channels == 4 * 2 ** (depth - 1)
    assert D.net[-1].in_features == convs[-1].out_channels * side * side
    assert D(torch.rand(5, 1, 28, 28)).shape == (5,)


def test_dcgan_discriminator_depth_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="1 to 4"):
        models.DCGANDiscriminator(depth=5)


def test_dcgan_shapes_and_ranges():
    G, D = models.DCGANGenerator(latent_dim=16, width=8), models.DCGANDiscriminator(width=8)
    img = G(torch.randn(3, 16))
    assert img.shape == (3, 1, 28, 28) and img.min() >= 0 and img.max() <= 1
    assert D(img).shape == (3,)
    hist = train_gan(G, D, batch_sampler(torch.rand(64, 1, 28, 28)), steps=2, batch_size=8, device="cpu")
    assert len(hist["g_loss"]) == 2


def test_nan_losses_are_a_clear_error():
    class NanD(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.w * x[:, 0] * float("nan")

    G = models.MLP2D(2, 2, hidden=4, depth=1)
    with pytest.raises(FloatingPointError, match="d_loss became nan at step 1: lower the learning rate"):
        train_gan(G, NanD(), batch_sampler(torch.randn(50, 2)), steps=2, batch_size=8, device="cpu")


class _MixtureG(nn.Module):
    """A generator that samples a Gaussian mixture exactly (or only one of its modes when collapsed)."""

    def __init__(self, centers, std, collapsed=False):
        super().__init__()
        self.centers, self.std, self.collapsed = centers, std, collapsed
        self.dummy = nn.Parameter(torch.zeros(1))
        self.latent_dim = 3

    def forward(self, z):
        idx = torch.zeros(len(z), dtype=torch.long) if self.collapsed else (z[:, 0].argsort().argsort() * len(self.centers)) // len(z)
        return self.centers[idx] + self.std * z[:, 1:]


def test_mode_tracker_counts_modes_and_high_quality():
    _, centers = data.grid_of_gaussians(10, std=0.05)
    good, bad = ModeTracker(centers, 0.05, every=10), ModeTracker(centers, 0.05, every=10)
    for step in range(1, 31):
        good(step, _MixtureG(centers, 0.05))
        bad(step, _MixtureG(centers, 0.05, collapsed=True))
    assert good.steps == [10, 20, 30] and set(good.snapshots) == {10, 20, 30}
    assert good.snapshots[10].shape == (2500, 2)
    assert good.modes == [25, 25, 25] and all(q > 0.97 for q in good.high_quality)
    assert bad.modes == [1, 1, 1] and all(q > 0.97 for q in bad.high_quality)
    # fixed noise: the same generator gives the same snapshot every time
    assert torch.equal(good.snapshots[10], good.snapshots[30])
