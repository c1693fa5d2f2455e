"""P2: a batch of submissions through `python -m autograder grade`, one job against two.

    python benchmarks/p2_batch.py             # 100 submissions
    python benchmarks/p2_batch.py --quick     # 20 submissions; the 100-submission time is extrapolated

The batch is copies, under different student IDs, of a few notebooks that take different paths through
the grader (solved, two one-line bugs, the untouched handout), packed as CollectSubmission.sh packs them.
It is graded three times: --jobs 1, --jobs 2, and --jobs 2 --fresh-workers (a new interpreter per worker,
as before the fork server). Besides wall time and throughput it measures, separately, what every submission
pays before its first check (a sandboxed worker, forked or started anew, with the code loaded into it) and,
while the batch runs, the peak resident memory of each worker and judge process, read from /proc (VmHWM).
"""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (PYTHON, REPO, Report, load1, load_text, machine_note, run_timed,  # noqa: E402
                     speedup, submission_variants, venv_env, verdict, wait_for_quiet, write_tarball)

TARGET_SECONDS_PER_100 = 600.0
TARGET_WORKER_BYTES = 2**30
EXPECTED = {"solved": "100", "untouched_handout": "0"}
# (label, --jobs, extra environment of the grade command)
RUNS = [("--jobs 1", 1, []), ("--jobs 2", 2, []), ("--jobs 2 --fresh-workers", 2, ["--fresh-workers"])]


# ----------------------------------------------------------------------------- memory of a process tree

