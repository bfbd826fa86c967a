"""Notebook 02's checks (labsupport/checks/nb02.py): Autoencoder (and the course's own Autoencoder model), ae_train_step
(denoising_step: tests/test_checks_nb02_denoise.py). Correct versions pass, each typical mistake fails with a message naming it."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labsupport import checks, models
from labsupport.checks import CheckFailed


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


# --- Autoencoder ------------------------------------------------------------------------------------


class SequentialAE(nn.Module):
    def __init__(self, k: int, hidden: int = 512):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, k))
        self.decoder = nn.Sequential(nn.Linear(k, hidden), nn.ReLU(), nn.Linear(hidden, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


class FunctionalAE(nn.Module):
    def __init__(self, k, hidden=256):
        super().__init__()
        self.e1, self.e2, self.d1, self.d2 = nn.Linear(784, hidden), nn.Linear(hidden, k), nn.Linear(k, hidden), nn.Linear(hidden, 784)

    def encode(self, x):
        return self.e2(F.relu(self.e1(x.view(len(x), -1))))

    def decode(self, z):
        return torch.sigmoid(self.d2(F.relu(self.d1(z)))).view(-1, 1, 28, 28)

    def forward(self, x):
        return self.decode(self.encode(x))


class ConvAE(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(8 * 14 * 14, k))
        self.dec = nn.Sequential(nn.Linear(k, 8 * 14 * 14), nn.ReLU(), nn.Unflatten(1, (8, 14, 14)), nn.ConvTranspose2d(8, 1, 4, 2, 1))

    def encode(self, x):
        return self.enc(x)

    def decode(self, z):
        return self.dec(z).sigmoid()

    def forward(self, x):
        return self.decode(self.encode(x))


@pytest.mark.parametrize("cls", [SequentialAE, FunctionalAE, ConvAE])
def test_autoencoder_accepts_correct_versions(cls, capsys):
    checks.check_Autoencoder(cls)
    assert "\u2713 Autoencoder" in capsys.readouterr().out


class NoSigmoid(SequentialAE):
    def decode(self, z):
        return self.decoder[:-2](z).view(-1, 1, 28, 28)


class FixedCode(SequentialAE):
    def __init__(self, k):
        super().__init__(10)


class Flat(SequentialAE):
    def decode(self, z):
        return self.decoder[:-1](z)


class ForwardNotDecodeEncode(SequentialAE):
    def forward(self, x):
        return x.clamp(0, 1) * 0.5 + 0.25 + 0 * self.decode(self.encode(x))


class Detached(SequentialAE):
    def decode(self, z):
        return self.decoder(z).detach()


class UnusedLayer(SequentialAE):
    def __init__(self, k):
        super().__init__(k)
        self.extra = nn.Linear(k, k)


class Frozen(SequentialAE):
    """Learns nothing: the output is the encoder-free average grey, with one tiny trainable scale."""

    def __init__(self, k):
        super().__init__(k)
        for p in self.parameters():
            p.requires_grad_(False)
        self.scale = nn.Parameter(torch.zeros(()))

    def decode(self, z):
        return torch.sigmoid(self.decoder[:-2](z) + 1e-6 * self.scale).view(-1, 1, 28, 28)


class NotAModule:
    def __init__(self, k):
        pass


@pytest.mark.parametrize("cls, message", [
    (NoSigmoid, "End the decoder with a sigmoid"),
    (FixedCode, "must be the k the constructor got"),
    (Flat, r"reshape the output to images"),
    (ForwardNotDecodeEncode, "forward\\(x\\) is not decode\\(encode\\(x\\)\\)"),
    (Detached, "does not track gradients"),
    (UnusedLayer, "get no gradient"),
    (Frozen, "barely learns"),
    (NotAModule, "not a torch.nn.Module"),
])
def test_autoencoder_rejects_mistakes(cls, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_Autoencoder(cls)


# --- ae_train_step ------------------------------------------------------------------------------------


def step_plain(model, optimizer, inputs, targets):
    optimizer.zero_grad()
    loss = (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def step_model_zero_grad(model, optimizer, inputs, targets):
    model.zero_grad()
    loss = F.mse_loss(model(inputs), targets, reduction="sum") / len(inputs)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def step_tensor_return(model, optimizer, inputs, targets):
    optimizer.zero_grad(set_to_none=False)
    x_hat = model(inputs)
    loss = ((x_hat - targets) ** 2).sum(dim=(1, 2, 3)).mean()
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("fn", [step_plain, step_model_zero_grad, step_tensor_return])
def test_ae_train_step_accepts_correct_versions(fn, capsys):
    checks.check_ae_train_step(fn)
    assert "\u2713 ae_train_step" in capsys.readouterr().out


def _no_zero_grad(model, optimizer, inputs, targets):
    loss = (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    return loss.item()


def _zero_grad_after_backward(model, optimizer, inputs, targets):
    loss = (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.zero_grad()
    optimizer.step()
    return loss.item()


def _no_backward(model, optimizer, inputs, targets):
    optimizer.step()
    return (targets - model(inputs)).pow(2).flatten(1).sum(1).mean().item()


def _no_step(model, optimizer, inputs, targets):
    optimizer.zero_grad()
    loss = (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    return loss.item()


def _with(loss_of):
    def step(model, optimizer, inputs, targets):
        optimizer.zero_grad()
        loss = loss_of(model, inputs, targets)
        loss.backward()
        optimizer.step()
        return loss.item()
    return step


def _returns_nothing(model, optimizer, inputs, targets):
    step_plain(model, optimizer, inputs, targets)


def _returns_loss_after_step(model, optimizer, inputs, targets):
    step_plain(model, optimizer, inputs, targets)
    with torch.no_grad():
        return 2 * (targets - model(inputs)).pow(2).flatten(1).sum(1).mean().item()


@pytest.mark.parametrize("fn, message", [
    (_no_zero_grad, "Call optimizer.zero_grad\\(\\) before loss.backward"),
    (_zero_grad_after_backward, "erased them"),
    (_no_backward, "the old ones: call loss.backward"),
    (_no_step, "did not change: call optimizer.step"),
    (_with(lambda m, x, t: F.mse_loss(m(x), t)), "784 times smaller"),
    (_with(lambda m, x, t: (t - m(x)).pow(2).sum()), "sum over the batch"),
    (_with(lambda m, x, t: (x - m(x)).pow(2).flatten(1).sum(1).mean()), "compared with the noisy inputs"),
    (_with(lambda m, x, t: (t - m(t)).pow(2).flatten(1).sum(1).mean()), "run on the targets"),
    (_with(lambda m, x, t: (t - m(x)).abs().flatten(1).sum(1).mean()), "absolute error"),
    (_returns_nothing, "return the loss as a number"),
    (_returns_loss_after_step, "before the step was"),
])
def test_ae_train_step_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_ae_train_step(fn)


# --- blind spots closed in issue 35 -----------------------------------------------------------------------------------


class LinearAE(nn.Module):
    """No non-linearity anywhere but the final sigmoid: PCA at best."""

    def __init__(self, k):
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.Linear(512, k))
        self.decoder = nn.Sequential(nn.Linear(k, 512), nn.Linear(512, 784), nn.Sigmoid(), nn.Unflatten(1, (1, 28, 28)))

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


class ReluCode(SequentialAE):
    """A ReLU after the code layer."""

    def encode(self, x):
        return torch.relu(super().encode(x))


@pytest.mark.parametrize("cls, message", [(LinearAE, "Autoencoder is linear"), (ReluCode, "ReLU")])
def test_autoencoder_rejects_a_linear_model_and_a_relu_on_the_code(cls, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_Autoencoder(cls)


def step_zero_grad_after(model, optimizer, inputs, targets):
    """Clears the gradients after the step, ready for the next one: right in the notebook's loop (as 04's check accepts)."""
    loss = (targets - model(inputs)).pow(2).flatten(1).sum(1).mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def test_ae_train_step_accepts_clearing_the_gradients_after_the_step(capsys):
    checks.check_ae_train_step(step_zero_grad_after)
    assert "\u2713 ae_train_step" in capsys.readouterr().out
