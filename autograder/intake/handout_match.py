"""Which cell of a submission is which cell of the handout.

nbgrader names each cell in its metadata (`grade_id`), and that is what the audit uses when it is there.
Colab, and some editors, drop that metadata on download. Such a notebook is matched to the release by
content and position instead: the two sequences of cells are aligned (order kept, cells may be added or
deleted, each pair scored by how many source lines they share), so a locked cell is found when it is
unchanged, and also when it was edited, as the best-aligned near match in its place.
"""
import difflib
import functools
import json
from dataclasses import dataclass, field

import nbformat

from autograder.reference import RELEASE

# A pair of cells shares at least this fraction of lines to be matched at all; an edited locked cell keeps
# almost all its lines, an unrelated cell shares few.
MIN_SIMILARITY = 0.5
# Bounds on the work a hostile notebook can cause: the alignment is cells x handout cells comparisons.
MAX_CELLS = 2000
MAX_LINES = 400


@dataclass
class CellMatch:
    stripped: bool                             # no cell carries nbgrader metadata: matched by content
    cells: dict = field(default_factory=dict)  # grade_id -> indices of the submission's cells, in order
    unmatched_reason: str = ""                 # why no cell could be matched, when none was


def read_cells(notebook):
    """The notebook's cells as nbformat reads them (list-of-lines sources joined, as nbgrader sees them)."""
    return nbformat.reads(json.dumps(notebook), as_version=4).get("cells", [])


@functools.lru_cache(maxsize=None)
def release_cells(path=RELEASE):
    return tuple(nbformat.reads(path.read_text(encoding="utf-8"), as_version=4).cells)


def grade_id(cell):
    metadata = cell.get("metadata")
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def has_nbgrader_metadata(notebook):
    return any(isinstance(cell, dict) and grade_id(cell) for cell in notebook.get("cells", []))


def _lines(source):
    return tuple(line.rstrip() for line in str(source).splitlines()[:MAX_LINES] if line.strip())


def similarities(handout, submission):
    """{(i, j): similarity} for the pairs of the same type at MIN_SIMILARITY or above.

    Both arguments are sequences of (cell_type, lines). One matcher per submission cell: difflib indexes its
    second sequence, so each submission cell (perhaps long) is indexed once, not once per handout cell."""
    found = {}
    for j, (kind, b_lines) in enumerate(submission):
        matcher = difflib.SequenceMatcher(None, autojunk=False)
        matcher.set_seq2(b_lines)
        for i, (handout_kind, a_lines) in enumerate(handout):
            if handout_kind != kind:
                continue
            if a_lines == b_lines:
                found[i, j] = 1.0
                continue
            matcher.set_seq1(a_lines)
            # The cheap upper bounds first: most pairs are unrelated cells.
            if matcher.real_quick_ratio() >= MIN_SIMILARITY and matcher.quick_ratio() >= MIN_SIMILARITY:
                value = matcher.ratio()
                if value >= MIN_SIMILARITY:
                    found[i, j] = value
    return found


def align(handout, submission):
    """Pairs (handout index, submission index), in order, that maximize the summed similarity.

    A global alignment in which skipping a cell on either side costs nothing, and only pairs of the same
    type at MIN_SIMILARITY or above may match."""
    n, m = len(handout), len(submission)
    pair = similarities(handout, submission)
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(n - 1, -1, -1):
        for j in range(m - 1, -1, -1):
            score[i][j] = max(score[i + 1][j], score[i][j + 1],
                              pair[i, j] + score[i + 1][j + 1] if (i, j) in pair else 0.0)
    pairs, i, j = [], 0, 0
    while i < n and j < m:
        if (i, j) in pair and score[i][j] == pair[i, j] + score[i + 1][j + 1]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif score[i][j] == score[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def match_cells(notebook, cells=None):
    """The submission's cells of each handout grade_id: by metadata when any cell has it, else by content.

    Matched by content, a locked cell also collects the extra cells that are exact copies of it, as
    copies made in Jupyter carry the same grade_id."""
    cells = read_cells(notebook) if cells is None else cells
    if has_nbgrader_metadata(notebook):
        found = {}
        for index, cell in enumerate(cells):
            if grade_id(cell):
                found.setdefault(grade_id(cell), []).append(index)
        return CellMatch(stripped=False, cells=found)
    if len(cells) > MAX_CELLS:
        return CellMatch(stripped=True, unmatched_reason=f"the notebook has more than {MAX_CELLS} cells")
    handout = release_cells()
    pairs = align([(cell.cell_type, _lines(cell.source)) for cell in handout],
                  [(cell.get("cell_type"), _lines(cell.get("source", ""))) for cell in cells])
    found = {grade_id(handout[i]): [j] for i, j in pairs if grade_id(handout[i])}
    matched = {j for _, j in pairs}
    for cell in handout:
        if grade_id(cell) in found and cell.metadata.nbgrader.get("locked"):
            copies = [j for j, other in enumerate(cells) if j not in matched
                      and other.get("cell_type") == cell.cell_type and other.get("source") == cell.source]
            found[grade_id(cell)] = sorted(found[grade_id(cell)] + copies)
    return CellMatch(stripped=True, cells=found)
