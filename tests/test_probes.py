"""Property probes for PositionalEncoding and MultiHeadAttention: every bug of those parts in the corpus gets a
diagnosis in plain words, fails only the checks of the property it breaks, and correct code keeps every check.

The hidden checks of a part run through pytest in this process, as the pipeline runs them, with a client that
runs the student's classes in process too (they are our own corpus code, not hostile).
"""
import copy
import re

import pytest
import torch

import corpus
from autograder import pipeline
from autograder.checks import training_cause
from autograder.checks.bug_variants import FINGERPRINTS
from autograder.checks import probe_attention, probe_pe
from autograder.cage.client import StudentError
from autograder.intake.notebook_code import extract
from autograder.reference import load_arguments, reference
from autograder.outcome import Outcome
from autograder.rubric import RUBRIC
from autograder.sandboxed import harness

CHECK_FILES = {"PositionalEncoding": "test_positional_encoding.py", "MultiHeadAttention": "test_multi_head_attention.py",
               "Training": "test_training.py"}
PROBED = ("PositionalEncoding", "MultiHeadAttention")


class InProcessClient:
    """The WorkerClient's interface over namespaces in this process."""

    def __init__(self, notebook):
        self.namespaces, self.report = harness.load_namespaces(**load_arguments(extract(notebook).units))
        self.events, self.output = [], []

    def loaded(self):
        return self.report

    def start(self, op, timeout, answer_limit=None, **args):
        try:
            value, error = harness.run(self.namespaces, op, copy.deepcopy(args)), None
        except Exception as exc:  # noqa: BLE001 (the student's error is the answer)
            value, error = None, StudentError("exception", harness.describe_exception(exc))

        def answer():
            if error:
                raise error
            return value
        return answer

    def training_client(self):
        return self

    def close(self):
        pass


def grade_part(part, notebook):
    """{test name: Outcome} for the checks of `part` only."""
    torch.set_num_threads(1)
    context = pipeline.Context(InProcessClient(notebook), reference("cpu"), pipeline.Settings())
    recorder = pipeline._Recorder(context)
    checks = pipeline.CHECKS
    pytest.main([str(checks / CHECK_FILES[part]), "-c", str(checks / "pytest.ini"), "--rootdir",
                 str(checks.parents[1]), "-p", "no:terminal"], plugins=[recorder])
    wanted = {name for name, line in RUBRIC.items() if line.part == part}
    assert set(recorder.outcomes) == wanted, (sorted(recorder.outcomes), sorted(wanted))
    return recorder.outcomes


def failures(outcomes):
    return {name: outcome for name, outcome in outcomes.items() if not outcome.passed}


