"""Notebooks whose nbgrader metadata and execution counts were stripped (Colab does this), and notebooks run
in the CI's fast mode: what the audit flags, without running any grading."""
import copy
import subprocess
import sys
import json

import pytest

from autograder.intake import audit, fast_run, handout_match
from autograder.intake.notebook_code import extract
import hostile_corpus as hc
from corpus import ROOT, fill_handout

EDITED = "locked cell '{}' was edited; graded with the original given code"
OLD_QUERY_ROW_MASK = ("tgt_mask = (tgt != 0)[:, None, None, :] & causal",
                      "tgt_mask = (tgt != 0)[:, None, :, None] & causal")


def _print(text):
    return {"output_type": "stream", "name": "stdout", "text": text.splitlines(keepends=True)}


def ran(notebook, fast=False):
    """The notebook as if run top to bottom: every code cell printed something; the setup and the
    training cells print what the master's locked code prints, in the full or the fast run."""
    full_epochs, fast_epochs = fast_run.epoch_counts()
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["outputs"] = [_print("done\n")]
    setup, training = (_cell(notebook, grade_id) for grade_id in ("setup", "training"))
    setup["outputs"] = [_print("PyTorch 2.13.0 on cpu" + (" (fast run)" if fast else "") + "\n")]
    epochs = fast_epochs if fast else full_epochs
    training["outputs"] = [_print("".join(f"Epoch: {n}, Loss: {8.5 - n / 50}\n" for n in range(1, epochs + 1)))]
    return notebook


def _cell(notebook, grade_id):
    return next(c for c in notebook["cells"] if handout_match.grade_id(c) == grade_id)


def colab(notebook):
    """What Colab's download gives: no nbgrader metadata, no execution counts, the outputs kept."""
    notebook = hc.strip_nbgrader(copy.deepcopy(notebook))
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            cell["execution_count"] = None
    return notebook


def flags(notebook):
    """Every flag reading the notebook gives: extraction, locked cells, run order, fast run."""
    code = extract(notebook)
    return code.flags + audit.inspect_code(notebook, code).flags


@pytest.fixture(scope="module")
def correct():
    return ran(fill_handout({}))


def test_a_correct_run_notebook_gets_no_flag(correct):
    assert flags(correct) == []


def test_stripped_correct_notebook_gets_only_the_stripped_flag(correct):
    assert flags(colab(correct)) == [audit.STRIPPED_FLAG]


@pytest.mark.parametrize("grade_id, old, new", [
    ("hyperparameters", "num_epochs = 100", "num_epochs = 10"),
    ("transformer", *OLD_QUERY_ROW_MASK),
    ("ffn", "nn.ReLU()", "nn.GELU()"),
])
def test_edited_locked_cell_is_flagged_with_and_without_metadata(correct, grade_id, old, new):
    edited = hc.edit_locked(copy.deepcopy(correct), grade_id, old, new)
    assert flags(edited) == [EDITED.format(grade_id)]
    assert flags(colab(edited)) == [audit.STRIPPED_FLAG, EDITED.format(grade_id)]


def test_stripped_notebook_with_added_cells_and_a_copy_of_a_part(correct):
    """Scratch cells, a markdown note, a second MultiHeadAttention: matched around, nothing false flagged."""
    notebook = copy.deepcopy(correct)
    mha = hc.index_of_part(notebook, "MultiHeadAttention")
    notebook["cells"][mha:mha] = [hc.code_cell("x = torch.randn(2, 3)\nprint(x.shape)"),
                                  copy.deepcopy(notebook["cells"][mha])]
    notebook["cells"].insert(3, {"cell_type": "markdown", "metadata": {}, "source": "my notes"})
    notebook["cells"].append(hc.code_cell("print(losses[-1])"))
    last = mha + 3  # after the markdown cell, the scratch cell and the copy
    assert flags(colab(notebook)) == [f"class MultiHeadAttention is defined 2 times; graded the one in cell {last}",
                                      audit.STRIPPED_FLAG]


