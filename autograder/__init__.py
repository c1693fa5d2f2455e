"""The hidden autograder for "Transformer from scratch (PyTorch)". Run as `python -m autograder`."""
import sys

# Part of every results.json; a change here regrades submissions that a resumed batch would otherwise reuse.
GRADER_VERSION = "2.0.0"

# The master notebook (the one source of truth: reference solution, nbgrader metadata) and its release.
from autograder.assignment import MASTER, RELEASE, REPO  # noqa: E402,F401

# jsonschema, which nbformat imports, loads rfc3987_syntax when it is installed (jupyter-events pulls it in) and
# builds its IRI grammar on import: 1.6 s of every grading process, for a string format no notebook schema uses.
# Without the module, jsonschema simply does not check that format.
sys.modules.setdefault("rfc3987_syntax", None)
