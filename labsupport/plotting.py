"""Figures the course draws again and again. Each returns the matplotlib ``Figure``.

Every figure gets a title; classes are told apart by marker shape *and* colour, never colour alone.
"""

from __future__ import annotations

from typing import Callable, Sequence

import matplotlib.pyplot as plt
import torch
from torchvision.utils import make_grid

MARKERS = ["o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p"]


def _ax(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
        return fig, ax
    return ax.figure, ax


def show_images(
    x: torch.Tensor,
    nrow: int = 8,
    title: str = "",
    ax: plt.Axes | None = None,
    captions: Sequence[str] | None = None,
    figsize: tuple[float, float] | None = None,
) -> plt.Figure:
    """Show a grid of images. ``x: (B, C, H, W) in [0, 1]`` (C = 1 or 3), ``nrow`` images per row.

    ``captions`` (one per image) are written under each image, e.g. the predicted label.
    """
    x = x.detach().float().cpu().clamp(0, 1)
    if x.dim() == 3:
        x = x.unsqueeze(1)
    rows = -(-len(x) // nrow)
    if figsize is None:
        figsize = (min(12, 0.9 * min(nrow, len(x)) + 0.5), 0.9 * rows + (0.8 if title else 0.3) + (0.25 * rows if captions else 0))
    fig, ax = _ax(ax, figsize)
    pad = 9 if captions is not None else 2  # captions sit in the white gap below each image
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=1.0)
    ax.imshow(grid.permute(1, 2, 0).numpy(), cmap="gray" if x.shape[1] == 1 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if captions is not None:
        h, w = x.shape[-2:]
        for i, text in enumerate(captions):
            r, c = divmod(i, nrow)
            ax.text(pad + c * (w + pad) + w / 2, pad + r * (h + pad) + h + 0.5, str(text), ha="center", va="top", fontsize=7)
    return fig


def show_reconstructions(x: torch.Tensor, x_hat: torch.Tensor, n: int = 8, title: str = "Reconstructions") -> plt.Figure:
    """Originals (top row) above their reconstructions (bottom row). ``x, x_hat: (B, 1, 28, 28) in [0, 1]``."""
    n = min(n, len(x))
    fig, axes = plt.subplots(2, 1, figsize=(0.9 * n + 1.2, 2.6))
    show_images(x[:n], nrow=n, ax=axes[0])
    show_images(x_hat[:n], nrow=n, ax=axes[1])
    axes[0].set_axis_on(); axes[1].set_axis_on()
    for a, label in zip(axes, ["original", "reconstruction"]):
        a.set_xticks([]); a.set_yticks([]); a.set_ylabel(label, rotation=0, ha="right", va="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_losses(
    history: dict[str, Sequence[float]],
    keys: Sequence[str] | None = None,
    title: str = "Training loss",
    xlabel: str = "step",
    ylabel: str = "loss",
    smooth: int = 1,
    ax: plt.Axes | None = None,
    logy: bool = False,
) -> plt.Figure:
    """Curves of ``history[k]`` for each key (line styles differ, not only colours).

    ``smooth`` > 1 draws a running mean over that many steps on top of the faint raw curve.
    """
    fig, ax = _ax(ax, (6, 3.5))
    keys = keys or [k for k in history if k not in ("step", "seconds", "epoch")]
    styles = ["-", "--", ":", "-."]
    for i, k in enumerate(keys):
        y = torch.as_tensor(list(history[k]), dtype=torch.float64)
        x = torch.arange(1, len(y) + 1)
        if smooth > 1 and len(y) > smooth:
            ax.plot(x, y, alpha=0.25, color=f"C{i}")
            y = torch.nn.functional.avg_pool1d(y[None, None], smooth, stride=1)[0, 0]
            x = x[smooth - 1 :]
        ax.plot(x, y, styles[i % len(styles)], color=f"C{i}", label=k)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if logy:
        ax.set_yscale("log")
    if len(keys) > 1:
        ax.legend()
    ax.grid(alpha=0.3)
    return fig


def scatter_2d(
    z: torch.Tensor,
    labels: torch.Tensor | None = None,
    title: str = "",
    ax: plt.Axes | None = None,
    xlabel: str = "$z_1$",
    ylabel: str = "$z_2$",
    label_names: Sequence[str] | None = None,
    s: float = 6,
    alpha: float = 0.6,
) -> plt.Figure:
    """Scatter ``z: (N, 2)``; with ``labels: (N,)`` each class gets its own marker and colour and a legend."""
    fig, ax = _ax(ax, (5.5, 5))
    z = z.detach().float().cpu()
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=s, alpha=alpha)
    else:
        labels = labels.detach().cpu()
        for i, c in enumerate(labels.unique().tolist()):
            m = labels == c
            name = label_names[i] if label_names else str(c)
            ax.scatter(z[m, 0], z[m, 1], s=s, alpha=alpha, marker=MARKERS[i % len(MARKERS)], color=f"C{i % 10}", label=name)
        ax.legend(markerscale=2.5, fontsize=8, loc="best", framealpha=0.8)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    return fig


def plot_density_2d(
    log_density: Callable[[torch.Tensor], torch.Tensor],
    xlim: tuple[float, float] = (-3, 3),
    ylim: tuple[float, float] = (-3, 3),
    samples: torch.Tensor | None = None,
    title: str = "",
    ax: plt.Axes | None = None,
    resolution: int = 150,
    levels: int = 12,
) -> plt.Figure:
    """Filled contours of ``exp(log_density(points))`` on a grid, samples drawn on top as black dots.

    ``log_density`` maps ``(M, 2)`` points to ``(M,)`` log-densities.
    """
    fig, ax = _ax(ax, (5, 4.5))
    xs, ys = torch.linspace(*xlim, resolution), torch.linspace(*ylim, resolution)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    with torch.no_grad():
        dens = log_density(torch.stack([gx.flatten(), gy.flatten()], 1)).exp().reshape(gx.shape)
    cs = ax.contourf(gx, gy, dens, levels=levels, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="density $p(x)$")
    if samples is not None:
        s = samples.detach().cpu()
        ax.scatter(s[:, 0], s[:, 1], s=4, c="k", alpha=0.5, label="samples")
        ax.legend(loc="upper right")
    ax.set(title=title, xlabel="$x_1$", ylabel="$x_2$", xlim=xlim, ylim=ylim)
    return fig
