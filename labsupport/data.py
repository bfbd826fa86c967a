"""Data: MNIST through torchvision, tensors held in memory, binarization, 2D toy mixtures.

The data root is resolved in :func:`labsupport.config.data_root` only: explicit argument >
``LABSUPPORT_DATA`` > ``~/.cache/labsupport/data``. torchvision downloads MNIST there as usual; offline machines point
the root at a folder that already holds ``MNIST/raw/*-ubyte``.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Iterator

import torch

from .config import data_root

MNIST_FILES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


class DataUnavailable(RuntimeError):
    """The data set is neither on disk nor downloadable; the message says how to fix it."""


def mnist(train: bool = True, root: str | os.PathLike | None = None):
    """The MNIST training (60 000) or test (10 000) set as a ``torchvision.datasets.MNIST``.

    Downloads into the data root when the files are not there yet. Offline and missing, it raises
    :class:`DataUnavailable` naming the files it looked for and the ways to fix it.
    """
    from torchvision.datasets import MNIST

    path = data_root(root)
    try:
        return MNIST(str(path), train=train, download=True)
    except Exception as err:  # URLError, RuntimeError, OSError, ... from deep inside torchvision
        raw = path / "MNIST" / "raw"
        missing = [f for f in MNIST_FILES if not (raw / f).exists() and not (raw / f"{f}.gz").exists()]
        raise DataUnavailable(
            f"Could not load MNIST from {raw}.\n"
            f"  Looked for: {', '.join(MNIST_FILES)} (or the same with .gz)\n"
            f"  Missing:    {', '.join(missing) or 'none (the files may be corrupt or unreadable)'}\n"
            f"  Download failed with: {type(err).__name__}: {err}\n"
            "Fix: connect to the internet and run again (torchvision downloads MNIST), or put the four\n"
            "files in that folder, or point the course at a folder that has them:\n"
            "  export LABSUPPORT_DATA=/path/to/data   (the folder that contains MNIST/raw/)"
        ) from None


def mnist_tensors(
    train: bool = True, n: int | None = None, root: str | os.PathLike | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """MNIST as two in-memory tensors (2x faster than a per-item DataLoader).

    Returns ``x: (N, 1, 28, 28) float32 in [0, 1]`` and ``y: (N,) int64``. With ``n`` given, a
    random subset of ``n`` images drawn with ``seed`` (the same subset every time).
    """
    ds = mnist(train=train, root=root)
    x = ds.data.unsqueeze(1).float().div_(255.0)
    y = ds.targets.clone()
    if n is not None and n < len(y):
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[idx], y[idx]
    return x, y


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: each pixel becomes 1 with probability equal to its grey level.

    ``x: (..., ) in [0, 1]`` -> same shape in {0, 1}. Re-drawn every epoch, as in the VAE/IWAE
    papers, so likelihoods are comparable to theirs and the model cannot overfit one draw.
    """
    return torch.bernoulli(x, generator=generator)


class TensorLoader:
    """Mini-batches from tensors already in memory, reshuffled every epoch.

    >>> for xb, yb in TensorLoader(x, y, batch_size=128, transform=binarize): ...

    ``transform`` is applied to the first tensor of each batch (e.g. :func:`binarize`).
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        drop_last: bool = False,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        seed: int | None = None,
    ):
        if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
            raise ValueError("TensorLoader needs one or more tensors of the same length")
        self.tensors, self.batch_size, self.shuffle = tensors, batch_size, shuffle
        self.drop_last, self.transform = drop_last, transform
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __len__(self) -> int:
        n = len(self.tensors[0])
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator:
        n = len(self.tensors[0])
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            batch = [t[idx] for t in self.tensors]
            if self.transform is not None:
                batch[0] = self.transform(batch[0])
            yield batch[0] if len(batch) == 1 else tuple(batch)


# --- 2D toy distributions, made in code -------------------------------------------------------


def ring_centers(k: int = 8, radius: float = 1.0) -> torch.Tensor:
    """``(k, 2)`` centres evenly spaced on a circle (``2*pi*i/k``, no repeated endpoint)."""
    angles = 2 * math.pi * torch.arange(k) / k
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


def grid_centers(side: int = 5, spacing: float = 2.0) -> torch.Tensor:
    """``(side**2, 2)`` centres on a square grid around 0, e.g. {-4, -2, 0, 2, 4}^2."""
    ticks = (torch.arange(side) - (side - 1) / 2) * spacing
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    return torch.stack([gx.flatten(), gy.flatten()], dim=1)


def gaussian_mixture(
    n: int, centers: torch.Tensor, std: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``(n, 2)`` samples from an equal-weight mixture of isotropic Gaussians at ``centers``."""
    which = torch.randint(len(centers), (n,), generator=generator)
    return centers[which] + std * torch.randn(n, centers.shape[1], generator=generator)


def ring_of_gaussians(n: int, k: int = 8, radius: float = 1.0, std: float = 0.01, seed: int | None = None):
    """PacGAN's ring: ``k`` modes on the unit circle, ``std`` 0.01. Returns ``(x: (n, 2), centers: (k, 2))``."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    centers = ring_centers(k, radius)
    return gaussian_mixture(n, centers, std, g), centers


def grid_of_gaussians(n: int, side: int = 5, spacing: float = 2.0, std: float = 0.05, seed: int | None = None):
    """PacGAN's grid: centres {-4,-2,0,2,4}^2, ``std`` 0.05. Returns ``(x: (n, 2), centers: (25, 2))``."""
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    centers = grid_centers(side, spacing)
    return gaussian_mixture(n, centers, std, g), centers


def few_labels(y: torch.Tensor, per_class: int = 10, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` examples of every class in ``y: (N,)``, drawn with ``seed``: a semi-supervised label draw.

    Returns ``(K * per_class,)`` int64, class by class. Seed 0 gives notebook 06's draw; the bench averages over seeds.
    """
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.nonzero(y == d).flatten()[torch.randperm(int((y == d).sum()), generator=g)[:per_class]]
                      for d in range(int(y.max()) + 1)])
