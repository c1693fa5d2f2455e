# Course kit tasks. Every target that runs Python first makes sure .venv is up to date, so
# `make test` (what CI runs, see .ci/run) works on a machine that has only python3 and make.
#
#   make venv             create .venv and install the pinned requirements
#   make release          regenerate release/ from source/ and the handout at the repo root
#   make student-bundle   the folder and zip students download, in dist/ (publish that, not the repository)
#   make figures          redraw imgs/ from tools/draw_figures.py
#   make test             the whole pytest suite (slow notebook tests included)
#   make grade-examples   run the autograder on examples/, results in out/examples
#   make clean            remove caches and outputs (keeps .venv; `make distclean` drops it too)

# Resolved before PATH is changed below, so a half-built .venv never bootstraps itself.
BOOTSTRAP_PYTHON := $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

# nbgrader launches helpers such as alembic by name; they live next to the venv's python.
export PATH := $(abspath $(VENV))/bin:$(PATH)

# Extra pytest options, e.g.  make test PYTEST_ARGS="-k release -x"
PYTEST_ARGS ?=

.PHONY: venv release student-bundle figures test grade-examples clean distclean

venv: $(STAMP)

# The stamp is newer than both requirement files only after a complete install, so editing
# either file (or an install that died half way) triggers a reinstall on the next make.
$(STAMP): requirements.txt requirements-lock.txt
	@test -n "$(BOOTSTRAP_PYTHON)" || test -x $(PY) || { echo "python3.11 or python3 is needed to create $(VENV)" >&2; exit 1; }
	test -x $(PY) || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt -c requirements-lock.txt
	touch $@

release: $(STAMP)
	PYTHON=$(PY) tools/release.sh

# Standard library only: no .venv needed to package the handout.
student-bundle:
	$(BOOTSTRAP_PYTHON) tools/build_student_bundle.py

figures: $(STAMP)
	$(PY) tools/draw_figures.py

# Serial on purpose. On the 2-core course machines, `-n 2 --dist loadfile` saved about 1.5 of 8 minutes,
# but the notebook kernels and the grader's workers then fight over the cores (a fast notebook run went
# from 12 s to 105 s), which makes timings erratic. Never plain `-n`: it splits a module's tests across
# workers, and each worker would redo the module- and session-scoped notebook runs and grading.
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

grade-examples: $(STAMP)
	$(PY) -m autograder grade examples/ --out out/examples

clean:
	rm -rf out dist .pytest_cache .nbgrader.log
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find . -path ./$(VENV) -prune -o -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
