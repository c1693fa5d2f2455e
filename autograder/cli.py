"""Command line: `python -m autograder grade PATH... --out DIR [--jobs N] [--device auto|cpu|cuda]`.
`python -m autograder report DIR` rewrites the feedback files and the class report from DIR's results.

The grade command's options, files and exit codes are a contract other tools rely on (README, "Grading").
Exit 0 when every submission got its row, a 0 with a reason included; 1 when the grader itself failed.
"""
import argparse
import glob
import re
import sys

from . import forkserver, sandbox, scratch

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
                       help="how student code is sandboxed (auto: the strongest available)")
    grade.add_argument("--require-sandbox", action="store_true",
                       help="refuse to grade when no network-isolating sandbox is available")
    grade.add_argument("--memory-limit", type=parse_size, default=sandbox.Limits().memory_bytes, metavar="SIZE",
                       help="address-space cap of each worker (default 4G)")
    grade.add_argument("--check-timeout", type=float, default=20.0, metavar="S", help="time limit of one check (default 20)")
    grade.add_argument("--fresh-workers", action="store_true",
                       help="start a new interpreter for each submission's worker instead of forking it from a "
                            "server that imported torch once (slower; isolation is the same either way)")
    grade.add_argument("--allow-forbidden", action="store_true",
                       help="report forbidden torch APIs without withholding the part's points")

    report = commands.add_parser("report", help="rewrite DIR/*/feedback.{md,html} and DIR/report.html from the "
                                               "results.json files in DIR, without regrading")
    report.add_argument("dir", metavar="DIR", help="an output folder of the grade command")

    export = commands.add_parser("export-gradescope", help="write a Gradescope autograder zip that grades each "
                                                           "upload with the same checks")
    export.add_argument("zip", metavar="OUT.zip", help="where to write the zip")
    return parser


def grade(args):
    # Temporary folders hold students' notebooks: a TA's Ctrl-C or a scheduler's SIGTERM must not leave them.
    scratch.stop_on_signals()
    # Refused here, before any grading (and before importing torch): otherwise each submission's worker fails
    # to start and every check of every row reads "grader error while checking: SandboxUnavailable".
    available = sandbox.isolation_available()
    if args.isolation in ("bwrap", "unshare") and not available[args.isolation]:
        print(f"error: --isolation {args.isolation}, but {args.isolation} does not work here", file=sys.stderr)
        return 2
    if args.require_sandbox and not any(available[m] for m in ("bwrap", "unshare") if args.isolation in ("auto", m)):
        print("error: --require-sandbox, but neither bwrap nor unshare works here"
              + (" (--isolation none)" if args.isolation == "none" else ""), file=sys.stderr)
        return 2

    device = resolve_device(args.device)
    limits = sandbox.Limits(memory_bytes=args.memory_limit, gpu=device == "cuda")
    if args.jobs <= 1 and not args.fresh_workers:
        # Started before the grader's own imports, so the worker's torch import runs alongside them.
        forkserver.prestart(limits, args.isolation, args.require_sandbox)

    from .batch import grade_batch
    from .pipeline import Settings

    settings = Settings(device=device, check_timeout=args.check_timeout,
                        isolation=args.isolation, require_sandbox=args.require_sandbox, limits=limits,
                        withhold_forbidden=not args.allow_forbidden, reuse_interpreter=not args.fresh_workers)
    _, failures = grade_batch(args.paths, args.out, settings, jobs=args.jobs, force=args.force)
    for path, problem in failures:
        print(f"grader failure on {path}:\n{problem}", file=sys.stderr)
    return 1 if failures else 0


def report(args):
    from pathlib import Path

    from .report import rebuild

    if not Path(args.dir).is_dir():
        print(f"error: {args.dir} is not a folder", file=sys.stderr)
        return 2
    count = rebuild(args.dir)
    print(f"feedback for {count} submissions and {Path(args.dir) / 'report.html'} written")
    return 0


def export_gradescope(args):
    from .gradescope import build_zip

    path = build_zip(args.zip)
    print(f"{path} written ({path.stat().st_size / 1024:.0f} KiB): upload it as the assignment's autograder")
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return {"grade": grade, "report": report, "export-gradescope": export_gradescope}[args.command](args)
