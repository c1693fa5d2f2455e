"""Command line: `python -m autograder grade PATH... --out DIR [--jobs N] [--device auto|cpu|cuda]`.
`python -m autograder report DIR` rewrites the feedback files, grades.csv and the class report from DIR's results.
`python -m autograder hand-grading DIR` writes the TA's sheet for the hand-graded answer (hand_grading.py).

The grade command's options, files and exit codes are a contract other tools rely on (README, "Grading").
Exit 0 when every submission got its row, a 0 with a reason included; 1 when the grader itself failed.
"""
import argparse
import glob
import re
import sys

from autograder.cage import forkserver, sandbox, scratch

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMG]?)i?B?$", re.IGNORECASE)


def parse_size(text):
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 4G or 512M)")
    return int(float(match.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[match.group(2).upper()])


def resolve_device(choice):
    if choice == "auto":
        if not glob.glob("/dev/nvidia*"):
            return "cpu"  # without importing torch (seconds), which a machine with no NVIDIA device cannot need
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA device is available")
    return choice


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    grade = commands.add_parser("grade", help="grade submissions into DIR/<student_id>/results.json and DIR/grades.csv")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="CollectSubmission tarballs, notebooks, or folders of them")
    grade.add_argument("--out", required=True, metavar="DIR", help="output folder (reused: finished submissions are skipped)")
    grade.add_argument("--jobs", type=int, default=1, metavar="N", help="submissions graded in parallel (default 1)")
    grade.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                       help="where the Training check runs; on cuda at the notebook's full configuration")
    grade.add_argument("--force", action="store_true", help="regrade submissions that already have results")
    grade.add_argument("--isolation", choices=("auto", "bwrap", "unshare", "none"), default="auto",
                       help="how student code is sandboxed (auto: bwrap, and grading is refused without it; "
                            "unshare or none only when named, and every result is then flagged)")
    grade.add_argument("--require-sandbox", action="store_true",
                       help="refuse even a named --isolation none")
    grade.add_argument("--memory-limit", type=parse_size, default=sandbox.Limits().memory_bytes, metavar="SIZE",
                       help="address-space cap of each worker (default 4G)")
    grade.add_argument("--check-timeout", type=float, default=20.0, metavar="S", help="time limit of one check (default 20)")
    grade.add_argument("--fresh-workers", action="store_true",
                       help="start a new interpreter for each submission's worker instead of forking it from a "
                            "server that imported torch once (slower; isolation is the same either way)")
    grade.add_argument("--allow-forbidden", action="store_true",
                       help="report forbidden torch APIs without withholding the part's points")

    report = commands.add_parser("report", help="rewrite DIR/*/feedback.{md,html}, DIR/grades.csv (with the "
                                               "hand-graded points) and DIR/report.html from the results.json "
                                               "files in DIR, without regrading")
    report.add_argument("dir", metavar="DIR", help="an output folder of the grade command")

    hand = commands.add_parser("hand-grading", help="write DIR/hand_graded.html (every free-response answer) and "
                                                    "DIR/hand_graded.csv (enter points there; rows already "
                                                    "there keep their points)")
    hand.add_argument("dir", metavar="DIR", help="an output folder of the grade command")

    export = commands.add_parser("export-gradescope", help="write a Gradescope autograder zip that grades each "
                                                           "upload with the same checks")
    export.add_argument("zip", metavar="OUT.zip", help="where to write the zip")
    return parser


def grade(args):
    # Temporary folders hold students' notebooks: a TA's Ctrl-C or a scheduler's SIGTERM must not leave them.
    scratch.stop_on_signals()
    # Refused here, before any grading (and before importing torch): never a silent fall back to a weaker cage,
    # and never a batch of rows that all say the sandbox failed.
    try:
        mode = sandbox.resolve_isolation(args.isolation, args.require_sandbox)
    except sandbox.SandboxUnavailable as refusal:
        print(f"error: cannot sandbox student code: {refusal}", file=sys.stderr)
        return 2
    if mode != "bwrap":
        print(f"WARNING: grading in a weaker cage, as asked (--isolation {mode}): {sandbox.WEAKER_CAGE[mode]}; "
              "every result carries a flag", file=sys.stderr)

    device = resolve_device(args.device)
    limits = sandbox.Limits(memory_bytes=args.memory_limit, gpu=device == "cuda")
    if args.jobs <= 1 and not args.fresh_workers:
        # Started before the grader's own imports, so the worker's torch import runs alongside them.
        forkserver.prestart(limits, args.isolation, args.require_sandbox)

    from autograder.batch import grade_batch
    from autograder.pipeline import Settings

    settings = Settings(device=device, check_timeout=args.check_timeout,
                        isolation=args.isolation, require_sandbox=args.require_sandbox, limits=limits,
                        withhold_forbidden=not args.allow_forbidden, reuse_interpreter=not args.fresh_workers)
    _, failures = grade_batch(args.paths, args.out, settings, jobs=args.jobs, force=args.force)
    for path, problem in failures:
        print(f"grader failure on {path}:\n{problem}", file=sys.stderr)
    return 1 if failures else 0


def report(args):
    from pathlib import Path

    from autograder.reports.report import rebuild

    if not Path(args.dir).is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    count = rebuild(args.dir)
    print(f"feedback for {count} submissions, {Path(args.dir) / 'grades.csv'} and {Path(args.dir) / 'report.html'} "
          "written")
    return 0


def hand_grading_sheet(args):
    from pathlib import Path

    from autograder.reports import hand_grading
    from autograder.reports.report import gradebook_documents

    out = Path(args.dir)
    if not out.is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    documents = gradebook_documents(out)
    try:
        added, problems = hand_grading.write_sheet(out, list(documents.items()))
    except hand_grading.SheetError as exc:
        print(f"error: {exc}; fix or move it, nothing was written", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    if hand_grading.max_points() == 0:
        print(f"warning: the master notebook gives the answer cell 0 points, so no points can be entered: set "
              f"`points` in the nbgrader metadata of its cell {hand_grading.ANSWER_GRADE_ID!r}, then `make release`",
              file=sys.stderr)
    print(f"{out / hand_grading.HTML_NAME} and {out / hand_grading.CSV_NAME} written: {len(documents)} students, "
          f"{added} new rows, up to {hand_grading.max_points():g} points each. Enter points in the CSV, then "
          f"run `python -m autograder report {args.dir}` to put them in grades.csv and report.html.")
    return 1 if problems else 0


def export_gradescope(args):
    from autograder.reports.gradescope import build_zip

    path = build_zip(args.zip)
    print(f"{path} written ({path.stat().st_size / 1024:.0f} KiB): upload it as the assignment's autograder")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    commands = {"grade": grade, "report": report, "hand-grading": hand_grading_sheet, "export-gradescope": export_gradescope}
    return commands[args.command](args)
