"""A check's outcome as a structured value, from the check that measured it to the report that shows it.

A check that finds a problem calls `fail(message, diagnosis=...)`: the message says what was measured
("eval-mode output ... largest absolute error 1.37"), the diagnosis says what is wrong in plain words, from
measured properties ("the feed-forward sublayer reads the layer's input X; it should read ..."). Nothing
downstream parses either string back.
"""
from typing import NamedTuple


class Outcome(NamedTuple):
    passed: bool
    message: str = ""
    diagnosis: str = ""  # empty when no property measurement explains the failure


class CheckFailed(AssertionError):
    """Raised by a hidden check; pytest reports it as a failure, the pipeline keeps its diagnosis."""

    def __init__(self, message, diagnosis=""):
        super().__init__(message)
        self.message, self.diagnosis = message, diagnosis


def fail(message, diagnosis=""):
    raise CheckFailed(message, diagnosis)


def as_outcome(value):
    """Outcome from an Outcome or a (passed, message[, diagnosis]) tuple."""
    return value if isinstance(value, Outcome) else Outcome(*value)
