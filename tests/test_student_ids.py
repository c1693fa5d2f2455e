"""Which row a file belongs to (autograder/intake/student_ids.py): only a name that is the student's submission name, as
CollectSubmission.sh makes it or as an LMS bulk download wraps it; a name that merely mentions an ID is no one's."""
import csv
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from autograder.intake import student_ids
from autograder.intake.unpack import NOTEBOOK_NAME, student_id_from_name

SID = "2023-18676"
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

MAPS_TO_THE_ID = [
    # Form 1: the student's own submission name, and copies a browser or an LMS makes of it.
    f"{SID}.tar.gz", f"{SID}.tgz", f"{SID}.tar", f"{SID}.ipynb", f"{SID}.TAR.GZ",
    f"[{SID}].tar.gz", f" [ {SID} ] .tar.gz", f"({SID}).tar.gz",
    f"{SID} (1).ipynb", f"{SID}(2).tar.gz", f"{SID}-1.tar.gz", f"[{SID}] (3).tar.gz",
    # Form 2: an LMS's prefix, then the student's own name.
    f"smithjohn_1234567_89012345_{SID}.tar.gz",               # Canvas
    f"smithjohn_LATE_1234567_89012345_{SID}-1.tar.gz",         # Canvas, late, resubmitted
    f"John Smith_123456_assignsubmission_file_{SID}.tar.gz",   # Moodle
    f"Assignment2-1_jsmith_attempt_2024-05-01-10-30-00_{SID}.tar.gz",  # Blackboard
    # Form 3: the LMS wrote the ID as one of its own fields.
    f"{SID}_attempt_2024-05-01.tar.gz",
    f"Assignment2-1_{SID}_attempt_2024-05-01-10-30-00_Assignment2-1_Transformer_from_scratch.ipynb",
    f"John Smith_{SID}_Assignment.ipynb",
    f"Smith, Mary Anne_{SID}_{SID}.tar.gz",
]

NOT_KEYED = [
    # A name that mentions another student's ID is not that student's submission.
    "notes_for_2023-00002.ipynb", "notes_for_2023-00002_final.ipynb", "notes for 2023-00002.ipynb",
    "copy of 2023-00002.ipynb", "2023-00002_notes.ipynb", "2023-00002 notes.tar.gz", "from-2023-00002.ipynb",
    "John_2023-00002.ipynb", "notes_2023-00002_Assignment.ipynb",
    # An LMS around a student's own free-text name: only the wrapper is the LMS's.
    "smithjohn_1234567_89012345_notes_for_2023-00002.ipynb",
    "smithjohn_1234567_89012345_x_1_2023-00002.ipynb",
    "John Smith_123456_assignsubmission_file_notes_2023-00002.ipynb",
    "notes_for_2023-00002_attempt_soon.ipynb",
    # Two different IDs: none is used.
    "2023-00001_2023-00002.tar.gz",
    "Assignment2-1_2023-00001_attempt_2024-05-01-10-30-00_2023-00002.tar.gz",
    # Not an ID at all.
    "2023-186761.tar.gz", "23-18676.tar.gz", "my_homework.tar.gz", "2023_18676.tar.gz",
]


@pytest.mark.parametrize("name", MAPS_TO_THE_ID)
def test_submission_names_map_to_their_id(name):
    student_id, note = student_ids.read(name)
    assert student_id == SID, note
    assert student_id_from_name(name) == SID


@pytest.mark.parametrize("name", NOT_KEYED)
def test_names_that_only_mention_an_id_map_to_no_one(name):
    student_id, note = student_ids.read(name)
    assert student_id is None
    assert note  # the unknown-<name> row says why


def test_the_notes_say_what_happened():
    assert student_ids.read(f"{SID}.tar.gz") == (SID, None)
    assert "read from an LMS download's file name" in student_ids.read(f"{SID}_attempt_2024-05-01.tar.gz")[1]
    assert student_ids.read("my_homework.tar.gz")[1] == "file name holds no valid student ID (YYYY-NNNNN)"
    assert "mentions 2023-00002 but is not a submission name" in student_ids.read("notes_for_2023-00002.ipynb")[1]
    assert "several student IDs (2023-00001, 2023-00002)" in student_ids.read("2023-00001_2023-00002.tar.gz")[1]


