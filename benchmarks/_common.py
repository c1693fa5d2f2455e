"""What the benchmark scripts share: submissions to grade, timing under a shared machine, the result table.

The machine these run on is shared with other people's test suites, so every figure carries the load
average seen when it was taken; a figure measured at a 1-minute load above the core count says more
about the neighbours than about the code.
"""
from __future__ import annotations

import copy
import io
import json
import os
import re
import resource
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
MASTER = REPO / "source" / "Assignment2-1" / NOTEBOOK
RELEASE = REPO / "release" / "Assignment2-1" / NOTEBOOK
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python") if (VENV_BIN / "python").exists() else sys.executable
QUIET_LOAD = 1.5

_SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.M)


# ----------------------------------------------------------------------------- load

def load1() -> float:
    return os.getloadavg()[0]


def load_text() -> str:
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def wait_for_quiet(max_wait: float, threshold: float = QUIET_LOAD) -> None:
    """Give a busy machine up to max_wait seconds to calm down; measure anyway afterwards, and say so."""
    if max_wait <= 0:
        return
    deadline = time.monotonic() + max_wait
    while load1() > threshold and time.monotonic() < deadline:
        print(f"  load {load_text()} > {threshold}: waiting ({deadline - time.monotonic():.0f} s left)", flush=True)
        time.sleep(min(30.0, max(1.0, deadline - time.monotonic())))
    if load1() > threshold:
        print(f"  load still {load_text()}: measuring anyway, figures are noisy", flush=True)


def venv_env(**extra: str) -> dict:
    """The environment nbgrader and our CLI expect: the venv's bin first, since both start helpers by name."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


@dataclass
class Timed:
    seconds: float
    cpu_seconds: float  # user + system of the whole process tree: less sensitive to the neighbours than wall time
    load_before: float
    load_after: float
    returncode: int
    output: str

    @property
    def load(self) -> str:
        return f"{self.load_before:.2f}->{self.load_after:.2f}"


def children_cpu() -> float:
    """CPU seconds of every finished descendant (a grandchild counts once its parent has reaped it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv, *, env=None, cwd=None, check=True, timeout=None) -> Timed:
    """Run a command to completion; its wall time, and the 1-minute load before and after."""
    before, cpu_before = load1(), children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=timeout)
    seconds = time.perf_counter() - started
    timed = Timed(seconds, children_cpu() - cpu_before, before, load1(), proc.returncode, proc.stdout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout[-3000:]}")
    return timed


# ----------------------------------------------------------------------------- submissions

def read_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _grade_id(cell: dict):
    return (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")


def solved_handout() -> dict:
    """The release notebook with every solution cell as a student who solved it would leave it.

    A solution cell of the master minus its BEGIN/END SOLUTION marker lines is exactly the stub cell
    filled in; the release's metadata (checksums included) is kept, as a student's copy keeps it.
    """
    master = {_grade_id(c): c for c in read_notebook(MASTER)["cells"] if _grade_id(c)}
    notebook = copy.deepcopy(read_notebook(RELEASE))
    for cell in notebook["cells"]:
        grade_id = _grade_id(cell)
        if grade_id and cell["metadata"]["nbgrader"].get("solution") and grade_id in master:
            cell["source"] = _SOLUTION_MARKER.sub("", _source(master[grade_id])).splitlines(keepends=True)
    count = 0
    for cell in notebook["cells"]:
        if cell.get("cell_type") == "code":
            count += 1
            cell["execution_count"], cell["outputs"] = count, []
    return notebook


def with_replacement(notebook: dict, grade_id: str, old: str, new: str) -> dict:
    """A copy with one line of one cell changed: a submission with a known bug."""
    notebook = copy.deepcopy(notebook)
    for cell in notebook["cells"]:
        if _grade_id(cell) == grade_id:
            source = _source(cell)
            if old not in source:
                raise ValueError(f"{old!r} not in cell {grade_id}")
            cell["source"] = source.replace(old, new, 1).splitlines(keepends=True)
            return notebook
    raise LookupError(grade_id)


def submission_variants() -> dict[str, dict]:
    """A few notebooks that take different paths through the grader, as a real batch does."""
    solved = solved_handout()
    return {
        "solved": solved,
        "pe_sin_cos_swapped": with_replacement(solved, "positional_encoding",
                                               "PE[:, 0::2] = torch.sin(angle)", "PE[:, 0::2] = torch.cos(angle)"),
        "softmax_over_queries": with_replacement(solved, "multi_head_attention",
                                                 "torch.softmax(scores, dim=-1)", "torch.softmax(scores, dim=-2)"),
        "untouched_handout": read_notebook(RELEASE),
    }


def write_tarball(notebook: dict, path: Path) -> Path:
    """What CollectSubmission.sh uploads: <ID>.tar.gz with the notebook at the archive's root."""
    data = (json.dumps(notebook, indent=1, ensure_ascii=False) + "\n").encode("utf-8")
    info = tarfile.TarInfo(NOTEBOOK)
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as archive:
        archive.addfile(info, io.BytesIO(data))
    return path


def write_notebook(notebook: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- report

@dataclass
class Row:
    figure: str
    ours: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""
    load: str = ""


@dataclass
class Report:
    title: str
    notes: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    def add(self, *args, **kwargs) -> None:
        self.rows.append(Row(*args, **kwargs))

    def print(self) -> None:
        """A markdown table, so the latest run can be pasted into benchmarks/README.md as it is."""
        header = ["figure", "ours", "baseline", "ratio", "target", "met", "load 1m"]
        rows = [[r.figure, r.ours, r.baseline, r.ratio, r.target, r.verdict, r.load] for r in self.rows]
        widths = [max(len(str(x)) for x in column) for column in zip(header, *rows)]
        line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
        print(f"\n### {self.title}\n")
        for note in self.notes:
            print(f"- {note}")
        if self.notes:
            print()
        print(line(header))
        print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for row in rows:
            print(line(row))
        print()


def speedup(baseline_seconds: float, seconds: float) -> str:
    ratio = baseline_seconds / seconds
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def verdict(met: bool | None) -> str:
    return "" if met is None else ("yes" if met else "NO")


def machine_note() -> str:
    import platform
    return (f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"load average {load_text()} when measuring began, {time.strftime('%Y-%m-%d %H:%M')}")
