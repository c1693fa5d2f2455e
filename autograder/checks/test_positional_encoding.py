"""PositionalEncoding: the buffer, its values against the formula, and forward."""
import pytest
import torch

from autograder.compare import assert_close


def formula(dim, seq_len_max):
    """The sinusoidal table in float64, straight from the definition."""
    pos = torch.arange(seq_len_max, dtype=torch.float64)[:, None]
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)
    angle = pos / 10000 ** (two_i / dim)
    table = torch.zeros(seq_len_max, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angle), torch.cos(angle)
    return table[None]


def buffer_of(student, dim, seq_len_max):
    result = student.run("pe", dim=dim, seq_len_max=seq_len_max, X=torch.zeros(1, 1, dim))
    if result["PE"] is None:
        pytest.fail("PositionalEncoding has no buffer named PE (the given register_buffer('PE', ...) line is missing)",
                    pytrace=False)
    return result


def test_pe_buffer_shape(student):
    result = buffer_of(student, dim=16, seq_len_max=30)
    if tuple(result["PE"].shape) != (1, 30, 16):
        pytest.fail(f"PE for dim=16, seq_len_max=30: expected shape (1, 30, 16), got {tuple(result['PE'].shape)}",
                    pytrace=False)
    if result["parameters"]:
        pytest.fail(f"the encoding must not be trained, but the module has parameters {result['parameters']}",
                    pytrace=False)


def test_pe_values_match_formula(student):
    for dim, seq_len_max in [(4, 10), (16, 50), (64, 100), (512, 100)]:
        table = buffer_of(student, dim, seq_len_max)["PE"]
        # fp32 angles up to ~100 rad carry ~1e-5 of rounding, so the table gets a looser tolerance.
        assert_close(table, formula(dim, seq_len_max), f"PE for dim={dim}, seq_len_max={seq_len_max}", atol=1e-4, rtol=0)


def test_pe_forward_adds_leading_rows(student):
    X = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(1))
    result = student.run("pe", dim=16, seq_len_max=20, X=X)
    # Against the student's own table, so a wrong table is not paid for twice.
    table = result["PE"] if result["PE"] is not None else formula(16, 20).float()
    assert_close(result["out"], X + table[:, :7], "forward(X) for X of shape (3, 7, 16) and seq_len_max=20")
