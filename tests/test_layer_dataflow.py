"""The encoder and decoder layer checks: observed dataflow, plain-words diagnoses, one property per check, and an
attention answered by the judge so that no master code is in the worker.

Most tests run the hidden checks in this process on the corpus's notebooks (tests/corpus.py), the student's
classes loaded as the worker loads them (they are our own code); a few go through a real sandboxed worker.
"""
import copy
import hashlib
import json

import pytest
import torch

import corpus
import hostile_corpus as hc
from autograder.cage import attention_oracle
from autograder.checks import conftest as checks_conftest
from autograder.checks import test_decoder_layer, test_encoder_layer
from autograder.checks.layer_diagnosis import diagnose
from autograder.checks.layers import DIMS, decoder_inputs, encoder_inputs, role_weights
from autograder.cage.client import WorkerClient
from autograder.intake.notebook_code import Unit, extract
from autograder.outcome import CheckFailed
from autograder.reference import load_arguments, load_in_process, reference
from autograder.rubric import RUBRIC
from autograder.sandboxed import harness

LAYERS = ("EncoderLayer", "DecoderLayer")
CHECKS = {"EncoderLayer": test_encoder_layer, "DecoderLayer": test_decoder_layer}

# Every layer bug of the corpus, and words its diagnosis must hold. The last ten were written after the diagnosis
# code, which was not changed for them ("unseen").
DIAGNOSES = {
    "enc_pre_layernorm": "the LayerNorm comes before the sublayer (pre-LN)",
    "enc_no_attention_residual": "the self-attention has no residual connection",
    "enc_dropout_after_layernorm": "dropout is applied to the output of the self-attention after its LayerNorm",
    "enc_no_ffn_dropout": "the feed-forward sublayer's output gets no dropout",
    "enc_one_shared_layernorm": "one LayerNorm is used for 2 sublayers; each sublayer needs its own",
    "enc_mask_not_passed": "the self-attention receives no mask; it needs `mask`",
    "dec_one_shared_layernorm": "one LayerNorm is used for 3 sublayers; each sublayer needs its own",
    "dec_one_attention_for_both": "one attention module does both the self-attention and the cross-attention",
    "dec_masks_swapped": "the masked self-attention receives `cross_attn_mask`; it needs `self_attn_mask`",
    "dec_cross_queries_from_encoder": "the cross-attention's queries come from the encoder output enc_output",
    "dec_no_cross_residual": "the cross-attention has no residual connection",
    "dec_pre_layernorm": "the LayerNorm comes before the sublayer (pre-LN)",
    "dec_no_cross_dropout": "the cross-attention's output gets no dropout",
    "enc_ffn_reads_layer_input": "the feed-forward sublayer reads the layer's input X; it should read the output of "
                                 "the self-attention after its LayerNorm",
    "enc_residual_after_norm": "the residual around the self-attention is added after the LayerNorm",
    "enc_dropout_on_residual": "dropout is applied to the residual sum of the self-attention",
    "enc_returns_input": "the layer returns its input X unchanged",
    "dec_cross_keys_from_decoder_input": "the cross-attention's keys come from the output of the masked "
                                         "self-attention after its LayerNorm; they should come from the encoder output",
    "dec_cross_mask_not_passed": "the cross-attention receives no mask; it needs `cross_attn_mask`",
    "dec_residual_after_norm": "the residual around the masked self-attention is added after the LayerNorm",
    "dec_dropout_on_residual": "dropout is applied to the residual sum of the masked self-attention",
    "dec_returns_input": "the layer returns its input X unchanged",
    # unseen
    "enc_branch_scaled_by_half": "with `mul`",
    "enc_residual_counted_twice": "the residual around the self-attention adds the sum of the layer's input X and the layer's input X",
    "enc_mask_inverted_by_layer": "the self-attention receives a mask that is neither of its inputs",
    "enc_returns_sum_before_last_norm": "the feed-forward sublayer's residual sum goes on without a LayerNorm",
    "dec_sublayers_out_of_order": "the masked self-attention's keys come from the encoder output",
    "dec_ffn_reads_raw_cross_output": "the feed-forward sublayer reads the raw output of the cross-attention after dropout",
    "dec_cross_values_from_decoder": "the cross-attention's values come from the output of the masked self-attention",
    "dec_self_attention_queries_from_encoder": "the masked self-attention's queries come from the encoder output",
    "dec_ffn_residual_from_layer_input": "the residual around the feed-forward sublayer adds the layer's input X",
    "dec_no_self_attention_dropout": "the masked self-attention's output gets no dropout",
}
LAYER_BUGS = [v for v in corpus.VARIANTS if v.part in LAYERS]
LAYER_STYLES = [v for v in corpus.VARIANTS if v.part is None and set(v.answers) & set(LAYERS)]


