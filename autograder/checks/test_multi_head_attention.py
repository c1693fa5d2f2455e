"""MultiHeadAttention, one property per check: the projections; what scaled_dot_product returns, its scale,
the axis its weights sum over, what each kind of mask does, any shape; and forward's dataflow.

The weights are read with V = identity (autograder/checks/probe_attention.py). Each property is measured
against the student's own other properties, so one mistake (a wrong scale, say) fails its own check only.
"""
import pytest
import torch

from autograder.checks import probe_attention as probe
from autograder.checks.compare import Mismatch, assert_close
from autograder.outcome import fail

DIM, HEADS = 32, 4


def key_padding_mask(batch, len_k, padded):
    """(batch, 1, 1, len_k), True = may attend; the last `padded[b]` keys of sentence b are padding."""
    mask = torch.ones(batch, 1, 1, len_k, dtype=torch.bool)
    for b, count in enumerate(padded):
        if count:
            mask[b, ..., len_k - count:] = False
    return mask


def causal_mask(length):
    return torch.tril(torch.ones(length, length, dtype=torch.bool)).view(1, 1, length, length)


@pytest.fixture(scope="module")
def measured(student):
    return probe.measure(student.run)


@pytest.fixture(scope="module")
def reference_scale(reference):
    return probe.measure(reference.run).scale


def readable(measured):
    if measured.P is None:
        fail(measured.problem, "scaled_dot_product must return the attention weights applied to V, one tensor of "
                               "shape (batch, heads, len_q, word_dim)")
    return measured


def test_mha_projections(student):
    info = student.run("mha_info", dim=DIM, head_num=HEADS)
    for name in ("W_q", "W_k", "W_v", "W_o"):
        if info[name] is None:
            fail(f"{name} is missing or is not a linear layer with a weight",
                 f"__init__ must create {name} as a linear map from dim to dim")
        if info[name]["weight"] != [DIM, DIM]:
            fail(f"{name} should map dim -> dim: weight of shape ({DIM}, {DIM}) for dim={DIM}, "
                 f"got {tuple(info[name]['weight'])}", f"{name} must map a vector of size dim to one of size dim")


def test_sdp_returns_weighted_values(student, measured):
    V = probe.randn(*measured.K.shape, seed=300)
    out = student.run("mha_sdp", dim=probe.HEADS * probe.WORD_DIM, head_num=probe.HEADS, Q=measured.Q,
                      K=measured.K, V=V, mask=None)
    if not isinstance(out, torch.Tensor):
        fail(f"scaled_dot_product returns {probe.shape_of(out)}",
             "it must return one tensor, the attention weights applied to V: the given forward passes it on to "
             "combine")
    if out.dtype != V.dtype:
        fail(f"scaled_dot_product returns {str(out.dtype).replace('torch.', '')} for float32 Q, K and V",
             "a step computed in another dtype is never cast back, so the next layer fails ('mat1 and mat2 must "
             "have the same dtype'): the output must keep the inputs' float32")
    P = readable(measured).P
    if tuple(out.shape) == tuple(P.shape) and (out.double() - P).abs().max() < 1e-5:
        fail(f"scaled_dot_product returns {probe.shape_of(out)}, the same for every V",
             "it returns the attention weights themselves; it must return them applied to V, shape "
             "(batch, heads, len_q, word_dim)")
    try:
        assert_close(out, P @ V.double(), "scaled_dot_product's output against its own weights applied to V")
    except Mismatch as mismatch:
        fail(str(mismatch), "the output is not the attention weights (read with V = identity) applied to V")


def other_sizes():
    """(what, Q, K): 5 queries and 9 keys, one head and eight heads of word_dim 9."""
    for heads, seed in ((1, 40), (8, 50)):
        yield (f"weights for 5 queries and 9 keys with {heads} head(s) of word_dim 9",
               probe.randn(2, heads, 5, 9, seed=seed), probe.randn(2, heads, 9, 9, seed=seed + 1))


