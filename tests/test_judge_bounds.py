"""The judge's own work on one notebook is bounded: too many cells, an oversize cell, too much code in all, or a
cell nested so deeply that CPython's parser gives up each cost a flag and the part whose class sat there, never
a grader error (autograder/intake/notebook_code.py, unpack.MAX_CELLS)."""
import copy
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from autograder.intake import audit, unpack
from autograder.intake.notebook_code import MAX_CELL_CHARS, MAX_NESTING, MAX_SOURCE_CHARS, extract

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "2023-00001.tar.gz"  # the reference solution: 100 points
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

# Expressions that make ast.parse raise RecursionError or MemoryError, or that parse into a tree too deep to walk.
TOO_DEEP = {
    "long sum (RecursionError)": "x = " + "+".join(["a"] * 5000),
    "unary minus chain (MemoryError)": "x = " + "-" * 50_000 + "1",
    "not chain (MemoryError)": "x = " + "not " * 5000 + "1",
    "parsable but deep tree": "x = " + "+".join(["a"] * (MAX_NESTING + 50)),
}


def example_notebook():
    with tarfile.open(EXAMPLE) as archive:
        return json.load(archive.extractfile(unpack.NOTEBOOK_NAME))


def code_cell(source):
    return {"cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [], "source": source}


def part_cell(notebook, grade_id):
    return next(i for i, c in enumerate(notebook["cells"]) if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id)


def with_source_added(grade_id, text):
    notebook = example_notebook()
    cell = notebook["cells"][part_cell(notebook, grade_id)]
    cell["source"] = "".join(cell["source"]) + "\n" + text + "\n"
    return notebook


def many_cells_before(grade_id, count):
    notebook = example_notebook()
    at = part_cell(notebook, grade_id)
    notebook["cells"][at:at] = [code_cell("x = 1") for _ in range(count)]
    return notebook


@pytest.mark.parametrize("expression", TOO_DEEP.values(), ids=TOO_DEEP.keys())
def test_a_cell_too_deep_to_parse_is_skipped_and_flagged(expression):
    notebook = with_source_added("multi_head_attention", expression)
    code = extract(notebook)
    index = part_cell(notebook, "multi_head_attention")
    assert "MultiHeadAttention" not in code.classes
    assert {"PositionalEncoding", "EncoderLayer", "DecoderLayer"} <= set(code.classes)
    assert index not in code.cell_sources  # so audit.py never parses it again
    assert any(f.startswith(f"cell {index} is nested") for f in code.flags), code.flags
    audit.inspect_code(notebook, code)  # and the audit does not trip over it either


def test_honest_nesting_is_untouched():
    notebook = with_source_added("multi_head_attention", "x = " + "+".join(["a"] * 50) + "\ny = " + "(" * 150 + "1" + ")" * 150)
    code = extract(notebook)
    assert "MultiHeadAttention" in code.classes and code.flags == []


def test_an_oversize_cell_is_skipped_and_flagged_without_being_parsed():
    notebook = with_source_added("positional_encoding", "# " + "x" * MAX_CELL_CHARS)
    started = time.monotonic()
    code = extract(notebook)
    assert time.monotonic() - started < 5
    index = part_cell(notebook, "positional_encoding")
    assert "PositionalEncoding" not in code.classes and "MultiHeadAttention" in code.classes
    assert any(f.startswith(f"cell {index} holds") and "allowed in one cell" in f for f in code.flags), code.flags


def test_code_past_the_total_limit_is_not_read():
    per_cell = MAX_CELL_CHARS - 10
    count = MAX_SOURCE_CHARS // per_cell + 1
    notebook = many_cells_before("decoder_layer", 0)
    at = part_cell(notebook, "decoder_layer")
    notebook["cells"][at:at] = [code_cell("#" * per_cell) for _ in range(count)]
    code = extract(notebook)
    assert {"PositionalEncoding", "MultiHeadAttention", "EncoderLayer"} <= set(code.classes)
    assert "DecoderLayer" not in code.classes
    assert sum(map(len, code.cell_sources.values())) <= MAX_SOURCE_CHARS
    assert any("characters of code" in f and "were not read" in f for f in code.flags), code.flags


def test_two_hundred_thousand_cells_are_cut_at_intake(tmp_path):
    notebook = many_cells_before("decoder_layer", 200_000)
    path = tmp_path / "2098-00301.ipynb"
    path.write_text(json.dumps(notebook))
    started = time.monotonic()
    result = unpack.intake(path, tmp_path / "work")
    code = extract(result.notebook)
    audit.inspect_code(result.notebook, code)
    elapsed = time.monotonic() - started
    print(f"\n200 000 cells: intake, extract and audit took {elapsed:.1f} s")
    assert result.error is None
    assert len(result.notebook["cells"]) == unpack.MAX_CELLS
    assert any(f.startswith("notebook has 200,0") and "were not read" in f for f in result.flags), result.flags
    assert len(code.units) <= unpack.MAX_CELLS  # what the worker is sent, and the audit walks
    assert "DecoderLayer" not in code.classes and "EncoderLayer" in code.classes
    assert elapsed < 60  # generous: about 1.5 s on the 2-core VM; the unbounded judge took 18 s


@pytest.mark.slow
def test_bounded_submissions_get_rows_with_flags_through_the_cli(tmp_path):
    subs = tmp_path / "subs"
    subs.mkdir()
    cases = {
        "2098-00301": (many_cells_before("decoder_layer", 200_000), "DecoderLayer", "cells, more than the"),
        "2098-00302": (with_source_added("multi_head_attention", TOO_DEEP["long sum (RecursionError)"]),
                       "MultiHeadAttention", "nested too deeply"),
        "2098-00303": (with_source_added("positional_encoding", "# " + "x" * MAX_CELL_CHARS),
                       "PositionalEncoding", "allowed in one cell"),
    }
    for key, (notebook, _, _) in cases.items():
        (subs / f"{key}.ipynb").write_text(json.dumps(notebook))
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run([PYTHON, "-m", "autograder", "grade", str(subs), "--out", str(tmp_path / "out")],
                               cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    full = {"PositionalEncoding": 15, "MultiHeadAttention": 30, "EncoderLayer": 20, "DecoderLayer": 25}
    for key, (_, lost, flag) in cases.items():
        extra = json.loads((tmp_path / "out" / key / "results.json").read_text())["extra_data"]
        assert extra["error"] is None
        assert any(flag in f for f in extra["flags"]), (key, extra["flags"])
        expected = {**full, lost: 0}
        assert {part: extra["parts"][part] for part in full} == expected, (key, extra["parts"])


def test_the_class_report_groups_these_flags():
    from autograder.reports.flags import kind_of

    def flag_kind(flag):
        return kind_of(flag).name

    deep = extract(with_source_added("multi_head_attention", TOO_DEEP["not chain (MemoryError)"]))
    big = extract(with_source_added("positional_encoding", "# " + "x" * MAX_CELL_CHARS))
    flags = deep.flags + big.flags
    assert flags and {flag_kind(f) for f in flags} == {"over the grader's limits"}


def test_a_notebook_of_millions_of_empty_objects_is_refused_before_parsing(tmp_path):
    notebook = example_notebook()
    text = json.dumps(notebook)
    bomb = text[:-1] + ', "padding": [' + ",".join(["{}"] * unpack.MAX_JSON_CONTAINERS) + "]}"
    path = tmp_path / "2098-00304.ipynb"
    path.write_text(bomb)
    result = unpack.intake(path, tmp_path / "work")
    assert result.error == f"notebook has more than {unpack.MAX_JSON_CONTAINERS:,} JSON objects and lists; not read"
    path.write_text(text)  # the same notebook without the padding is read
    assert unpack.intake(path, tmp_path / "work").error is None
