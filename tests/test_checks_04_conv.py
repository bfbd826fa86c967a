"""check_conv_out / check_conv_transpose_out (notebook 04): correct ways pass, each catalogued mistake fails with its own message."""

import math
import re

import pytest

from labsupport import checks
from labsupport.checks import CheckFailed


@pytest.mark.parametrize("fn", [
    lambda n, k, s=1, p=0: (n + 2 * p - k) // s + 1,
    lambda n, k, s=1, p=0: math.floor((n + 2 * p - k) / s) + 1,
    lambda n, k, s=1, p=0: int((n + 2 * p - k) / s) + 1,  # truncation is the floor for non-negative spans
    lambda n, k, s=1, p=0: len(range(0, n + 2 * p - k + 1, s)),  # the window's start positions, counted
])
def test_conv_out_accepts_correct_versions(fn, capsys):
    checks.check_conv_out(fn)
    assert "\u2713 conv_out" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda n, k, s=1, p=0: math.ceil((n + 2 * p - k) / s) + 1, "rounds up"),
    (lambda n, k, s=1, p=0: (n + 2 * p - k) // s, "The +1 is missing"),
    (lambda n, k, s=1, p=0: (n + p - k) // s + 1, "counted once"),
    (lambda n, k, s=1, p=0: n + 2 * p - k + 1, "stride is ignored"),
    (lambda n, k, s=1, p=0: (n + 2 * p - k) / s + 1, "returned the float"),
    (lambda n, k, s=1, p=0: (n - 1) * s - 2 * p + k, "transposed convolution's formula"),
    (lambda n, k, s=1, p=0: None, "should return an int"),
])
def test_conv_out_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        checks.check_conv_out(fn)


@pytest.mark.parametrize("fn", [
    lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k + op,
    lambda n, k, s=1, p=0, op=0: s * n - s + k - 2 * p + op,
    lambda n, k, s=1, p=0, op=0: (n - 1) * s + 1 + (k - 1) - 2 * p + op,  # the stretched input, then a full convolution
])
def test_conv_transpose_out_accepts_correct_versions(fn, capsys):
    checks.check_conv_transpose_out(fn)
    assert "\u2713 conv_transpose_out" in capsys.readouterr().out


@pytest.mark.parametrize("fn, message", [
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k, "output_padding is ignored"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - 2 * p + k - op, "output_padding is subtracted"),
    (lambda n, k, s=1, p=0, op=0: (n + 2 * p - k) // s + 1, "ordinary convolution's formula"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s + 2 * p - k + op, "signs of padding and kernel are swapped"),
    (lambda n, k, s=1, p=0, op=0: n * s - 2 * p + k + op, "The -1 is missing"),
    (lambda n, k, s=1, p=0, op=0: (n - 1) * s - p + k + op, "removed once"),
    (lambda n, k, s=1, p=0, op=0: float((n - 1) * s - 2 * p + k + op), "returned the float"),
])
def test_conv_transpose_out_rejects_mistakes(fn, message):
    with pytest.raises(CheckFailed, match=re.escape(message)):
        checks.check_conv_transpose_out(fn)


def test_conv_checks_not_written_yet():
    def stub(*args):
        raise NotImplementedError("write it")

    for check in (checks.check_conv_out, checks.check_conv_transpose_out):
        with pytest.raises(CheckFailed, match="not written yet"):
            check(stub)
