"""The autograder as a Gradescope autograder zip, and the entry point Gradescope runs for each submission.

`python -m autograder export-gradescope OUT.zip` writes the zip. Gradescope unpacks it into
/autograder/source, runs setup.sh there once while it builds the image, and then for every submission
runs run_autograder, which calls `python -m autograder.reports.gradescope`: that grades whatever the student
uploaded to /autograder/submission with the same pipeline and checks as `python -m autograder grade`,
and writes /autograder/results/results.json. The student ID is the submitter's `sid` in Gradescope's
/autograder/submission_metadata.json (students upload files under any name there). A results.json is
written whatever happens, a zero with the reason when the upload cannot be graded or the grader itself
fails, because without one Gradescope shows the student nothing but a generic error.

AUTOGRADER_ROOT (or --root) stands in for /autograder, so the tests can run the zip's scripts in a
temporary folder laid out the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import zipfile
from pathlib import Path

from autograder.intake import unpack

PACKAGE = Path(__file__).resolve().parents[1]
REPO = PACKAGE.parent
NOTEBOOK_PATHS = (f"source/Assignment2-1/{unpack.NOTEBOOK_NAME}", f"release/Assignment2-1/{unpack.NOTEBOOK_NAME}")
# What the judge and the worker import, plus matplotlib: the notebook's setup cell imports it, and a
# failing import there would be reported against the student.
REQUIRED = ("torch", "numpy", "matplotlib", "nbgrader", "nbformat", "pytest", "rich")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
DEFAULT_ROOT = "/autograder"
METADATA_NAME = "submission_metadata.json"  # Gradescope's, next to submission/: who submitted, among other things
# Fixed, so that exporting twice from the same tree gives the same bytes.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

SETUP_SH = f"""\
#!/usr/bin/env bash
# Gradescope runs this once, as root and with network access, while it builds the autograder image.
# It puts the grader's pinned requirements into a virtual environment next to the source; run_autograder
# uses that environment.
set -euxo pipefail
root="${{AUTOGRADER_ROOT:-{DEFAULT_ROOT}}}"
source_dir="$root/source"
venv="$root/venv"
export DEBIAN_FRONTEND=noninteractive

apt-get update
# bubblewrap is the grader's sandbox for student code. Where it cannot be installed or the container forbids
# the namespaces it needs, the grader refuses to run student code: each upload then gets a row that says so.
apt-get install -y --no-install-recommends bubblewrap || echo "WARNING: bubblewrap not installed" >&2
# The pins (numpy 2.4 among them) need Python 3.11 or newer; older images get 3.11 from their own archive.
if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    apt-get install -y --no-install-recommends python3.11 python3.11-venv
fi
python="$(command -v python3.11 || command -v python3)"
"$python" -m venv "$venv" || {{ apt-get install -y --no-install-recommends python3-venv && "$python" -m venv "$venv"; }}
"$venv/bin/python" -m pip install --upgrade pip
# The CPU build: Gradescope has no GPU, and PyPI's default torch wheel drags in gigabytes of CUDA libraries.
# Installed first and on its own, because the CPU wheels live only on PyTorch's index.
"$venv/bin/python" -m pip install torch==2.13.0 --index-url {TORCH_CPU_INDEX}
"$venv/bin/python" -m pip install -r "$source_dir/requirements.txt" -c "$source_dir/requirements-lock.txt"
# Fail the image build now, not every submission later: load the master notebook's reference classes.
cd "$source_dir"
"$venv/bin/python" -c "from autograder.reference import reference; reference('cpu')"
"""

RUN_AUTOGRADER = f"""\
#!/usr/bin/env bash
# Gradescope runs this for every submission. It must leave results.json behind: the grader writes one
# even for an upload it cannot grade; if the grader cannot start at all, this script writes a zero.
set -uo pipefail
root="${{AUTOGRADER_ROOT:-{DEFAULT_ROOT}}}"
results="$root/results/results.json"
mkdir -p "$root/results"
# setup.sh's environment when there is one; otherwise whatever python3 comes first on PATH.
if [ -x "$root/venv/bin/python3" ]; then
    PATH="$root/venv/bin:$PATH"
