"""The assignment notebook, end to end.

The master (source/, with solutions) must run top to bottom and train. The release (release/, made by
nbgrader for students) must be reproducible, keep nbgrader's metadata and hide every solution, and the
handout at the repository root must be that release. The self-check cells must pass on the master and fail
on the release, which is how we know they test the students' code and nothing else.

Tests marked `slow` start Jupyter kernels. TRANSFORMER_FAST_RUN=1 shrinks the notebook's final training
so that each run of the master takes well under a minute on two cores.
"""
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbgrader.utils import compute_checksum, is_grade, is_locked, is_solution

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENT = "Assignment2-1"
NOTEBOOK = "Assignment2-1_Transformer_from_scratch.ipynb"
MASTER = ROOT / "source" / ASSIGNMENT / NOTEBOOK
RELEASE = ROOT / "release" / ASSIGNMENT / NOTEBOOK
HANDOUT = ROOT / NOTEBOOK
VOCAB_SIZE = 5000  # output_lib_size in the notebook: an untrained model's loss is about ln(5000)
SELF_CHECK_COUNT = 4  # one per TO DO section
FAST = {"TRANSFORMER_FAST_RUN": "1"}
# Only there so that a hung kernel fails the test instead of eating CI's time; real runs need far less.
TIMEOUT = 600