# --------------------------------------------------------------------------- several files for one row

def test_one_file_per_row_chosen_by_the_files_alone(tmp_path):
    from autograder.batch import choose_per_row

    def make(name, mtime):
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (mtime, mtime))
        return path

    archive = make(f"{SID}.tar.gz", 1_000)
    newer_notebook = make(f"{SID} (1).ipynb", 3_000)
    old_notebook = make(f"{SID}.ipynb", 2_000)
    other_a, other_b = make("2023-00002 (1).ipynb", 5_000), make("2023-00002.ipynb", 5_000)
    wrapped = make(f"smithjohn_1_2_{SID}.tgz", 500)
    mentions = make("notes_for_2023-00002.ipynb", 9_000)
    files = [archive, newer_notebook, old_notebook, other_a, other_b, wrapped, mentions]
    for order in (files, files[::-1]):
        chosen = choose_per_row(order)
        assert chosen[SID] == (archive, sorted([newer_notebook.name, old_notebook.name, wrapped.name]))
        assert chosen["2023-00002"] == (other_a, [other_b.name])  # same mtime: the name decides
        assert chosen["unknown-notes_for_2023-00002.ipynb"] == (mentions, [])


@pytest.mark.slow
def test_two_files_of_one_student_give_the_same_row_on_every_run(tmp_path):
    subs, out = tmp_path / "subs", tmp_path / "out"
    subs.mkdir()
    shutil.copy(EXAMPLES / "2023-00001.tar.gz", subs / "2023-00001.tar.gz")  # the reference solution: 100
    with tarfile.open(EXAMPLES / "2023-00004.tar.gz") as archive:  # attention scaled by sqrt(dim): less
        (subs / "2023-00001 (1).ipynb").write_bytes(archive.extractfile(NOTEBOOK_NAME).read())
    # Only mentions 2023-00001: it must not take that row (not JSON, so its own row costs no grading).
    (subs / "notes_for_2023-00001.ipynb").write_text("my notes")
    os.utime(subs / "2023-00001.tar.gz", (1_000, 1_000))

    rows = []
    for run in range(3):
        if run == 2:  # the bare notebook is touched again: still an archive first
            os.utime(subs / "2023-00001 (1).ipynb")
        completed = subprocess.run([PYTHON, "-m", "autograder", "grade", str(subs), "--out", str(out)], cwd=ROOT,
                                   env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
                                   capture_output=True, text=True, timeout=900)
        assert completed.returncode == 0, completed.stderr[-3000:]
        with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
            rows.append({row["student_id"]: row for row in csv.DictReader(handle)})
        if run:
            assert "reused 2 of 2" in completed.stderr, completed.stderr[-3000:]
    assert rows[0] == rows[1] == rows[2]
    assert set(rows[0]) == {"2023-00001", "unknown-notes_for_2023-00001.ipynb"}
    mine = rows[0]["2023-00001"]
    assert float(mine["score"]) == 100 and "also submitted, not graded" in mine["flags"]
    assert "2023-00001 (1).ipynb" in mine["flags"] and "notes_for" not in mine["flags"]
    results = json.loads((out / "2023-00001" / "results.json").read_text())
    assert results["extra_data"]["source"] == "2023-00001.tar.gz"
    assert results["extra_data"]["set_aside"] == ["2023-00001 (1).ipynb"]
    notes = rows[0]["unknown-notes_for_2023-00001.ipynb"]
    assert "not valid JSON" in notes["error"] and "mentions 2023-00001" in notes["flags"]


def test_the_class_report_groups_these_flags():
    from autograder.pipeline import set_aside_flag
    from autograder.reports.flags import kind_of

    def flag_kind(flag):
        return kind_of(flag).name

    assert flag_kind(set_aside_flag([f"{SID} (1).ipynb"])) == "several files submitted"
    for name in ("notes_for_2023-00002.ipynb", "my_homework.tar.gz", "2023-00001_2023-00002.tar.gz"):
        assert flag_kind(student_ids.read(name)[1]) == "student ID problem"