class InProcess:
    """The checks' `student` fixture over namespaces in this process: a raise fails the check as in grading."""

    def __init__(self, namespaces):
        self.namespaces = namespaces

    def run(self, op, **args):
        try:
            return harness.run(self.namespaces, op, copy.deepcopy(args))
        except Exception as exc:  # noqa: BLE001 (the student's error is the outcome)
            pytest.fail(checks_conftest.PREFIX["exception"] + harness.describe_exception(exc), pytrace=False)


def grade_part(student, part):
    """{check name: (passed, message, diagnosis)} of one layer part's hidden checks."""
    outcomes = {}
    for name in (n for n in dir(CHECKS[part]) if n.startswith("test_")):
        try:
            getattr(CHECKS[part], name)(student, reference("cpu"))
            outcomes[name] = (True, "", "")
        except CheckFailed as failure:
            outcomes[name] = (False, failure.message, failure.diagnosis)
        except pytest.fail.Exception as failure:
            outcomes[name] = (False, str(failure), "")
    return outcomes


def in_process(variant):
    return InProcess(load_in_process(extract(corpus.fill_handout(variant.answers)).units)[0])


def test_every_layer_bug_of_the_corpus_has_expected_words():
    assert sorted(DIAGNOSES) == sorted(v.name for v in LAYER_BUGS)
    assert len(LAYER_BUGS) >= 30


@pytest.mark.parametrize("variant", LAYER_BUGS, ids=lambda v: v.name)
def test_a_layer_bug_is_explained_and_costs_points_in_its_part_only(variant):
    student = in_process(variant)
    outcomes = grade_part(student, variant.part)
    failed = {name: outcome for name, outcome in outcomes.items() if not outcome[0]}
    assert failed, f"{variant.name} passed every {variant.part} check"
    undiagnosed = [name for name, (_, _, diagnosis) in failed.items() if not diagnosis]
    assert not undiagnosed, f"failed without a diagnosis: {undiagnosed}: {failed}"
    assert any(DIAGNOSES[variant.name] in diagnosis for _, _, diagnosis in failed.values()), failed
    for other in LAYERS:
        if other != variant.part:
            assert all(passed for passed, *_ in grade_part(student, other).values()), other


@pytest.mark.parametrize("variant", LAYER_STYLES, ids=lambda v: v.name)
def test_a_correct_layer_style_passes_every_check(variant):
    student = in_process(variant)
    for part in LAYERS:
        failed = {name: outcome for name, outcome in grade_part(student, part).items() if not outcome[0]}
        assert not failed, (part, failed)


def _dataflow(runner, kind):
    inputs = encoder_inputs(seed=2) if kind == "encoder" else decoder_inputs(seed=2)
    return runner.run("layer_dataflow", kind=kind, dims=DIMS, inputs=inputs)


@pytest.mark.parametrize("style", ["explicit_forward_calls", "functional_layer_norm_with_module_weights",
                                   "deepcopy_clones", "helper_per_sublayer", "module_dict",
                                   "residual_with_sum_and_in_place_add", "renamed_and_reordered"])
def test_how_a_sublayer_is_reached_does_not_change_its_dataflow(style):
    student = in_process(next(v for v in corpus.VARIANTS if v.name == style))
    for kind in ("encoder", "decoder"):
        got, expected = _dataflow(student, kind), _dataflow(reference("cpu"), kind)
        assert json.dumps(got, sort_keys=True) == json.dumps(expected, sort_keys=True), (kind, got)
        assert diagnose(got, expected, kind) == ""


def test_the_seed_students_decoder_fails_structure_only_not_dropout():
    """One LayerNorm for three sublayers, dropout in the right place: the dropout check passes (issue 10)."""
    outcomes = grade_part(in_process(next(v for v in corpus.VARIANTS if v.name == "dec_one_shared_layernorm")),
                          "DecoderLayer")
    assert outcomes["test_decoder_dropout_placement"][0], outcomes["test_decoder_dropout_placement"]
    assert outcomes["test_decoder_is_causal"][0] and outcomes["test_decoder_cross_attention_ignores_padded_source"][0]
    assert not outcomes["test_decoder_structure"][0]


