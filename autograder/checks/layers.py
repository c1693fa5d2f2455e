"""Inputs and weights for the encoder and decoder checks.

Weights are given by role (self_attn, norm1, ...), never by attribute name, so a student may call the
modules anything and register them in any order. LayerNorm scales and shifts are random, so a norm in
the wrong place shows in the output.
"""
import copy
import functools

import pytest
import torch

from autograder.checks.layer_diagnosis import diagnose
from autograder.checks.compare import Mismatch, assert_close
from autograder.outcome import fail

DIMS = {"dim": 32, "head_num": 4, "FFN_dim": 64, "dropout": 0.1}
ENCODER_ROLES = ("self_attn", "norm1", "ffn", "norm2")
DECODER_ROLES = ("self_attn", "norm1", "cross_attn", "norm2", "ffn", "norm3")


class Random:
    def __init__(self, seed):
        self.generator = torch.Generator().manual_seed(seed)

    def normal(self, *shape, scale=1.0, shift=0.0):
        return torch.randn(*shape, generator=self.generator) * scale + shift


def role_weights(kind, seed, dims=DIMS):
    rng, dim, hidden = Random(seed), dims["dim"], dims["FFN_dim"]

    def linear(fan_out, fan_in):
        return {"weight": rng.normal(fan_out, fan_in, scale=fan_in**-0.5), "bias": rng.normal(fan_out, scale=0.1)}

    weights = {}
    for role in ENCODER_ROLES if kind == "encoder" else DECODER_ROLES:
        if role.startswith("norm"):
            weights[role] = {"weight": rng.normal(dim, scale=0.5, shift=1.0), "bias": rng.normal(dim, scale=0.5)}
        elif role == "ffn":
            weights[role] = {"0": linear(hidden, dim), "2": linear(dim, hidden)}
        else:
            weights[role] = {name: linear(dim, dim) for name in ("W_q", "W_k", "W_v", "W_o")}
    return weights


def key_padding_mask(batch, length, padded):
    mask = torch.ones(batch, 1, 1, length, dtype=torch.bool)
    for b, count in enumerate(padded):
        if count:
            mask[b, ..., length - count:] = False
    return mask


def encoder_inputs(seed, length=6, padded=(0, 2), dim=DIMS["dim"]):
    return {"X": Random(seed).normal(2, length, dim), "mask": key_padding_mask(2, length, padded)}


def decoder_inputs(seed, tgt_len=6, src_len=6, src_padded=(0, 2), tgt_padded=(0, 1), dim=DIMS["dim"]):
    """Masks as the given Transformer.generate_mask builds them: both act on keys."""
    rng = Random(seed)
    causal = torch.tril(torch.ones(tgt_len, tgt_len, dtype=torch.bool))
    return {"X": rng.normal(2, tgt_len, dim), "enc_output": rng.normal(2, src_len, dim),
            "cross_attn_mask": key_padding_mask(2, src_len, src_padded),
            "self_attn_mask": key_padding_mask(2, tgt_len, tgt_padded) & causal}


def nudge(seed, *shape):
    """A change to add to some tokens: random, because a LayerNorm does not see a constant added to a token."""
    return Random(seed).normal(*shape, scale=2.0)


def forward(runner, kind, inputs, *, seed=0, dims=DIMS, train=False, weights=None):
    weights = role_weights(kind, seed, dims) if weights is None else weights
    return runner.run("layer_forward", kind=kind, dims=dims, weights=weights, inputs=inputs, train=train)


def silenced(weights):
    """The same role weights with every sublayer's output made zero: the attentions' W_o and the FFN's last map."""
    quiet = copy.deepcopy(weights)
    for role, values in quiet.items():
        last = "W_o" if "W_o" in values else ("2" if role == "ffn" else None)
        if last is not None:
            values[last] = {name: torch.zeros_like(tensor) for name, tensor in values[last].items()}
    return quiet


def diagnosis(student, reference, kind, inputs, prefer=()):
    """The first difference between the student's dataflow and the reference's, in words ("" if none is found)."""
    try:
        got = student.run("layer_dataflow", kind=kind, dims=DIMS, inputs=inputs)
    except pytest.fail.Exception:  # the student's forward raised: the check's own message says so
        return ""
    return diagnose(got, reference.run("layer_dataflow", kind=kind, dims=DIMS, inputs=inputs), kind, prefer)


def explained(kind, standard_inputs):
    """A layer check whose failure comes from the student's own code raising (an attention call with inputs that do
    not go together, say) still says what the dataflow does differently, measured on inputs where it runs."""
    def wrap(check):
        @functools.wraps(check)
        def explained_check(student, reference):
            try:
                check(student, reference)
            except pytest.fail.Exception as failure:
                message = str(failure)
                if not message.startswith("your code raised an error"):
                    raise
                fail(message, diagnosis(student, reference, kind, standard_inputs))
        return explained_check
    return wrap


def assert_layer_close(student, reference, kind, inputs, got, expected, what, prefer=(), ignore=None):
    try:
        assert_close(got, expected, what, ignore=ignore)
    except Mismatch as mismatch:
        fail(str(mismatch), diagnosis(student, reference, kind, inputs, prefer))


def assert_output_changes(student, reference, kind, inputs, before, after, what, prefer=()):
    """Precondition of a check that compares the student with itself: the effect it looks for elsewhere does
    happen where it must, so a layer whose output ignores its sublayers (returns X) earns nothing."""
    if torch.allclose(before.double(), after.double(), atol=1e-6, rtol=0):
        fail(f"{what} changed nothing: the layer's output does not depend on it",
             diagnosis(student, reference, kind, inputs, prefer) or
             "the output does not use the attention sublayer's result")


def check_dropout_placement(student, reference, kind, inputs, seed):
    """With p = 1, dropout right after each sublayer zeroes exactly the sublayers' outputs: in train mode the layer
    must give what it gives in eval mode with every sublayer silenced. Measured on the student's layer alone, so
    LayerNorm placement or sharing does not count here."""
    dims = {**DIMS, "dropout": 1.0}
    weights = role_weights(kind, seed, dims)
    quiet = forward(student, kind, inputs, dims=dims, weights=silenced(weights))
    live = forward(student, kind, inputs, dims=dims, weights=weights)
    assert_output_changes(student, reference, kind, inputs, quiet, live, "silencing every sublayer",
                          prefer=("output", "reads"))
    dropped = forward(student, kind, inputs, dims=dims, weights=weights, train=True)
    assert_layer_close(student, reference, kind, inputs, dropped, quiet,
                       "train-mode output with dropout p = 1 against the eval-mode output with every sublayer's "
                       "output set to zero (each sublayer's branch should vanish, the residual stay)",
                       prefer=("dropout",))


STRUCTURE = [("distinct_norms", "distinct LayerNorms used in forward"),
             ("distinct_attentions", "distinct attention modules used in forward"),
             ("distinct_ffns", "distinct feed-forward sublayers used in forward"), ("parameters", "parameters")]


def check_structure(student, reference, kind, inputs):
    """How the student's layer differs in make-up from the reference's, as seen in its forward."""
    got = student.run("layer_structure", kind=kind, dims=DIMS, inputs=inputs)
    expected = reference.run("layer_structure", kind=kind, dims=DIMS, inputs=inputs)
    problems = [f"{what}: expected {expected[key]}, found {got[key]}" for key, what in STRUCTURE
                if got[key] != expected[key]]
    if problems:
        fail(f"the layer's structure differs from {'an encoder' if kind == 'encoder' else 'a decoder'} layer's: "
             + "; ".join(problems),
             diagnosis(student, reference, kind, inputs, prefer=("sharing", "calls")))