def test_stripped_notebook_with_a_deleted_and_a_copied_locked_cell(correct):
    notebook = copy.deepcopy(correct)
    ffn = notebook["cells"].index(_cell(notebook, "ffn"))
    del notebook["cells"][ffn]
    training = notebook["cells"].index(_cell(notebook, "training"))
    notebook["cells"].insert(training + 1, copy.deepcopy(notebook["cells"][training]))
    assert flags(colab(notebook)) == [audit.STRIPPED_FLAG, "locked cell 'training' appears 2 times",
                                      "locked cell 'ffn' is missing"]


def test_a_part_moved_out_of_its_handout_cell_is_said_plainly(correct):
    """Metadata kept, but PositionalEncoding written in a new cell (the student deleted the original one)."""
    notebook = copy.deepcopy(correct)
    cell = _cell(notebook, "positional_encoding")
    cell["metadata"] = {}
    index = notebook["cells"].index(cell)
    assert flags(notebook) == [f"class PositionalEncoding was found by name in cell {index}, not in its handout cell"]


def test_too_many_cells_to_match_is_said_not_passed(correct, monkeypatch):
    monkeypatch.setattr(handout_match, "MAX_CELLS", 10)
    assert audit.locked_cells(colab(correct)) == [
        f"locked cells could not be checked: the notebook has more than 10 cells"]


def test_no_executed_cells_only_without_counts_and_outputs(correct):
    assert audit.run_order(colab(correct)) == []
    cleared = colab(correct)
    for cell in cleared["cells"]:
        cell["outputs"] = [] if cell["cell_type"] == "code" else cell.get("outputs")
    assert audit.run_order(cleared) == ["the notebook has no executed cells (outputs cleared?)"]


# --------------------------------------------------------------------------- fast run

def test_fast_run_marker_and_epoch_count_are_what_the_master_prints():
    """The flag reads the setup cell's marker and the training cell's epoch lines: both come from locked code."""
    setup, training = (_cell(json.loads(handout_match.RELEASE.read_text()), g) for g in ("setup", "training"))
    assert '" (fast run)" if FAST_RUN' in hc.cell_text(setup) and fast_run.FAST_RUN_MARKER in '" (fast run)"'
    assert 'print(f"Epoch: {epoch+1}, Loss: {loss.item()}")' in hc.cell_text(training)
    assert fast_run.epoch_counts() == (100, 40)


@pytest.mark.parametrize("strip", [False, True])
def test_fast_run_is_flagged_without_costing_points(strip):
    notebook = ran(fill_handout({}), fast=True)
    notebook = colab(notebook) if strip else notebook
    assert flags(notebook) == [audit.STRIPPED_FLAG] * strip + [fast_run.FLAG]
    code = extract(notebook)
    assert audit.inspect_code(notebook, code).withheld == {}


def test_fast_run_is_seen_from_the_training_output_alone(correct):
    notebook = copy.deepcopy(correct)
    _cell(notebook, "setup")["outputs"] = [_print("PyTorch 2.13.0 on cpu\n")]
    _cell(notebook, "training")["outputs"] = [_print("".join(f"Epoch: {n}, Loss: 1.0\n" for n in range(1, 41)))]
    assert flags(notebook) == [fast_run.FLAG]


def test_a_full_run_or_a_run_without_outputs_is_not_a_fast_run(correct):
    assert fast_run.FLAG not in flags(correct)
    blank = fill_handout({})
    assert fast_run.FLAG not in flags(blank)


# --------------------------------------------------------------------------- end to end

@pytest.mark.slow
def test_grading_a_colab_fast_run_notebook_with_an_edited_locked_cell(tmp_path):
    """The whole CLI on one notebook: stripped by Colab, run in fast mode, `num_epochs` edited. Three flags,
    nothing else, and full marks: the edit is graded with the given code and the fast run costs nothing."""
    notebook = hc.edit_locked(ran(fill_handout({}), fast=True), "hyperparameters", "num_epochs = 100",
                              "num_epochs = 10")
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "2099-30001.ipynb").write_text(json.dumps(colab(notebook)), encoding="utf-8")
    completed = subprocess.run([sys.executable, "-m", "autograder", "grade", str(submissions), "--out",
                                str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "out" / "2099-30001" / "results.json").read_text())
    assert results["extra_data"]["flags"] == [audit.STRIPPED_FLAG, EDITED.format("hyperparameters"), fast_run.FLAG]
    assert results["score"] == 100, results["output"]
