"""Grading one submission. The pipeline, in the order grade_submission runs it (one folder of autograder/ each):

1. intake   intake/unpack.intake: archive or notebook -> parsed notebook, student ID, flags, or why it can't be
            graded; intake/notebook_code.extract: the definitions, each part by grade_id, else by name;
            intake/audit.inspect_code: forbidden APIs, edited locked cells -> flags, withheld parts
2. cage     cage/client.WorkerClient: a sandboxed worker (sandboxed/) loads the student's code; nothing else runs it
3. check    pytest over checks/, one test per rubric line; each outcome a structured value (outcome.py); failed
            parts get their likely bug named (checks/fingerprints) and Training its likely cause; the worker
            also reports any fused attention kernel that ran (a second line after the audit: withheld parts)
4. score    rubric weights -> a results.json in Gradescope's schema, which reports/ turns into feedback
"""
import contextlib
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from autograder import GRADER_VERSION
from autograder.intake import audit, unpack
from autograder.checks import fingerprints, training_cause
from autograder.cage import forkserver, sandbox, scratch
from autograder.reports import hand_grading
from autograder.assignment import TRAINING, part_of
from autograder.cage.client import WorkerClient
from autograder.intake.notebook_code import extract
from autograder.outcome import CheckFailed, Outcome, as_outcome
from autograder.reference import load_arguments, reference
from autograder.rubric import PARTS, RUBRIC, TOTAL

CHECKS = Path(__file__).resolve().parent / "checks"

CPU_TRAINING, GPU_TRAINING = TRAINING["cpu"]["config"], TRAINING["cuda"]["config"]


@dataclass
class Settings:
    device: str = "cpu"
    check_timeout: float = 20.0        # one operation of one check
    submission_budget: float = 240.0   # all checks of one submission together
    isolation: str = "auto"
    require_sandbox: bool = False
    limits: sandbox.Limits = field(default_factory=sandbox.Limits)
    withhold_forbidden: bool = True
    reuse_interpreter: bool = True     # fork workers from a server that imported torch once (forkserver.py)

    @property
    def on_gpu(self):
        return self.device == "cuda"

    @property
    def training(self):
        return TRAINING["cuda" if self.on_gpu else "cpu"]

    @property
    def training_config(self):
        return self.training["config"]

    @property
    def training_steps(self):
        return self.training["steps"]

    @property
    def training_timeout(self):
        return self.training["timeout"]


@dataclass
class Context:
    """What the checks see through pytest's config (autograder/checks/conftest.py)."""
    client: WorkerClient
    reference: object
    settings: Settings
    outcomes: dict = field(default_factory=dict)  # the checks run so far (the Training checks run last)
    flags: list = field(default_factory=list)     # what a check could not verify, for the submission's flags


class _Recorder:
    """A pytest plugin that hands the context to the checks and keeps each check's outcome and message."""

    def __init__(self, context):
        self.context = context
        self.outcomes = context.outcomes

    def pytest_configure(self, config):
        config.grading = self.context

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        if report.when == "call" or (report.failed and item.name not in self.outcomes):
            message, diagnosis = "", ""
            if call.excinfo is not None:
                error = call.excinfo.value
                message = str(error) if isinstance(error, (AssertionError, pytest.fail.Exception)) else \
                    f"grader error while checking: {type(error).__name__}: {error}"
                diagnosis = error.diagnosis if isinstance(error, CheckFailed) else ""
            self.outcomes[item.name] = Outcome(report.passed, message, diagnosis)


def run_checks(context):
    recorder = _Recorder(context)
    arguments = [str(CHECKS), "-c", str(CHECKS / "pytest.ini"), "--rootdir", str(CHECKS.parents[1]),
                 "-p", "no:terminal"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        pytest.main(arguments, plugins=[recorder])
    missing = set(RUBRIC) - set(recorder.outcomes)
    if missing:
        raise RuntimeError(f"rubric lines without a check result: {sorted(missing)}")
    return recorder.outcomes


def forbidden_runs(kernel_records):
    """Part -> the first fused attention kernel the worker saw run during that part's operations."""
    runs = {}
    for op, kind, names in kernel_records:
        runs.setdefault(part_of(op, kind), names[0])
    return runs


def row_key(path, student_id=None):
    """The gradebook key: the student ID, else the file name made safe for a folder name."""
    if student_id:
        return student_id
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).name)[:80].strip("._") or "submission"
    return f"unknown-{stem}"