# Corpus bug -> (the checks it must fail, words its diagnosis must hold). Every other check of its part passes.
EXPECTED = {
    "pe_sin_cos_swapped": ({"test_pe_values_match_formula"}, r"even columns hold cos and odd columns sin"),
    "pe_halves_not_interleaved": ({"test_pe_values_match_formula"}, r"column 1 holds sin; the formula gives cos"),
    "pe_exponent_doubled": ({"test_pe_values_match_formula"},
                            r"column 2 has frequency 10000\^\(-4/dim\); the formula gives 10000\^\(-2/dim\)"),
    "pe_exponent_per_column": ({"test_pe_values_match_formula"},
                               r"column 1 has frequency 10000\^\(-1/dim\); the formula gives 10000\^\(-0/dim\)"),
    "pe_positions_from_one": ({"test_pe_values_match_formula"}, r"positions start at 1"),
    "pe_float64_never_cast": ({"test_pe_dtype"}, r"your table is float64.*float32"),
    "pe_as_parameter": ({"test_pe_buffer_shape"}, r"PE is a parameter.*keep it a registered buffer"),
    "pe_exponent_off_by_one_column": ({"test_pe_values_match_formula"},
                                      r"column 0 has frequency 10000\^\(-1/dim\); the formula gives 10000\^\(-0/dim\)"),
    "pe_forward_adds_whole_table": ({"test_pe_forward_adds_leading_rows"}, r"it adds the whole table"),
    "pe_base_1000": ({"test_pe_values_match_formula"},
                     r"column 2 has frequency 10000\^\(-1.50/dim\); the formula gives 10000\^\(-2/dim\)"),
    "pe_forward_scales_input": ({"test_pe_forward_adds_leading_rows"}, r"forward multiplies X by 4"),
    "pe_forward_adds_last_rows": ({"test_pe_forward_adds_leading_rows"},
                                  r"forward adds rows \[13, 14, 15, 16, 17, 18, 19\] of the table"),
    "pe_table_transposed": ({"test_pe_buffer_shape", "test_pe_values_match_formula", "test_pe_forward_adds_leading_rows"},
                            r"the table is transposed"),
    "mha_scaled_by_sqrt_dim": ({"test_sdp_scale"}, r"your scores are divided by 5.66; √word_dim is 4"),
    "mha_not_scaled": ({"test_sdp_scale"}, r"your scores are not scaled"),
    "mha_softmax_over_queries": ({"test_sdp_softmax_over_keys", "test_sdp_key_padding_mask", "test_sdp_causal_mask"},
                                 r"sum to 1 over the queries, not over the keys"),
    "mha_mask_after_softmax": ({"test_sdp_key_padding_mask", "test_sdp_causal_mask"},
                               r"masked keys get weight 0, but the remaining weights sum to .* before the softmax"),
    "mha_mask_inverted": ({"test_sdp_key_padding_mask", "test_sdp_causal_mask"}, r"the mask is used the wrong way round"),
    "mha_masked_scores_set_to_zero": ({"test_sdp_key_padding_mask", "test_sdp_causal_mask"},
                                      r"masked scores are set to 0 instead of -inf"),
    "mha_scaled_by_2": ({"test_sdp_scale"}, r"your scores are divided by 2; √word_dim is 4"),
    "mha_masked_scores_minus_one": ({"test_sdp_key_padding_mask", "test_sdp_causal_mask"},
                                    r"masked scores are set to -1 instead of -inf"),
    "mha_returns_probabilities": ({"test_sdp_returns_weighted_values", "test_forward_matches_composition"},
                                  r"returns the attention weights themselves"),
    "mha_no_output_projection": ({"test_forward_matches_composition"}, r"W_o is not applied"),
    "mha_key_value_projections_swapped": ({"test_forward_matches_composition"},
                                          r"the keys are computed with W_v, the values are computed with W_k"),
    "mha_combine_without_transpose": ({"test_forward_matches_composition"}, r"the heads are combined without moving"),
    "mha_sdp_in_float64": ({"test_sdp_returns_weighted_values", "test_forward_matches_composition"},
                           r"never cast back.*float32"),
    "mha_scaled_by_query_length": ({"test_sdp_scale"}, r"your scores are divided by 2.24; √word_dim is 4"),
    "mha_softmax_over_heads": ({"test_sdp_softmax_over_keys", "test_sdp_key_padding_mask", "test_sdp_causal_mask",
                                "test_sdp_query_and_key_lengths_differ"}, r"sum to 1 over the heads"),
    "mha_dropout_in_sdp": ({"test_sdp_scale", "test_sdp_softmax_over_keys", "test_sdp_key_padding_mask",
                            "test_sdp_causal_mask", "test_sdp_query_and_key_lengths_differ"}, r"sum to between .* weights are exactly 0 although no mask was given"),
    "mha_mask_added_as_numbers": ({"test_sdp_key_padding_mask", "test_sdp_causal_mask"}, r"masked .* nonzero weight"),
    "mha_queries_from_key_input": ({"test_forward_matches_composition"}, r"the queries are computed from X_K"),
}
BUGS = [v for v in corpus.VARIANTS if v.part in PROBED]


def test_every_probed_bug_has_an_expectation():
    assert {v.name for v in BUGS} == set(EXPECTED)


@pytest.mark.parametrize("variant", BUGS, ids=lambda v: v.name)
def test_bug_fails_its_property_with_a_diagnosis(variant):
    outcomes = grade_part(variant.part, corpus.fill_handout(variant.answers))
    failed = {name for name, outcome in outcomes.items() if not outcome.passed}
    expected_failures, words = EXPECTED[variant.name]
    assert failed, f"{variant.name} passed every check of {variant.part}"
    assert failed == expected_failures, {name: outcomes[name] for name in failed ^ expected_failures}
    diagnoses = [outcomes[name].diagnosis for name in sorted(failed)]
    assert all(diagnoses), {name: outcomes[name] for name in failed}
    assert any(re.search(words, d) for d in diagnoses), diagnoses
    # Words, never the code that fixes it.
    for diagnosis in diagnoses:
        assert not re.search(r"\b(self|torch|nn|F)\.\w|masked_fill|softmax\(", diagnosis), diagnosis


@pytest.mark.parametrize("fingerprint", [f for f in FINGERPRINTS if f.part in PROBED], ids=lambda f: f.id)
def test_catalogued_bug_gets_a_diagnosis_on_every_failed_check(fingerprint):
    outcomes = grade_part(fingerprint.part, corpus.fill_handout({fingerprint.part: list(fingerprint.answers)}))
    failed = failures(outcomes)
    assert failed and all(outcome.diagnosis for outcome in failed.values()), failed


CORRECT = [(v, part) for v in corpus.VARIANTS if v.part is None for part in PROBED if part in v.answers]


@pytest.mark.parametrize("variant, part", CORRECT, ids=lambda value: getattr(value, "name", value))
def test_correct_style_keeps_every_check(variant, part):
    outcomes = grade_part(part, corpus.fill_handout(variant.answers))
    assert not failures(outcomes), failures(outcomes)


def test_the_master_keeps_every_check():
    notebook = corpus.fill_handout({})
    for part in PROBED:
        outcomes = grade_part(part, notebook)
        assert not failures(outcomes), failures(outcomes)


