"""The check framework and the warm-up exercise's check."""

import pytest
import torch

from labsupport import checks
from labsupport.checks import CheckFailed


def test_checkfailed_is_assertion():
    assert issubclass(CheckFailed, AssertionError)


def test_crash_and_missing_are_reported_not_raised_raw():
    def not_written(images):
        raise NotImplementedError("Exercise 1 (normalize_images): your code goes here")

    with pytest.raises(CheckFailed, match="not written yet"):
        checks.check_normalize_images(not_written)

    def crashes(images):
        return images.nope()

    with pytest.raises(CheckFailed, match="crashed with AttributeError"):
        checks.check_normalize_images(crashes)


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


def test_shape_hints():
    with pytest.raises(CheckFailed, match="single number"):
        checks.expect_tensor(torch.tensor(1.0), (4,), "x")
    with pytest.raises(CheckFailed, match="scalar"):
        checks.expect_tensor(torch.ones(4), (), "x")
    with pytest.raises(CheckFailed, match="NaN"):
        checks.expect_tensor(torch.tensor([float("nan")]), (1,), "x")
    assert "sign" in checks.ratio_hint(-2.0, 2.0) and "twice" in checks.ratio_hint(4.0, 2.0)
