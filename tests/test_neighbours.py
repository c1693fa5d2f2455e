"""A grade depends only on the student's own code: an honest class graded alone, then graded again after every
hostile submission of the project's corpus (tests/hostile_corpus.py: the code cases, the attacks on the cage,
the broken archives), gets identical rows, with --jobs 1 (the same grading process and fork server for
everyone) and --jobs 2 (two at a time). This is the invariant; the corpus only supplies the neighbours.
"""
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostile_corpus as hc

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
CHECK_TIMEOUT = 5
# A batch that hangs fails here instead of eating CI's time: the whole corpus grades in a few minutes.
BATCH_LIMIT = 1500


def grade(folder, out, jobs):
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    started = time.monotonic()
    completed = subprocess.run([PYTHON, "-m", "autograder", "grade", str(folder), "--out", str(out),
                                "--jobs", str(jobs), "--check-timeout", str(CHECK_TIMEOUT)],
                               cwd=ROOT, env=environment, capture_output=True, text=True, timeout=BATCH_LIMIT)
    return completed, time.monotonic() - started


def row(out, key):
    """What a student sees of their grade: the score, every test's score and status, and the flags."""
    document = json.loads((out / key / "results.json").read_text(encoding="utf-8"))
    return {"score": document["score"], "flags": document["extra_data"]["flags"],
            "tests": [(t["name"], t["score"], t["status"]) for t in document["tests"]]}


@pytest.fixture(scope="module")
def honest_alone(tmp_path_factory):
    base = tmp_path_factory.mktemp("honest")
    cases = hc.write_neighbour_corpus(base / "subs", port=9, token="unused", hostile=False)
    completed, _ = grade(base / "subs", base / "out", jobs=1)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return {case.key: row(base / "out", case.key) for case in cases.values()}


@pytest.mark.parametrize("jobs", [1, 2])
def test_honest_rows_are_identical_amid_hostile_submissions(honest_alone, tmp_path, jobs):
    cases = hc.write_neighbour_corpus(tmp_path / "subs", port=9, token=secrets.token_hex(6))
    completed, wall = grade(tmp_path / "subs", tmp_path / "out", jobs)
    print(f"\n{len(cases)} submissions, --jobs {jobs}: {wall:.0f} s")
    assert completed.returncode == 0, completed.stderr[-3000:]
    for key, alone in honest_alone.items():
        assert row(tmp_path / "out", key) == alone, key
    # Every hostile submission got its row too: nothing stopped the batch.
    for case in cases.values():
        assert (tmp_path / "out" / case.key / "results.json").exists(), case.name
