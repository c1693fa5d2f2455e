"""Naming the bug behind a failed part: the student's outputs against known-bug variants of the reference.

Every variant of autograder.checks.bug_variants is the master's class with one realistic mistake. For a part that
lost points, a fixed set of probe operations (the harness operations and inputs the checks use) runs on
the student's classes and on every variant of that part; a variant whose outputs the student's match on
every probe names the bug. The variants' outputs are the same for every submission, so each process
computes them once.

Matching rules, chosen so that a correct submission written differently never matches:
- tensors agree within 1e-5 + 1e-4·|expected| (the PE table, like its check, within 1e-4), shapes exactly;
- a NaN in the variant's output is a fully masked row, whose value depends on the fill the student chose
  (-inf or -1e9), so it is left out, as long as at least half of all values are compared;
- a probe on which the variant raises matches a student who raises the same class of error, and at
  least one probe must match by value;
- a variant that the probes cannot tell apart from the reference is never offered.
"""
import copy
import functools
import re
import time
from dataclasses import dataclass

import torch

from autograder.sandboxed import harness
from autograder.assignment import CLASS_PARTS
from autograder.checks.bug_variants import FINGERPRINTS, fill_regions
from autograder.checks.layers import DIMS, decoder_inputs, encoder_inputs, key_padding_mask, role_weights
from autograder.cage.client import StudentError
from autograder.outcome import Outcome, as_outcome
from autograder.intake.notebook_code import Unit
from autograder.reference import load_in_process, master_code, reference
from autograder.rubric import RUBRIC

ATOL, RTOL = 1e-5, 1e-4
MIN_COVERAGE = 0.5
PROBED_PARTS = tuple(part.name for part in CLASS_PARTS)
# Failures that say the code gave no answer at all: probing again would only hit the same wall.
NO_ANSWER = ("time limit", "memory limit", "the code crashed", "the code ended", "the submission could not be loaded",
             "class ")
_FRAME = re.compile(r"^[^\n,]+, line \d+, in ")


@dataclass(frozen=True)
class Probe:
    op: str
    args: dict
    atol: float = ATOL
    rtol: float = RTOL


def _randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _sdp(seed, dim=32, head_num=4, len_q=6, len_k=6, mask=None):
    word_dim = dim // head_num
    return Probe("mha_sdp", {"dim": dim, "head_num": head_num, "Q": _randn(2, head_num, len_q, word_dim, seed=seed),
                             "K": _randn(2, head_num, len_k, word_dim, seed=seed + 1),
                             "V": _randn(2, head_num, len_k, word_dim, seed=seed + 2), "mask": mask})


def _layer(kind, inputs, seed, train=False):
    dims = {**DIMS, "dropout": 1.0} if train else DIMS
    return Probe("layer_forward", {"kind": kind, "dims": dims, "weights": role_weights(kind, seed, dims),
                                   "inputs": inputs, "train": train})


@functools.lru_cache(maxsize=None)
def probes(part):
    """The probes of a part: the checks' own inputs, so a match explains the failures the student saw."""
    if part == "PositionalEncoding":
        # fp32 angles up to ~100 rad carry ~1e-5 of rounding, as in the check on the table.
        return (Probe("pe", {"dim": 16, "seq_len_max": 20, "X": _randn(3, 7, 16, seed=1)}, atol=1e-4, rtol=0),
                Probe("pe", {"dim": 64, "seq_len_max": 100, "X": _randn(2, 9, 64, seed=2)}, atol=1e-4, rtol=0))
    if part == "MultiHeadAttention":
        causal = torch.tril(torch.ones(6, 6, dtype=torch.bool)).view(1, 1, 6, 6)
        return (_sdp(0), _sdp(10, mask=key_padding_mask(2, 6, (0, 2))), _sdp(20, mask=causal),
                _sdp(30, len_q=5, len_k=9, mask=key_padding_mask(2, 9, (3, 0))), _sdp(40, dim=16, head_num=1))
    if part == "EncoderLayer":
        return (_layer("encoder", encoder_inputs(seed=2), seed=3),
                _layer("encoder", encoder_inputs(seed=4), seed=5, train=True))
    if part == "DecoderLayer":
        return (_layer("decoder", decoder_inputs(seed=2), seed=3),
                _layer("decoder", decoder_inputs(seed=6), seed=7, train=True),
                _layer("decoder", decoder_inputs(seed=8, tgt_len=5, src_len=9, src_padded=(0, 1), tgt_padded=(1, 0)),
                       seed=9),
                _layer("decoder", decoder_inputs(seed=8, tgt_len=9, src_len=4, src_padded=(0, 1), tgt_padded=(1, 0)),
                       seed=9))
    raise KeyError(f"no probes for {part}")


# ----------------------------------------------------------------- outcomes and matching

def error_class(message):
    """The exception's class from a describe_exception() text: the first line that is not a frame."""
    for line in message.splitlines():
        if line.strip() and not _FRAME.match(line):
            match = re.match(r"\s*([A-Za-z_][\w.]*)", line)
            return match.group(1) if match else line[:40]
    return "?"


class _NoAnswer(Exception):
    """The student's code timed out, ran out of memory or crashed: nothing to compare."""


def _observe(run, probe):
    try:
        return ("value", run(probe.op, **copy.deepcopy(probe.args)))
    except StudentError as error:
        if error.kind != "exception":
            raise _NoAnswer(error.kind) from None
        return ("raises", error_class(error.message))
    except Exception as exc:  # noqa: BLE001 (an in-process run: the error is the observation)
        return ("raises", error_class(harness.describe_exception(exc)))


