"""What a MultiHeadAttention does, measured, in plain words.

scaled_dot_product is read with V = identity, which makes it return its attention weights P themselves;
from P and the scores Q·Kᵀ (computed here) come the effective scale (a softmax of s·Q·Kᵀ along an axis is
fitted), the axis the weights sum to 1 over, and what a mask does (which entries are exactly 0, which
polarity, what the masked scores became). forward is compared with the composition of the student's own
scaled_dot_product with the projections; when it differs, the single change of dataflow (a projection or
input in another role, W_o left out, heads split or combined without moving the head axis) that reproduces
it is named. Nothing here matches a list of known bugs. Runs in the judge on what the worker returns.
"""
import itertools
import math
from dataclasses import dataclass

import pytest
import torch

HEADS, WORD_DIM, LEN_Q = 2, 16, 5
AXES = {3: "the keys (the last axis)", 2: "the queries", 1: "the heads", 0: "the batch"}
SUM_TOLERANCE = 1e-4
PLURAL = {"query": "queries", "key": "keys", "value": "values"}


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def first_tensor(value):
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    return value if isinstance(value, torch.Tensor) else None


def shape_of(value):
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)} values"
    return type(value).__name__


def read_weights(run, Q, K, mask=None):
    """(P, problem): the weights scaled_dot_product gives each key, read with V = identity (len_k = word_dim)."""
    batch, heads, len_q, word_dim = Q.shape
    identity = torch.eye(word_dim).expand(batch, heads, word_dim, word_dim).contiguous()
    out = run("mha_sdp", dim=heads * word_dim, head_num=heads, Q=Q, K=K, V=identity, mask=mask)
    weights = first_tensor(out)
    if weights is None or tuple(weights.shape) != (batch, heads, len_q, word_dim):
        return None, (f"with V = identity, scaled_dot_product returns {shape_of(out)}; the weights applied to the "
                      f"identity have shape {(batch, heads, len_q, word_dim)}")
    return weights.double(), ""


def scores(Q, K):
    return Q.double() @ K.double().transpose(-2, -1)


def summing_axes(P):
    return [axis for axis in AXES if torch.isfinite(P).all() and (P.sum(axis) - 1).abs().max() < SUM_TOLERANCE]


def fit_scale(P, S, axis):
    """s with P ≈ softmax(s·S) along `axis`, from the log-weights centred along it; None if P is no such softmax."""
    if not torch.isfinite(P).all() or (P <= 0).any():
        return None
    y = P.log() - P.log().mean(axis, keepdim=True)
    x = S - S.mean(axis, keepdim=True)
    scale = ((x * y).sum() / (x * x).sum()).item()
    return scale if (y - scale * x).abs().max() < 1e-3 else None


@dataclass
class Weights:
    """The standard probe: 5 queries, 16 keys, 2 heads of word_dim 16, no mask."""
    Q: torch.Tensor
    K: torch.Tensor
    P: torch.Tensor = None
    problem: str = ""
    axis: int = None     # the axis the weights sum to 1 over (3 = keys), None if none
    scale: float = None  # s in softmax(s·Q·Kᵀ), None if the weights are not such a softmax

    @property
    def softmax_axis(self):
        return 3 if self.axis is None else self.axis


def measure(run, seed=100):
    Q, K = randn(2, HEADS, LEN_Q, WORD_DIM, seed=seed), randn(2, HEADS, WORD_DIM, WORD_DIM, seed=seed + 1)
    measured = Weights(Q, K)
    measured.P, measured.problem = read_weights(run, Q, K)
    if measured.P is not None:
        axes = summing_axes(measured.P)
        measured.axis = 3 if 3 in axes else (axes[0] if axes else None)
        measured.scale = fit_scale(measured.P, scores(Q, K), measured.softmax_axis)
    return measured


def modelled_weights(S, scale, axis, mask=None):
    """softmax(scale·S) along `axis`, masked keys excluded: what a student with these properties returns."""
    S = scale * S
    if mask is not None:
        S = S.masked_fill(~mask.bool(), float("-inf"))
    return torch.softmax(S, dim=axis)


def _zeros_without_mask(P):
    zeros = int((P == 0).sum()) if P is not None else 0
    return f" ({zeros} of {P.numel()} weights are exactly 0 although no mask was given)" if zeros else ""


def describe_scale(scale, expected, P=None):
    if scale is None:
        return "the weights are not a softmax of the scores Q·Kᵀ times any one number" + _zeros_without_mask(P)
    if abs(scale - 1) < 1e-3:
        return f"your scores are not scaled; the reference divides them by {1 / expected:.3g} (√word_dim)"
    if scale < 0:
        return f"your weights favour the keys with the lowest scores (the scores are multiplied by {scale:.3g})"
    return f"your scores are divided by {1 / scale:.3g}; √word_dim is {1 / expected:.3g} (word_dim = dim / head_num)"