def test_the_composition_is_torch_multihead_attention():
    """The forward check's expectation, with the reference's scaled_dot_product, is an independent implementation's."""
    dim, heads = 32, 4
    weights = {name: {"weight": probe_attention.randn(dim, dim, seed=i) / dim**0.5,
                      "bias": probe_attention.randn(dim, seed=10 + i)} for i, name in enumerate(("W_q", "W_k", "W_v", "W_o"))}
    X, memory = probe_attention.randn(2, 5, dim, seed=1), probe_attention.randn(2, 7, dim, seed=2)
    run = reference("cpu").run
    expected = probe_attention.composed(lambda Q, K, V, m: run("mha_sdp", dim=dim, head_num=heads, Q=Q, K=K, V=V, mask=m),
                                        weights, {"X_Q": X, "X_K": memory, "X_V": memory}, heads)
    torch_mha = torch.nn.MultiheadAttention(dim, heads, batch_first=True).eval()
    with torch.no_grad():
        torch_mha.in_proj_weight.copy_(torch.cat([weights[n]["weight"] for n in ("W_q", "W_k", "W_v")]))
        torch_mha.in_proj_bias.copy_(torch.cat([weights[n]["bias"] for n in ("W_q", "W_k", "W_v")]))
        torch_mha.out_proj.weight.copy_(weights["W_o"]["weight"])
        torch_mha.out_proj.bias.copy_(weights["W_o"]["bias"])
        output, _ = torch_mha(X, memory, memory, need_weights=False)
    assert (expected - output.double()).abs().max() < 1e-5


def test_table_fit_reads_frequency_phase_and_amplitude():
    table = probe_pe.formula(16, 200)
    assert probe_pe.describe_table(table, 16) == []
    assert probe_pe.describe_table(table * 0.5, 16) == ["column 0 swings between ±0.5; sin and cos swing between ±1"]
    amplitude, rate, phase, residual = probe_pe.fit_column(table[:, 5])
    assert abs(amplitude - 1) < 1e-6 and abs(probe_pe.exponent(rate, 16) - 4) < 1e-3 and residual < 1e-6
    assert probe_pe.function_name(phase, rate, 0) == "cos"


def test_scale_fit_reads_the_divisor():
    Q, K = probe_attention.randn(1, 1, 4, 8, seed=1), probe_attention.randn(1, 1, 8, 8, seed=2)
    S = probe_attention.scores(Q, K)
    assert abs(probe_attention.fit_scale(torch.softmax(S / 3.0, -1), S, 3) - 1 / 3) < 1e-9
    assert abs(probe_attention.fit_scale(torch.softmax(S, -1) ** 2, S, 3) - 2) < 1e-9  # softmax(2S), unnormalised
    assert probe_attention.fit_scale(torch.rand(1, 1, 4, 8, generator=torch.Generator().manual_seed(3)), S, 3) is None


# ----------------------------------------------------------------- Training: the likely cause

def test_a_dtype_bug_is_caught_in_its_part_and_named_as_training_s_cause():
    notebook = corpus.fill_handout(next(v for v in corpus.VARIANTS if v.name == "pe_float64_never_cast").answers)
    outcomes = {**grade_part("PositionalEncoding", notebook), **grade_part("Training", notebook)}
    assert set(failures(outcomes)) == {"test_pe_dtype", "test_training_loss_is_finite", "test_training_loss_falls"}
    assert "must have the same dtype" in outcomes["test_training_loss_falls"].message
    explained = training_cause.explain(outcomes)
    for name in ("test_training_loss_is_finite", "test_training_loss_falls"):
        assert explained[name].diagnosis == ("your PositionalEncoding failed its checks (dtype): a model built on it "
                                             "cannot be expected to train")
        assert explained[name].message == outcomes[name].message
    assert explained["test_pe_dtype"] == outcomes["test_pe_dtype"]


def test_training_cause_names_every_failed_part_and_their_properties():
    outcomes = {name: Outcome(True) for name in RUBRIC}
    outcomes["test_sdp_scale"] = Outcome(False, "factor 0.5", "your scores are divided by 2")
    outcomes["test_pe_forward_adds_leading_rows"] = Outcome(False, "error 1.0")
    outcomes["test_training_loss_falls"] = Outcome(False, "over 40 steps the loss went from 5 to 5")
    explained = training_cause.explain(outcomes)
    assert explained["test_training_loss_falls"].diagnosis == (
        "your PositionalEncoding failed its checks (forward); your MultiHeadAttention failed its checks (scale): "
        "a model built on them cannot be expected to train")
    assert explained["test_training_loss_is_finite"] == outcomes["test_training_loss_is_finite"]
    assert explained["test_sdp_scale"] == outcomes["test_sdp_scale"]


def test_training_cause_says_plainly_when_every_part_passed():
    outcomes = {name: Outcome(True) for name in RUBRIC}
    outcomes["test_training_loss_is_finite"] = Outcome(False, "the loss is not finite from step 3 on")
    diagnosis = training_cause.explain(outcomes)["test_training_loss_is_finite"].diagnosis
    assert diagnosis.startswith("every part passed its own checks, so the failure comes from how they work together")
    assert training_cause.explain({name: Outcome(True) for name in RUBRIC}) == {name: Outcome(True) for name in RUBRIC}
