#!/usr/bin/env bash
# The one way to build what students get: `make release` and tests/test_notebook.py both call this.
#
#   tools/release.sh
#
# 1. nbgrader turns source/Assignment2-1 (the master, with solutions) into release/Assignment2-1.
# 2. The release notebook is copied, byte for byte, to the repository root as the handout.
#
# Uses $PYTHON when set, otherwise the project's .venv (run `make venv` first).
set -euo pipefail

ASSIGNMENT="Assignment2-1"
NOTEBOOK="Assignment2-1_Transformer_from_scratch.ipynb"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

python="${PYTHON:-$root/.venv/bin/python}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "ERROR: no Python at '$python'. Run 'make venv' or set PYTHON." >&2
    exit 1
fi
# nbgrader starts helpers (alembic, the kernel) by name, so the interpreter's own bin/ must come first on
# PATH. dirname of the path as given, not resolved: a venv's python is a symlink out of the venv.
bindir="$(cd "$(dirname "$(command -v "$python")")" && pwd)"

# --no-db: the release must depend on source/ only, never on whatever sits in a gradebook.
PATH="$bindir:$PATH" "$python" -m nbgrader generate_assignment "$ASSIGNMENT" --force --no-db

release_nb="release/$ASSIGNMENT/$NOTEBOOK"
[ -f "$release_nb" ] || { echo "ERROR: nbgrader did not write $release_nb" >&2; exit 1; }
# cp, not a re-serialisation: the handout must stay identical to what nbgrader checksummed.
cp "$release_nb" "$NOTEBOOK"
echo "Handout: $root/$NOTEBOOK"