@pytest.mark.parametrize("name", ["enc_returns_input", "dec_returns_input"])
def test_a_layer_that_returns_its_input_earns_nothing_for_padding_causality_or_dropout(name):
    """It builds and calls the right sublayers (its structure check passes), and earns nothing else."""
    variant = next(v for v in corpus.VARIANTS if v.name == name)
    outcomes = grade_part(in_process(variant), variant.part)
    passed = [check for check, (ok, *_) in outcomes.items() if ok]
    assert passed == [f"test_{variant.part[:7].lower()}_structure"], passed


def test_rubric_lines_of_the_layers_say_which_property_they_measure():
    for check, line in RUBRIC.items():
        if line.part in LAYERS:
            prefix = line.checks.split(":")[0]
            assert prefix in ("structure", "dataflow", "dropout sits right after each sublayer", "padding",
                              "causality", "cross-attention", "lengths"), (check, line.checks)
    assert sum(line.points for line in RUBRIC.values() if line.part == "EncoderLayer") == 20
    assert sum(line.points for line in RUBRIC.values() if line.part == "DecoderLayer") == 25


# --------------------------------------------------------------------------- the judge's side of the stand-in

def _request(**changes):
    dim, rng = 8, torch.Generator().manual_seed(0)
    weights = {name: {"weight": torch.randn(dim, dim, generator=rng), "bias": torch.randn(dim, generator=rng)}
               for name in ("W_q", "W_k", "W_v", "W_o")}
    X = torch.randn(2, 3, dim, generator=rng)
    return {"dim": dim, "head_num": 2, "X_Q": X, "X_K": X, "X_V": X, "mask": None, "weights": weights, **changes}


def test_the_oracle_answers_only_layer_operations_and_a_bounded_number_of_times():
    message = {"callback": "attention", "args": _request()}
    answer, record = attention_oracle.reply("layer_forward", message, 0)
    assert answer["ok"] and answer["result"].shape == (2, 3, 8) and record["answered"]
    for op in ("mha_sdp", "mha_forward", "pe", "train", "load"):
        refused, record = attention_oracle.reply(op, message, 0)
        assert not refused["ok"] and "only answers during layer checks" in refused["error"], op
        assert not record["answered"]
    refused, _ = attention_oracle.reply("layer_forward", message, attention_oracle.MAX_CALLS_PER_OPERATION)
    assert not refused["ok"] and "attention calls in one check" in refused["error"]


@pytest.mark.parametrize("bad", [{"dim": 7}, {"head_num": 3}, {"X_Q": torch.zeros(2, 3)}, {"X_K": "keys"},
                                 {"X_V": torch.zeros(5000, 1, 8)}, {"weights": {}}, {"mask": torch.zeros(1, 1, 1, 1, 9)},
                                 {"X_K": torch.zeros(2, 4, 8), "X_V": torch.zeros(2, 5, 8)}])
def test_the_oracle_refuses_requests_that_do_not_fit(bad):
    answer, _ = attention_oracle.reply("layer_forward", {"callback": "attention", "args": _request(**bad)}, 0)
    assert not answer["ok"] and answer["error"]


# --------------------------------------------------------------------------- through a real worker

def _worker_student(client):
    return checks_conftest.Student(client, timeout=30.0, budget=600.0)


@pytest.mark.parametrize("name", ["dec_masks_swapped", "enc_returns_input", "explicit_forward_calls"])
def test_the_stand_in_through_a_real_worker(name, tmp_path):
    variant = next(v for v in corpus.VARIANTS if v.name == name)
    with WorkerClient(tmp_path, load_arguments(extract(corpus.fill_handout(variant.answers)).units)) as client:
        student = _worker_student(client)
        here = in_process(variant)
        for part in LAYERS:
            assert grade_part(student, part) == grade_part(here, part), part
        # The judge recorded what the stand-ins of the last operation sent: inputs, mask and weights.
        answered = [call["request"] for call in client.callbacks if call["answered"]]
        assert answered, "the judge was not asked for the attention"
        assert all(set(request["weights"]) == {"W_q", "W_k", "W_v", "W_o"} for request in answered)


