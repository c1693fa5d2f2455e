"""Reading a submission for rule breaks, without running it.

- "From scratch": attention written with torch's ready-made modules or functions is found in the code's
  AST (not by a regex over text, so comments and strings don't count) and the part's points are withheld.
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

from . import handout_match
from .fast_run import fast_run_flags
from .notebook_code import PART_CELLS
from .reference import RELEASE

STRIPPED_FLAG = ("the notebook's cell metadata was stripped (Colab does this); "
                 "cells were matched to the handout by content")

FORBIDDEN = {
    "MultiheadAttention", "Transformer", "TransformerEncoder", "TransformerDecoder", "TransformerEncoderLayer",
    "TransformerDecoderLayer", "scaled_dot_product_attention", "multi_head_attention_forward",
}
FORBIDDEN_MODULES = ("torch.nn", "torch.nn.functional", "torch.nn.modules", "nn", "F", "functional")


@dataclass
class Findings:
    flags: list = field(default_factory=list)
    withheld: dict = field(default_factory=dict)  # part -> reason its points are withheld


def _dotted(node):
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _torch_aliases(trees):
    """What imports bind, over the whole notebook (one namespace: an import in the first cell serves a class
    three cells later): local name -> forbidden API (`from torch.nn import MultiheadAttention as MA`), and
    the local names of torch modules (`import torch.nn as tnn`, `from torch import nn as tnn`)."""
    imported, modules = {}, set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch"):
                for alias in node.names:
                    if alias.name in FORBIDDEN:
                        imported[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    else:
                        modules.add(alias.asname or alias.name)
            elif isinstance(node, ast.Import):
                modules.update(a.asname for a in node.names if a.asname and a.name.split(".")[0] == "torch")
    return imported, modules


def _forbidden_uses(tree, aliases=None):
    """(top-level definition name, line, what) for each use of a forbidden torch API."""
    imported, modules = aliases or _torch_aliases([tree])
    uses = []
    for top in tree.body:
        owner = getattr(top, "name", "<top level>")
        for node in ast.walk(top):
            what = None
            if isinstance(node, ast.Attribute) and node.attr in FORBIDDEN:
                dotted = _dotted(node) or node.attr
                if (dotted.rsplit(".", 1)[0] in FORBIDDEN_MODULES or dotted.startswith("torch.")
                        or dotted.split(".")[0] in modules):
                    what = dotted
            elif isinstance(node, ast.Name) and node.id in imported and isinstance(node.ctx, ast.Load):
                what = imported[node.id]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                  and len(node.args) > 1 and isinstance(node.args[1], ast.Constant) and node.args[1].value in FORBIDDEN):
                what = f'getattr(..., "{node.args[1].value}")'
            if what:
                uses.append((owner, node.lineno, what))
    return uses


def _names_used(node):
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def forbidden_api(code):
    """Parts whose class uses a forbidden API, directly or through a helper defined in the notebook."""
    findings = Findings()
    helpers = {}  # helper name -> first use found in it
    part_uses = {}
    trees = {index: ast.parse(source) for index, source in code.cell_sources.items()}
    aliases = _torch_aliases(trees.values())
    for index, tree in trees.items():
        for owner, line, what in _forbidden_uses(tree, aliases):
            where = f"{what} (cell {index}, line {line})"
            if owner in PART_CELLS and code.class_cells.get(owner) == index:
                part_uses.setdefault(owner, where)
            elif owner not in PART_CELLS:
                helpers.setdefault(owner, where)
    # A second pass, as a helper may be defined in a cell below the class that calls it.
    for index, tree in trees.items():
        class_nodes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
        for part, node in class_nodes.items():
            if part in PART_CELLS and code.class_cells.get(part) == index:
                for helper in _names_used(node) & set(helpers):
                    part_uses.setdefault(part, f"{helpers[helper]} through {helper}")
    for part, where in part_uses.items():
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
