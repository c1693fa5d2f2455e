"""P5: this tree's grader against an earlier revision's, side by side: what a change costs in speed.

    python benchmarks/p5_before_after.py --base 9066ead            # P1 x3 and P2 (20 submissions, --jobs 2)
    python benchmarks/p5_before_after.py --base 9066ead -n 100     # P2 at its full size

The base revision is checked out into a temporary git worktree that uses this tree's .venv, so only the
grader's code differs. P1 grades one solved submission (best of --repeats runs, alternating base and ours so
both see the same neighbours); P2 grades a batch of copies of a few notebooks (submission_variants) with
--jobs 2, once each, base first. Every figure is wall time of the command a TA types, `--force` included.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (PYTHON, REPO, Report, load_text, machine_note, run_timed, solved_handout,  # noqa: E402
                     submission_variants, venv_env, wait_for_quiet, write_tarball)

SLOWDOWN_ALLOWED = 1.2  # issue 9: "a slowdown over 20% needs its reason"


def base_checkout(revision: str, into: Path) -> Path:
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), revision], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (into / ".venv").symlink_to(REPO / ".venv")
    return into


def grade(tree: Path, paths, out: Path, jobs: int):
    return run_timed([PYTHON, "-m", "autograder", "grade", *map(str, paths), "--out", str(out), "--jobs", str(jobs),
                      "--force"], cwd=tree, env=venv_env())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare with, e.g. 9066ead")
    parser.add_argument("-n", type=int, default=20, help="submissions in the P2 batch (default 20)")
    parser.add_argument("--repeats", type=int, default=3, help="P1 runs per side (default 3)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="S")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="p5-") as folder:
        work = Path(folder)
        base = base_checkout(args.base, work / "base")
        try:
            one = [write_tarball(solved_handout(), work / "one" / "2024-00001.tar.gz")]
            variants = list(submission_variants().values())
            batch = [write_tarball(variants[i % len(variants)], work / "batch" / f"2024-{i + 1:05d}.tar.gz")
                     for i in range(args.n)]
            wait_for_quiet(args.wait_quiet)
            report = Report(f"P5: this tree against {args.base}", notes=[machine_note()])
            samples = {"base": [], "ours": []}
            for repeat in range(args.repeats):
                for side, tree in (("base", base), ("ours", REPO)):
                    samples[side].append(grade(tree, one, work / f"p1-{side}-{repeat}", jobs=1))
            best = {side: min(runs, key=lambda t: t.seconds) for side, runs in samples.items()}
            ratio = best["ours"].seconds / best["base"].seconds
            report.add("P1: one submission, best of %d" % args.repeats, f"{best['ours'].seconds:.1f} s",
                       f"{best['base'].seconds:.1f} s", f"{ratio:.2f}x", f"<= {SLOWDOWN_ALLOWED}x",
                       "yes" if ratio <= SLOWDOWN_ALLOWED else "NO", best["ours"].load)
            timed = {side: grade(tree, [work / "batch"], work / f"p2-{side}", jobs=2)
                     for side, tree in (("base", base), ("ours", REPO))}
            per_100 = {side: t.seconds * 100 / args.n for side, t in timed.items()}
            ratio = per_100["ours"] / per_100["base"]
            report.add(f"P2: {args.n} submissions, --jobs 2, per 100", f"{per_100['ours']:.0f} s",
                       f"{per_100['base']:.0f} s", f"{ratio:.2f}x", f"<= {SLOWDOWN_ALLOWED}x",
                       "yes" if ratio <= SLOWDOWN_ALLOWED else "NO", timed["ours"].load)
            report.print()
            print(f"load at the end: {load_text()}")
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
