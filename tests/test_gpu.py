"""The grader's GPU path: the Training check at the notebook's full configuration inside the sandbox.

Skipped, with the reason, on a machine without CUDA (CI has none); run it on a GPU machine with
`make test PYTEST_ARGS="-m gpu"`.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")]


def test_reference_submission_gets_full_marks_training_on_the_gpu(tmp_path):
    shutil.copyfile(REPO / "examples" / "2023-00001.tar.gz", tmp_path / "2023-00001.tar.gz")
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", str(tmp_path / "2023-00001.tar.gz"),
                          "--out", str(tmp_path / "out"), "--device", "cuda"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "2023-00001" / "results.json").read_text())
    failed = {t["name"]: t["output"] for t in results["tests"] if t["status"] != "passed"}
    assert results["score"] == 100, failed
