"""The autograder on a corpus of synthetic submissions (tests/corpus.py), end to end.

Correct submissions written differently from the reference must score 100. A submission with one bug
must lose points in that bug's part, and keep full marks in every other part except Training (which runs
all of the student's parts together). The corpus is graded once per session, through the command line
exactly as the staff run it, and each variant is then one test.
"""
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from corpus import PARTS, UNSEEN, VARIANTS, write_corpus

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
JOBS = 2
# Generous: only there so that a hung grader fails the session instead of eating CI's time.
TIMEOUT = 3 * 3600
# Graded a second time to check that grading is deterministic: fails several checks with numeric messages.
REGRADED = "mha_mask_after_softmax"
# CORPUS_VARIANTS=name,name,... grades only those variants (a quick look at a few); the others are skipped.
SELECTED = set(filter(None, os.environ.get("CORPUS_VARIANTS", "").split(","))) or None
# Parts whose failed checks must each say what is wrong (autograder/checks/probe_*.py).
DIAGNOSED_PARTS = ("PositionalEncoding", "MultiHeadAttention")


@dataclass
class Graded:
    corpus: Path
    out: Path
    wall_seconds: float
    variants: list


def grade(paths, out, *extra):
    command = [PYTHON, "-m", "autograder", "grade", *map(str, paths), "--out", str(out), "--jobs", str(JOBS), *extra]
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the grader must find its own package from the repository root
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    base = tmp_path_factory.mktemp("grading_corpus")
    corpus, out = base / "submissions", base / "out"
    variants = write_corpus(corpus, SELECTED)
    started = time.monotonic()
    completed = grade([corpus], out)
    wall = time.monotonic() - started
    assert completed.returncode == 0, (f"the grader exited with {completed.returncode}\n"
                                       f"stderr (tail):\n{completed.stderr[-4000:]}")
    print(f"\ngraded {len(variants)} submissions in {wall:.0f} s wall clock (--jobs {JOBS})")
    return Graded(corpus, out, wall, variants)


def results_of(graded, variant):
    if SELECTED is not None and variant.name not in SELECTED:
        pytest.skip(f"{variant.name} is not among CORPUS_VARIANTS")
    path = graded.out / variant.student_id / "results.json"
    assert path.exists(), f"no results.json for {variant.name} ({variant.student_id})"
    return json.loads(path.read_text(encoding="utf-8"))


def lost_parts(results):
    """Parts that did not get their full points, from the tests (so a part's maximum is never hard-coded)."""
    full, got = {}, {}
    for test in results["tests"]:
        part = test["name"].split(": ", 1)[0]
        full[part] = full.get(part, 0) + test["max_score"]
        got[part] = got.get(part, 0) + test["score"]
    return [part for part in PARTS if got.get(part, 0) < full.get(part, 0)]


def describe(results, parts=None):
    """The failed tests (of `parts`, or all), with their outputs, for a failure message."""
    lines = [results.get("output", "")]
    for test in results["tests"]:
        if test["status"] != "passed" and (parts is None or test["name"].split(": ", 1)[0] in parts):
            lines.append(f"- {test['name']} [{test['score']}/{test['max_score']}]\n    "
                         + (test["output"] or "(no output)").replace("\n", "\n    "))
    return "\n".join(lines)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_variant_is_graded_as_intended(graded, variant):
    results = results_of(graded, variant)
    assert results["extra_data"]["student_id"] == variant.student_id
    assert results["extra_data"]["error"] is None, f"{variant.name} was not graded: {results['extra_data']['error']}"
    lost = lost_parts(results)
    if variant.part is None:
        if results["score"] != 100 or lost:
            pytest.fail(f"correct submission {variant.name} scored {results['score']}, losing points in {lost}:\n"
                        + describe(results), pytrace=False)
        return
    if variant.part not in lost:
        pytest.fail(f"{variant.name} has a bug in {variant.part}, yet that part kept full marks:\n"
                    + describe(results), pytrace=False)
    elsewhere = [part for part in lost if part not in (variant.part, "Training")]
    if elsewhere:
        pytest.fail(f"{variant.name} has a bug in {variant.part} only, yet it also lost points in {elsewhere}:\n"
                    + describe(results, elsewhere), pytrace=False)


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.part in DIAGNOSED_PARTS], ids=lambda v: v.name)
def test_bug_gets_a_diagnosis_in_results(graded, variant):
    results = results_of(graded, variant)
    failed = [t for t in results["tests"] if t["status"] != "passed" and t["name"].startswith(f"{variant.part}: ")]
    diagnoses = results["extra_data"]["diagnoses"]
    missing = [t["name"] for t in failed if not diagnoses.get(t["name"])]
    unseen = " (a bug no probe was written for)" if variant.name in UNSEEN else ""
    assert failed and not missing, f"{variant.name}{unseen}: failed checks without a diagnosis: {missing}"
    for test in failed:
        assert f"What is wrong: {diagnoses[test['name']]}" in test["output"]


def test_gradebook_has_one_row_per_variant(graded):
    with open(graded.out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    ids = [row["student_id"] for row in rows]
    assert sorted(ids) == sorted(v.student_id for v in graded.variants), ids
    for row in rows:
        variant = next(v for v in graded.variants if v.student_id == row["student_id"])
        results = results_of(graded, variant)
        assert float(row["score"]) == results["score"], row
        for part in PARTS:
            assert float(row[part]) == results["extra_data"]["parts"][part], (part, row)


def test_every_test_is_named_after_its_part(graded):
    for variant in graded.variants:
        results = results_of(graded, variant)
        names = [test["name"] for test in results["tests"]]
        assert len(set(names)) == len(names), f"{variant.name}: duplicate test names {names}"
        odd = [name for name in names if not any(name.startswith(f"{part}: ") for part in PARTS)]
        assert not odd, f"{variant.name}: tests not named '<part>: ...': {odd}"
        assert set(results["extra_data"]["parts"]) == set(PARTS)


def test_grading_twice_gives_the_same_result(graded, tmp_path):
    variant = next((v for v in graded.variants if v.name == REGRADED), None)
    if variant is None:
        pytest.skip(f"{REGRADED} is not among CORPUS_VARIANTS")
    submission = tmp_path / variant.filename
    shutil.copyfile(graded.corpus / variant.filename, submission)
    completed = grade([submission], tmp_path / "again", "--force")
    assert completed.returncode == 0, completed.stderr[-4000:]
    first = results_of(graded, variant)
    second = json.loads((tmp_path / "again" / variant.student_id / "results.json").read_text(encoding="utf-8"))
    assert second["score"] == first["score"]
    assert second["tests"] == first["tests"]
    assert second["extra_data"]["parts"] == first["extra_data"]["parts"]
    assert second["output"] == first["output"]
