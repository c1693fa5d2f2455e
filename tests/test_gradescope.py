"""The Gradescope export: what the zip holds, and its run_autograder run the way Gradescope runs it.

Each run unpacks the zip into a temporary folder laid out like Gradescope's /autograder (source/,
submission/, results/) and runs run_autograder there with AUTOGRADER_ROOT pointing at it and this
project's Python first on PATH. setup.sh is not run: it installs packages, which tests must not do.
"""
import io
import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from autograder.rubric import RUBRIC, TOTAL
from autograder.intake.unpack import NOTEBOOK_NAME

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"
PYTHON_BIN = VENV_BIN if (VENV_BIN / "python3").exists() else Path(sys.executable).parent
MASTER = ROOT / "source" / "Assignment2-1" / NOTEBOOK_NAME
# Grading one submission takes well under a minute on an idle machine; this only stops a hang.
RUN_TIMEOUT = 900


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The zip, written through the command line as the staff would."""
    path = tmp_path_factory.mktemp("export") / "autograder.zip"
    proc = subprocess.run([sys.executable, "-m", "autograder", "export-gradescope", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return path


def unzip(archive_path, destination):
    """Like unzip(1), which Gradescope uses: the files, with the permission bits the zip records."""
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            target = Path(archive.extract(info, destination))
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                target.chmod(mode)


def submission_metadata(*sids):
    """Gradescope's submission_metadata.json as its documentation shows it, with a roster `sid` per submitter."""
    users = [{"email": f"student{i}@example.com", "id": 1000 + i, "name": f"Student {i}",
              **({} if sid is None else {"sid": sid})} for i, sid in enumerate(sids)]
    return {"id": 123456, "created_at": "2026-12-01T14:22:32.365935+09:00",
            "assignment": {"id": 25828, "course_id": 1234, "title": "Assignment 2-1", "group_submission": False,
                           "group_size": None, "total_points": "100.0"},
            "submission_method": "upload", "users": users, "previous_submissions": []}


