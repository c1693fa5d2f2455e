#!/usr/bin/env bash
# P4: the GPU checks, as one script for a short loan of a GPU machine.
#
#   PYTHON=python3 OUT=/tmp/p4 benchmarks/p4_gpu.sh
#
# PYTHON must have a CUDA build of torch 2.13 and the packages of requirements.txt (the CPU .venv of this
# repository will not do). Three steps, each timed, each logged to $OUT:
#   1. the master notebook's full run (dim 512, 3+3 layers, 100 epochs) on the GPU, executed with nbclient;
#   2. `grade --device cuda` of the bundled examples: the Training check at the notebook's configuration in the
#      sandboxed worker (forked from the fork server; CUDA starts in the worker, never in the server);
#   3. tests/test_gpu.py.
# Figures to record: the device name, seconds per step, the loss first -> last, the grading time per
# submission and the scores (they must match the CPU run's: 100, 0, 82, 76, 92, 100, 70).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-/tmp/p4}
mkdir -p "$OUT"
unset TRANSFORMER_FAST_RUN
export PYTHONUNBUFFERED=1

"$PYTHON" - <<'EOF' 2>&1 | tee "$OUT/device.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name())
EOF

echo "== 1. master notebook, full run" | tee "$OUT/summary.txt"
"$PYTHON" - "$OUT" <<'EOF' 2>&1 | tee "$OUT/notebook.txt"
import sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

out = Path(sys.argv[1])
path = Path("source/Assignment2-1/Assignment2-1_Transformer_from_scratch.ipynb")
notebook = nbformat.read(path, as_version=4)
started = time.perf_counter()
NotebookClient(notebook, timeout=None, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
seconds = time.perf_counter() - started
nbformat.write(notebook, out / "master_full.ipynb")
text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
lines = [line for line in text.splitlines() if "cuda" in line or "loss" in line.lower()]
print(f"notebook executed in {seconds:.1f} s")
print("\n".join(lines[-6:]))
EOF
tail -3 "$OUT/notebook.txt" >> "$OUT/summary.txt"

echo "== 2. grade --device cuda, bundled examples" | tee -a "$OUT/summary.txt"
SECONDS=0
"$PYTHON" -m autograder grade examples/ --out "$OUT/graded" --device cuda --force 2>&1 | tail -15 | tee "$OUT/grade.txt"
echo "grading 7 submissions took ${SECONDS} s" | tee -a "$OUT/summary.txt"
cut -d, -f1,2 "$OUT/graded/grades.csv" | tee -a "$OUT/summary.txt"

echo "== 3. tests/test_gpu.py" | tee -a "$OUT/summary.txt"
"$PYTHON" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tail -5 | tee -a "$OUT/summary.txt"