def _agree(got, want, atol, rtol):
    """(agree, values compared, values in all); NaN in `want` is left out of the comparison."""
    if isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            return False, 0, 0
        got, want = got.detach().double().cpu(), want.detach().double().cpu()
        known = ~torch.isnan(want)
        close = (got == want) | ((got - want).abs() <= atol + rtol * want.abs())
        return bool(close[known].all()), int(known.sum()), want.numel()
    if isinstance(want, dict):
        if not isinstance(got, dict) or set(got) != set(want):
            return False, 0, 0
        pairs = [(got[key], want[key]) for key in want]
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            return False, 0, 0
        pairs = list(zip(got, want))
    else:
        return got == want, 0, 0
    compared = total = 0
    for item_got, item_want in pairs:
        agree, c, t = _agree(item_got, item_want, atol, rtol)
        if not agree:
            return False, 0, 0
        compared, total = compared + c, total + t
    return True, compared, total


def matches(observed, expected, probe_list):
    compared = total = 0
    by_value = False
    for seen, wanted, probe in zip(observed, expected, probe_list):
        if "raises" in (seen[0], wanted[0]):
            if seen != wanted:
                return False
            continue
        agree, c, t = _agree(seen[1], wanted[1], probe.atol, probe.rtol)
        if not agree:
            return False
        compared, total, by_value = compared + c, total + t, True
    return by_value and (total == 0 or compared >= MIN_COVERAGE * total)


# ----------------------------------------------------------------- the variants' side

def variant_namespaces(fingerprint):
    """Namespaces built as the reference's are, with the variant's class executed over the part's name."""
    master = master_code()
    source = fill_regions(master.classes[fingerprint.part].source, fingerprint.answers)
    unit = Unit(f"variant {fingerprint.id}", f"<variant {fingerprint.id}>", source)
    namespaces, report = load_in_process([*master.units, unit])
    if report["errors"]:
        raise RuntimeError(f"bug variant {fingerprint.id} does not load: {report['errors']}")
    return namespaces


def in_process(namespaces):
    """A student_run over namespaces in this process (trusted code only: the reference, our variants)."""
    return lambda op, **args: harness.run(namespaces, op, args)


class Library:
    """The fingerprints and their outcomes on each part's probes, computed on first use."""

    def __init__(self, fingerprints=FINGERPRINTS):
        self.fingerprints = tuple(fingerprints)
        self.indistinguishable = []  # fingerprints the probes cannot tell from the reference
        self._expected = {}

    def expected(self, part):
        if part not in self._expected:
            probe_list = probes(part)
            reference_outcomes = [_observe(in_process(reference("cpu").namespaces), p) for p in probe_list]
            found = []
            for fingerprint in (f for f in self.fingerprints if f.part == part):
                run = in_process(variant_namespaces(fingerprint))
                outcomes = [_observe(run, probe) for probe in probe_list]
                if matches(outcomes, reference_outcomes, probe_list):
                    self.indistinguishable.append(fingerprint.id)
                else:
                    found.append((fingerprint, outcomes))
            self._expected[part] = found
        return self._expected[part]


@functools.lru_cache(maxsize=None)
def library():
    return Library()


def identify(part, student_run, reference_variants=None):
    """The fingerprints ({id, title, hint}) whose variant the student's `part` behaves like, in library order.

    student_run(op, **args) runs a harness operation on the student's classes: WorkerClient.call with a
    timeout, or an in-process run. It raises StudentError (or, in process, the code's own exception).
    """
    expected = (reference_variants or library()).expected(part)
    probe_list = probes(part)
    try:
        observed = [_observe(student_run, probe) for probe in probe_list]
    except _NoAnswer:
        return []
    return [fingerprint.public() for fingerprint, outcomes in expected if matches(observed, outcomes, probe_list)]


def name_bugs(outcomes, client, timeout=10.0, budget=60.0, reference_variants=None):
    """The pipeline's hook: for each part with a failed check, its named bugs, also added to those checks' output.

    Returns (outcomes with "Likely bug: ..." lines, {part: [fingerprint]}). Each probe gets `timeout`
    seconds and all of them together `budget`: naming a bug must not double a slow submission's grading
    time. The probes' own failures and prints are dropped from the client's log, which records the checks.
    """
    def student_run(op, **args):
        remaining = min(timeout, deadline - time.monotonic())
        if remaining <= 0:
            raise StudentError("time", "time limit: no time left to name the bug")
        return client.call(op, remaining, **args)

    failed = {}
    for test, (passed, message, *_) in outcomes.items():
        line = RUBRIC.get(test)
        if line is not None and not passed and line.part in PROBED_PARTS:
            failed.setdefault(line.part, []).append(message or "")
    probed = [part for part, messages in failed.items() if not any(m.startswith(NO_ANSWER) for m in messages)]
    reference_variants = reference_variants or library()
    for part in probed:  # the variants' side first: its one-off cost is not the student's time
        reference_variants.expected(part)
    deadline = time.monotonic() + budget
    events, output = len(client.events), len(client.output)
    named = {}
    for part in probed:
        try:
            named[part] = identify(part, student_run, reference_variants)
        except StudentError:  # the worker could not even be started again
            named[part] = []
    del client.events[events:], client.output[output:]
    annotated = dict(outcomes)
    for test, outcome in outcomes.items():
        passed, message, diagnosis = as_outcome(outcome)
        bugs = named.get(getattr(RUBRIC.get(test), "part", None))
        if bugs and not passed:
            notes = "\n".join(f"Likely bug: {bug['title']}. Hint: {bug['hint']}" for bug in bugs)
            annotated[test] = Outcome(passed, f"{message}\n{notes}" if message else notes, diagnosis)
    return annotated, named
