"""A grader stopped by SIGTERM or SIGINT removes every temporary folder it made (they hold students' notebooks),
in --jobs pool processes too, and exits with 128 + the signal (autograder/cage/scratch.py)."""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autograder.cage import scratch

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def test_remove_tree_copes_with_read_only_and_deep_folders(tmp_path):
    made = scratch.make("autograde-test-")
    try:
        locked = made / "code" / "pkg"
        locked.mkdir(parents=True)
        (locked / "module.py").write_text("x = 1\n")
        locked.chmod(0o555)
        (made / "code").chmod(0o000)
        folder = os.open(made, os.O_RDONLY)
        for _ in range(1200):  # deeper than a recursive walk goes (rmtree raises RecursionError)
            os.mkdir("d", dir_fd=folder)
            inner = os.open("d", os.O_RDONLY, dir_fd=folder)
            os.close(folder)
            folder = inner
        os.close(folder)
    finally:
        scratch.remove(made)
    assert not made.exists()
    assert made not in scratch._made


def _folders_with_a_notebook_and_a_worker(tmp):
    notebooks = list(tmp.glob("autograde-*/intake/submission.ipynb"))
    # A forked worker has no folder on the host (its cage is tmpfs): it shows as more processes running the fork
    # server's code, which lies in the server's folder (the server, then each worker's keeper, init and itself).
    return notebooks and len(_processes_mentioning(tmp)) >= 3


@pytest.mark.slow
@pytest.mark.parametrize("signum, jobs", [(signal.SIGTERM, 1), (signal.SIGINT, 1), (signal.SIGTERM, 2)],
                         ids=["SIGTERM", "SIGINT", "SIGTERM --jobs 2"])
def test_a_stopped_grader_leaves_no_temporary_folder(tmp_path, signum, jobs):
    subs, tmp = tmp_path / "subs", tmp_path / "tmp"
    subs.mkdir()
    tmp.mkdir()
    for number in range(1, jobs + 1):
        shutil.copy(ROOT / "examples" / f"2023-0000{number}.tar.gz", subs)
    environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # A file, not a pipe: processes the grader failed to stop would hold a pipe open and hang the test.
    stderr = tmp_path / "stderr.txt"
    with open(stderr, "wb") as handle:
        process = subprocess.Popen([PYTHON, "-m", "autograder", "grade", str(subs), "--out", str(tmp_path / "out"),
                                    "--jobs", str(jobs)], cwd=ROOT, env={**environment, "TMPDIR": str(tmp)},
                                   stdout=subprocess.DEVNULL, stderr=handle)
    try:
        deadline = time.monotonic() + 300
        # Stopped while a student's notebook sits in the judge's folder and a sandboxed worker has its own.
        while not _folders_with_a_notebook_and_a_worker(tmp) and process.poll() is None:
            assert time.monotonic() < deadline, "the grader never got as far as a worker"
            time.sleep(0.05)
        assert process.poll() is None, stderr.read_text()[-3000:]
        process.send_signal(signum)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    # torch, imported by the judge, may make its empty compile-cache folder there: not the grader's, no student's.
    assert sorted(p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor_")) == []
    assert process.returncode == 128 + signum, stderr.read_text()[-3000:]
    assert _processes_mentioning(tmp) == [], "a fork server or worker outlived the grader"


def _processes_mentioning(folder):
    """Pids whose command line names `folder` (the fork servers' and workers' do: their code lies there)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(folder).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            pass
    return found
