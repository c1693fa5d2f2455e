"""Inputs and weights for the encoder and decoder checks.

Weights are given by role (self_attn, norm1, ...), never by attribute name, so a student may call the
modules anything and register them in any order. LayerNorm scales and shifts are random, so a norm in
the wrong place shows in the output.
"""
import torch

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


def forward(runner, kind, inputs, *, seed=0, dims=DIMS, train=False):
    return runner.run("layer_forward", kind=kind, dims=dims, weights=role_weights(kind, seed, dims),
                      inputs=inputs, train=train)


STRUCTURE = [("layernorms", "LayerNorm modules"), ("attentions", "MultiHeadAttention modules"), ("ffns", "FFN modules"),
             ("distinct_modules_called", "distinct sublayer modules called in forward"), ("parameters", "parameters")]


def structure_problems(student, reference, kind, inputs):
    """How the student's layer differs in make-up from the reference's, one phrase per difference."""
    got = student.run("layer_structure", kind=kind, dims=DIMS, inputs=inputs)
    expected = reference.run("layer_structure", kind=kind, dims=DIMS, inputs=inputs)
    return [f"{what}: expected {expected[key]}, found {got[key]}" for key, what in STRUCTURE if got[key] != expected[key]]