SOLUTION_REGION = re.compile(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", re.S)


def env_with(**extra):
    # nbgrader starts alembic and the kernel by name, so this interpreter's bin/ must come first on PATH.
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def read(path):
    return nbformat.read(str(path), as_version=4)


def self_checks(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code" and is_grade(cell)]


def by_grade_id(nb):
    return {cell.metadata.nbgrader["grade_id"]: cell for cell in nb.cells if "nbgrader" in cell.metadata}


def stream_text(nb):
    return "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs if out.output_type == "stream")


def execute(path, workdir, *, allow_errors=False):
    nb = read(path)
    client = NotebookClient(nb, timeout=TIMEOUT, kernel_name="python3", allow_errors=allow_errors,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute(env=env_with(**FAST))
    # Without the variable reaching the kernel, the full training would run for many minutes.
    assert "(fast run)" in stream_text(nb), "TRANSFORMER_FAST_RUN did not reach the kernel"
    return nb


def course_copy(notebook, dest):
    """What an instructor or student works in: the notebook beside imgs/ and the nbgrader config."""
    shutil.copy2(notebook, dest / NOTEBOOK)
    shutil.copytree(ROOT / "imgs", dest / "imgs")
    shutil.copy2(ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")
    return dest


def nbgrader_validate(workdir, *flags):
    proc = subprocess.run([sys.executable, "-m", "nbgrader", "validate", *flags, NOTEBOOK], cwd=workdir,
                          env=env_with(**FAST), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def reported_cells(validate_output, heading):
    # validate_and_print separates its reports with a line of "=" and starts each with `heading`.
    blocks = re.split(r"^=+$", validate_output, flags=re.M)
    return [block for block in blocks if block.strip().startswith(heading)]


@pytest.fixture(scope="module")
def executed_master(tmp_path_factory):
    # One execution shared by every test that only reads the master's outputs.
    return execute(MASTER, tmp_path_factory.mktemp("master"))


# ---- the master ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_master_runs_top_to_bottom_under_nbval_lax_in_fast_mode(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-q", "-p", "no:cacheprovider", str(MASTER)],
        cwd=tmp_path, env=env_with(**FAST), capture_output=True, text=True, timeout=TIMEOUT)
    report = proc.stdout[-4000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, report
    code_cells = sum(cell.cell_type == "code" for cell in read(MASTER).cells)
    assert re.search(rf"\b{code_cells} passed\b", proc.stdout), report  # nbval: one item per code cell


@pytest.mark.slow
def test_master_training_loss_starts_near_chance_and_falls(executed_master):
    text = stream_text(executed_master)
    epochs = re.findall(r"^Epoch: (\d+), Loss: (\S+)$", text, re.M)
    assert len(epochs) >= 10, text[-2000:]
    assert [int(n) for n, _ in epochs] == list(range(1, len(epochs) + 1))
    losses = [float(loss) for _, loss in epochs]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[0] == pytest.approx(math.log(VOCAB_SIZE), abs=1.0)
    quarter = len(losses) // 4
    first, last = sum(losses[:quarter]) / quarter, sum(losses[-quarter:]) / quarter
    assert last < first - 0.1, losses
    # The summary printed under the loss curve agrees with the epoch log.
    summary = re.search(r"^loss: (\S+) -> (\S+)$", text, re.M)
    assert summary, text[-2000:]
    assert float(summary[1]) == pytest.approx(losses[0], abs=1e-3)
    assert float(summary[2]) == pytest.approx(losses[-1], abs=1e-3)


@pytest.mark.slow
def test_master_draws_its_plots(executed_master):
    # Positional-encoding heatmap, causal attention map, loss curve.
    figures = [cell for cell in executed_master.cells if cell.cell_type == "code"
               and any("image/png" in out.get("data", {}) for out in cell.outputs)]
    assert len(figures) >= 3


@pytest.mark.slow
def test_nbgrader_validate_passes_on_the_master(tmp_path):
    out = nbgrader_validate(course_copy(MASTER, tmp_path))
    assert "Success! Your notebook passes all the tests." in out, out
    assert not reported_cells(out, "The following cell failed"), out


# ---- the release and the handout ------------------------------------------------------------------

@pytest.mark.slow
def test_regenerating_the_release_reproduces_release_and_handout_byte_for_byte(tmp_path):
    # A copy, so the test never touches the working tree; only what tools/release.sh reads goes in it.
    shutil.copy2(ROOT / "nbgrader_config.py", tmp_path)
    ignore = shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints")
    shutil.copytree(ROOT / "source", tmp_path / "source", ignore=ignore)
    shutil.copytree(ROOT / "tools", tmp_path / "tools", ignore=ignore)
    proc = subprocess.run(["bash", str(tmp_path / "tools" / "release.sh")], cwd=tmp_path,
                          env=env_with(PYTHON=sys.executable), capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]

    fresh, committed = tmp_path / "release" / ASSIGNMENT, ROOT / "release" / ASSIGNMENT
    assert sorted(p.name for p in fresh.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in fresh.iterdir():
        assert path.read_bytes() == (committed / path.name).read_bytes(), f"{path.name}: run `make release`"
    assert (tmp_path / NOTEBOOK).read_bytes() == HANDOUT.read_bytes(), "handout is stale: run `make release`"


def test_root_handout_is_byte_identical_to_the_release_notebook():
    assert HANDOUT.read_bytes() == RELEASE.read_bytes(), "run `make release`"


def test_release_keeps_the_nbgrader_metadata_of_every_master_cell():
    master, release = by_grade_id(read(MASTER)), by_grade_id(read(RELEASE))
    assert list(release) == list(master)  # same cells, same order
    for grade_id, cell in release.items():
        meta, original = cell.metadata.nbgrader, master[grade_id].metadata.nbgrader
        for key in ("grade", "solution", "locked", "points"):
            assert meta.get(key) == original.get(key), f"{grade_id}: {key}"
        assert cell.cell_type == master[grade_id].cell_type


def test_release_checksums_match_every_graded_locked_or_solution_cell():
    cells = [cell for cell in read(RELEASE).cells if is_grade(cell) or is_locked(cell) or is_solution(cell)]
    assert len(cells) >= SELF_CHECK_COUNT
    for cell in cells:
        meta = cell.metadata.nbgrader
        assert meta.get("checksum") == compute_checksum(cell), meta["grade_id"]


def test_release_locked_cells_are_unchanged_from_the_master():
    master = by_grade_id(read(MASTER))
    for grade_id, cell in by_grade_id(read(RELEASE)).items():
        if is_locked(cell):
            assert cell.source == master[grade_id].source, grade_id


def test_release_contains_no_solution_code():
    master, release = read(MASTER), read(RELEASE)
    solution_lines, given_lines = set(), set()
    for cell in master.cells:
        regions = SOLUTION_REGION.findall(cell.source)
        solution_lines.update(line.strip() for region in regions for line in region.splitlines())
        given_lines.update(line.strip() for line in SOLUTION_REGION.sub("", cell.source).splitlines())
    # A line the master also has outside its solutions (say `self.dropout = nn.Dropout(dropout)`) is no leak.
    secret = solution_lines - given_lines - {""}
    assert secret, "the master has no solution regions to hide"
    for cell in release.cells:
        assert "BEGIN SOLUTION" not in cell.source and "END SOLUTION" not in cell.source
        leaked = secret & {line.strip() for line in cell.source.splitlines()}
        assert not leaked, leaked


def test_release_solution_cells_hold_the_stubs():
    for cell in read(RELEASE).cells:
        if not is_solution(cell):
            continue
        if cell.cell_type == "code":
            assert "raise NotImplementedError" in cell.source, cell.metadata.nbgrader["grade_id"]
        else:
            assert "YOUR ANSWER HERE" in cell.source, cell.metadata.nbgrader["grade_id"]


@pytest.mark.slow
def test_nbgrader_validate_invert_finds_no_passing_self_check_in_the_release(tmp_path):
    out = nbgrader_validate(course_copy(RELEASE, tmp_path), "--invert")
    # Guard against a vacuous pass: with a changed checksum nbgrader reports that and skips the --invert check.
    assert "Success! The notebook does not pass any tests." in out or "NOTEBOOK PASSED ON" in out, out
    passed = "\n".join(reported_cells(out, "The following cell passed"))
    checks = self_checks(read(RELEASE))
    assert len(checks) == SELF_CHECK_COUNT
    for cell in checks:
        # nbgrader indents and truncates the source it prints; the first line's start identifies the cell.
        first_line = cell.source.splitlines()[0][:40]
        assert first_line not in passed, f"{cell.metadata.nbgrader['grade_id']} passes on the bare release"
    # Whatever nbgrader counts as passing must not be code: only the ungraded (0-point) answer cell may be.
    assert "raise " not in passed and "assert " not in passed, out


@pytest.mark.slow
def test_release_run_top_to_bottom_fails_every_self_check_with_not_implemented(tmp_path):
    nb = execute(RELEASE, tmp_path, allow_errors=True)
    checks = self_checks(nb)
    assert len(checks) == SELF_CHECK_COUNT
    for cell in checks:
        errors = [out for out in cell.outputs if out.output_type == "error"]
        assert [e.ename for e in errors] == ["NotImplementedError"], cell.metadata.nbgrader["grade_id"]
