"""Notebook 00's check (labsupport/checks/nb00.py): normalize_images."""

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


@pytest.mark.parametrize("fn", [
    lambda im: im.float().div(255).unsqueeze(1),
    lambda im: (im.to(torch.float32) / 255.0)[:, None],
    lambda im: im.unsqueeze(1).float() * (1 / 255),
])
def test_normalize_images_accepts_correct_versions(fn, capsys):
    checks.check_normalize_images(fn)
    assert "\u2713" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda im: im.float() / 255, "unsqueeze"),
    (lambda im: im.float().unsqueeze(1) / 256, "256"),
    (lambda im: im.float().unsqueeze(1), "divide by 255"),
    (lambda im: im.double().unsqueeze(1) / 255, "float32"),
    (lambda im: im.unsqueeze(1) // 255, "float32"),
    (lambda im: im.float().unsqueeze(1).div_(255).flip(0), "not images/255"),
])
def test_normalize_images_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=message):
        checks.check_normalize_images(fn)


def test_in_place_change_is_caught():
    def in_place(im):
        im.zero_()
        return im.float().unsqueeze(1)

    with pytest.raises(CheckFailed, match="in place"):
        checks.check_normalize_images(in_place)


@pytest.mark.parametrize("fn, message", [
    (lambda im: (im.float() / im.max().float()).unsqueeze(1), "batch's largest value"),
    (lambda im: (im.float() / im.float().amax(dim=(1, 2), keepdim=True)).unsqueeze(1), "each image by its own largest value"),
])
def test_normalize_images_rejects_dividing_by_the_largest_value_seen(fn, message):
    """Right on any batch with a 255 in it; the check also builds dim digits whose brightest pixel is 199."""
    with pytest.raises(CheckFailed, match=message):
        checks.check_normalize_images(fn)