def _proc_table():
    """pid -> (ppid, argv) for every process we can see."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                argv = handle.read().decode("utf-8", "replace").split("\0")
        except OSError:
            continue
        # The command name may hold spaces or parentheses: fields resume after the last ')'.
        table[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), argv)
    return table


def _high_water_mark(pid):
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _role(argv):
    if not argv or not Path(argv[0]).name.startswith("python"):
        return None  # bwrap, setpriv, sh: a few MB, not what the limits are about
    # Forked workers keep their server's command line.
    return "worker" if any(arg.endswith(("worker.py", "zygote.py")) for arg in argv) else "judge"


class TreeSampler(threading.Thread):
    """Keeps the peak RSS of every python process below one pid, by role (sandboxed worker or judge)."""

    def __init__(self, root_pid, interval=0.2):
        super().__init__(daemon=True)
        self.root_pid, self.interval = root_pid, interval
        self.peaks = {"worker": {}, "judge": {}}
        self.done = threading.Event()

    def run(self):
        while not self.done.is_set():
            self.sample()
            self.done.wait(self.interval)

    def sample(self):
        table = _proc_table()
        children = {}
        for pid, (ppid, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        todo = [self.root_pid]
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            role = _role(table.get(pid, (0, []))[1])
            peak = _high_water_mark(pid) if role else None
            if peak:
                self.peaks[role][pid] = max(peak, self.peaks[role].get(pid, 0))


def grade_and_sample(batch_dir, out, jobs, options):
    """Run the CLI on the batch; wall time, and peak RSS by role, sampled while it runs."""
    argv = [PYTHON, "-m", "autograder", "grade", str(batch_dir), "--out", str(out), "--jobs", str(jobs),
            "--force", "--device", "cpu", *options]
    before = load1()
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=venv_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(process.pid)
    sampler.start()
    _, errors = process.communicate()
    seconds = time.perf_counter() - started
    sampler.done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"grade --jobs {jobs} exited {process.returncode}:\n{errors[-3000:]}")
    return seconds, f"{before:.2f}->{load1():.2f}", sampler.peaks


# ----------------------------------------------------------------------------- start-up, measured on its own

def startup_seconds(repeats, isolation, reuse):
    """Median time from nothing to a worker that holds a loaded submission, ready for its first check.
    reuse: forked from the fork server, which is started (and waited for) before the timing begins."""
    from autograder.cage import forkserver
    from autograder.cage.client import WorkerClient
    from autograder.intake.notebook_code import extract
    from autograder.reference import load_arguments

    code = extract(submission_variants()["solved"])
    load_args = load_arguments(code.units)
    times = []
    for attempt in range(repeats + reuse):
        scratch = Path(tempfile.mkdtemp(prefix="bench-p2-worker-"))
        try:
            started = time.perf_counter()
            with WorkerClient(scratch / "scratch", load_args, isolation=isolation, reuse_interpreter=reuse) as client:
                report = client.loaded()
                if attempt or not reuse:  # the first forked one pays for starting the server
                    times.append(time.perf_counter() - started)
                used = client.isolation_used
            if report["errors"] or not all(report["defined"].values()):
                raise RuntimeError(f"the solved notebook did not load: {report}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    forkserver.close_shared()
    return statistics.median(times), used


def bare_import_seconds(repeats):
    """The floor under any worker start: a fresh interpreter importing torch."""
    times = [run_timed([PYTHON, "-I", "-c", "import torch"]).seconds for _ in range(repeats)]
    return statistics.median(times)


def judge_import_seconds(repeats):
    """What each --jobs pool process pays once: importing the grading pipeline (torch, pytest, nbgrader)."""
    times = [run_timed([PYTHON, "-c", "import autograder.pipeline"], cwd=REPO).seconds for _ in range(repeats)]
    return statistics.median(times)


# ----------------------------------------------------------------------------- main

def make_batch(directory, count):
    variants = submission_variants()
    names = list(variants)
    kinds = {}
    for i in range(count):
        name = names[i % len(names)]
        student = f"2024-{i + 1:05d}"
        write_tarball(variants[name], directory / f"{student}.tar.gz")
        kinds[student] = name
    return kinds


def check_scores(out, kinds):
    """The batch must have been graded, not merely run: every row there, known variants at known scores."""
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    missing = sorted(set(kinds) - set(rows))
    wrong = [f"{s} ({kinds[s]}: {rows[s]['score']})" for s in kinds
             if s in rows and kinds[s] in EXPECTED and float(rows[s]["score"]) != float(EXPECTED[kinds[s]])]
    if missing or wrong:
        raise RuntimeError(f"batch graded wrongly: missing {missing[:5]}, wrong scores {wrong[:5]}")
    scores = Counter((kinds[s], rows[s]["score"]) for s in kinds)
    return ", ".join(f"{name} {score} x{n}" for (name, score), n in sorted(scores.items()))


def mib(value):
    return f"{value / 2**20:.0f} MiB"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="20 submissions instead of 100, 3 start-up samples")
    parser.add_argument("-n", "--submissions", type=int, help="batch size (default 100, --quick 20)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="S",
                        help="wait up to S seconds for the 1-minute load to drop below 1.5 first")
    parser.add_argument("--keep", action="store_true", help="keep the batch and its results")
    args = parser.parse_args(argv)
    count = args.submissions or (20 if args.quick else 100)
    repeats = 3 if args.quick else 5

    sys.path.insert(0, str(REPO))
    root = Path(tempfile.mkdtemp(prefix="bench-p2-"))
    try:
        kinds = make_batch(root / "batch", count)
        wait_for_quiet(args.wait_quiet)
        machine = machine_note()
        report = Report(f"P2: a batch of {count} submissions, --jobs 2 against --jobs 1", notes=[machine])

        print(f"start-up, {repeats} samples each (load {load_text()})", flush=True)
        bare = bare_import_seconds(repeats)
        load_before = load1()
        forked, isolation = startup_seconds(repeats, "auto", reuse=True)
        sandboxed, _ = startup_seconds(repeats, "auto", reuse=False)
        plain, _ = startup_seconds(repeats, "none", reuse=False)
        startup_load = f"{load_before:.2f}->{load1():.2f}"
        judge_import = judge_import_seconds(repeats)

        results = {}
        for label, jobs, options in RUNS:
            print(f"grade {label}, {count} submissions (load {load_text()})", flush=True)
            out = root / f"out-{len(results)}"
            results[label] = grade_and_sample(root / "batch", out, jobs, options)
            scores = check_scores(out, kinds)
            print(f"  {results[label][0]:.1f} s; {scores}", flush=True)
        report.notes += [f"graded as: {scores}",
                         f"'{RUNS[2][0]}': each worker a new interpreter that imports torch, as the grader did "
                         "before its fork server"]

        base_label = RUNS[0][0]
        base_wall, base_load, _ = results[base_label]
        estimate = "" if count == 100 else ", extrapolated"
        for label, (wall, load, _) in results.items():
            if label != base_label:
                report.add(f"wall time, {label}", f"{wall:.1f} s", f"{base_wall:.1f} s ({base_label})",
                           speedup(base_wall, wall), "", "", f"{load}; base {base_load}")
        for label, (wall, load, _) in results.items():
            report.add(f"throughput, {label}", f"{60 * count / wall:.1f} subm./min",
                       f"{60 * count / base_wall:.1f} subm./min ({base_label})", f"{base_wall / wall:.2f}x", "", "",
                       load)
        for label, (wall, load, _) in results.items():
            per_100 = wall / count * 100
            report.add(f"100 submissions{estimate}, {label}", f"{per_100:.0f} s", f"{TARGET_SECONDS_PER_100:.0f} s",
                       f"{per_100 / TARGET_SECONDS_PER_100:.2f}x the target", "<= 600 s on 2 cores",
                       verdict(per_100 <= TARGET_SECONDS_PER_100), load)
        per_submission = base_wall / count
        report.add(f"worker start-up + load, forked ({isolation})", f"{forked:.2f} s",
                   f"{sandboxed:.2f} s (new interpreter)", speedup(sandboxed, forked), "", "", startup_load)
        report.add(f"worker start-up + load, new interpreter ({isolation})", f"{sandboxed:.2f} s",
                   f"{bare:.2f} s (python -I -c 'import torch')", f"{sandboxed / bare:.2f}x", "", "", startup_load)
        report.add("worker start-up + load, new interpreter (no sandbox)", f"{plain:.2f} s",
                   f"{sandboxed:.2f} s ({isolation})", f"{plain / sandboxed:.2f}x", "", "", startup_load)
        report.add("start-up share of one submission (forked)", f"{forked:.2f} s",
                   f"{per_submission:.2f} s per submission ({base_label})",
                   f"{100 * forked / per_submission:.0f}%", "", "", startup_load)
        report.add("judge import, once per process", f"{judge_import:.2f} s", f"{bare:.2f} s (import torch)",
                   f"{judge_import / bare:.2f}x", "", "", startup_load)
        worker_peaks = [v for _, _, peaks in results.values() for v in peaks["worker"].values()]
        judge_peaks = [v for _, _, peaks in results.values() for v in peaks["judge"].values()]
        worker_peak, judge_peak = max(worker_peaks, default=0), max(judge_peaks, default=0)
        report.add(f"peak RSS per worker (max of {len(worker_peaks)})", mib(worker_peak), mib(TARGET_WORKER_BYTES),
                   f"{worker_peak / TARGET_WORKER_BYTES:.2f}x the target", "<= 1 GiB",
                   verdict(0 < worker_peak <= TARGET_WORKER_BYTES), "")
        report.add(f"peak RSS per judge process (max of {len(judge_peaks)})", mib(judge_peak),
                   mib(worker_peak) + " (worker)", f"{judge_peak / max(worker_peak, 1):.2f}x", "", "", "")
        report.print()
        if args.keep:
            print(f"kept: {root}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
