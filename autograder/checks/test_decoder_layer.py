"""DecoderLayer, graded with the reference MultiHeadAttention and the given FFN in place of the student's."""
import pytest
import torch

from autograder.checks.layers import DIMS, structure_problems, decoder_inputs, forward
from autograder.compare import assert_close


def test_decoder_structure(student, reference):
    inputs = decoder_inputs(seed=1)
    problems = structure_problems(student, reference, "decoder", inputs)
    if problems:
        pytest.fail("the layer's structure differs from a decoder layer's: " + "; ".join(problems), pytrace=False)


def test_decoder_output_eval_mode(student, reference):
    inputs = decoder_inputs(seed=2)
    assert_close(forward(student, "decoder", inputs, seed=3), forward(reference, "decoder", inputs, seed=3),
                 "eval-mode output for target and source of length 6 with padding and causal masks")


def test_decoder_is_causal(student):
    length, t = 7, 3
    inputs = decoder_inputs(seed=4, tgt_len=length, src_len=5, src_padded=(0, 0), tgt_padded=(0, 0))
    changed = {**inputs, "X": inputs["X"].clone()}
    changed["X"][:, t] += 3.0
    before, after = forward(student, "decoder", inputs), forward(student, "decoder", changed)
    moved = (after[:, :t] - before[:, :t]).abs().amax(dim=(0, 2)) > 1e-5
    if moved.any():
        pytest.fail(f"changing target token {t} changed the output at position {int(moved.nonzero()[0])}: "
                    "the self-attention sees the future", pytrace=False)


def test_decoder_cross_attention_ignores_padded_source(student):
    inputs = decoder_inputs(seed=5, src_len=7, src_padded=(0, 3))
    changed = {**inputs, "enc_output": inputs["enc_output"].clone()}
    changed["enc_output"][1, 4:] += 3.0  # only the padded source positions of sentence 1
    assert_close(forward(student, "decoder", changed), forward(student, "decoder", inputs),
                 "decoder output after changing the encoder output at padded source positions")


def test_decoder_dropout_placement(student, reference):
    dims, inputs = {**DIMS, "dropout": 1.0}, decoder_inputs(seed=6)
    assert_close(forward(student, "decoder", inputs, seed=7, dims=dims, train=True),
                 forward(reference, "decoder", inputs, seed=7, dims=dims, train=True),
                 "train-mode output with dropout p = 1 (each sublayer's branch should vanish, the residual stay)")


def test_decoder_target_and_source_lengths_differ(student, reference):
    for tgt_len, src_len in [(5, 9), (9, 4)]:
        inputs = decoder_inputs(seed=8, tgt_len=tgt_len, src_len=src_len, src_padded=(0, 1), tgt_padded=(1, 0))
        assert_close(forward(student, "decoder", inputs, seed=9), forward(reference, "decoder", inputs, seed=9),
                     f"eval-mode output for target length {tgt_len}, source length {src_len}")
