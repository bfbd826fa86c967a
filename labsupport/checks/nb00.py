"""Notebook 00, start here: normalize_images."""

from __future__ import annotations

from typing import Callable

import torch

from .core import CheckFailed, Unchanged, call, check, close, describe, expect_tensor, named, passed


@check
def check_normalize_images(fn: Callable) -> None:
    """``normalize_images(images: (B, 28, 28) uint8) -> (B, 1, 28, 28) float32 in [0, 1]``."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (5, 28, 28), generator=g, dtype=torch.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    kept = Unchanged(images)
    out = call(fn, images)
    if not isinstance(out, torch.Tensor):
        raise CheckFailed(f"normalize_images should return a tensor, got {describe(out)}.")
    kept.verify("normalize_images changed its input in place. Build a new tensor instead (e.g. x = images.float()).")
    if out.dim() == 3:
        raise CheckFailed(f"Got shape {tuple(out.shape)}: add the channel dimension, e.g. with .unsqueeze(1), to get (B, 1, 28, 28).")
    expect_tensor(out, (5, 1, 28, 28), "normalize_images(images)")
    if out.dtype != torch.float32:
        raise CheckFailed(f"The result has dtype {out.dtype}; models need float32. Convert with .float() before dividing.")
    _judge(out, images)
    # dim digits: no pixel reaches 255 here, so dividing by the batch's (or each image's) largest value shows
    tops = torch.tensor([120, 150, 180, 199])  # each image's brightest pixel
    dim = (torch.randint(0, 101, (4, 28, 28), generator=g) * tops[:, None, None] // 100).to(torch.uint8)
    dim[:, 0, 0] = tops.to(torch.uint8)
    out = expect_tensor(call(fn, dim), (4, 1, 28, 28), "normalize_images(images) for images whose brightest pixel is 199")
    _judge(out, dim)
    passed("normalize_images")


def _judge(out: torch.Tensor, images: torch.Tensor) -> None:
    x = images.float().unsqueeze(1)
    want = x / 255
    if close(out, want, atol=1e-6):
        return
    top = int(images.max())
    found = named(out, [
        ("You divided by 256: the largest pixel value is 255, so 255 must map to exactly 1.0.", x / 256),
        (f"You divided by the batch's largest value ({top} here, so this batch's brightest pixel became 1.0): divide by 255, "
         "the largest value a pixel can take, so that a grey level means the same in every batch.", x / top),
        ("You divided each image by its own largest value, so every image's brightest pixel became 1.0: divide by 255, the "
         "largest value a pixel can take, so that a grey level means the same in every image.", x / x.amax((2, 3), keepdim=True)),
    ], rtol=1e-4, atol=1e-6)
    if found:
        raise CheckFailed(found)
    if out.max() > 1 + 1e-6:
        raise CheckFailed(f"Values go up to {out.max().item():.1f}: divide by 255 so they lie in [0, 1].")
    raise CheckFailed("Values are in range but not images/255: each pixel should become its grey level divided by 255.")
