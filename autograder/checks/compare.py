"""Comparing a student's tensor with the reference's, and saying how they differ without leaking values."""
import torch

ATOL, RTOL = 1e-5, 1e-4


class Mismatch(AssertionError):
    pass


def _fmt_shape(t):
    return tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def assert_close(got, expected, what, atol=ATOL, rtol=RTOL, ignore=None):
    """Fail with expected against got: shapes, or the largest absolute error and where it is.

    Positions where the reference itself is NaN (fully masked rows) and positions in `ignore` (a bool mask)
    are left out.
    """
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what}: expected a tensor of shape {_fmt_shape(expected)}, got {_fmt_shape(got)}")
    if tuple(got.shape) != tuple(expected.shape):
        raise Mismatch(f"{what}: expected shape {_fmt_shape(expected)}, got {_fmt_shape(got)}")
    got, expected = got.double(), expected.double()
    skip = torch.isnan(expected)
    if ignore is not None:
        skip |= ignore.expand_as(expected)
    bad_nan = torch.isnan(got) & ~skip
    if bad_nan.any():
        where = tuple(bad_nan.nonzero()[0].tolist())
        raise Mismatch(f"{what}: NaN at index {where} (and {int(bad_nan.sum()) - 1} more), where a number was expected")
    error = (got - expected).abs().masked_fill(skip, 0.0)
    limit = atol + rtol * expected.abs().masked_fill(skip, 0.0)
    over = error > limit
    if over.any():
        worst = error.masked_fill(~over, -1).argmax()
        where = tuple(int(i) for i in torch.unravel_index(worst, error.shape))
        raise Mismatch(f"{what}: largest absolute error {error.max().item():.3g} at index {where} "
                       f"({int(over.sum())} of {over.numel()} values off; tolerance {atol:g} + {rtol:g}·|expected|)")
