"""Reading a submission for rule breaks, without running it.

- "From scratch": attention written with torch's ready-made modules or functions, under any alias, is found
  by a dataflow over the code's AST (forbidden.py; comments and strings don't count) and the part's points
  are withheld.
- Locked cells: an edited "DO NOT CHANGE" cell is found with nbgrader's own checksum against the release,
  the cell found by its nbgrader metadata, or by content when Colab stripped it (handout_match.py).
  Grading uses the original given code anyway, as nbgrader does; the edit is reported.
- Missing or duplicated cells, cells run out of order: reported, graded by class all the same.
"""
import ast
import functools
import json
from dataclasses import dataclass, field

import nbformat
from nbgrader.utils import compute_checksum, is_locked

from autograder.intake import forbidden, handout_match
from autograder.intake.fast_run import fast_run_flags
from autograder.intake.notebook_code import PART_CELLS
from autograder.reference import RELEASE

STRIPPED_FLAG = ("the notebook's cell metadata was stripped (Colab does this); "
                 "cells were matched to the handout by content")


@dataclass
class Findings:
    flags: list = field(default_factory=list)
    withheld: dict = field(default_factory=dict)  # part -> reason its points are withheld


def forbidden_api(code):
    """Parts whose class uses a forbidden API, directly or through anything it refers to (forbidden.py)."""
    findings = Findings()
    trees = {index: ast.parse(source) for index, source in code.cell_sources.items()}
    try:
        uses = forbidden.part_uses(trees, code.class_cells)
    except forbidden.AuditIncomplete as error:  # fail closed: a part the audit cannot read is not graded
        uses = {part: f"code the audit cannot follow ({error})" for part in PART_CELLS if part in code.class_cells}
    for part, where in uses.items():
        findings.flags.append(f"forbidden API in {part}: {where}")
        findings.withheld[part] = f"{part} uses {where}; attention must be written from scratch"
    return findings


@functools.lru_cache(maxsize=None)
def release_checksums(path=RELEASE):
    release = json.loads(path.read_text(encoding="utf-8"))
    return {cell["metadata"]["nbgrader"]["grade_id"]: cell["metadata"]["nbgrader"]["checksum"]
            for cell in release["cells"] if "checksum" in cell.get("metadata", {}).get("nbgrader", {})
            and cell["metadata"]["nbgrader"].get("locked")}


def _edited(cell, grade_id, expected, stripped):
    """Whether a locked cell differs from the release, by nbgrader's checksum. A cell matched by content
    has no nbgrader metadata of its own: it gets the release cell's, so only its source and type count."""
    try:
        if stripped:
            release = next(c for c in handout_match.release_cells() if handout_match.grade_id(c) == grade_id)
            cell = nbformat.from_dict({**cell, "metadata": {"nbgrader": dict(release.metadata.nbgrader)}})
        return not is_locked(cell) or compute_checksum(cell) != expected
    except (KeyError, AttributeError, TypeError, ValueError):  # ValueError: a lone surrogate in the source
        return True


def locked_cells(notebook, match=None, cells=None):
    """Edited, missing or duplicated locked cells, by nbgrader's checksum of the cell as submitted."""
    cells = handout_match.read_cells(notebook) if cells is None else cells
    match = match or handout_match.match_cells(notebook, cells)
    if match.unmatched_reason:
        return [f"locked cells could not be checked: {match.unmatched_reason}"]
    flags = [STRIPPED_FLAG] if match.stripped else []
    expected = release_checksums()
    found = {grade_id: match.cells.get(grade_id, []) for grade_id in expected}
    for grade_id, indices in found.items():
        if any(_edited(cells[index], grade_id, expected[grade_id], match.stripped) for index in indices):
            flags.append(f"locked cell '{grade_id}' was edited; graded with the original given code")
        if len(indices) > 1:
            flags.append(f"locked cell '{grade_id}' appears {len(indices)} times")
    # With metadata but no locked cell among it, the notebook can't say which cells are missing.
    if match.stripped or any(found.values()):
        flags += [f"locked cell '{grade_id}' is missing" for grade_id, indices in found.items() if not indices]
    return flags


def run_order(notebook):
    code = [cell for cell in notebook.get("cells", []) if isinstance(cell, dict) and cell.get("cell_type") == "code"]
    counts = [cell.get("execution_count") for cell in code]
    counts = [c for c in counts if isinstance(c, int)]
    # Colab and some editors drop execution counts but keep the outputs: that notebook was run.
    if not counts and not any(cell.get("outputs") for cell in code):
        return ["the notebook has no executed cells (outputs cleared?)"]
    if any(b <= a for a, b in zip(counts, counts[1:])):
        return ["cells were run out of order"]
    return []


def inspect_code(notebook, code):
    findings = forbidden_api(code)
    cells = handout_match.read_cells(notebook)
    match = handout_match.match_cells(notebook, cells)
    findings.flags += locked_cells(notebook, match, cells) + run_order(notebook) + fast_run_flags(match, cells)
    return findings
