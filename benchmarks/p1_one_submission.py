"""P1: one submission, graded by our `python -m autograder grade` and by nbgrader's own `nbgrader autograde`.

    python benchmarks/p1_one_submission.py            # nbgrader runs the notebook's full training (many minutes)
    python benchmarks/p1_one_submission.py --quick    # nbgrader's kernel gets TRANSFORMER_FAST_RUN=1

nbgrader executes every cell of the notebook, training included; our grader never executes the notebook
and trains a small model for a few dozen steps instead. Both are timed end to end as the command a TA
types, interpreter start-up included. Ours is timed twice: as shipped (the worker forked from a server that
imports torch while the judge imports the grader), and with --fresh-workers (a new interpreter for the
worker, as before the fork server). The nbgrader side runs in a throwaway course directory with its own
gradebook, so nothing here touches the repository's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (MASTER, NOTEBOOK, PYTHON, REPO, Report, load_text, machine_note, run_timed,  # noqa: E402
                     solved_handout, speedup, venv_env, verdict, wait_for_quiet, write_notebook, write_tarball)

ASSIGNMENT = "Assignment2-1"
STUDENT = "2024-00001"
TARGET = 50.0


def nbgrader_course(root: Path) -> Path:
    """A course directory whose release is generated from the repository's master, with its own sqlite gradebook."""
    course = root / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    shutil.copy(MASTER, course / "source" / ASSIGNMENT / NOTEBOOK)
    # The repository's config first, so the release (stubs, checksums) is the one students get.
    (course / "nbgrader_config.py").write_text(textwrap.dedent(f"""\
        c = get_config()  # noqa: F821
        load_subconfig({str(REPO / 'nbgrader_config.py')!r})  # noqa: F821
        c.CourseDirectory.root = {str(course)!r}
        c.CourseDirectory.db_url = "sqlite:///{course / 'gradebook.db'}"
        # The full training cell runs for minutes; nbgrader's default is 30 s per cell.
        c.Execute.timeout = None
        """), encoding="utf-8")
    return course


def nbgrader(course: Path, *args: str, env: dict):
    return run_timed([PYTHON, "-m", "nbgrader", *args], env=env, cwd=course)


def nbgrader_score(course: Path) -> str:
    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        submission = gradebook.find_submission(ASSIGNMENT, STUDENT)
        return f"{submission.score:g}/{submission.max_score:g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="run nbgrader's kernel with TRANSFORMER_FAST_RUN=1 (small model, 40 steps)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="wait up to S seconds for the 1-minute load to drop below 1.5 first")
    parser.add_argument("--keep", action="store_true", help="keep the temporary course and output folders")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench-p1-"))
    try:
        notebook = solved_handout()
        tarball = write_tarball(notebook, root / "ours" / f"{STUDENT}.tar.gz")
        course = nbgrader_course(root)
        nbgrader_env = venv_env()
        # Whatever the caller's shell has set, the full run must really be the full run.
        nbgrader_env.pop("TRANSFORMER_FAST_RUN", None)
        if args.quick:
            nbgrader_env["TRANSFORMER_FAST_RUN"] = "1"
        # Setup, not timed: what a course has done once before any submission arrives.
        nbgrader(course, "db", "assignment", "add", ASSIGNMENT, env=nbgrader_env)
        nbgrader(course, "db", "student", "add", STUDENT, env=nbgrader_env)
        nbgrader(course, "generate_assignment", ASSIGNMENT, "--force", env=nbgrader_env)
        write_notebook(notebook, course / "submitted" / STUDENT / ASSIGNMENT / NOTEBOOK)

        wait_for_quiet(args.wait_quiet)
        machine = machine_note()
        mode = "TRANSFORMER_FAST_RUN=1 (dim 64, 40 steps)" if args.quick else "full run (dim 512, 100 epochs)"
        print(f"nbgrader autograde, notebook training: {mode} ... (load {load_text()})", flush=True)
        theirs = nbgrader(course, "autograde", ASSIGNMENT, "--student", STUDENT, "--force", env=nbgrader_env)
        print(f"  {theirs.seconds:.1f} s", flush=True)

        print(f"python -m autograder grade (load {load_text()})", flush=True)
        out = root / "ours" / "out"
        ours = run_timed([PYTHON, "-m", "autograder", "grade", str(tarball), "--out", str(out), "--force",
                          "--device", "cpu"], env=venv_env(), cwd=REPO)
        print(f"  {ours.seconds:.1f} s", flush=True)
        document = json.loads((out / STUDENT / "results.json").read_text(encoding="utf-8"))
        print(f"python -m autograder grade --fresh-workers (load {load_text()})", flush=True)
        fresh = run_timed([PYTHON, "-m", "autograder", "grade", str(tarball), "--out", str(root / "ours" / "out1"),
                           "--force", "--device", "cpu", "--fresh-workers"], env=venv_env(), cwd=REPO)
        print(f"  {fresh.seconds:.1f} s", flush=True)

        report = Report("P1: one submission, `grade` against `nbgrader autograde`", notes=[
            machine,
            f"nbgrader's kernel: {mode}" + ("; TRANSFORMER_FAST_RUN=1 was set for --quick" if args.quick else ""),
            f"scores: ours {document['score']:g}/100 (isolation {document['extra_data'].get('isolation')}), "
            f"nbgrader self-checks {nbgrader_score(course)}",
            f"our results.json says execution_time {document['execution_time']:.1f} s "
            "(grading only; the wall time below adds interpreter and torch start-up)",
            "'--fresh-workers': a new interpreter imports torch for the worker after the judge's own imports, "
            "as the grader did before its fork server",
        ])
        ratio = theirs.seconds / ours.seconds
        report.add("wall time, one submission", f"{ours.seconds:.1f} s", f"{theirs.seconds:.1f} s",
                   speedup(theirs.seconds, ours.seconds), f">= {TARGET:g}x", verdict(ratio >= TARGET),
                   f"ours {ours.load}, nbgrader {theirs.load}")
        report.add("CPU time (all processes), as shipped", f"{ours.cpu_seconds:.1f} s", f"{theirs.cpu_seconds:.1f} s",
                   f"{theirs.cpu_seconds / ours.cpu_seconds:.1f}x less", "", "", "")
        ratio = theirs.seconds / fresh.seconds
        report.add("same, --fresh-workers", f"{fresh.seconds:.1f} s", f"{theirs.seconds:.1f} s",
                   speedup(theirs.seconds, fresh.seconds), f">= {TARGET:g}x", verdict(ratio >= TARGET),
                   f"ours {fresh.load}, nbgrader {theirs.load}")
        report.add("wall time: fork server against --fresh-workers", f"{ours.seconds:.1f} s", f"{fresh.seconds:.1f} s",
                   speedup(fresh.seconds, ours.seconds), "", "", f"{ours.load}; {fresh.load}")
        report.print()
        if args.keep:
            print(f"kept: {root}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
