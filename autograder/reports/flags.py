"""What kind of flag a flag is: a short code for the console, a name for the class report, and the group the
report lists its students under.

Flags are sentences written for the student by the code that raises them (intake, audit, extraction, the
batch); the kind is found from the sentence's start, the first pattern that matches. A flag no pattern knows
still gets a kind, named after its first words, in the group "other".
"""
import re
from dataclasses import dataclass

FORBIDDEN, LOCKED, DUPLICATES, UNKNOWN_ID, NO_SANDBOX, OTHER = (
    "forbidden API", "edited locked cells", "duplicates / other files", "unknown ID", "no sandbox", "other")
GROUPS = (FORBIDDEN, LOCKED, DUPLICATES, UNKNOWN_ID, NO_SANDBOX, OTHER)


@dataclass(frozen=True)
class Kind:
    code: str
    name: str
    group: str


KINDS = (
    (r"^forbidden API", Kind("FA", "forbidden API", FORBIDDEN)),
    (r"^locked cell .* was edited", Kind("LE", "edited locked cell", LOCKED)),
    (r"^locked cell .* is missing", Kind("LM", "missing locked cell", LOCKED)),
    (r"^locked cells could not be checked", Kind("LU", "locked cells not checked", LOCKED)),
    (r"^locked cell .* appears", Kind("LD", "duplicated locked cell", DUPLICATES)),
    (r"is defined \d+ times", Kind("CD", "class defined twice", DUPLICATES)),
    (r"^another file for", Kind("SF", "several files submitted", DUPLICATES)),
    (r"several candidate notebooks", Kind("CN", "several candidate notebooks", DUPLICATES)),
    (r"files could be graded|also submitted, not graded", Kind("SF", "several files submitted", DUPLICATES)),
    (r"student id|^file name .* mentions|is not a submission name", Kind("ID", "student ID problem", UNKNOWN_ID)),
    (r"without a sandbox|weaker cage", Kind("NS", "graded in a weaker cage", NO_SANDBOX)),
    (r"nested too deeply|nested more than|characters of code|cells, more than the|JSON objects",
     Kind("LX", "over the grader's limits", OTHER)),
    (r"no executed cells", Kind("NR", "notebook not run", OTHER)),
    (r"run out of order", Kind("OO", "cells run out of order", OTHER)),
    (r"^notebook name is not", Kind("NN", "wrong notebook name", OTHER)),
    (r"syntax error", Kind("SE", "syntax error in a cell", OTHER)),
    (r"found outside its own cell|found by name in cell", Kind("CO", "class outside its cell", OTHER)),
    (r"no nbgrader metadata|metadata (was |were )?(stripped|missing)", Kind("MD", "no nbgrader metadata", OTHER)),
    (r"fast[- ]?(run|mode)|TRANSFORMER_FAST_RUN", Kind("FR", "fast-mode run", OTHER)),
)
OTHER_CODE = "OT"


def kind_of(flag):
    for pattern, kind in KINDS:
        if re.search(pattern, flag, re.IGNORECASE):
            return kind
    name = re.split(r"[:(']", flag, maxsplit=1)[0].strip()[:40] or "other"
    return Kind(OTHER_CODE, name, OTHER)


def kinds_of(flags):
    """The distinct kinds among `flags`, in the order they first appear."""
    return list(dict.fromkeys(kind_of(flag) for flag in flags))
