"""Notebook 02's convolutional autoencoder (labsupport/checks/nb02_conv.py): `ConvAutoencoder(k)`. Networks written
differently pass; each typical mistake fails with a message naming it, at the stage of partial credit it belongs to."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from labsupport import checks
from labsupport.checks import CheckFailed


class Solution(nn.Module):
    """One layer per line, as pytorch/examples writes models; `mistake` plants one error."""

    def __init__(self, k: int, mistake: str = ""):
        super().__init__()
        self.mistake = mistake
        code = 16 if mistake == "fixed code" else k
        self.encoder = nn.Sequential(
            nn.Conv2d(1, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, code),
        )
        last = [nn.ConvTranspose2d(32, 2 if mistake == "two channels" else 1, 3, stride=2, padding=1, output_padding=0 if mistake == "27x27" else 1)]
        end = {"no sigmoid": [], "relu then sigmoid": [nn.ReLU(), nn.Sigmoid()]}.get(mistake, [nn.Sigmoid()])
        self.decoder = nn.Sequential(
            nn.Linear(code, 64 * 7 * 7),
            nn.ReLU(),
            nn.Unflatten(1, (64, 7, 7)),
            nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(),
            *last,
            *end,
        )
        if mistake == "unused layer":
            self.refine = nn.Conv2d(1, 1, 3, padding=1)

    def encode(self, x):
        if self.mistake == "batch mean":
            x = x - x.mean(0, keepdim=True)
        return self.encoder(x)

    def decode(self, z):
        out = self.decoder(z)
        return out.flatten(1) if self.mistake == "flat" else out

    def forward(self, x):
        if self.mistake == "forward skips sigmoid":
            return self.decoder[:-1](self.encode(x))
        return self.decode(self.encode(x))


class NoDownsampling(nn.Module):
    """Stride-1 convolutions: the code layers see a 64 x 28 x 28 map, millions of weights."""

    def __init__(self, k):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                     nn.Linear(64 * 28 * 28, k))
        self.decoder = nn.Sequential(nn.Linear(k, 64 * 28 * 28), nn.ReLU(), nn.Unflatten(1, (64, 28, 28)), nn.ConvTranspose2d(64, 32, 3, padding=1),
                                     nn.ReLU(), nn.ConvTranspose2d(32, 1, 3, padding=1), nn.Sigmoid())

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


class Kernel4(nn.Module):
    """DCGAN-style 4x4 kernels, 16 and 32 channels, functional activations, view instead of (Un)Flatten."""

    def __init__(self, k):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 16, 4, 2, 1), nn.Conv2d(16, 32, 4, 2, 1)
        self.to_code, self.from_code = nn.Linear(32 * 7 * 7, k), nn.Linear(k, 32 * 7 * 7)
        self.t1, self.t2 = nn.ConvTranspose2d(32, 16, 4, 2, 1), nn.ConvTranspose2d(16, 1, 4, 2, 1)

    def encode(self, x):
        h = F.leaky_relu(self.c2(F.leaky_relu(self.c1(x), 0.2)), 0.2)
        return self.to_code(h.view(len(x), -1))

    def decode(self, z):
        h = F.relu(self.from_code(z)).view(-1, 32, 7, 7)
        return torch.sigmoid(self.t2(F.relu(self.t1(h))))

    def forward(self, x):
        return self.decode(self.encode(x))


class PoolUpsample(nn.Module):
    """Max-pooling down, nearest-neighbour upsampling and ordinary convolutions up, batch norm (eval mode uses running stats)."""

    def __init__(self, k):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Conv2d(24, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU(), nn.MaxPool2d(2),
                                     nn.Flatten(), nn.Linear(48 * 49, k))
        self.decoder = nn.Sequential(nn.Linear(k, 48 * 49), nn.ReLU(), nn.Unflatten(1, (48, 7, 7)),
                                     nn.Upsample(scale_factor=2), nn.Conv2d(48, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                     nn.Upsample(scale_factor=2), nn.Conv2d(24, 1, 3, padding=1), nn.Sigmoid())

    def encode(self, x):
        return self.encoder(x)

    def decode(self, z):
        return self.decoder(z)

    def forward(self, x):
        return self.decode(self.encode(x))


class ThreeConvs(nn.Module):
    """Three convolutions down to 4x4 (28 -> 14 -> 7 -> 4), GELU, an output_padding-free way back that crops 32 to 28."""

    def __init__(self, k):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.GELU(), nn.Conv2d(16, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU())
        self.code = nn.Linear(64 * 16, k)
        self.up_in = nn.Linear(k, 64 * 16)
        self.up = nn.Sequential(nn.ConvTranspose2d(64, 32, 2, 2), nn.GELU(), nn.ConvTranspose2d(32, 16, 2, 2), nn.GELU(), nn.ConvTranspose2d(16, 1, 2, 2))

    def encode(self, x):
        return self.code(self.down(x).flatten(1))

    def decode(self, z):
        return self.up(F.gelu(self.up_in(z)).view(-1, 64, 4, 4))[:, :, 2:30, 2:30].sigmoid()

    def forward(self, x):
        return self.decode(self.encode(x))


@pytest.mark.parametrize("cls", [Solution, Kernel4, PoolUpsample, ThreeConvs])
def test_every_sound_convolutional_autoencoder_passes(cls, capsys):
    checks.core.PASSED.clear()
    checks.check_ConvAutoencoder(cls)
    assert "ConvAutoencoder: all checks passed" in capsys.readouterr().out


def mistake(name: str):
    return lambda k: Solution(k, name)


@pytest.mark.parametrize("cls, message, stages", [
    (mistake("27x27"), r"expected \(6, 1, 28, 28\), got images of 27x27 pixels", []),
    (mistake("flat"), r"has shape \(6, 784\)", []),
    (mistake("two channels"), "2 channels, but an MNIST image has one", []),
    (mistake("fixed code"), r"codes of shape \(6, 16\): the code size must be the k", []),
    (mistake("no sigmoid"), "End the decoder with a sigmoid", []),
    (mistake("forward skips sigmoid"), r"forward\(x\) is not decode\(encode\(x\)\)", []),
    (NoDownsampling, "far from the statement's network", []),
    (mistake("unused layer"), r"get no gradient .*refine", ["interface"]),
    (mistake("batch mean"), "depends on the other images in its batch", ["interface"]),
    (mistake("relu then sigmoid"), "never go below 0.5", ["interface", "gradients"]),
])
def test_each_mistake_is_named_at_its_stage(cls, message, stages):
    checks.core.PASSED.clear()
    with pytest.raises(CheckFailed, match=message):
        checks.check_ConvAutoencoder(cls)
    assert checks.core.PASSED == stages
    checks.core.PASSED.clear()


def test_a_linear_layer_sized_for_another_map_is_explained():
    class WrongFlat(Solution):
        def __init__(self, k):
            super().__init__(k)
            self.encoder[-1] = nn.Linear(64 * 14 * 14, k)

    with pytest.raises(CheckFailed, match="size the layer after the flattening"):
        checks.check_ConvAutoencoder(WrongFlat)


def test_a_network_that_learns_far_worse_than_the_statements_fails_the_training_comparison():
    class GlobalPool(Solution):
        """Averages the 7 x 7 map away before the code layer: the code no longer knows where anything is."""

        def __init__(self, k):
            super().__init__(k)
            self.encoder[4] = nn.AdaptiveAvgPool2d(1)
            self.encoder.insert(5, nn.Flatten())
            self.encoder[6] = nn.Linear(64, k)

    checks.core.PASSED.clear()
    with pytest.raises(CheckFailed, match="the statement's network goes from .* and yours must end within"):
        checks.check_ConvAutoencoder(GlobalPool)
    assert checks.core.PASSED == ["interface", "gradients"]
    checks.core.PASSED.clear()
