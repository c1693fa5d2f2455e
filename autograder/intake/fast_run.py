"""Was the submitted notebook run in the course CI's fast mode?

`TRANSFORMER_FAST_RUN=1` shrinks the model and the training run of section 5 (the hyperparameters cell's
`if FAST_RUN:` line). Grading re-runs the student's code, so the score does not depend on it; but the loss
curve and numbers the student hands in are then not those of the full run, which the student and the TA
should know. Two outputs betray it: the locked setup cell prints FAST_RUN_MARKER, and the locked training
cell prints one "Epoch: N, Loss: ..." line per epoch, stopping at the fast run's count.
"""
import ast
import functools
import re

from autograder.intake import handout_match

FLAG = ("the notebook was run in fast mode (TRANSFORMER_FAST_RUN=1): "
        "the training results in it are not from the full run")
FAST_RUN_MARKER = "(fast run)"
_EPOCH_LINE = re.compile(r"^Epoch: (\d{1,9}),", re.M)


def _assigned(statement, name):
    """The int constant `statement` assigns to `name` (also within a tuple assignment), else None."""
    if not isinstance(statement, ast.Assign) or len(statement.targets) != 1:
        return None
    target, value = statement.targets[0], statement.value
    pairs = zip(target.elts, value.elts) if isinstance(target, ast.Tuple) and isinstance(value, ast.Tuple) \
        else [(target, value)]
    for each_target, each_value in pairs:
        if isinstance(each_target, ast.Name) and each_target.id == name and isinstance(each_value, ast.Constant):
            return each_value.value
    return None


@functools.lru_cache(maxsize=None)
def epoch_counts():
    """(full, fast): the numbers of epochs the release's hyperparameters cell sets, without and with FAST_RUN."""
    cell = next(c for c in handout_match.release_cells() if handout_match.grade_id(c) == "hyperparameters")
    full = fast = None
    for statement in ast.parse(cell.source).body:
        full = _assigned(statement, "num_epochs") or full
        if isinstance(statement, ast.If) and isinstance(statement.test, ast.Name) and statement.test.id == "FAST_RUN":
            fast = next((n for n in (_assigned(s, "num_epochs") for s in statement.body) if n), fast)
    if not (isinstance(full, int) and isinstance(fast, int) and fast < full):
        raise RuntimeError("the release's hyperparameters cell no longer sets num_epochs for both runs")
    return full, fast


def stream_text(cell):
    """What the cell printed (its stream outputs), as one string."""
    pieces = []
    for output in cell.get("outputs") or []:
        if isinstance(output, dict) and output.get("output_type") == "stream":
            text = output.get("text", "")
            pieces += [str(part) for part in text] if isinstance(text, list) else [str(text)]
    return "".join(pieces)


def last_epoch(cell):
    epochs = [int(n) for n in _EPOCH_LINE.findall(stream_text(cell))]
    return max(epochs) if epochs else None


def fast_run_flags(match, cells):
    """FLAG when the setup cell printed the marker, or the training stopped at exactly the fast run's epochs."""
    full, fast = epoch_counts()
    setup = [cells[i] for i in match.cells.get("setup", [])]
    training = [cells[i] for i in match.cells.get("training", [])]
    if any(FAST_RUN_MARKER in stream_text(cell) for cell in setup) or any(last_epoch(c) == fast for c in training):
        return [FLAG]
    return []
