"""Reading a submission for rule breaks, without running it.

- "From scratch": attention written with torch's ready-made modules or functions, under any alias, is found
  by a dataflow over the code's AST (forbidden.py; comments and strings don't count) and the part's points
  are withheld.
- Locked cells: an edited "DO NOT CHANGE" cell is found with nbgrader's own checksum against the release.
  Grading uses the original given code anyway, as nbgrader does; the edit is reported.
- Missing or duplicated cells, cells run out of order: reported, graded by class all the same.
"""
import ast
import functools
import json
from dataclasses import dataclass, field

import nbformat
from nbgrader.utils import compute_checksum, is_locked

from . import forbidden
from .notebook_code import PART_CELLS
from .reference import RELEASE


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


def locked_cells(notebook):
    """Edited, missing or duplicated locked cells, by nbgrader's checksum of the cell as submitted."""
    flags, seen = [], {}
    expected = release_checksums()
    # reads() joins list-of-lines sources the way nbgrader saw them when it computed the checksums.
    for cell in nbformat.reads(json.dumps(notebook), as_version=4).get("cells", []):
        nbgrader = cell.get("metadata", {}).get("nbgrader")
        if not nbgrader or nbgrader.get("grade_id") not in expected:
            continue
        grade_id = nbgrader["grade_id"]
        seen[grade_id] = seen.get(grade_id, 0) + 1
        try:
            edited = not is_locked(cell) or compute_checksum(cell) != expected[grade_id]
        except (KeyError, AttributeError, TypeError, ValueError):  # ValueError: a lone surrogate in the source
            edited = True
        if edited:
            flags.append(f"locked cell '{grade_id}' was edited; graded with the original given code")
    flags += [f"locked cell '{g}' appears {n} times" for g, n in seen.items() if n > 1]
    if seen:  # a notebook without any nbgrader metadata (Colab strips it) can't say which cells are missing
        flags += [f"locked cell '{g}' is missing" for g in expected if g not in seen]
    return flags


def run_order(notebook):
    counts = [cell.get("execution_count") for cell in notebook.get("cells", [])
              if isinstance(cell, dict) and cell.get("cell_type") == "code"]
    counts = [c for c in counts if isinstance(c, int)]
    flags = []
    if not counts:
        flags.append("the notebook has no executed cells (outputs cleared?)")
    elif any(b <= a for a, b in zip(counts, counts[1:])):
        flags.append("cells were run out of order")
    return flags


def inspect_code(notebook, code):
    findings = forbidden_api(code)
    findings.flags += locked_cells(notebook) + run_order(notebook)
    return findings
