"""Named bugs: each fingerprint names its own bug, and none fires on correct code.

Student notebooks are the release handout with the stubs filled in (tests/corpus.py's fill_handout), or,
where that helper is missing, the master notebook with the part's solution regions replaced. Most tests
run the student's classes in this process (they are our own code); one goes through a real sandboxed
worker, as grading does.
"""
import copy
import json
import re

import pytest

from autograder.checks import fingerprints
from autograder.sandboxed import harness
from autograder.checks.bug_variants import FINGERPRINTS, fill_regions
from autograder.cage.client import StudentError, WorkerClient
from autograder.intake.notebook_code import PART_CELLS, extract
from autograder.reference import MASTER, load_arguments, load_in_process, master_code

try:
    import corpus
except ImportError:  # the corpus helper belongs to another suite; the master gives the same notebooks
    corpus = None

PARTS = fingerprints.PROBED_PARTS
# Corpus bug -> the fingerprint that must name it (corpus bugs not listed here are not checked).
CORPUS_NAMES = {
    "pe_sin_cos_swapped": "pe_sin_cos_swapped", "pe_halves_not_interleaved": "pe_halves",
    "pe_exponent_doubled": "pe_exponent_doubled", "pe_exponent_per_column": "pe_cos_own_exponent",
    "pe_positions_from_one": "pe_positions_from_one", "mha_scaled_by_sqrt_dim": "mha_scaled_by_sqrt_dim",
    "mha_not_scaled": "mha_not_scaled", "mha_softmax_over_queries": "mha_softmax_over_queries",
    "mha_mask_after_softmax": "mha_mask_after_softmax", "mha_mask_inverted": "mha_mask_inverted",
    "mha_masked_scores_set_to_zero": "mha_masked_scores_zero", "enc_pre_layernorm": "enc_pre_layernorm",
    "enc_no_attention_residual": "enc_no_residual_self_attn",
    "enc_dropout_after_layernorm": "enc_dropout_after_layernorm", "enc_no_ffn_dropout": "enc_no_dropout_ffn",
    "enc_one_shared_layernorm": "enc_shared_layernorm", "enc_mask_not_passed": "enc_mask_not_passed",
    "dec_one_shared_layernorm": "dec_shared_layernorm", "dec_one_attention_for_both": "dec_shared_attention",
    "dec_masks_swapped": "dec_masks_swapped", "dec_cross_queries_from_encoder": "dec_cross_queries_from_encoder",
    "dec_no_cross_residual": "dec_no_residual_cross_attn", "dec_pre_layernorm": "dec_pre_layernorm",
    "dec_no_cross_dropout": "dec_no_dropout_cross_attn",
}


def student_notebook(answers):
    """A submission whose parts in `answers` hold that code; every other part is the reference."""
    if corpus is not None:
        return corpus.fill_handout({part: list(chunks) for part, chunks in answers.items()})
    notebook = json.loads(MASTER.read_text(encoding="utf-8"))
    master = master_code()
    for cell in notebook["cells"]:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        part = next((p for p, g in PART_CELLS.items() if g == grade_id), None)
        if part in answers:
            cell["source"] = fill_regions(master.classes[part].source, answers[part])
    return notebook


def in_process_student(notebook):
    namespaces, report = load_in_process(extract(notebook).units)
    assert not report["errors"], report["errors"]
    return fingerprints.in_process(namespaces)


def named(part, run):
    return [bug["id"] for bug in fingerprints.identify(part, run)]


def test_the_library_covers_every_part_with_plain_words():
    assert len(FINGERPRINTS) >= 15
    for part in PARTS:
        assert sum(f.part == part for f in FINGERPRINTS) >= 3, part
    for fingerprint in FINGERPRINTS:
        assert fingerprint.title and fingerprint.hint and not fingerprint.title.endswith(".")
        # Words, not the code that fixes it.
        code = re.search(r"\b(self|torch|nn|F)\.\w|masked_fill|\w\(\w", fingerprint.hint)
        assert code is None, (fingerprint.id, code.group(0))


def test_every_variant_differs_from_the_reference():
    library = fingerprints.library()
    for part in PARTS:
        library.expected(part)
    assert library.indistinguishable == []


