"""What `grade` prints, rendered as an 80-column terminal or a log file would show it."""
import io
import random
import re
from pathlib import Path

from rich.console import Console

from autograder import batch
from autograder.reports import terminal
from autograder.pipeline import Settings
from test_report import synthetic_document, write_class

WIDTH = 80


def rendered(renderable):
    console = Console(width=WIDTH, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def long_flags_document(key, rng):
    document = synthetic_document(key, "forbidden", rng)
    document["extra_data"]["flags"] += ["locked cell 'ffn' was edited; graded with the original given code",
                                        "cells were run out of order", "the notebook has no executed cells",
                                        "another file for this student was also submitted: [2023-0003] copy.ipynb",
                                        "an entirely new kind of flag nobody has named yet"]
    return document


def test_summary_fits_80_columns_with_one_line_per_student(tmp_path):
    from autograder.reports import report
    write_class(tmp_path)
    documents = report.gradebook_documents(tmp_path)
    rng = random.Random(9)
    long_key = "unknown-Copy_of_Assignment2-1_Transformer_from_scratch__1_.ipynb"
    documents[long_key] = long_flags_document(long_key, rng)
    documents["2023-00003"] = long_flags_document("2023-00003", rng)
    text = rendered(terminal.summary(documents, reused=3))
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= WIDTH, text
    for key, document in documents.items():
        shown = key if len(key) <= terminal.ID_WIDTH else key[:terminal.ID_WIDTH - 1]
        rows = [line for line in lines if line.startswith(shown)]
        assert len(rows) == 1, (key, text)
        assert re.search(rf"\s{document['score']:g}\s", rows[0]), (key, rows[0])
    row = next(line for line in lines if line.startswith("2023-00003"))
    assert "FA" in row and "LE" in row, row
    # The legend explains every code the rows use, and the last line sums up.
    for code, meaning in (("FA", "forbidden API"), ("LE", "edited locked cell"), ("ER", "not graded"),
                          ("OT", "other")):
        assert re.search(rf"\b{code} {meaning}", text), code
    scores = sorted(d["score"] for d in documents.values())
    assert lines[-1].startswith(f"{len(documents)} submissions: {len(documents) - 3} graded, 3 reused, 1 with errors")
    assert f"median {(scores[len(scores) // 2 - 1] + scores[len(scores) // 2]) / 2:g}" in lines[-1]


def test_progress_counts_every_submission_and_says_how_many_were_reused(tmp_path, monkeypatch):
    rng = random.Random(10)
    prepared = {f"2023-{70001 + i}": synthetic_document(f"2023-{70001 + i}", "perfect", rng) for i in range(5)}
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    monkeypatch.setattr(batch, "grade_submission", lambda path, settings, set_aside=(): (Path(path).stem, prepared[Path(path).stem]))
    for key in list(prepared)[:3]:
        (submissions / f"{key}.ipynb").write_text("{}", encoding="utf-8")
    for key in list(prepared)[:3]:  # what cached_results compares: the file's hash
        prepared[key]["extra_data"]["submission_sha256"] = batch.file_sha256(submissions / f"{key}.ipynb")
    batch.grade_batch([submissions], tmp_path / "out", Settings(), console=Console(file=io.StringIO()))
    for key in list(prepared)[3:]:
        (submissions / f"{key}.ipynb").write_text("{}", encoding="utf-8")
    console = Console(width=WIDTH, file=io.StringIO(), color_system=None)
    batch.grade_batch([submissions], tmp_path / "out", Settings(), console=console)
    text = console.file.getvalue()
    assert "5/5" in text and "reused 3 of 5" in text, text
    assert max(len(line) for line in text.splitlines()) <= WIDTH, text
    assert "5 submissions: 2 graded, 3 reused" in text
