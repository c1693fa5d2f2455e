"""The hidden autograder for "Transformer from scratch (PyTorch)". Run as `python -m autograder`."""
import sys
from pathlib import Path

# Part of every results.json; a change here regrades submissions that a resumed batch would otherwise reuse.
GRADER_VERSION = "1.2.0"

# The master notebook (the one source of truth: reference solution, nbgrader metadata) and its release.
REPO = Path(__file__).resolve().parents[1]
MASTER = REPO / "source" / "Assignment2-1" / "Assignment2-1_Transformer_from_scratch.ipynb"
RELEASE = REPO / "release" / "Assignment2-1" / "Assignment2-1_Transformer_from_scratch.ipynb"

# jsonschema, which nbformat imports, loads rfc3987_syntax when it is installed (jupyter-events pulls it in) and
# builds its IRI grammar on import: 1.6 s of every grading process, for a string format no notebook schema uses.
# Without the module, jsonschema simply does not check that format.
sys.modules.setdefault("rfc3987_syntax", None)
