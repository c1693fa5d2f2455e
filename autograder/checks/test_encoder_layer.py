"""EncoderLayer, graded with an attention stand-in answered by the judge (the reference attention) and the given
FFN in place of the student's; a failure says where the layer's dataflow departs from the reference's."""
from autograder.checks.layers import (DIMS, assert_layer_close, assert_output_changes, check_dropout_placement,
                                      check_structure, explained, nudge, encoder_inputs, forward)


@explained("encoder", encoder_inputs(seed=2))
def test_encoder_structure(student, reference):
    check_structure(student, reference, "encoder", encoder_inputs(seed=1))


@explained("encoder", encoder_inputs(seed=2))
def test_encoder_output_eval_mode(student, reference):
    inputs = encoder_inputs(seed=2)
    assert_layer_close(student, reference, "encoder", inputs, forward(student, "encoder", inputs, seed=3),
                       forward(reference, "encoder", inputs, seed=3),
                       "eval-mode output for X of shape (2, 6, 32) with a key padding mask")


@explained("encoder", encoder_inputs(seed=2))
def test_encoder_dropout_placement(student, reference):
    check_dropout_placement(student, reference, "encoder", encoder_inputs(seed=4), seed=5)


@explained("encoder", encoder_inputs(seed=2))
def test_encoder_padded_keys_change_nothing(student, reference):
    inputs = encoder_inputs(seed=6, padded=(0, 2))
    before = forward(student, "encoder", inputs)
    real = {**inputs, "X": inputs["X"].clone()}
    real["X"][1, 0] += nudge(14, DIMS["dim"])  # a real token: through the self-attention, the other real tokens must notice
    assert_output_changes(student, reference, "encoder", inputs, before[1, 1:4], forward(student, "encoder", real)[1, 1:4],
                          "changing real token 0 of sentence 1 for the other real tokens", prefer=("mask", "reads"))
    padded = {**inputs, "X": inputs["X"].clone()}
    padded["X"][1, 4:] += nudge(15, 2, DIMS["dim"])  # only the two padded tokens of sentence 1
    after = forward(student, "encoder", padded)
    for got, expected, what in ((after[0], before[0], "sentence 0 after changing padded tokens of sentence 1"),
                                (after[1, :4], before[1, :4],
                                 "non-padded outputs of sentence 1 after changing its padded tokens")):
        assert_layer_close(student, reference, "encoder", inputs, got, expected, what, prefer=("mask",))
