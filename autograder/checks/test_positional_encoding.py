"""PositionalEncoding, one property per check: how the table is stored, its dtype, its values, and forward.

Each check reads the table wherever the student keeps it (buffer, parameter or attribute), so a table with
the right values stored the wrong way loses the storage check only.
"""
import torch

from autograder.checks import probe_pe
from autograder.checks.compare import Mismatch, assert_close
from autograder.outcome import fail

# Long enough that the slowest column of a 16-wide table goes through a measurable part of its period.
FIT_SIZE = (16, 200)


def table_of(student, dim, seq_len_max):
    result = student.run("pe", dim=dim, seq_len_max=seq_len_max, X=torch.zeros(1, 1, dim))
    if result["PE"] is None:
        fail("PositionalEncoding keeps no tensor named PE", "; ".join(probe_pe.describe_storage(result)))
    return result


def test_pe_buffer_shape(student):
    result = table_of(student, dim=16, seq_len_max=30)
    if tuple(result["PE"].shape) != (1, 30, 16):
        fail(f"PE for dim=16, seq_len_max=30: expected shape (1, 30, 16), got {tuple(result['PE'].shape)}",
             "the table must hold one row per position and one column per dimension, with a batch axis of 1 "
             "in front")
    findings = probe_pe.describe_storage(result)
    if findings:
        fail(f"PE is stored as a {result['stored_as']}; the module's parameters are {result['parameters']}",
             "; ".join(findings))


def test_pe_dtype(student):
    result = table_of(student, dim=16, seq_len_max=30)
    findings = probe_pe.describe_dtype(result)
    if findings:
        fail(f"PE is {result['dtype']} and forward's output for a float32 input is {result['out_dtype']}; "
             "both must be float32", "; ".join(findings))


def _table_diagnosis(student):
    dim, seq_len_max = FIT_SIZE
    table = table_of(student, dim, seq_len_max)["PE"]
    if table.numel() != dim * seq_len_max:
        return f"the table for dim={dim}, seq_len_max={seq_len_max} has shape {tuple(table.shape)}"
    if tuple(table.shape[-2:]) == (dim, seq_len_max) and dim != seq_len_max:
        return "the table is transposed: rows must be positions and columns dimensions"
    return "; ".join(probe_pe.describe_table(table, dim))


def test_pe_values_match_formula(student):
    for dim, seq_len_max in [(4, 10), (16, 50), (64, 100), (512, 100)]:
        table = table_of(student, dim, seq_len_max)["PE"]
        try:
            # fp32 angles up to ~100 rad carry ~1e-5 of rounding, so the table gets a looser tolerance.
            assert_close(table.double(), probe_pe.formula(dim, seq_len_max)[None],
                         f"PE for dim={dim}, seq_len_max={seq_len_max}", atol=probe_pe.VALUE_TOLERANCE, rtol=0)
        except Mismatch as mismatch:
            fail(str(mismatch), _table_diagnosis(student))


def forward_error_cause(student):
    """Why forward raised for a short input, measured: the table's shape, or a forward that only fits full length."""
    result = table_of(student, dim=16, seq_len_max=20)
    if tuple(result["PE"].shape) != (1, 20, 16):
        return (f"forward raises with a table of shape {tuple(result['PE'].shape)}; it needs (1, seq_len_max, dim): "
                "see the storage check")
    whole = torch.randn(3, 20, 16, generator=torch.Generator().manual_seed(2))
    full = student.run("pe", dim=16, seq_len_max=20, X=whole)
    if full["forward_error"] is None and not probe_pe.describe_forward(whole, full["out"], full["PE"]):
        return ("forward works for an input of seq_len_max positions but raises for a shorter one: it adds the whole "
                "table; an input of seq_len positions gets the first seq_len rows")
    return "forward raises an error for an input of 7 positions with seq_len_max=20"


def test_pe_forward_adds_leading_rows(student):
    X = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(1))
    result = student.run("pe", dim=16, seq_len_max=20, X=X)
    if result["forward_error"] is not None:
        fail(f"your code raised an error:\n{result['forward_error']}", forward_error_cause(student))
    # Against the student's own table, so a wrong table is not paid for twice.
    table = result["PE"]
    if not isinstance(table, torch.Tensor) or tuple(table.shape) != (1, 20, 16):
        table = probe_pe.formula(16, 20)[None]  # the table's own checks say what is wrong with it
    out = result["out"]
    try:
        assert_close(out.double() if isinstance(out, torch.Tensor) else out, X.double() + table.double()[:, :7],
                     "forward(X) for X of shape (3, 7, 16) and seq_len_max=20")
    except Mismatch as mismatch:
        fail(str(mismatch), "; ".join(probe_pe.describe_forward(X, out, table)))
