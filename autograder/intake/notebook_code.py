"""From a notebook to the code the worker should run: the modules, and nothing that trains or plots.

Reading a notebook never executes it. Each code cell is parsed with `ast`; IPython magics and shell
lines (`%cd`, `!bash ...`) are blanked first. Only definitions survive (imports, functions, classes and
cheap constant assignments), so a student's training loop, plots or Drive mount are never what grading
waits on. Each part class is found by its nbgrader `grade_id` when the metadata is there, else by name
(Colab can strip metadata). Line numbers are kept so tracebacks point at the student's own cell lines.

The judge's own work is bounded, since a notebook is hostile input: a code cell longer than MAX_CELL_CHARS, the
cells after the code passes MAX_SOURCE_CHARS in all, and a cell whose syntax tree is deeper than MAX_NESTING (or
that makes the parser itself give up with RecursionError or MemoryError) are skipped with a flag, so a class
they hold is "not defined" and only its part scores 0. (The number of cells is capped at intake, unpack.MAX_CELLS.)
"""
import ast
import re
from dataclasses import dataclass, field

from autograder.assignment import CLASS_PARTS, GIVEN_CELLS  # noqa: F401 (GIVEN_CELLS: where others find it)

PART_CELLS = {part.name: part.grade_id for part in CLASS_PARTS}
_MAGIC = re.compile(r"^(\s*)[%!]")
_CHEAP_CALLS = {"float", "int", "bool", "str", "tuple", "list", "dict", "set", "frozenset", "range", "len"}
_COLAB_ONLY = ("google.colab",)

# The handout's largest cell is 2.3 KB and its whole code about 24 KB: these leave honest work a hundredfold room.
MAX_CELL_CHARS = 100_000
MAX_SOURCE_CHARS = 1_000_000
# Levels of the syntax tree. Honest code stays under 30; the checks below and the worker's compile() recurse
# over the tree, so a deeper one (`a+a+...+a`, `-----1`) could exhaust their stack.
MAX_NESTING = 200


@dataclass
class Unit:
    """One top-level statement, ready for `exec` under a filename that names its cell."""
    label: str
    filename: str
    source: str

    def as_message(self):
        return {"label": self.label, "filename": self.filename, "source": self.source}


@dataclass
class NotebookCode:
    units: list = field(default_factory=list)          # what the worker executes, in notebook order
    classes: dict = field(default_factory=dict)        # class name -> Unit that defines it (parts and given)
    class_cells: dict = field(default_factory=dict)    # class name -> cell index it was taken from
    cell_sources: dict = field(default_factory=dict)   # cell index -> cleaned source (for AST checks)
    flags: list = field(default_factory=list)


def blank_ipython_lines(source):
    """Replace magics and shell escapes by `pass` at the same indentation, so the cell still parses."""
    lines = []
    for line in source.splitlines():
        match = _MAGIC.match(line)
        lines.append(f"{match.group(1)}pass" if match else line)
    return "\n".join(lines)