def describe_axis(measured):
    sums = measured.P.sum(3)
    if measured.axis not in (None, 3):
        return (f"the weights sum to 1 over {AXES[measured.axis]}, not over the keys: the softmax runs along "
                f"axis {measured.axis}; each query's weights over the keys must sum to 1 (the last axis)")
    low, high = sums.min().item(), sums.max().item()
    if high - low < SUM_TOLERANCE:
        return (f"each query's weights over the keys sum to {low:.3g}, not 1: the weights are scaled after the "
                "softmax")
    return f"each query's weights over the keys sum to between {low:.3g} and {high:.3g}, not 1" + _zeros_without_mask(
        measured.P)


def _implied_masked_scores(P_masked, S, scale, allowed, leaked, axis):
    """The score each leaking masked key must have had, from its row's normaliser over the allowed keys."""
    log_p = P_masked.clamp_min(1e-300).log()
    normaliser = (scale * S - log_p).masked_fill(~allowed | (P_masked == 0), float("nan")).nanmean(axis, keepdim=True)
    return (log_p + normaliser)[leaked]


def _describe_leak(P_masked, S, scale, allowed, leaked, axis):
    heaviest = P_masked[leaked].max().item()
    if scale is not None and allowed.any():
        implied = _implied_masked_scores(P_masked, S, scale, allowed, leaked, axis)
        if implied.numel() and (implied - (scale * S)[leaked]).abs().max().item() < 1e-3:
            return (f"the mask is not applied: masked keys keep the weight they have without a mask (up to "
                    f"{heaviest:.3g}); a masked key's weight must be exactly 0")
        if implied.numel() and (implied - implied.mean()).abs().max().item() < 1e-3:
            fill = implied.mean().item()
            fill = 0.0 if abs(fill) < 1e-6 else float(f"{fill:.3g}")
            return (f"masked scores are set to {fill:g} instead of -inf, so masked keys still get weight (up to "
                    f"{heaviest:.3g}); their weight must be exactly 0")
    return (f"{int(leaked.sum())} masked (query, key) pairs get a nonzero weight (up to {heaviest:.3g}); "
            "a masked key's weight must be exactly 0")


def describe_masking(P_masked, P_open, mask, S, scale, axis):
    """How the weights under `mask` (True = may attend) differ from the unmasked ones renormalised over the
    allowed keys (to the total they have without a mask), in words; "" when they agree."""
    allowed = mask.bool().expand_as(P_masked)
    finite = torch.isfinite(P_masked).all(axis, keepdim=True).expand_as(P_masked)
    zero = P_masked == 0
    if (zero == allowed)[finite].all() and allowed[finite].any() and (~allowed)[finite].any():
        nan = "" if finite.all() else "; queries the mask lets attend to every key get NaN"
        return ("the mask is used the wrong way round: keys it marks True (may attend) get weight 0 and those "
                f"it marks False get all the weight{nan}; in this assignment True means 'may attend'")
    if not finite.all():
        count = int((~torch.isfinite(P_masked)).sum())
        where = "" if axis == 3 else (f" (your softmax runs over {AXES[axis]}: a key masked for all of them "
                                      "leaves nothing to normalise)")
        return f"{count} weights are NaN or infinite under the mask{where}"
    leaked, lost = (~allowed & ~zero), (allowed & zero)
    if leaked.any() and lost.any():
        transposed = allowed.shape[-1] == allowed.shape[-2] and (zero == ~allowed.transpose(-2, -1)).all()
        return ((f"the mask is applied transposed: it blocks queries where it should block keys; " if transposed
                 else "") + f"{int(lost.sum())} allowed (query, key) pairs get weight 0 and {int(leaked.sum())} "
                "masked pairs get weight; the mask's last axis indexes the keys")
    if leaked.any():
        return _describe_leak(P_masked, S, scale, allowed, leaked, axis)
    if lost.any():
        return f"{int(lost.sum())} allowed (query, key) pairs get weight 0 although the mask lets them attend"
    open_sums = P_open.sum(axis, keepdim=True)
    expected = P_open * allowed
    expected = expected / expected.sum(axis, keepdim=True) * open_sums
    if (P_masked - expected).abs().max() < 1e-5:
        return ""
    sums, open_sums = P_masked.sum(axis), open_sums.squeeze(axis)
    if (sums - open_sums).abs().max() > SUM_TOLERANCE:
        return (f"masked keys get weight 0, but the remaining weights sum to between {sums.min().item():.3g} and "
                f"{sums.max().item():.3g}, where without a mask they sum to {open_sums.mean().item():.3g}: masking "
                "must happen on the scores, before the softmax")
    return "the allowed keys' weights are not in the same proportions as without a mask"