@pytest.mark.parametrize("fingerprint", FINGERPRINTS, ids=[f.id for f in FINGERPRINTS])
def test_fingerprint_names_its_own_bug(fingerprint):
    run = in_process_student(student_notebook({fingerprint.part: fingerprint.answers}))
    assert named(fingerprint.part, run) == [fingerprint.id]


def test_nothing_fires_on_the_master():
    run = fingerprints.in_process(load_in_process(master_code().units)[0])
    for part in PARTS:
        assert named(part, run) == [], part


@pytest.mark.skipif(corpus is None, reason="tests/corpus.py (the synthetic submissions) is not there")
@pytest.mark.parametrize("variant", [v for v in getattr(corpus, "VARIANTS", []) if v.part is None],
                         ids=lambda v: v.name)
def test_nothing_fires_on_correct_code_written_differently(variant):
    run = in_process_student(corpus.fill_handout(variant.answers))
    for part in PARTS:
        assert named(part, run) == [], part


@pytest.mark.skipif(corpus is None, reason="tests/corpus.py (the synthetic submissions) is not there")
@pytest.mark.parametrize("variant", [v for v in getattr(corpus, "VARIANTS", []) if v.name in CORPUS_NAMES],
                         ids=lambda v: v.name)
def test_bugs_written_by_someone_else_are_named(variant):
    run = in_process_student(corpus.fill_handout(variant.answers))
    assert named(variant.part, run) == [CORPUS_NAMES[variant.name]]


def test_a_student_that_gives_no_answer_gets_no_name():
    def hangs(op, **args):
        raise StudentError("time", f"time limit: `{op}` took longer than 1 s")
    assert fingerprints.identify("MultiHeadAttention", hangs) == []


def test_error_class_is_read_from_the_students_traceback():
    message = "cell 20, line 31, in forward: X = self.norm2(...)\nRuntimeError: The size of tensor a (5) must match"
    assert fingerprints.error_class(message) == "RuntimeError"
    assert fingerprints.error_class("torch.OutOfMemoryError: CUDA out of memory") == "torch.OutOfMemoryError"


def _fingerprint(fingerprint_id):
    return next(f for f in FINGERPRINTS if f.id == fingerprint_id)


def test_through_a_real_worker_and_the_pipeline_hook(tmp_path):
    """Two bugs in one notebook, one of which raises on some probes, named through a sandboxed worker."""
    inverted, swapped = _fingerprint("mha_mask_inverted"), _fingerprint("dec_masks_swapped")
    notebook = student_notebook({"MultiHeadAttention": inverted.answers, "DecoderLayer": swapped.answers})
    outcomes = {"test_sdp_key_padding_mask": (False, "heads with a key padding mask: NaN at index (0, 0, 0, 0)"),
                "test_sdp_without_mask": (True, ""),
                "test_decoder_output_eval_mode": (False, "eval-mode output: largest absolute error 1.2"),
                "test_encoder_output_eval_mode": (False, "time limit: `layer_forward` took longer than 20 s"),
                "test_training_loss_falls": (False, "over 40 steps the loss went from 5 to 5")}
    with WorkerClient(tmp_path, load_arguments(extract(notebook).units)) as client:
        run = lambda op, **args: client.call(op, 30.0, **args)  # noqa: E731
        assert named("MultiHeadAttention", run) == ["mha_mask_inverted"]
        assert named("DecoderLayer", run) == ["dec_masks_swapped"]
        assert named("EncoderLayer", run) == []
        events = copy.deepcopy(client.events)
        annotated, bugs = fingerprints.name_bugs(outcomes, client, timeout=30.0)
        assert client.events == events, "the probes' own failures must stay out of the grading log"
    assert bugs == {"MultiHeadAttention": [inverted.public()], "DecoderLayer": [swapped.public()]}
    assert annotated["test_sdp_key_padding_mask"][1] == (
        f"{outcomes['test_sdp_key_padding_mask'][1]}\nLikely bug: {inverted.title}. Hint: {inverted.hint}")
    assert "Likely bug: The two masks are swapped." in annotated["test_decoder_output_eval_mode"][1]
    for unchanged in ("test_sdp_without_mask", "test_encoder_output_eval_mode", "test_training_loss_falls"):
        assert annotated[unchanged] == outcomes[unchanged]