def _is_cheap(node):
    """An assignment worth keeping: constants and arithmetic, no model building or data loading."""
    for child in ast.walk(node):
        if isinstance(child, (ast.Lambda, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return False
        if isinstance(child, ast.Call):
            func = child.func
            cheap = (isinstance(func, ast.Name) and func.id in _CHEAP_CALLS) or (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "math")
            if not cheap:
                return False
    return True


def _keep(node):
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return True
    if isinstance(node, ast.Import):
        return not any(alias.name.startswith(_COLAB_ONLY) for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return not (node.module or "").startswith(_COLAB_ONLY)
    if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return all(isinstance(t, ast.Name) for t in targets) and _is_cheap(node.value)
    return False


def _unit(cell_index, lines, node):
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    # Leading blank lines keep the cell's own line numbers in tracebacks.
    source = "\n" * (first - 1) + "\n".join(lines[first - 1:node.end_lineno]) + "\n"
    name = getattr(node, "name", None) or type(node).__name__.lower()
    return Unit(label=f"cell {cell_index}: {name}", filename=f"<cell {cell_index}>", source=source)


def code_cells(notebook):
    """(index, grade_id or None, source) of each code cell, index counted over all cells from 0."""
    for index, cell in enumerate(notebook.get("cells", [])):
        if not isinstance(cell, dict) or cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
        if isinstance(source, list):
            source = "".join(str(part) for part in source)
        grade_id = ((cell.get("metadata") or {}).get("nbgrader") or {}).get("grade_id")
        yield index, grade_id, str(source)


def _depth(tree):
    """Levels of the tree, counted without recursion (the point is not to trust its depth)."""
    deepest, frontier = 0, [(tree, 1)]
    while frontier:
        node, level = frontier.pop()
        deepest = max(deepest, level)
        if deepest > MAX_NESTING:
            break
        frontier += [(child, level + 1) for child in ast.iter_child_nodes(node)]
    return deepest


def _parse_cell(source):
    """(cleaned source, tree, None), or (None, None, why the cell cannot be read)."""
    cleaned = source
    try:
        try:
            tree = ast.parse(source)
        except SyntaxError:  # most often IPython syntax; plain Python cells are left exactly as written
            cleaned = blank_ipython_lines(source)
            tree = ast.parse(cleaned)
    except SyntaxError as exc:
        return None, None, f"has a syntax error (line {exc.lineno}: {exc.msg})"
    except ValueError as exc:  # a lone surrogate in the JSON: the parser cannot even encode the cell
        return None, None, f"cannot be parsed ({type(exc).__name__})"
    except (RecursionError, MemoryError):  # how CPython's parser refuses an absurdly nested expression
        return None, None, "is nested too deeply to be read"
    if _depth(tree) > MAX_NESTING:
        return None, None, f"is nested more than {MAX_NESTING} levels deep"
    return cleaned, tree, None


def extract(notebook, wanted=tuple(PART_CELLS) + tuple(GIVEN_CELLS)):
    """Parse every code cell; keep the definitions; pick one definition of each wanted class."""
    wanted_cells = {**PART_CELLS, **GIVEN_CELLS}
    # Without any grade_id (Colab strips the metadata) every class is found by name, and the audit
    # says once that the metadata is gone; with some, a part outside its handout cell is worth a flag.
    metadata_kept = False
    code = NotebookCode()
    statements = []  # (cell index, grade_id, node, unit)
    total = 0
    for index, grade_id, source in code_cells(notebook):
        metadata_kept = metadata_kept or bool(grade_id)
        if len(source) > MAX_CELL_CHARS:
            code.flags.append(f"cell {index} holds {len(source):,} characters of code, more than the "
                              f"{MAX_CELL_CHARS:,} allowed in one cell; it was skipped")
            continue
        total += len(source)
        if total > MAX_SOURCE_CHARS:
            code.flags.append(f"the notebook has more than {MAX_SOURCE_CHARS:,} characters of code; cell {index} "
                              "and the cells after it were not read")
            break
        cleaned, tree, problem = _parse_cell(source)
        if problem:
            code.flags.append(f"cell {index} {problem}; it was skipped")
            continue
        code.cell_sources[index] = cleaned
        lines = cleaned.splitlines()
        statements += [(index, grade_id, node, _unit(index, lines, node)) for node in tree.body if _keep(node)]

    for name in wanted:
        found = [(i, g, u) for i, g, n, u in statements if isinstance(n, ast.ClassDef) and n.name == name]
        if not found:
            continue
        by_id = [f for f in found if f[1] == wanted_cells[name]]
        if not by_id and name in PART_CELLS and any(g for _, g, _ in found):
            code.flags.append(f"class {name} was found outside its own cell")
        index, _, unit = (by_id or found)[-1]
        if not by_id and name in PART_CELLS and metadata_kept and not any(g for _, g, _ in found):
            code.flags.append(f"class {name} was found by name in cell {index}, not in its handout cell")
        if len(found) > 1:
            code.flags.append(f"class {name} is defined {len(found)} times; graded the one in cell {index}")
        code.classes[name], code.class_cells[name] = unit, index

    chosen = {id(unit) for unit in code.classes.values()}
    code.units = [u for _, _, n, u in statements
                  if not (isinstance(n, ast.ClassDef) and n.name in wanted) or id(u) in chosen]
    return code