# ----------------------------------------------------------------- forward

def project(X, weights):
    return X.double() @ weights["weight"].double().T + weights["bias"].double()


def split(X, heads, interleaved=False):
    batch, length, dim = X.shape
    if interleaved:
        return X.reshape(batch, heads, length, dim // heads)
    return X.reshape(batch, length, heads, dim // heads).transpose(1, 2)


def combine(H, interleaved=False):
    batch, heads, length, word_dim = H.shape
    if interleaved:
        return H.reshape(batch, length, heads * word_dim)
    return H.transpose(1, 2).reshape(batch, length, heads * word_dim)


CORRECT = {"query": ("W_q", "X_Q"), "key": ("W_k", "X_K"), "value": ("W_v", "X_V"),
           "split_interleaved": False, "combine_interleaved": False, "output_projection": True}


def composed(sdp, weights, inputs, heads, mask=None, wiring=CORRECT):
    """W_o(combine(sdp(split(W_q X_Q), split(W_k X_K), split(W_v X_V)))) with the given wiring, float64."""
    parts = [split(project(inputs[wiring[role][1]], weights[wiring[role][0]]), heads, wiring["split_interleaved"])
             for role in ("query", "key", "value")]
    attended = first_tensor(sdp(*[p.float() for p in parts], mask))
    if attended is None or tuple(attended.shape) != tuple(parts[0].shape[:3]) + (parts[2].shape[3],):
        return None
    out = combine(attended.double(), wiring["combine_interleaved"])
    return project(out, weights["W_o"]) if wiring["output_projection"] else out


def _rewired(kind, choices, words):
    """Wirings where roles take other projections (kind 0) or inputs (kind 1): one role at a time, or a permutation."""
    roles = ("query", "key", "value")
    correct = tuple(CORRECT[role][kind] for role in roles)
    picks = [tuple(choice if r == role else correct[r] for r in range(3)) for role in range(3) for choice in choices
             if choice != correct[role]]
    picks += [p for p in itertools.permutations(correct) if p != correct and p not in picks]
    for pick in picks:
        changed = [f"the {PLURAL[role]} are computed {words} {name}"
                   for role, name, right in zip(roles, pick, correct) if name != right]
        wiring = {**CORRECT}
        for role, name in zip(roles, pick):
            wiring[role] = (name, CORRECT[role][1]) if kind == 0 else (CORRECT[role][0], name)
        yield ", ".join(changed), wiring


def _alternatives():
    """(words, wiring) for every single change of dataflow from the correct one."""
    for words, wiring in _rewired(0, ("W_q", "W_k", "W_v"), "with"):
        yield words + "; W_q must give the queries, W_k the keys and W_v the values", wiring
    for words, wiring in _rewired(1, ("X_Q", "X_K", "X_V"), "from"):
        yield words + "; queries come from X_Q, keys from X_K and values from X_V", wiring
    yield ("W_o is not applied: the combined heads must go through the output projection W_o",
           {**CORRECT, "output_projection": False})
    yield ("the heads are split without moving the head axis in front of the positions, so each head gets a mix "
           "of positions", {**CORRECT, "split_interleaved": True})
    yield ("the heads are combined without moving the head axis back behind the positions, so each output row "
           "mixes positions", {**CORRECT, "combine_interleaved": True})


def describe_forward(run, weights, dim=32, heads=4, seed=200):
    """The single change of dataflow that reproduces the student's forward, in words ("" if none does)."""
    inputs = {"X_Q": randn(2, 5, dim, seed=seed), "X_K": randn(2, 7, dim, seed=seed + 1),
              "X_V": randn(2, 7, dim, seed=seed + 2)}
    got = first_tensor(run("mha_forward", dim=dim, head_num=heads, weights=weights, **inputs, mask=None))
    if got is None:
        return "forward does not return a tensor"

    def sdp(Q, K, V, mask):
        return run("mha_sdp", dim=dim, head_num=heads, Q=Q, K=K, V=V, mask=mask)

    for words, wiring in _alternatives():
        try:
            expected = composed(sdp, weights, inputs, heads, wiring=wiring)
        except (Exception, pytest.fail.Exception):  # noqa: BLE001 (a wiring whose shapes do not fit: not the student's)
            continue
        if expected is not None and expected.shape == got.shape and (got.double() - expected).abs().max() < 1e-4:
            return words
    return ("forward's output is not W_o applied to the combined heads of your scaled_dot_product over the "
            "projected queries, keys and values, and no single change of which projection or input feeds which "
            "role, of the head split or of W_o explains it")