def results_document(student_id, outcomes, *, flags, error=None, withheld=(), elapsed=0.0, extra=None):
    """Gradescope's results.json: a test per rubric line, plus our own fields under extra_data."""
    tests, parts, diagnoses = [], {part: 0.0 for part in PARTS}, {}
    for test_name, line in RUBRIC.items():
        passed, message, diagnosis = as_outcome(outcomes.get(test_name, (False, error or "not graded")))
        if passed and line.part in withheld:
            passed, message = False, f"points withheld: {withheld[line.part]}"
        score = line.points if passed else 0.0
        parts[line.part] += score
        if diagnosis and not passed:
            diagnoses[line.name] = diagnosis
            message = f"{message}\nWhat is wrong: {diagnosis}" if message else f"What is wrong: {diagnosis}"
        tests.append({"name": line.name, "score": score, "max_score": line.points,
                      "status": "passed" if passed else "failed", "output": message})
    score = sum(parts.values())
    summary = [f"Score {score:g}/{TOTAL:g}: " + ", ".join(f"{part} {parts[part]:g}" for part in PARTS)]
    if error:
        summary.append(f"Not graded: {error}")
    summary += [f"Note: {flag}" for flag in flags]
    return {
        "score": score,
        "execution_time": round(elapsed, 2),
        "output": "\n".join(summary),
        "tests": tests,
        "extra_data": {"student_id": student_id, "flags": list(flags), "error": error, "parts": parts,
                       "diagnoses": diagnoses,
                       "grader_version": GRADER_VERSION, **(extra or {})},
    }


def set_aside_flag(set_aside):
    return ("also submitted, not graded (the archive made by CollectSubmission.sh is preferred over a notebook, "
            "then the newest file): " + ", ".join(set_aside))


def grade_submission(path, settings, set_aside=()):
    """Grade one file; never raises for anything the submission does. Returns (row key, results).
    set_aside: names of the other files of the same row, which the batch chose not to grade (batch.py)."""
    started = time.monotonic()
    # The judge's own work is small; one thread keeps it from fighting the worker (and other jobs) for cores.
    torch.set_num_threads(1)
    if settings.reuse_interpreter:
        # The worker's interpreter imports torch while this process unpacks and reads the notebook.
        forkserver.prestart(settings.limits, settings.isolation, settings.require_sandbox)
    workdir = scratch.make("autograde-")
    try:
        intake = unpack.intake(Path(path), workdir / "intake")
        key, flags = row_key(path, intake.student_id), list(intake.flags)
        flags += [set_aside_flag(set_aside)] if set_aside else []
        extra = {"submission_sha256": intake.sha256, "source": Path(path).name, "set_aside": list(set_aside)}
        if intake.error:
            return key, results_document(key, {}, flags=flags, error=intake.error,
                                         elapsed=time.monotonic() - started, extra=extra)
        # Kept for the TA's hand-grading sheet, which then needs only the results.
        extra["free_response"] = hand_grading.answer_record(intake.notebook)
        try:
            sandbox.resolve_isolation(settings.isolation, settings.require_sandbox)
        except sandbox.SandboxUnavailable as refusal:
            # The grader's side, not the student's: no row is scored without a cage.
            return key, results_document(key, {}, flags=flags, error=f"not graded: cannot sandbox student code "
                                         f"({refusal})", elapsed=time.monotonic() - started, extra=extra)
        code = extract(intake.notebook)
        findings = audit.inspect_code(intake.notebook, code)
        flags += code.flags + findings.flags
        load_args = load_arguments(code.units, device="cpu")
        with WorkerClient(workdir / "scratch", load_args, limits=settings.limits, isolation=settings.isolation,
                          require_sandbox=settings.require_sandbox,
                          reuse_interpreter=settings.reuse_interpreter) as client:
            context = Context(client, reference("cpu"), settings)
            outcomes = training_cause.explain(run_checks(context))
            flags += context.flags
            # Failed parts get the known bug they behave like, if any, in their checks' output.
            outcomes, extra["named_bugs"] = fingerprints.name_bugs(outcomes, client, min(settings.check_timeout, 10.0))
            extra.update(isolation=client.isolation_used,
                         events=[{"op": op, "kind": kind, "message": message[:300]} for op, kind, message in client.events],
                         student_output="".join(client.output)[:4000])
        for part, name in forbidden_runs(client.kernels).items():
            flags.append(f"forbidden API ran in {part}: {name}")
            findings.withheld.setdefault(part, f"{part} ran {name}; attention must be written from scratch")
        if client.isolation_used != "bwrap":
            flags.append(f"graded in a weaker cage than bwrap, as the TA asked: {sandbox.WEAKER_CAGE.get(client.isolation_used, client.isolation_used)}")
        withheld = findings.withheld if settings.withhold_forbidden else {}
        return key, results_document(key, outcomes, flags=flags, withheld=withheld,
                                     elapsed=time.monotonic() - started, extra=extra)
    finally:
        scratch.remove(workdir)
