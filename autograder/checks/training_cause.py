"""Why the Training checks failed, from the other parts' own check results, in plain words.

Training runs the given Transformer built from all of the student's parts (the whole-model criterion), so a
bug in any part can cost its points. The feedback then names the part whose own checks failed, with the
properties they measured, rather than leaving the student to guess from a loss curve.
"""
from autograder.outcome import Outcome, as_outcome
from autograder.rubric import PARTS, RUBRIC

TRAINING = "Training"


def _property(line):
    """The property a rubric line measures: the words before its first colon ("scale", "dtype", ...)."""
    head, colon, _ = line.checks.partition(":")
    return head if colon else line.checks


def likely_cause(outcomes):
    """The sentence that explains a failed training run, from the outcomes of every other part's checks."""
    failed = {}
    for name, line in RUBRIC.items():
        if line.part != TRAINING and name in outcomes and not as_outcome(outcomes[name]).passed:
            failed.setdefault(line.part, []).append(_property(line))
    if not failed:
        return ("every part passed its own checks, so the failure comes from how they work together in the full "
                "model (a dtype, device or shape that only matters there); the message above says what the "
                "training run measured")
    parts = [part for part in PARTS if part in failed]
    named = "; ".join(f"your {part} failed its checks ({', '.join(failed[part])})" for part in parts)
    return f"{named}: a model built on {'it' if len(parts) == 1 else 'them'} cannot be expected to train"


def explain(outcomes):
    """The outcomes with a diagnosis on each failed Training check that names the likely cause."""
    explained = dict(outcomes)
    cause = None
    for name, line in RUBRIC.items():
        outcome = as_outcome(outcomes.get(name, (True, "")))
        if line.part == TRAINING and name in outcomes and not outcome.passed:
            cause = cause or likely_cause(outcomes)
            diagnosis = f"{outcome.diagnosis}; {cause}" if outcome.diagnosis else cause
            explained[name] = Outcome(False, outcome.message, diagnosis)
    return explained
