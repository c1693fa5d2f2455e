"""The hand-graded free-response cell ("What you tried and found"): its answer, the TA's sheet, the points.

At grading time the pipeline stores each student's answer (capped) in results.json, so the sheet needs only
the graded folder. `python -m autograder hand-grading DIR` writes DIR/hand_graded.html (every answer, to
read) and DIR/hand_graded.csv (a row per student, to fill in points). The points live in that CSV and
nowhere else: grading never writes it and the sheet command only adds rows for new students, so a regrade
keeps them. grades.csv and the class report read them from there (`hand_graded`, and `total` = autograded +
hand-graded). The most a TA can give is the answer cell's nbgrader `points` in the master notebook.
"""
import csv
import functools
import html
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from autograder import MASTER
from autograder.assignment import FREE_RESPONSE

ANSWER_GRADE_ID = FREE_RESPONSE
ANSWER_HEADING = re.compile(r"^#+\s*What you tried and found\s*$", re.IGNORECASE | re.MULTILINE)
PLACEHOLDER = "YOUR ANSWER HERE"
ANSWER_CAP = 8000      # characters kept in results.json: a page of text; more is noted as cut
EXCERPT = 160          # characters of the answer shown in the CSV
SHEET_COLUMNS = ["student_id", "answer", "points", "max_points", "comment"]
CSV_NAME, HTML_NAME = "hand_graded.csv", "hand_graded.html"


# ----------------------------------------------------------------- the answer, at grading time

def _text(cell):
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _grade_id(cell):
    metadata = cell.get("metadata")
    nbgrader = metadata.get("nbgrader") if isinstance(metadata, dict) else None
    return nbgrader.get("grade_id") if isinstance(nbgrader, dict) else None


def find_answer(notebook):
    """The free-response answer: the cell with its grade_id, else (metadata stripped, as Colab does) the
    markdown cells after the "What you tried and found" heading up to the next code cell. None if neither."""
    cells = [cell for cell in notebook.get("cells", []) if isinstance(cell, dict)]
    tagged = [_text(cell) for cell in cells if _grade_id(cell) == ANSWER_GRADE_ID]
    if tagged:
        return "\n\n".join(tagged)
    for index, cell in enumerate(cells):
        if cell.get("cell_type") == "markdown" and ANSWER_HEADING.search(_text(cell)):
            after = []
            for following in cells[index + 1:]:
                if following.get("cell_type") != "markdown":
                    break
                after.append(_text(following))
            # An answer written into the heading cell itself is kept too: what is there beyond the given text.
            own = _text(cell).replace(_given_heading_cell(), "").strip()
            own = "" if ANSWER_HEADING.fullmatch(own) else ANSWER_HEADING.split(own, maxsplit=1)[-1].strip()
            return "\n\n".join(part for part in [own, *after] if part.strip())
    return None


@functools.lru_cache(maxsize=None)
def _given_heading_cell(master=MASTER):
    """The master's text of the cell that introduces the answer (its heading and the question)."""
    for cell in json.loads(Path(master).read_text(encoding="utf-8"))["cells"]:
        if cell.get("cell_type") == "markdown" and ANSWER_HEADING.search(_text(cell)):
            return _text(cell).strip()
    return "\0"  # no such cell: nothing to take away


def answer_record(notebook):
    """What results.json keeps: {"text": the answer cut to ANSWER_CAP, "chars": its full length}, or None."""
    text = find_answer(notebook)
    if text is None:
        return None
    return {"text": text[:ANSWER_CAP], "chars": len(text)}


def is_blank(text):
    return not text or text.strip() in ("", PLACEHOLDER)


# ----------------------------------------------------------------- the most points

@functools.lru_cache(maxsize=None)
def max_points(master=MASTER):
    """The answer cell's nbgrader `points` in the master: the one place the free response's weight is set."""
    notebook = json.loads(Path(master).read_text(encoding="utf-8"))
    for cell in notebook["cells"]:
        if _grade_id(cell) == ANSWER_GRADE_ID:
            return float(cell["metadata"]["nbgrader"].get("points", 0))
    raise RuntimeError(f"the master notebook {master} has no cell with grade_id {ANSWER_GRADE_ID}")


# ----------------------------------------------------------------- the points the TA entered

@dataclass(frozen=True)
class Entry:
    points: float | None   # None: not graded yet
    comment: str


class SheetError(ValueError):
    """hand_graded.csv cannot be read as a whole (not the per-row problems, which are reported per row)."""


