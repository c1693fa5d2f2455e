"""DecoderLayer, graded with attention stand-ins answered by the judge (the reference attention) and the given
FFN in place of the student's; a failure says where the layer's dataflow departs from the reference's."""
from autograder.checks.layers import (DIMS, assert_layer_close, assert_output_changes, check_dropout_placement,
                                      check_structure, explained, nudge, decoder_inputs, diagnosis, forward)
from autograder.outcome import fail


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_structure(student, reference):
    check_structure(student, reference, "decoder", decoder_inputs(seed=1))


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_output_eval_mode(student, reference):
    inputs = decoder_inputs(seed=2)
    assert_layer_close(student, reference, "decoder", inputs, forward(student, "decoder", inputs, seed=3),
                       forward(reference, "decoder", inputs, seed=3),
                       "eval-mode output for target and source of length 6 with padding and causal masks")


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_is_causal(student, reference):
    length, t = 7, 3
    inputs = decoder_inputs(seed=4, tgt_len=length, src_len=5, src_padded=(0, 0), tgt_padded=(0, 0))
    changed = {**inputs, "X": inputs["X"].clone()}
    changed["X"][:, t] += nudge(11, 2, DIMS["dim"])
    before, after = forward(student, "decoder", inputs), forward(student, "decoder", changed)
    assert_output_changes(student, reference, "decoder", inputs, before[:, t + 1:], after[:, t + 1:],
                          f"changing target token {t} for the later positions", prefer=("mask", "reads"))
    moved = (after[:, :t] - before[:, :t]).abs().amax(dim=(0, 2)) > 1e-5
    if moved.any():
        fail(f"changing target token {t} changed the output at position {int(moved.nonzero()[0])}: "
             "the self-attention sees the future",
             diagnosis(student, reference, "decoder", inputs, prefer=("mask", "reads")))


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_cross_attention_ignores_padded_source(student, reference):
    inputs = decoder_inputs(seed=5, src_len=7, src_padded=(0, 3))
    before = forward(student, "decoder", inputs)
    real = {**inputs, "enc_output": inputs["enc_output"].clone()}
    real["enc_output"][1, 0] += nudge(12, DIMS["dim"])  # a real source position: the cross-attention must see it
    assert_output_changes(student, reference, "decoder", inputs, before[1], forward(student, "decoder", real)[1],
                          "changing the encoder output at a real source position", prefer=("reads", "mask"))
    padded = {**inputs, "enc_output": inputs["enc_output"].clone()}
    padded["enc_output"][1, 4:] += nudge(13, 3, DIMS["dim"])  # only the padded source positions of sentence 1
    assert_layer_close(student, reference, "decoder", inputs, forward(student, "decoder", padded), before,
                       "decoder output after changing the encoder output at padded source positions",
                       prefer=("mask", "reads"))


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_dropout_placement(student, reference):
    check_dropout_placement(student, reference, "decoder", decoder_inputs(seed=6), seed=7)


@explained("decoder", decoder_inputs(seed=2))
def test_decoder_target_and_source_lengths_differ(student, reference):
    for tgt_len, src_len in [(5, 9), (9, 4)]:
        inputs = decoder_inputs(seed=8, tgt_len=tgt_len, src_len=src_len, src_padded=(0, 1), tgt_padded=(1, 0))
        assert_layer_close(student, reference, "decoder", inputs, forward(student, "decoder", inputs, seed=9),
                           forward(reference, "decoder", inputs, seed=9),
                           f"eval-mode output for target length {tgt_len}, source length {src_len}")
