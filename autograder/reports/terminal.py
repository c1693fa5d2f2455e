"""What `grade` prints: a progress bar over every submission, then a summary that reads at 80 columns.

The summary has one line per student (ID, score, points per part, seconds, flag codes), a legend of the flag
codes it used, and a last line with the counts and the mean and median score. Long IDs and many flags are cut
with an ellipsis rather than wrapped, so a student's row stays one line in a terminal and in a log file.
"""
import statistics

from rich.columns import Columns
from rich.console import Group
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column, Table
from rich.text import Text

from autograder.reports.flags import OTHER_CODE, kinds_of
from autograder.rubric import PARTS

ERROR_CODE = "ER"
HEADERS = dict(zip(PARTS, ("PE", "MHA", "Enc", "Dec", "Train")))
ID_WIDTH = 20


def progress_bar(console):
    """The batch's progress: one task over all submissions, reused ones counted as done from the start."""
    return Progress(TextColumn("grading"), BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.fields[reused]}"),
                    TextColumn("{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
                    console=console, transient=False)


def start_task(progress, total, reused):
    note = f"reused {reused} of {total}" if reused else ""
    return progress.add_task("", total=total, completed=reused, reused=note)


def _codes(document):
    extra = document.get("extra_data") or {}
    codes = [ERROR_CODE] if extra.get("error") else []
    return list(dict.fromkeys(codes + [kind.code for kind in kinds_of(extra.get("flags", []))]))


def _legend(documents):
    """The flag codes used in `documents`, each with what it means, as (code, meaning) in code order."""
    names = {}
    for document in documents.values():
        extra = document.get("extra_data") or {}
        for kind in kinds_of(extra.get("flags", [])):
            names.setdefault(kind.code, "other (see grades.csv)" if kind.code == OTHER_CODE else kind.name)
        if extra.get("error"):
            names.setdefault(ERROR_CODE, "not graded (see grades.csv)")
    return sorted(names.items())


def summary(documents, reused=0):
    """A rich renderable: the table, the legend, the counts. `documents` {key: results} of this run."""
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    table.add_column("student", no_wrap=True, overflow="ellipsis", max_width=ID_WIDTH)
    table.add_column("score", justify="right", no_wrap=True)
    for part in PARTS:
        table.add_column(HEADERS[part], justify="right", no_wrap=True)
    table.add_column("secs", justify="right", no_wrap=True)
    table.add_column("flags", no_wrap=True, overflow="ellipsis", min_width=5)
    for key in sorted(documents):
        document = documents[key]
        parts = (document.get("extra_data") or {}).get("parts", {})
        table.add_row(escape(key), f"{document.get('score', 0):g}", *[f"{parts.get(p, 0):g}" for p in PARTS],
                      f"{document.get('execution_time', 0):.0f}", " ".join(_codes(document)))
    scores = [document.get("score", 0) for document in documents.values()]
    errors = sum(bool((d.get("extra_data") or {}).get("error")) for d in documents.values())
    counts = f"{len(documents)} submissions: {len(documents) - reused} graded, {reused} reused, {errors} with errors"
    if scores:
        counts += f" · mean {statistics.mean(scores):.1f} · median {statistics.median(scores):g}"
    # Columns keeps each "code meaning" entry whole and lays them out to the console's width.
    legend = Columns([Text(f"{code} {name}", style="dim") for code, name in _legend(documents)], padding=(0, 2))
    return Group(table, legend, Text(counts, style="bold"))