def gradescope_root(tmp_path, exported, uploads, metadata=None):
    """tmp_path/autograder laid out as on Gradescope, with `uploads` (name -> bytes) as the student's upload
    and `metadata` as submission_metadata.json."""
    root = tmp_path / "autograder"
    unzip(exported, root / "source")
    (root / "submission").mkdir()
    (root / "results").mkdir()
    if metadata is not None:
        (root / "submission_metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    for name, data in uploads.items():
        (root / "submission" / name).write_bytes(data)
    return root


def run_autograder(root):
    env = dict(os.environ, AUTOGRADER_ROOT=str(root), PATH=f"{PYTHON_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run([str(root / "source" / "run_autograder")], cwd=root, env=env, capture_output=True,
                          text=True, timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = root / "results" / "results.json"
    assert results.is_file(), f"no results.json\n{proc.stdout}\n{proc.stderr}"
    return json.loads(results.read_text(encoding="utf-8"))


def assert_gradescope_schema(document):
    """What Gradescope reads: a number for score, text for output, tests with a name and a score each."""
    assert isinstance(document["score"], (int, float)) and not isinstance(document["score"], bool)
    assert isinstance(document["output"], str) and document["output"]
    assert isinstance(document["tests"], list)
    for test in document["tests"]:
        assert isinstance(test["name"], str) and test["name"]
        assert 0 <= test["score"] <= test["max_score"]
    if document["tests"]:
        assert len(document["tests"]) == len(RUBRIC)
        assert sum(t["max_score"] for t in document["tests"]) == TOTAL
        assert sum(t["score"] for t in document["tests"]) == pytest.approx(document["score"])


def collect_submission_archive(notebook_bytes):
    """What CollectSubmission.sh uploads: the notebook at the root of a gzipped tar."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo(NOTEBOOK_NAME)
        info.size = len(notebook_bytes)
        archive.addfile(info, io.BytesIO(notebook_bytes))
    return buffer.getvalue()


def test_zip_holds_what_gradescope_and_the_grader_need(exported):
    with zipfile.ZipFile(exported) as archive:
        names = set(archive.namelist())
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in archive.infolist()}
        requirements = archive.read("requirements.txt").decode()
        setup = archive.read("setup.sh").decode()
    assert {"setup.sh", "run_autograder", "requirements.txt", "requirements-lock.txt"} <= names
    assert {"autograder/__init__.py", "autograder/pipeline.py", "autograder/reports/gradescope.py",
            "autograder/checks/conftest.py", "autograder/checks/pytest.ini"} <= names
    assert {f"source/Assignment2-1/{NOTEBOOK_NAME}", f"release/Assignment2-1/{NOTEBOOK_NAME}"} <= names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert modes["setup.sh"] & 0o111 and modes["run_autograder"] & 0o111
    assert "torch==2.13.0" in requirements.splitlines()
    assert "--index-url https://download.pytorch.org/whl/cpu" in setup


def test_scripts_are_valid_bash(exported, tmp_path):
    unzip(exported, tmp_path)
    for script in ("setup.sh", "run_autograder"):
        proc = subprocess.run(["bash", "-n", str(tmp_path / script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script}: {proc.stderr}"


def test_export_is_reproducible(exported, tmp_path):
    from autograder.reports.gradescope import build_zip
    assert build_zip(tmp_path / "again.zip").read_bytes() == exported.read_bytes()


@pytest.mark.slow
def test_reference_notebook_scores_100(exported, tmp_path):
    upload = {"2024-12345.tar.gz": collect_submission_archive(MASTER.read_bytes())}
    document = run_autograder(gradescope_root(tmp_path, exported, upload))
    assert_gradescope_schema(document)
    failed = [f"{t['name']}: {t.get('output')}" for t in document["tests"] if t["score"] < t["max_score"]]
    assert document["score"] == TOTAL, failed
    assert document["extra_data"]["student_id"] == "2024-12345"


def test_student_id_comes_from_gradescope_metadata(exported, tmp_path):
    # Students upload files under any name on Gradescope; the roster's sid says who they are.
    upload = {"my notebook.ipynb": bytes(range(256)) * 40}
    document = run_autograder(gradescope_root(tmp_path, exported, upload, submission_metadata("2024-12345")))
    assert document["extra_data"]["student_id"] == "2024-12345"
    assert document["extra_data"]["source"] == "my notebook.ipynb"
    assert not [flag for flag in document["extra_data"]["flags"] if "student ID" in flag]
    assert "student ID" not in document["output"]


@pytest.mark.parametrize("metadata, expected", [
    (submission_metadata("2024-12345"), ("2024-12345", None)),
    (submission_metadata(None, " 2024-54321 ", "2024-12345"), ("2024-54321", None)),
    (submission_metadata("12345"), (None, "not a valid YYYY-NNNNN (sid: 12345)")),
    (submission_metadata(None), (None, "not a valid YYYY-NNNNN (sid: none)")),
    ({"users": []}, (None, "names no submitter")),
    (["not", "an", "object"], (None, "names no submitter")),
])
def test_student_id_from_metadata(tmp_path, metadata, expected):
    from autograder.reports.gradescope import student_id_from_metadata
    path = tmp_path / "submission_metadata.json"
    path.write_text(json.dumps(metadata), encoding="utf-8")
    student_id, problem = student_id_from_metadata(path)
    assert student_id == expected[0]
    assert (problem is None) if expected[1] is None else expected[1] in problem
    assert student_id_from_metadata(tmp_path / "missing.json") == (None, "Gradescope gave no submission metadata")
    path.write_text("{not json", encoding="utf-8")
    assert student_id_from_metadata(path)[0] is None


def _intake_only(path, settings):
    """grade_submission without the checks: the same intake, so the same ID and file-name flags."""
    from autograder.intake import unpack
    from autograder.pipeline import results_document, row_key
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        intake = unpack.intake(Path(path), Path(folder))
    key = row_key(path, intake.student_id)
    return key, results_document(key, {}, flags=list(intake.flags), error="checks not run in this test",
                                 extra={"source": Path(path).name})


@pytest.mark.parametrize("upload_name, sids, key, flagged", [
    ("whatever.ipynb", ("2024-12345",), "2024-12345", False),
    ("2024-22222.ipynb", ("2024-12345",), "2024-12345", False),   # the roster wins over the file name
    ("2024-22222.tar.gz", ("bogus",), "2024-22222", False),       # no valid sid: the file name's
    ("whatever.ipynb", ("bogus",), "unknown-whatever.ipynb", True),
])
def test_grade_upload_picks_the_id(tmp_path, monkeypatch, upload_name, sids, key, flagged):
    from autograder.reports import gradescope
    from autograder import pipeline
    monkeypatch.setattr(pipeline, "grade_submission", _intake_only)
    (tmp_path / "submission").mkdir()
    (tmp_path / "submission" / upload_name).write_bytes(MASTER.read_bytes() if upload_name.endswith(".ipynb")
                                                         else collect_submission_archive(MASTER.read_bytes()))
    (tmp_path / "meta.json").write_text(json.dumps(submission_metadata(*sids)), encoding="utf-8")
    document = gradescope.grade_upload(tmp_path / "submission", tmp_path / "meta.json")
    assert document["extra_data"]["student_id"] == key
    notes = [flag for flag in document["extra_data"]["flags"] if flag.startswith("no student ID")]
    assert bool(notes) == flagged, document["extra_data"]["flags"]
    if flagged:
        assert "sid: bogus" in notes[0] and notes[0] in document["output"]
    else:
        assert not [flag for flag in document["extra_data"]["flags"] if "student ID" in flag]


def test_garbage_upload_scores_0_with_the_reason(exported, tmp_path):
    upload = {"2024-12345.ipynb": bytes(range(256)) * 40}
    document = run_autograder(gradescope_root(tmp_path, exported, upload))
    assert_gradescope_schema(document)
    assert document["score"] == 0
    assert document["extra_data"]["error"]
    assert document["extra_data"]["error"] in document["output"]


def test_upload_without_a_notebook_scores_0_with_the_reason(exported, tmp_path):
    document = run_autograder(gradescope_root(tmp_path, exported, {"notes.txt": b"I ran out of time"}))
    assert_gradescope_schema(document)
    assert document["score"] == 0
    assert "notes.txt" in document["output"]
    assert document["extra_data"]["student_id"] == "submission"


def test_results_are_written_when_the_grader_cannot_start(exported, tmp_path):
    root = gradescope_root(tmp_path, exported, {"2024-12345.ipynb": MASTER.read_bytes()})
    (root / "source" / "autograder" / "__init__.py").unlink()
    (root / "source" / "autograder" / "reports" / "gradescope.py").unlink()
    document = run_autograder(root)
    assert document["score"] == 0
    assert "could not run" in document["output"]
