"""MultiHeadAttention: projections, scaled_dot_product under every kind of mask, and the full forward."""
import pytest
import torch
import torch.nn as nn

from autograder.compare import assert_close

DIM, HEADS = 32, 4


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def key_padding_mask(batch, len_k, padded):
    """(batch, 1, 1, len_k), True = may attend; the last `padded[b]` keys of sentence b are padding."""
    mask = torch.ones(batch, 1, 1, len_k, dtype=torch.bool)
    for b, count in enumerate(padded):
        if count:
            mask[b, ..., len_k - count:] = False
    return mask


def causal_mask(length):
    return torch.tril(torch.ones(length, length, dtype=torch.bool)).view(1, 1, length, length)


def check_sdp(student, reference, what, *, dim=DIM, head_num=HEADS, len_q=6, len_k=6, mask=None, seed=0):
    word_dim = dim // head_num
    args = dict(dim=dim, head_num=head_num, Q=randn(2, head_num, len_q, word_dim, seed=seed),
                K=randn(2, head_num, len_k, word_dim, seed=seed + 1), V=randn(2, head_num, len_k, word_dim, seed=seed + 2),
                mask=mask)
    assert_close(student.run("mha_sdp", **args), reference.run("mha_sdp", **args), what)


def test_mha_projections(student):
    info = student.run("mha_info", dim=DIM, head_num=HEADS)
    for name in ("W_q", "W_k", "W_v", "W_o"):
        if info[name] is None:
            pytest.fail(f"{name} is missing or is not a linear layer with a weight", pytrace=False)
        if info[name]["weight"] != [DIM, DIM]:
            pytest.fail(f"{name} should map dim -> dim: weight of shape ({DIM}, {DIM}) for dim={DIM}, "
                        f"got {tuple(info[name]['weight'])}", pytrace=False)


def test_sdp_without_mask(student, reference):
    check_sdp(student, reference, "heads for Q, K, V of shape (2, 4, 6, 8), no mask")


def test_sdp_key_padding_mask(student, reference):
    check_sdp(student, reference, "heads with a key padding mask of shape (2, 1, 1, 6)",
              mask=key_padding_mask(2, 6, padded=[0, 2]), seed=10)


def test_sdp_causal_mask(student, reference):
    check_sdp(student, reference, "heads with a causal mask of shape (1, 1, 6, 6)", mask=causal_mask(6), seed=20)


def test_sdp_query_and_key_lengths_differ(student, reference):
    check_sdp(student, reference, "heads for 5 queries and 9 keys with a key padding mask", len_q=5, len_k=9,
              mask=key_padding_mask(2, 9, padded=[3, 0]), seed=30)


def test_sdp_one_head_and_many_heads(student, reference):
    check_sdp(student, reference, "heads with head_num=1, dim=16", dim=16, head_num=1, seed=40)
    check_sdp(student, reference, "heads with head_num=8, dim=64", dim=64, head_num=8,
              mask=key_padding_mask(2, 6, padded=[1, 0]), seed=50)


def random_weights(info, seed):
    """Random projections; a projection the student built without bias gets a zero bias on both sides."""
    weights = {}
    for i, name in enumerate(("W_q", "W_k", "W_v", "W_o")):
        bias = randn(DIM, seed=seed + 10 + i) * 0.1 if info[name] and info[name]["bias"] else torch.zeros(DIM)
        weights[name] = {"weight": randn(DIM, DIM, seed=seed + i) / DIM**0.5, "bias": bias}
    return weights


def torch_attention(weights, X_Q, X_K, X_V, key_padding=None, attn_mask=None):
    """torch.nn.MultiheadAttention with the same weights: an independent implementation to agree with."""
    mha = nn.MultiheadAttention(DIM, HEADS, batch_first=True).eval()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([weights[n]["weight"] for n in ("W_q", "W_k", "W_v")]))
        mha.in_proj_bias.copy_(torch.cat([weights[n]["bias"] for n in ("W_q", "W_k", "W_v")]))
        mha.out_proj.weight.copy_(weights["W_o"]["weight"])
        mha.out_proj.bias.copy_(weights["W_o"]["bias"])
        output, _ = mha(X_Q, X_K, X_V, key_padding_mask=key_padding, attn_mask=attn_mask, need_weights=False)
    return output


def test_forward_matches_torch_multihead_attention(student):
    info = student.run("mha_info", dim=DIM, head_num=HEADS)
    if any(info[name] is None for name in ("W_q", "W_k", "W_v", "W_o")):
        pytest.fail("the projections W_q, W_k, W_v, W_o are not all linear layers", pytrace=False)
    weights = random_weights(info, seed=60)
    X, memory = randn(2, 5, DIM, seed=70), randn(2, 7, DIM, seed=71)

    padding = key_padding_mask(2, 7, padded=[0, 3])
    got = student.run("mha_forward", dim=DIM, head_num=HEADS, weights=weights, X_Q=X, X_K=memory, X_V=memory, mask=padding)
    expected = torch_attention(weights, X, memory, memory, key_padding=~padding[:, 0, 0, :])
    assert_close(got, expected, "cross-attention forward (5 queries, 7 keys, key padding) against nn.MultiheadAttention")

    causal = causal_mask(5)
    got = student.run("mha_forward", dim=DIM, head_num=HEADS, weights=weights, X_Q=X, X_K=X, X_V=X, mask=causal)
    expected = torch_attention(weights, X, X, X, attn_mask=~causal[0, 0])
    assert_close(got, expected, "causal self-attention forward against nn.MultiheadAttention")


def test_masked_keys_get_zero_weight(student):
    # With V = identity, scaled_dot_product returns the attention probabilities themselves.
    length, head_num = 6, 2
    Q, K = randn(2, head_num, length, length, seed=80), randn(2, head_num, length, length, seed=81)
    identity = torch.eye(length).expand(2, head_num, length, length).contiguous()
    mask = key_padding_mask(2, length, padded=[2, 0]) & causal_mask(length)
    probs = student.run("mha_sdp", dim=head_num * length, head_num=head_num, Q=Q, K=K, V=identity, mask=mask)
    if not isinstance(probs, torch.Tensor) or tuple(probs.shape) != (2, head_num, length, length):
        pytest.fail("scaled_dot_product with V = identity should return (batch, heads, len_q, len_k) probabilities",
                    pytrace=False)
    leaked = (probs != 0) & ~mask.expand_as(probs)
    if leaked.any():
        b, h, q, k = leaked.nonzero()[0].tolist()
        pytest.fail(f"query {q} (batch {b}, head {h}) gives weight {probs[b, h, q, k].item():.3g} to masked key {k}; "
                    f"{int(leaked.sum())} masked positions leak in all", pytrace=False)