def test_sdp_scale(student, reference, measured, reference_scale):
    scale = readable(measured).scale
    if scale is None or abs(scale / reference_scale - 1) > 1e-3:
        found = "no single factor fits" if scale is None else f"factor {scale:.4g}"
        fail(f"the weights fitted as a softmax of the scores Q·Kᵀ times a factor: {found}; expected "
             f"{reference_scale:.4g}", probe.describe_scale(scale, reference_scale, measured.P))
    for what, Q, K in other_sizes():
        P, _ = probe.read_weights(student.run, Q, K)
        expected, _ = probe.read_weights(reference.run, Q, K)
        expected_scale = probe.fit_scale(expected, probe.scores(Q, K), 3)
        scale = None if P is None else probe.fit_scale(P, probe.scores(Q, K), measured.softmax_axis)
        if scale is not None and abs(scale / expected_scale - 1) > 1e-3:
            fail(f"{what}: the weights fit a softmax of the scores times {scale:.4g}; expected {expected_scale:.4g}",
                 probe.describe_scale(scale, expected_scale))


def test_sdp_softmax_over_keys(measured):
    sums = readable(measured).P.sum(3)
    if (sums - 1).abs().max() > probe.SUM_TOLERANCE or not torch.isfinite(sums).all():
        fail(f"each query's weights over the keys should sum to 1; they sum to between {sums.min().item():.4g} "
             f"and {sums.max().item():.4g}", probe.describe_axis(measured))


def check_mask(student, measured, what, Q, K, mask):
    measured = readable(measured)
    try:
        P_masked, problem = probe.read_weights(student.run, Q, K, mask)
    except pytest.fail.Exception as error:
        fail(f"{what}: {error}", f"scaled_dot_product raises with a mask of shape {tuple(mask.shape)} for "
                                 f"{Q.shape[2]} queries and {K.shape[2]} keys: the mask's last axis indexes the keys, "
                                 "and it broadcasts against the scores (batch, heads, len_q, len_k) as it is")
    if P_masked is None:
        fail(f"{what}: {problem}", "scaled_dot_product must accept a mask that broadcasts to the scores")
    P_open, problem = probe.read_weights(student.run, Q, K)
    if P_open is None:
        fail(f"{what}: {problem}", "")
    diagnosis = probe.describe_masking(P_masked, P_open, mask, probe.scores(Q, K), measured.scale,
                                       measured.softmax_axis)
    if diagnosis:
        leaked = ((P_masked != 0) & ~mask.expand_as(P_masked)).sum()
        fail(f"{what}: {int(leaked)} masked (query, key) pairs get a nonzero weight; expected 0 for each, and for "
             "the allowed keys the weights they have without a mask, renormalised over the allowed keys", diagnosis)


def test_sdp_key_padding_mask(student, measured):
    Q, K = probe.randn(2, 2, 5, 16, seed=10), probe.randn(2, 2, 16, 16, seed=11)
    check_mask(student, measured, "5 queries, 16 keys, key padding mask of shape (2, 1, 1, 16)", Q, K,
               key_padding_mask(2, 16, padded=[0, 5]))
    Q = probe.randn(2, 2, 16, 16, seed=12)
    check_mask(student, measured, "16 queries and keys, key padding mask of shape (2, 1, 1, 16)", Q, K,
               key_padding_mask(2, 16, padded=[3, 0]))


def test_sdp_causal_mask(student, measured):
    Q, K = probe.randn(2, 2, 16, 16, seed=20), probe.randn(2, 2, 16, 16, seed=21)
    check_mask(student, measured, "causal mask of shape (1, 1, 16, 16)", Q, K, causal_mask(16))
    padded = key_padding_mask(2, 16, padded=[4, 0]) & causal_mask(16)
    check_mask(student, measured, "causal and key padding mask together, shape (2, 1, 16, 16)", Q, K, padded)


