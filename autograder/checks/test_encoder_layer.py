"""EncoderLayer, graded with the reference MultiHeadAttention and the given FFN in place of the student's."""
import pytest

from autograder.checks.layers import DIMS, structure_problems, encoder_inputs, forward
from autograder.compare import assert_close


def test_encoder_structure(student, reference):
    inputs = encoder_inputs(seed=1)
    problems = structure_problems(student, reference, "encoder", inputs)
    if problems:
        pytest.fail("the layer's structure differs from an encoder layer's: " + "; ".join(problems), pytrace=False)


def test_encoder_output_eval_mode(student, reference):
    inputs = encoder_inputs(seed=2)
    assert_close(forward(student, "encoder", inputs, seed=3), forward(reference, "encoder", inputs, seed=3),
                 "eval-mode output for X of shape (2, 6, 32) with a key padding mask")


def test_encoder_dropout_placement(student, reference):
    # With p = 1 dropout zeroes whatever it is applied to, so only the right placement gives the right output.
    dims, inputs = {**DIMS, "dropout": 1.0}, encoder_inputs(seed=4)
    assert_close(forward(student, "encoder", inputs, seed=5, dims=dims, train=True),
                 forward(reference, "encoder", inputs, seed=5, dims=dims, train=True),
                 "train-mode output with dropout p = 1 (each sublayer's branch should vanish, the residual stay)")


def test_encoder_padded_keys_change_nothing(student):
    inputs = encoder_inputs(seed=6, padded=(0, 2))
    changed = {**inputs, "X": inputs["X"].clone()}
    changed["X"][1, 4:] += 3.0  # only the two padded tokens of sentence 1
    before, after = forward(student, "encoder", inputs), forward(student, "encoder", changed)
    assert_close(after[0], before[0], "sentence 0 after changing padded tokens of sentence 1")
    assert_close(after[1, :4], before[1, :4], "non-padded outputs of sentence 1 after changing its padded tokens")
