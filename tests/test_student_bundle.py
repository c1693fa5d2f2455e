"""The student bundle (`make student-bundle`): what a student needs, and nothing of the solutions or grader.

What counts as a leak, and why the release's checksums are not one: nbgrader's own release notebook carries
a checksum in the metadata of every graded, locked or solution cell, so the handout must keep them (the
grader compares locked cells with them). Each is an MD5 of the cell as released (its visible source, type
and nbgrader flags), so it says nothing the student cannot already read; the test recomputes every one from
the bundle's own cells to show it.
"""
import json
import re
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest
from nbgrader.utils import compute_checksum

from corpus import MASTER, RELEASE, ROOT

SCRIPT = ROOT / "tools" / "build_student_bundle.py"
NOTEBOOK = RELEASE.name
SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)
EXPECTED = {NOTEBOOK, "CollectSubmission.sh", "README.md", "imgs/Attention.png", "imgs/Model_small.png"}


def _stripped_lines(text):
    return {line.strip() for line in text.splitlines()} - {""}


def _strings(value):
    """Every string inside a JSON value (a notebook's sources, outputs and metadata alike)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _text(name, data):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return ""  # the figures
    return "\n".join(_strings(json.loads(text))) if name.endswith(".ipynb") else text


def secret_solution_lines():
    """Lines of the master's solution regions that it has nowhere else (given code and text are no secret)."""
    master = MASTER.read_text(encoding="utf-8")
    cells = ["".join(cell["source"]) for cell in json.loads(master)["cells"]]
    inside = set().union(*(_stripped_lines(region) for cell in cells for region in SOLUTION_REGION.findall(cell)))
    outside = set().union(*(_stripped_lines(SOLUTION_REGION.sub("", cell)) for cell in cells))
    return inside - outside


def grader_lines():
    """Distinctive lines of the hidden grader and its checks (long enough to be its own, not quoted given code)."""
    given = _stripped_lines("\n".join(_strings(json.loads(RELEASE.read_text(encoding="utf-8")))))
    lines = set()
    for path in (ROOT / "autograder").rglob("*.py"):
        lines |= {line for line in _stripped_lines(path.read_text(encoding="utf-8")) if len(line) >= 30}
    return lines - given


def find_leaks(files):
    """What of the solutions or the grader a bundle ({path: bytes}) gives away."""
    leaks = [f"{name}: a path of the repository that is not for students" for name in files
             if name.split("/")[0] in {"source", "release", "autograder", "tests", "tools", "benchmarks"}
             or name.endswith((".py", ".db", ".ini"))]
    secret, grader = secret_solution_lines(), grader_lines()
    assert secret and grader, "nothing to look for: the leak check would pass anything"
    for name, data in files.items():
        lines = _stripped_lines(_text(name, data))
        leaks += [f"{name}: solution line {line!r}" for line in sorted(secret & lines)[:3]]
        leaks += [f"{name}: grader line {line!r}" for line in sorted(grader & lines)[:3]]
        if "BEGIN SOLUTION" in _text(name, data) or "BEGIN HIDDEN TESTS" in _text(name, data):
            leaks.append(f"{name}: an nbgrader solution or hidden-test region")
    return leaks


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    completed = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out)], capture_output=True, text=True,
                               timeout=60)
    assert completed.returncode == 0, completed.stderr
    folder = out / "Assignment2-1"
    files = {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}
    return folder, out / "Assignment2-1.zip", files


def test_bundle_holds_exactly_what_a_student_needs(bundle):
    folder, _, files = bundle
    assert set(files) == EXPECTED
    assert files[NOTEBOOK] == RELEASE.read_bytes() == (ROOT / NOTEBOOK).read_bytes()
    assert files["CollectSubmission.sh"] == (ROOT / "CollectSubmission.sh").read_bytes()
    assert (folder / "CollectSubmission.sh").stat().st_mode & stat.S_IXUSR
    # Every figure the handout shows is there.
    shown = set(re.findall(r"\(\./(imgs/[^)\s]+)\)", files[NOTEBOOK].decode()))
    assert shown and shown <= set(files)
    readme = files["README.md"].decode()
    for needed in ("Colab", "jupyter lab", "TO DO", "self-check", "bash CollectSubmission.sh", "MyDrive/Assignment2"):
        assert needed in readme, needed


def test_zip_holds_the_same_files_under_one_folder(bundle):
    _, archive, files = bundle
    with zipfile.ZipFile(archive) as zipped:
        inside = {info.filename: zipped.read(info) for info in zipped.infolist()}
        modes = {info.filename: info.external_attr >> 16 for info in zipped.infolist()}
    assert inside == {f"Assignment2-1/{name}": data for name, data in files.items()}
    assert modes["Assignment2-1/CollectSubmission.sh"] & stat.S_IXUSR


def test_bundle_gives_away_no_solution_hidden_check_or_grader_file(bundle):
    _, _, files = bundle
    assert find_leaks(files) == []


def test_the_leak_check_finds_a_leak(bundle):
    """It can fail: the master notebook, or a hidden check, slipped into the bundle."""
    _, _, files = bundle
    master = {**files, NOTEBOOK: MASTER.read_bytes()}
    assert any("solution line" in leak for leak in find_leaks(master))
    check = ROOT / "autograder" / "checks" / "test_multi_head_attention.py"
    renamed = {**files, "notes.txt": check.read_bytes()}
    assert any(leak.startswith("notes.txt: grader line") for leak in find_leaks(renamed))
    assert find_leaks({**files, "autograder/checks/test_x.py": b""})


def test_release_checksums_in_the_bundle_are_computed_from_its_own_cells(bundle):
    _, _, files = bundle
    notebook = nbformat.reads(files[NOTEBOOK].decode(), as_version=4)
    checksummed = [cell for cell in notebook.cells if "checksum" in cell.metadata.get("nbgrader", {})]
    assert checksummed
    for cell in checksummed:
        assert compute_checksum(cell) == cell.metadata.nbgrader.checksum, cell.metadata.nbgrader.grade_id


def test_bundle_refuses_a_handout_that_is_not_the_release(tmp_path):
    """Run on a copy of the repository's files, so the real handout is never touched."""
    copy = tmp_path / "repo"
    for name in ("tools/build_student_bundle.py", f"release/Assignment2-1/{NOTEBOOK}", NOTEBOOK,
                 "CollectSubmission.sh", "docs/student_README.md", "imgs/Attention.png", "imgs/Model_small.png"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        (copy / name).write_bytes((ROOT / name).read_bytes())
    (copy / NOTEBOOK).write_bytes(MASTER.read_bytes())
    completed = subprocess.run([sys.executable, str(copy / "tools" / "build_student_bundle.py")],
                               capture_output=True, text=True, timeout=60)
    assert completed.returncode != 0
    assert "run `make release` first" in completed.stderr
    assert not (copy / "dist").exists()


def test_git_ignores_the_grading_folders_and_the_bundle():
    """Student work, grades and the built bundle must never be committed by accident."""
    paths = ["submissions/2023-12345.tar.gz", "gradebook/grades.csv", "dist/Assignment2-1.zip"]
    completed = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=ROOT, capture_output=True,
                               text=True, timeout=30)
    assert completed.stdout.split() == paths, completed.stderr