def test_sdp_query_and_key_lengths_differ(student, measured):
    # A softmax along the student's own axis with whatever scale fits: the scale and axis have checks of their own.
    for what, Q, K in other_sizes():
        P, problem = probe.read_weights(student.run, Q, K)
        if P is None:
            fail(f"{what}: {problem}", "scaled_dot_product must work for any number of heads, queries and keys")
        scale = probe.fit_scale(P, probe.scores(Q, K), measured.softmax_axis)
        if scale is None and measured.softmax_axis != 3:
            fail(f"{what}: the weights are not a softmax over the keys of the scores times any one factor",
                 f"your weights are normalised over {probe.AXES[measured.softmax_axis]} (see the softmax axis "
                 "check), and that axis has another size here")
        if scale is None:
            fail(f"{what}: the weights are not a softmax of the scores times any one factor",
                 "at these sizes the weights are no longer a softmax of the scaled scores, although they are for "
                 "2 heads, 5 queries and 16 keys: something in scaled_dot_product depends on the sizes")
        # Up to each row's total: whether the weights sum to 1 is the softmax axis check's business.
        P = P / P.sum(measured.softmax_axis, keepdim=True)
        try:
            assert_close(P, probe.modelled_weights(probe.scores(Q, K), scale, measured.softmax_axis), what)
        except Mismatch as mismatch:
            fail(str(mismatch), "at these sizes the weights differ from a softmax of the scaled scores")


def random_weights(info, seed, dim=DIM):
    """Random projections; a projection the student built without bias gets a zero bias."""
    weights = {}
    for i, name in enumerate(("W_q", "W_k", "W_v", "W_o")):
        bias = probe.randn(dim, seed=seed + 10 + i) * 0.1 if info[name] and info[name]["bias"] else torch.zeros(dim)
        weights[name] = {"weight": probe.randn(dim, dim, seed=seed + i) / dim**0.5, "bias": bias}
    return weights


def forward_error_cause(student, weights, inputs, mask):
    """Why forward raised: what scaled_dot_product hands to the given combine, if that is the wrong shape."""
    Q, K, V = (probe.split(probe.project(inputs[x], weights[w]), HEADS).float()
               for w, x in (("W_q", "X_Q"), ("W_k", "X_K"), ("W_v", "X_V")))
    try:
        heads = student.run("mha_sdp", dim=DIM, head_num=HEADS, Q=Q, K=K, V=V, mask=mask)
    except pytest.fail.Exception:
        return "forward raises because scaled_dot_product raises for these inputs"
    wanted = (Q.shape[0], HEADS, Q.shape[2], DIM // HEADS)
    if not isinstance(heads, torch.Tensor) or tuple(heads.shape) != wanted:
        return (f"forward raises because scaled_dot_product returns {probe.shape_of(heads)}; combining the heads "
                f"needs {wanted} (batch, heads, len_q, word_dim)")
    if heads.dtype != Q.dtype:
        return (f"forward raises because scaled_dot_product returns {str(heads.dtype).replace('torch.', '')} for "
                "float32 inputs, and W_o computes in float32")
    return "forward raises an error for these inputs, although scaled_dot_product answers them"


def test_forward_matches_composition(student):
    info = student.run("mha_info", dim=DIM, head_num=HEADS)
    if any(info[name] is None for name in ("W_q", "W_k", "W_v", "W_o")):
        fail("the projections W_q, W_k, W_v, W_o are not all linear layers",
             "forward needs the four projections; see the projections check")
    weights = random_weights(info, seed=60)
    X, memory = probe.randn(2, 5, DIM, seed=70), probe.randn(2, 7, DIM, seed=71)

    def sdp(Q, K, V, mask):
        return student.run("mha_sdp", dim=DIM, head_num=HEADS, Q=Q, K=K, V=V, mask=mask)

    cases = [("cross-attention forward (5 queries, 7 keys, key padding)", X, memory, key_padding_mask(2, 7, [0, 3])),
             ("causal self-attention forward", X, X, causal_mask(5))]
    for what, X_Q, X_KV, mask in cases:
        inputs = {"X_Q": X_Q, "X_K": X_KV, "X_V": X_KV}
        try:
            got = student.run("mha_forward", dim=DIM, head_num=HEADS, weights=weights, **inputs, mask=mask)
        except pytest.fail.Exception as error:
            fail(str(error), forward_error_cause(student, weights, inputs, mask))
        expected = probe.composed(sdp, weights, inputs, HEADS, mask)
        if expected is None:
            fail(f"{what}: scaled_dot_product does not return one tensor of shape (batch, heads, len_q, word_dim)",
                 "forward combines what scaled_dot_product returns: see the check of its output")
        try:
            assert_close(got, expected.float(), f"{what}, against W_o(combine(your scaled_dot_product over the "
                                                 "split projections))")
        except Mismatch as mismatch:
            fail(str(mismatch), probe.describe_forward(student.run, weights))