SEARCH = '''
def search_the_worker(wanted):
    """Every string and source line this process holds, hashed and looked up in `wanted`."""
    import gc, hashlib, inspect, linecache, sysconfig
    installed = tuple(sysconfig.get_paths()[key] for key in ("stdlib", "purelib", "platlib"))
    seen, found = set(), set()
    def look(text):
        for line in str(text).splitlines():
            line = line.split("  #")[0].strip()
            if line and line not in seen:
                seen.add(line)
                digest = hashlib.sha256(line.encode()).hexdigest()
                if digest in wanted:
                    found.add(digest)
    for name in list(linecache.cache):
        look("".join(linecache.getlines(name)))
    for obj in gc.get_objects():
        if isinstance(obj, dict):
            for key, value in list(obj.items()):
                if isinstance(value, str):
                    look(value)
        elif isinstance(obj, (list, tuple)):
            for item in obj:
                if isinstance(item, str):
                    look(item)
        elif inspect.isfunction(obj):
            for constant in obj.__code__.co_consts:
                if isinstance(constant, str):
                    look(constant)
            if not obj.__code__.co_filename.startswith(installed):  # torch's own sources are not worth the time
                try:
                    look(inspect.getsource(obj))
                except (OSError, TypeError):
                    pass
    return f"SEARCHED {len(seen)} lines, FOUND {sorted(found)}"
'''


def _hashes(lines):
    return {hashlib.sha256(line.encode()).hexdigest(): line for line in lines}


def test_no_master_code_source_or_value_is_reachable_in_the_worker(tmp_path):
    """A submission that shares no line with the master searches the worker (namespaces, gc, linecache, sources)
    for the master's solution lines, in a layer check (the stand-in live) and in an attention check."""
    master = _hashes(hc.master_solution_lines())
    own_line = "seen = set()"  # a line of the search itself: found, so the search does look
    wanted = {**master, **_hashes([own_line])}
    notebook = hc.fill_handout(hc.NOT_THE_MASTER)
    own = hc.notebook_code_lines(hc.dumps(notebook))
    assert not set(master.values()) & own
    units = extract(notebook).units + [Unit("search", "<cell 90>", SEARCH), Unit("layer", "<cell 91>", f'''
class EncoderLayer(nn.Module):
    def __init__(self, dim, head_num, FFN_dim, dropout):
        super().__init__()
        self.attention = MultiHeadAttention(dim, head_num)

    def forward(self, X, mask):
        self.attention(X, X, X, mask)
        raise RuntimeError(search_the_worker({sorted(wanted)!r}))
'''), Unit("attention", "<cell 92>", f'''
class MultiHeadAttention(nn.Module):
    def __init__(self, dim, head_num):
        super().__init__()

    def scaled_dot_product(self, Q, K, V, mask=None):
        raise RuntimeError(search_the_worker({sorted(wanted)!r}))
''')]
    with WorkerClient(tmp_path, load_arguments(units)) as client:
        for op, args in (("layer_forward", {"kind": "encoder", "dims": DIMS, "weights": role_weights("encoder", 0),
                                            "inputs": encoder_inputs(seed=1)}),
                         ("mha_sdp", {"dim": 8, "head_num": 2, "Q": torch.zeros(1, 2, 3, 4), "K": torch.zeros(1, 2, 3, 4),
                                      "V": torch.zeros(1, 2, 3, 4)})):
            with pytest.raises(Exception) as raised:
                client.call(op, 60.0, **args)
            report = str(raised.value)
            assert "SEARCHED" in report, report
            count = int(report.split("SEARCHED ")[1].split(" ")[0])
            found = [wanted[d] for d in report.split("FOUND ")[1].strip().strip("[]").replace("'", "").split(", ") if d]
            assert count > 1000, report
            assert found == [own_line], (op, found)


def test_a_students_attention_cannot_ask_the_judge_outside_the_layer_checks(tmp_path):
    """Its own scaled_dot_product finds the layers' stand-in with gc and calls it: the judge refuses."""
    steal = Unit("thief", "<cell 93>", '''
class MultiHeadAttention(nn.Module):
    def __init__(self, dim, head_num):
        super().__init__()

    def scaled_dot_product(self, Q, K, V, mask=None):
        import gc
        stand_ins = [c for c in gc.get_objects() if isinstance(c, type) and c.__name__ == "MultiHeadAttention"
                     and "<locals>" in c.__qualname__]
        X = torch.zeros(1, 3, 8)
        return stand_ins[0](8, 2)(X, X, X)
''')
    units = extract(corpus.fill_handout({})).units + [steal]
    with WorkerClient(tmp_path, load_arguments(units)) as client:
        with pytest.raises(Exception) as raised:
            client.call("mha_sdp", 30.0, dim=8, head_num=2, Q=torch.zeros(1, 2, 3, 4), K=torch.zeros(1, 2, 3, 4),
                        V=torch.zeros(1, 2, 3, 4))
        assert "the grader refused the attention call" in str(raised.value), raised.value
        assert "only answers during layer checks, not during `mha_sdp`" in str(raised.value)
        assert client.callbacks == [{"answered": False, "request": None}]
