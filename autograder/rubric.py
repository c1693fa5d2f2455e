"""The rubric: every hidden check, the part it belongs to, what it checks and its points (total 100).

Each key is the name of one pytest test in autograder/checks/. The part decides which column of the
gradebook the points go to; a bug is meant to cost points in its own part only (Training aside, which
runs all of the student's parts together).
"""
from dataclasses import dataclass

PARTS = ("PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer", "Training")


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
    "test_pe_buffer_shape": Line("PositionalEncoding", "buffer PE has shape (1, seq_len_max, dim) and is not trained", 3),
    "test_pe_values_match_formula": Line("PositionalEncoding", "PE values match the sin/cos formula at several sizes", 8),
    "test_pe_forward_adds_leading_rows": Line("PositionalEncoding", "forward adds the first seq_len rows of PE to shorter inputs", 4),
    # 2. Multi-head attention: 30
    "test_mha_projections": Line("MultiHeadAttention", "W_q, W_k, W_v, W_o are four dim -> dim linear maps", 4),
    "test_sdp_without_mask": Line("MultiHeadAttention", "scaled_dot_product without a mask", 5),
    "test_sdp_key_padding_mask": Line("MultiHeadAttention", "scaled_dot_product with a key padding mask", 5),
    "test_sdp_causal_mask": Line("MultiHeadAttention", "scaled_dot_product with a causal mask", 4),
    "test_sdp_query_and_key_lengths_differ": Line("MultiHeadAttention", "scaled_dot_product when query and key lengths differ", 3),
    "test_sdp_one_head_and_many_heads": Line("MultiHeadAttention", "scaled_dot_product with one head and with eight heads", 3),
    "test_forward_matches_torch_multihead_attention": Line("MultiHeadAttention", "forward matches torch.nn.MultiheadAttention with the same weights", 4),
    "test_masked_keys_get_zero_weight": Line("MultiHeadAttention", "masked keys get exactly zero attention weight", 2),
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
assert TOTAL == 100, TOTAL
