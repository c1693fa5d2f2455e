"""The hidden autograder for "Transformer from scratch (PyTorch)". Run as `python -m autograder`."""
# Part of every results.json; a change here regrades submissions that a resumed batch would otherwise reuse.
GRADER_VERSION = "1.0.0"
