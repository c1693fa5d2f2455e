"""The hand-graded free-response answer: found in the notebook, kept in results.json, put on the TA's sheet, and
the points entered there kept through every regrade and merged into grades.csv and the class report.

The class is synthetic (test_report.synthetic_document, with an answer added as the pipeline adds it), and the
batch runs with grade_submission replaced, so these tests take seconds.
"""
import copy
import csv
import json
import random
from pathlib import Path

import pytest

from autograder import MASTER, batch, cli
from autograder.reports import hand_grading, report
from autograder.pipeline import Settings
from test_report import synthetic_document

MOST = 10.0  # the master ships 0 points for the answer cell (see test_max_points_come_from_the_master)


def master_cells():
    return json.loads(MASTER.read_text(encoding="utf-8"))["cells"]


def notebook_with(cells):
    return {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": cells}


def answered_master(answer):
    cells = copy.deepcopy(master_cells())
    for cell in cells:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == hand_grading.ANSWER_GRADE_ID:
            cell["source"] = answer
    return notebook_with(cells)


def stripped(notebook):
    """As Colab saves it: no cell metadata."""
    notebook = copy.deepcopy(notebook)
    for cell in notebook["cells"]:
        cell["metadata"] = {}
    return notebook


# ----------------------------------------------------------------- finding the answer

def test_answer_found_by_grade_id_and_after_the_heading_when_metadata_is_stripped():
    answer = "I forgot the sqrt(d_k) scaling first.\nThe loss fell from 8.5 to 2.1."
    notebook = answered_master(answer)
    assert hand_grading.find_answer(notebook) == answer
    assert hand_grading.find_answer(stripped(notebook)) == answer
    assert hand_grading.find_answer(notebook_with([{"cell_type": "code", "source": "x = 1", "metadata": {}}])) is None


def test_answer_written_as_a_list_of_lines_and_into_the_heading_cell():
    notebook = stripped(answered_master(["first line\n", "second line"]))
    assert hand_grading.find_answer(notebook) == "first line\nsecond line"
    heading_only = notebook_with([{"cell_type": "markdown", "metadata": {},
                                   "source": "### What you tried and found\n\nI wrote it right here."}])
    assert hand_grading.find_answer(heading_only) == "I wrote it right here."


def test_answer_record_is_capped_and_says_how_long_the_answer_was():
    record = hand_grading.answer_record(answered_master("x" * (hand_grading.ANSWER_CAP + 500)))
    assert len(record["text"]) == hand_grading.ANSWER_CAP and record["chars"] == hand_grading.ANSWER_CAP + 500
    assert hand_grading.answer_record(notebook_with([{"cell_type": "code", "source": "", "metadata": {}}])) is None


def test_hostile_cells_do_not_break_the_search():
    cells = [{"cell_type": "markdown", "metadata": "not a dict", "source": "hi"},
             {"cell_type": "markdown", "metadata": {"nbgrader": ["odd"]}, "source": "hi"}, "not a cell"]
    assert hand_grading.find_answer(notebook_with(cells)) is None


def test_max_points_come_from_the_master():
    cell = next(c for c in master_cells()
                if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == hand_grading.ANSWER_GRADE_ID)
    assert hand_grading.max_points() == float(cell["metadata"]["nbgrader"]["points"])
    with pytest.raises(ValueError, match="set `points` in the nbgrader metadata"):
        hand_grading.parse_points("3", 0.0)


# ----------------------------------------------------------------- the sheet and the gradebook

def graded_document(key, answer, rng, story="perfect"):
    document = synthetic_document(key, story, rng)
    document["extra_data"]["free_response"] = None if answer is None else {"text": answer, "chars": len(answer)}
    return document


@pytest.fixture
def most(monkeypatch):
    monkeypatch.setattr(hand_grading, "max_points", lambda: MOST)
    return MOST


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return {row["student_id"]: row for row in csv.DictReader(handle)}


def write_csv(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, hand_grading.SHEET_COLUMNS)
        writer.writeheader()
        writer.writerows(rows.values())


def enter_points(out, points, comments=None):
    """What a TA does in a spreadsheet: fill in the points (and comments) of some rows, save."""
    rows = read_csv(out / hand_grading.CSV_NAME)
    for key, value in points.items():
        rows[key]["points"] = value
        rows[key]["comment"] = (comments or {}).get(key, "")
    write_csv(out / hand_grading.CSV_NAME, rows)


def grade_folder(tmp_path, monkeypatch, prepared, force=False):
    """grade_batch over a submission file per prepared document, as `grade` runs it."""
    submissions = tmp_path / "submissions"
    submissions.mkdir(exist_ok=True)
    for key in prepared:
        (submissions / f"{key}.ipynb").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(batch, "grade_submission",
                        lambda path, settings, set_aside=(): (Path(path).stem, prepared[Path(path).stem]))
    batch.grade_batch([submissions], tmp_path / "out", Settings(), force=force)
    return tmp_path / "out"


def test_points_entered_once_survive_a_forced_regrade_and_a_report_rebuild(tmp_path, monkeypatch, most):
    rng = random.Random(5)
    prepared = {"2023-60001": graded_document("2023-60001", "Masks were the hard part.", rng),
                "2023-60002": graded_document("2023-60002", "YOUR ANSWER HERE", rng, story="bug"),
                "2023-60003": graded_document("2023-60003", "Loss fell to 2.", rng, story="time")}
    out = grade_folder(tmp_path, monkeypatch, prepared)
    added, problems = hand_grading.write_sheet(out, report.load_documents(out))
    assert added == 3 and not problems
    sheet = read_csv(out / hand_grading.CSV_NAME)
    assert sheet["2023-60001"]["answer"] == "Masks were the hard part."
    assert sheet["2023-60002"]["answer"] == "(left blank)"
    assert {row["max_points"] for row in sheet.values()} == {"10"} and not any(r["points"] for r in sheet.values())

    enter_points(out, {"2023-60001": "8", "2023-60003": "6.5"}, {"2023-60001": "clear and honest"})
    expected = {"2023-60001": 8.0, "2023-60003": 6.5}
    for rebuild in (lambda: grade_folder(tmp_path, monkeypatch, prepared, force=True),
                    lambda: grade_folder(tmp_path, monkeypatch, prepared),  # a resumed run reuses every result
                    lambda: report.rebuild(out)):
        rebuild()
        grades = read_csv(out / "grades.csv")
        for key, document in prepared.items():
            hand = expected.get(key)
            assert grades[key]["hand_graded"] == ("" if hand is None else f"{hand:g}"), key
            assert float(grades[key]["total"]) == pytest.approx(document["score"] + (hand or 0)), key
        page = (out / "report.html").read_text(encoding="utf-8")
        row = next(r for r in page.split("<h2>Every student</h2>")[1].split("<tr>") if ">2023-60003</a>" in r)
        assert f"<td class=num>6.5</td><td class=num>{prepared['2023-60003']['score'] + 6.5:g}</td>" in row
        sheet = read_csv(out / hand_grading.CSV_NAME)
        assert sheet["2023-60001"]["points"] == "8" and sheet["2023-60001"]["comment"] == "clear and honest"


def test_a_student_graded_later_gets_a_new_row_and_the_others_keep_theirs(tmp_path, monkeypatch, most):
    rng = random.Random(6)
    first = {"2023-61001": graded_document("2023-61001", "first answer", rng)}
    out = grade_folder(tmp_path, monkeypatch, first)
    hand_grading.write_sheet(out, report.load_documents(out))
    enter_points(out, {"2023-61001": "9"}, {"2023-61001": "good"})

    late = {"2023-61002": graded_document("2023-61002", "=HYPERLINK(\"http://x\")<script>", rng)}
    late_folder = tmp_path / "late"
    late_folder.mkdir()
    (late_folder / "2023-61002.ipynb").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(batch, "grade_submission", lambda path, settings, set_aside=(): (Path(path).stem, late[Path(path).stem]))
    batch.grade_batch([late_folder], out, Settings())
    added, _ = hand_grading.write_sheet(out, report.load_documents(out))
    assert added == 1
    sheet = read_csv(out / hand_grading.CSV_NAME)
    assert sheet["2023-61001"]["points"] == "9" and sheet["2023-61001"]["comment"] == "good"
    assert sheet["2023-61002"]["points"] == ""
    # Student text never becomes a spreadsheet formula or markup.
    assert sheet["2023-61002"]["answer"].startswith("'=")
    page = (out / hand_grading.HTML_NAME).read_text(encoding="utf-8")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert read_csv(out / "grades.csv")["2023-61001"]["hand_graded"] == "9"


def test_rows_of_students_no_longer_in_the_folder_and_added_columns_are_kept(tmp_path, most):
    out = tmp_path / "out"
    out.mkdir()
    with open(out / hand_grading.CSV_NAME, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, [*hand_grading.SHEET_COLUMNS, "grader"])
        writer.writeheader()
        writer.writerow({"student_id": "2023-62009", "answer": "", "points": "4", "max_points": "10",
                         "comment": "graded on paper", "grader": "TA Kim"})
    hand_grading.write_sheet(out, [("2023-62010", graded_document("2023-62010", "hi", random.Random(12)))])
    rows = read_csv(out / hand_grading.CSV_NAME)
    assert rows["2023-62009"]["comment"] == "graded on paper" and rows["2023-62009"]["grader"] == "TA Kim"
    assert rows["2023-62010"]["grader"] == "" and rows["2023-62010"]["answer"] == "hi"


def test_a_bad_entry_is_named_and_left_out_not_counted(tmp_path, monkeypatch, most, capsys):
    rng = random.Random(7)
    prepared = {key: graded_document(key, "answer", rng) for key in ("2023-63001", "2023-63002")}
    out = grade_folder(tmp_path, monkeypatch, prepared)
    hand_grading.write_sheet(out, report.load_documents(out))
    enter_points(out, {"2023-63001": "12", "2023-63002": "five"})
    report.rebuild(out)
    grades = read_csv(out / "grades.csv")
    assert grades["2023-63001"]["hand_graded"] == "" and grades["2023-63002"]["hand_graded"] == ""
    err = capsys.readouterr().err
    assert "2023-63001" in err and "outside 0..10" in err and "'five' is not a number" in err
    # The TA's typing stays in the file to be corrected.
    assert read_csv(out / hand_grading.CSV_NAME)["2023-63002"]["points"] == "five"


def test_hand_grading_command(tmp_path, monkeypatch, most, capsys):
    rng = random.Random(8)
    prepared = {"2023-64001": graded_document("2023-64001", "an answer", rng),
                "2023-64002": graded_document("2023-64002", None, rng)}
    out = grade_folder(tmp_path, monkeypatch, prepared)
    assert cli.main(["hand-grading", str(out)]) == 0
    assert "2 new rows" in capsys.readouterr().out
    page = (out / hand_grading.HTML_NAME).read_text(encoding="utf-8")
    assert 'id="2023-64001"' in page and "an answer" in page and "(no answer cell found)" in page
    assert cli.main(["hand-grading", str(tmp_path / "nowhere")]) == 2
    (out / hand_grading.CSV_NAME).write_text("who,what\n1,2\n", encoding="utf-8")
    assert cli.main(["hand-grading", str(out)]) == 2, "a sheet it cannot read is never overwritten"
    assert (out / hand_grading.CSV_NAME).read_text(encoding="utf-8") == "who,what\n1,2\n"


@pytest.mark.slow
def test_grading_keeps_the_answer_in_results_json(tmp_path):
    from autograder.pipeline import grade_submission
    answer = "Attention first ignored the mask; printing the weights showed it.\n\n어텐션 마스크를 고쳤다."
    path = tmp_path / "2023-65001.ipynb"
    path.write_text(json.dumps(stripped(answered_master(answer))), encoding="utf-8")
    key, document = grade_submission(path, Settings())
    assert key == "2023-65001" and document["score"] == 100, document["output"]
    assert document["extra_data"]["free_response"] == {"text": answer, "chars": len(answer)}


def test_hand_grading_command_warns_while_the_master_gives_no_points(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(hand_grading, "max_points", lambda: 0.0)
    out = grade_folder(tmp_path, monkeypatch, {"2023-66001": graded_document("2023-66001", "text", random.Random(11))})
    assert cli.main(["hand-grading", str(out)]) == 0
    assert "gives the answer cell 0 points" in capsys.readouterr().err
    assert "0 points, so no points can be entered" in (out / hand_grading.HTML_NAME).read_text(encoding="utf-8")