def read_sheet(out):
    """The rows of DIR/hand_graded.csv as dicts, in file order; none when there is no file yet."""
    path = Path(out) / CSV_NAME
    if not path.exists():
        return []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = {"student_id", "points"} - set(reader.fieldnames or ())
            if missing:
                raise SheetError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
            rows = [dict(row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SheetError(f"{path} cannot be read: {exc}") from exc
    return rows


def parse_points(text, most):
    """The points a TA typed, as a number from 0 to `most`; None for a blank cell. ValueError says why not."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        raise ValueError(f"points {text!r} is not a number") from None
    if not 0 <= value <= most:
        hint = (f" (the master notebook gives the answer cell {most:g} points: set `points` in the nbgrader "
                f"metadata of its cell {ANSWER_GRADE_ID!r}, then `make release`)") if most == 0 else ""
        raise ValueError(f"points {text} is outside 0..{most:g}{hint}")
    return value


def entries(out, most=None):
    """({student key: Entry} of the rows with valid points or none yet, [problem per bad row]) for DIR."""
    try:
        most = max_points() if most is None else most
        rows = read_sheet(out)
    except (SheetError, OSError, ValueError, KeyError, RuntimeError) as exc:
        return {}, [str(exc)]
    found, problems = {}, []
    for number, row in enumerate(rows, 2):  # line 1 is the header
        key = (row.get("student_id") or "").strip()
        if not key:
            continue
        try:
            found[key] = Entry(parse_points(row.get("points"), most), (row.get("comment") or "").strip())
        except ValueError as exc:
            problems.append(f"{CSV_NAME} line {number} ({key}): {exc}")
    return found, problems


def points_of(out, most=None):
    """{student key: points} of the students graded by hand so far, and the problems found on the way."""
    found, problems = entries(out, most)
    return {key: entry.points for key, entry in found.items() if entry.points is not None}, problems


# ----------------------------------------------------------------- the sheet

def _cell_safe(text):
    """Text a spreadsheet will not run: a leading =, +, - or @ makes it a formula in Excel and LibreOffice."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _answer_of(document):
    record = (document.get("extra_data") or {}).get("free_response")
    return record if isinstance(record, dict) and isinstance(record.get("text"), str) else None


def _excerpt(document):
    extra = document.get("extra_data") or {}
    if extra.get("error"):
        return "(not graded: see grades.csv)"
    if "free_response" not in extra:
        return "(answer not stored: graded before the grader kept answers; regrade with --force)"
    record = _answer_of(document)
    if record is None:
        return "(no answer cell found)"
    if is_blank(record["text"]):
        return "(left blank)"
    flat = " ".join(record["text"].split())
    return _cell_safe(flat if len(flat) <= EXCERPT else flat[:EXCERPT - 1] + "…")


def write_sheet(out, documents, most=None):
    """Write DIR/hand_graded.csv and .html for `documents` [(key, results)]; returns (new rows, problems).

    Rows already in the CSV keep their points and comment (and stay even if their student's results are
    gone); students without a row get one, blank for the TA to fill in.
    """
    out = Path(out)
    most = max_points() if most is None else most
    rows = read_sheet(out)  # a SheetError goes to the caller: never overwrite a file we cannot read
    by_key = {(row.get("student_id") or "").strip(): row for row in rows}
    by_document = dict(documents)
    added = 0
    for key in sorted(by_document):
        if key not in by_key:
            by_key[key] = {"student_id": key, "points": "", "comment": ""}
            added += 1
    for key, row in by_key.items():
        if key in by_document:
            row["answer"] = _excerpt(by_document[key])
        row["max_points"] = f"{most:g}"
    # Columns a TA added (a grader's name, a second comment) are kept, after ours.
    columns = SHEET_COLUMNS + [c for c in dict.fromkeys(c for row in rows for c in row)
                               if isinstance(c, str) and c not in SHEET_COLUMNS]
    temporary = out / (CSV_NAME + ".tmp")
    with open(temporary, "w", newline="", encoding="utf-8", errors="replace") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for key in sorted(k for k in by_key if k):
            writer.writerow({column: by_key[key].get(column) or "" for column in columns})
    os.replace(temporary, out / CSV_NAME)
    graded, problems = entries(out, most)
    (out / HTML_NAME).write_text(sheet_html(documents, graded, most), encoding="utf-8")
    return added, problems


CSS = """
body { margin:0; background:#f5f7fa; color:#1f2933; font:15px/1.55 -apple-system, "Segoe UI", Roboto, Arial, sans-serif; }
main { max-width: 880px; margin: 0 auto; padding: 28px 20px 48px; }
h1 { font-size: 22px; margin: 0 0 4px; } .sub { color:#616e7c; margin: 0 0 20px; }
.card { background:#fff; border:1px solid #e4e7eb; border-radius:10px; padding:14px 20px; margin:0 0 14px; }
.card h2 { font-size:16px; margin:0 0 8px; display:flex; justify-content:space-between; }
.card h2 span { color:#616e7c; font-weight:600; }
.answer { white-space: pre-wrap; word-break: break-word; }
.empty { color:#616e7c; font-style: italic; }
.warn { background:#fff8e6; border-color:#f3dfa8; }
"""


def sheet_html(documents, graded, most):
    """One page with every answer, in student order; the student's text is escaped, never rendered."""
    cards = []
    for key, document in sorted(documents):
        record = _answer_of(document)
        entry = graded.get(key)
        given = f"{entry.points:g} / {most:g}" if entry and entry.points is not None else f"– / {most:g}"
        if record and not is_blank(record["text"]):
            cut = (f'<p class="empty">(cut at {ANSWER_CAP} of {record["chars"]} characters)</p>'
                   if record["chars"] > len(record["text"]) else "")
            body = f'<div class="answer">{html.escape(record["text"])}</div>{cut}'
        else:
            body = f'<p class="empty">{html.escape(_excerpt(document))}</p>'
        comment = f'<p class="empty">TA: {html.escape(entry.comment)}</p>' if entry and entry.comment else ""
        cards.append(f'<section class="card" id="{html.escape(key)}"><h2>{html.escape(key)}'
                     f"<span>{html.escape(given)}</span></h2>{body}{comment}</section>")
    warning = ("" if most > 0 else
               '<section class="card warn">The master notebook gives the answer cell 0 points, so no points can '
               f"be entered: set <code>points</code> in the nbgrader metadata of its cell "
               f"<code>{ANSWER_GRADE_ID}</code> and run <code>make release</code>.</section>")
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>What you tried and found</title>'
            f"<style>{CSS}</style></head><body><main><h1>What you tried and found: answers to grade by hand</h1>"
            f"<p class=sub>{len(documents)} students · up to {most:g} points each · enter points in "
            f"{CSV_NAME} (the points column), then run <code>python -m autograder report DIR</code></p>"
            f"{warning}{''.join(cards) or '<p class=empty>No submissions.</p>'}</main></body></html>\n")
