"""The rubric: every hidden check, the part it belongs to, what it checks and its points (total 100).

Each key is the name of one pytest test in autograder/checks/. The part decides which column of the
gradebook the points go to; a bug is meant to cost points in its own part only (Training aside, which
runs all of the student's parts together).
"""
from dataclasses import dataclass

from autograder.assignment import PART_NAMES as PARTS
from autograder.assignment import PARTS as _SPEC


@dataclass(frozen=True)
class Line:
    part: str
    checks: str
    points: float

    @property
    def name(self):
        return f"{self.part}: {self.checks}"


RUBRIC = {
    # 1. Positional encoding: 15
    "test_pe_buffer_shape": Line("PositionalEncoding", "storage: PE is a buffer (not a trained parameter) of shape (1, seq_len_max, dim)", 2),
    "test_pe_dtype": Line("PositionalEncoding", "dtype: PE and forward's output are float32", 2),
    "test_pe_values_match_formula": Line("PositionalEncoding", "values: each column is the formula's sin or cos, frequency and phase, at several sizes", 7),
    "test_pe_forward_adds_leading_rows": Line("PositionalEncoding", "forward: adds the first seq_len rows of the table to an input of seq_len positions", 4),
    # 2. Multi-head attention: 30
    "test_mha_projections": Line("MultiHeadAttention", "projections: W_q, W_k, W_v, W_o are four dim -> dim linear maps", 4),
    "test_sdp_returns_weighted_values": Line("MultiHeadAttention", "output: scaled_dot_product returns its attention weights applied to V", 4),
    "test_sdp_scale": Line("MultiHeadAttention", "scale: the scores Q·Kᵀ are divided by √word_dim before the softmax", 5),
    "test_sdp_softmax_over_keys": Line("MultiHeadAttention", "softmax axis: each query's weights over the keys sum to 1", 4),
    "test_sdp_key_padding_mask": Line("MultiHeadAttention", "key padding mask: masked keys get exactly 0, the others keep their proportions (True = may attend)", 4),
    "test_sdp_causal_mask": Line("MultiHeadAttention", "causal mask: future keys get exactly 0, the others keep their proportions", 3),
    "test_sdp_query_and_key_lengths_differ": Line("MultiHeadAttention", "shapes: the same weights with 1 or 8 heads and 5 queries against 9 keys", 2),
    "test_forward_matches_composition": Line("MultiHeadAttention", "forward: W_q, W_k, W_v feed queries, keys, values; heads split, attended, combined; W_o applied", 4),
    # 3. Encoder layer: 20
    "test_encoder_structure": Line("EncoderLayer", "structure: two distinct LayerNorms, one attention and one FFN used in forward (parameter count as the reference)", 4),
    "test_encoder_output_eval_mode": Line("EncoderLayer", "dataflow: eval-mode output matches the reference", 8),
    "test_encoder_dropout_placement": Line("EncoderLayer", "dropout sits right after each sublayer: with p = 1 the output is the layer's own with its sublayers silenced", 4),
    "test_encoder_padded_keys_change_nothing": Line("EncoderLayer", "padding: a real token changes the other outputs, a padded token changes none", 4),
    # 4. Decoder layer: 25
    "test_decoder_structure": Line("DecoderLayer", "structure: three distinct LayerNorms, two distinct attentions and one FFN used in forward (parameter count as the reference)", 4),
    "test_decoder_output_eval_mode": Line("DecoderLayer", "dataflow: eval-mode output matches the reference", 7),
    "test_decoder_is_causal": Line("DecoderLayer", "causality: changing target token t changes the outputs after t and none before t", 4),
    "test_decoder_cross_attention_ignores_padded_source": Line("DecoderLayer", "cross-attention: the output depends on real source tokens, not on padded ones", 3),
    "test_decoder_dropout_placement": Line("DecoderLayer", "dropout sits right after each sublayer: with p = 1 the output is the layer's own with its sublayers silenced", 4),
    "test_decoder_target_and_source_lengths_differ": Line("DecoderLayer", "lengths: output matches the reference when target and source lengths differ", 3),
    # 5. Training with all of the student's parts: 10
    "test_training_loss_is_finite": Line("Training", "the loss stays finite during training", 3),
    "test_training_loss_falls": Line("Training", "the loss falls by at least half as much as the reference's", 7),
}

TOTAL = sum(line.points for line in RUBRIC.values())
# The lines of each part add up to the points autograder/assignment.py gives it.
for _part in _SPEC:
    assert sum(line.points for line in RUBRIC.values() if line.part == _part.name) == _part.points, _part
assert TOTAL == sum(p.points for p in _SPEC) == 100, TOTAL