fi
cd "$root/source" || exit 1
python3 -m autograder.reports.gradescope --root "$root"
status=$?
if [ ! -s "$results" ]; then
    cat > "$results" <<EOF
{{"score": 0, "output": "The autograder could not run (exit status $status), so this submission was not graded. Please tell the course staff.", "tests": []}}
EOF
fi
exit 0
"""


# ----------------------------------------------------------------------------- export

def requirements_text(requirements=REPO / "requirements.txt"):
    """The repository's pins for what the grader imports; the export fails if one is not pinned there."""
    pins = {}
    for line in Path(requirements).read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name = line.split("==", 1)[0].strip()
            pins[name.lower().replace("_", "-")] = line
    missing = [name for name in REQUIRED if name not in pins]
    if missing:
        raise RuntimeError(f"{requirements} pins no version of {missing}")
    header = ("# The grader's own requirements, pinned as in the course repository's requirements.txt.\n"
              f"# setup.sh installs torch first from {TORCH_CPU_INDEX} (the CPU build).\n")
    return header + "".join(pins[name] + "\n" for name in REQUIRED)


def _package_files():
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(REPO)
        if path.is_file() and "__pycache__" not in relative.parts and path.suffix not in (".pyc", ".pyo"):
            yield relative.as_posix(), path.read_bytes()


def _add(archive, name, data, executable=False):
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    # unzip, as Gradescope uses it, restores these permission bits.
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    archive.writestr(info, data)


