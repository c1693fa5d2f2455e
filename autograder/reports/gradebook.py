"""DIR/grades.csv: a row per submission in DIR, with the hand-graded points the TA entered in DIR/hand_graded.csv.

Columns (the grade command's contract, README): student_id, score, max_score, one per part, flags, error, then
hand_graded (blank until a TA enters points) and total (score + hand_graded). New columns go at the end, so
tools that read the older columns by position keep working.
"""
import csv
import os
import sys
from pathlib import Path

from autograder.reports import hand_grading
from autograder.rubric import PARTS, TOTAL

CSV_COLUMNS = ["student_id", "score", "max_score", *PARTS, "flags", "error", "hand_graded", "total"]


def rows(documents, hand_points):
    """The gradebook rows of `documents` {key: results}, with `hand_points` {key: points}."""
    for key in sorted(documents):
        extra = documents[key]["extra_data"]
        score = documents[key]["score"]
        hand = hand_points.get(key)
        yield {"student_id": key, "score": score, "max_score": TOTAL,
               **{part: extra.get("parts", {}).get(part, 0) for part in PARTS},
               "flags": "; ".join(extra.get("flags", [])), "error": extra.get("error") or "",
               "hand_graded": "" if hand is None else f"{hand:g}", "total": f"{score + (hand or 0):g}"}


def write_gradebook(out, documents, *, say_problems=False):
    """Rewrite DIR/grades.csv from `documents` {key: results}. A bad hand-graded entry is left blank, and named
    on stderr when `say_problems` (once per batch, not after every submission)."""
    hand_points, problems = hand_grading.points_of(out)
    for problem in problems if say_problems else ():
        print(f"hand-graded points not used: {problem}", file=sys.stderr)
    temporary = Path(out) / "grades.csv.tmp"
    # errors="replace": a file name with undecodable bytes reaches here as lone surrogates, which UTF-8 cannot hold.
    with open(temporary, "w", newline="", encoding="utf-8", errors="replace") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows(documents, hand_points))
    os.replace(temporary, Path(out) / "grades.csv")