def build_zip(out):
    """Write the autograder zip to `out`; returns its path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.with_name(out.name + ".tmp")
    with zipfile.ZipFile(temporary, "w") as archive:
        _add(archive, "setup.sh", SETUP_SH, executable=True)
        _add(archive, "run_autograder", RUN_AUTOGRADER, executable=True)
        _add(archive, "requirements.txt", requirements_text())
        _add(archive, "requirements-lock.txt", (REPO / "requirements-lock.txt").read_bytes())
        for relative in NOTEBOOK_PATHS:
            _add(archive, relative, (REPO / relative).read_bytes())
        for name, data in _package_files():
            _add(archive, name, data)
    os.replace(temporary, out)
    return out


# ----------------------------------------------------------------------------- one submission on Gradescope

def find_uploads(submission_dir):
    """Files in the upload that could be a submission, best first.

    Gradescope unpacks an uploaded .zip into the folder, hence the walk. CollectSubmission's archive is
    the documented way to submit, so it comes first; then the notebook under its own name; then any other.
    """
    submission_dir = Path(submission_dir)
    found = []
    for folder, dirs, files in os.walk(submission_dir):
        # Editor and OS litter: .ipynb_checkpoints, macOS's __MACOSX and ._ files.
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        for name in files:
            path = Path(folder) / name
            lower = name.lower()
            if name.startswith(".") or path.is_symlink() or not lower.endswith(unpack.SUBMISSION_SUFFIXES):
                continue
            rank = 0 if not lower.endswith(".ipynb") else 1 if name == unpack.NOTEBOOK_NAME else 2
            found.append((rank, len(path.relative_to(submission_dir).parts), str(path), path))
    return [path for *_, path in sorted(found)]


def _listing(submission_dir, limit=10):
    names = sorted(str(p.relative_to(submission_dir)) for p in Path(submission_dir).rglob("*") if p.is_file())
    shown = ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")
    return shown or "nothing"


def failure_document(reason, elapsed=0.0, student_id="submission"):
    """A zero with the reason, in the same shape as a graded result when the pipeline can be imported."""
    try:
        from autograder.pipeline import results_document
        return results_document(student_id, {}, flags=[], error=reason, elapsed=elapsed)
    except Exception:  # noqa: BLE001 (the grader's own imports may be what is broken)
        return {"score": 0.0, "execution_time": round(elapsed, 2), "output": f"Not graded: {reason}", "tests": [],
                "extra_data": {"student_id": student_id, "error": reason}}


def student_id_from_metadata(path):
    """(student ID, None) from Gradescope's submission_metadata.json, else (None, why not).

    The ID is the first submitter's `sid` (the student ID in the course roster) that is a valid YYYY-NNNNN;
    a group submission with several is graded under the first and says so.
    """
    try:
        metadata = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "Gradescope gave no submission metadata"
    except (OSError, ValueError) as exc:
        return None, f"Gradescope's submission metadata cannot be read ({type(exc).__name__})"
    users = metadata.get("users") if isinstance(metadata, dict) else None
    if not isinstance(users, list) or not users:
        return None, "Gradescope's submission metadata names no submitter"
    sids = [str(user.get("sid")).strip() for user in users if isinstance(user, dict) and user.get("sid") is not None]
    valid = list(dict.fromkeys(sid for sid in sids if unpack.STUDENT_ID_RE.match(sid)))
    if not valid:
        # The roster's text, shown to the student: printable and short.
        shown = ", ".join("".join(c if c.isprintable() else "?" for c in sid)[:30] for sid in sids) or "none"
        return None, f"the student ID in Gradescope's roster is not a valid YYYY-NNNNN (sid: {shown})"
    return valid[0], None


def _named_for(path, student_id, folder):
    """A copy of the upload named after the student, which is where the pipeline reads the ID from."""
    suffix = next(s for s in unpack.SUBMISSION_SUFFIXES if path.name.lower().endswith(s))
    copy = Path(folder) / f"{student_id}{suffix}"
    shutil.copyfile(path, copy)
    return copy


def grade_upload(submission_dir, metadata=None):
    """Grade the best candidate in the upload with the batch grader's pipeline and settings.

    The student ID comes from Gradescope's metadata when it holds a valid one (students name their files
    anything on Gradescope), else from the file name as in a batch, else the row is unknown-... with a flag.
    """
    started = time.monotonic()
    candidates = find_uploads(submission_dir)
    if not candidates:
        expected = ", ".join(unpack.SUBMISSION_SUFFIXES)
        return failure_document(f"the upload holds no notebook or CollectSubmission archive ({expected}); "
                                f"it holds: {_listing(submission_dir)}", time.monotonic() - started)
    chosen = candidates[0]
    from autograder.cli import resolve_device
    from autograder.pipeline import Settings, grade_submission

    student_id, problem = student_id_from_metadata(metadata) if metadata else (None, "no submission metadata")
    with tempfile.TemporaryDirectory(prefix="gradescope-") as folder:
        graded = _named_for(chosen, student_id, folder) if student_id else chosen
        key, document = grade_submission(graded, Settings(device=resolve_device("auto")))
    extra = document["extra_data"]
    extra.update(student_id=key, source=chosen.name)
    if not student_id and not unpack.student_id_from_name(chosen):
        note = f"no student ID: {problem}, and the file name holds none; tell the course staff"
        extra["flags"].append(note)
        document["output"] += f"\nNote: {note}"
    if len(candidates) > 1:
        others = ", ".join(p.name for p in candidates[1:4]) + (" ..." if len(candidates) > 4 else "")
        note = f"{len(candidates)} files could be graded; graded {chosen.name}, not {others}"
        document["extra_data"]["flags"].append(note)
        document["output"] += f"\nNote: {note}"
    return document


def run(root):
    """Grade root/submission into root/results/results.json, whatever happens; returns the document."""
    root = Path(root)
    started = time.monotonic()
    try:
        document = grade_upload(root / "submission", root / METADATA_NAME)
    except Exception as exc:  # noqa: BLE001 (the student must get a result, and the staff the reason)
        traceback.print_exc()
        document = failure_document(f"grader error: {type(exc).__name__}: {exc}", time.monotonic() - started)
    results = root / "results" / "results.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    temporary = results.with_name("results.json.tmp")
    temporary.write_text(json.dumps(document, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, results)
    return document


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m autograder.reports.gradescope",
                                     description="Grade a Gradescope upload (run by run_autograder).")
    parser.add_argument("--root", default=os.environ.get("AUTOGRADER_ROOT", DEFAULT_ROOT),
                        help=f"Gradescope's folder (default $AUTOGRADER_ROOT, else {DEFAULT_ROOT})")
    args = parser.parse_args(argv)
    document = run(args.root)
    print(document.get("output", ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
