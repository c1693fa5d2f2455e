"""Grading a folder of submissions: resumable, parallel, and every submission gets a gradebook row.

A finished submission's results.json records its content hash and the grader's version; a rerun with
the same --out reuses it unless --force, so a batch killed halfway loses nothing. grades.csv is rebuilt
from the results of this batch at the end (and after each submission, so a kill leaves a usable file).

Several files for one row (`ID.tar.gz` and `ID (1).ipynb`): one is chosen before anything is graded, the same
on every run (choose_per_row), and only it is graded; the others are named in a flag on that row.
"""
import concurrent.futures
import hashlib
import json
import multiprocessing
import os
import traceback
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from autograder import GRADER_VERSION
from autograder.reports import feedback, report, terminal
from autograder.cage import forkserver, scratch
from autograder.intake import unpack
from autograder.reports.gradebook import write_gradebook
from autograder.pipeline import grade_submission, results_document, row_key, set_aside_flag


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_or_none(path):
    try:
        return file_sha256(path)
    except OSError:  # a missing or unreadable file is graded (its row says why), never reused
        return None


def write_json_atomic(path, document):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    # "replace": a file name with undecodable bytes reaches here as lone surrogates, which UTF-8 cannot hold.
    temporary.write_bytes(json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8", "replace"))
    os.replace(temporary, path)


def cached_results(path, sha256, set_aside=()):
    """The results of an earlier run, if they are what grading this file with these other files would give."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        extra = document["extra_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if (extra.get("submission_sha256") == sha256 and extra.get("grader_version") == GRADER_VERSION
            and extra.get("set_aside", []) == list(set_aside)):
        return document
    return None


def _preference(path):
    """Sort key, best first: a CollectSubmission.sh archive over a bare notebook, then the newest, then the name.
    Only the files themselves decide it, so every run and every resume chooses the same one."""
    try:
        newest_first = -path.stat().st_mtime_ns
    except OSError:  # missing: it still gets its row ("file not found") if it is the only one
        newest_first = 0
    return (not path.name.lower().endswith((".tar.gz", ".tgz", ".tar")), newest_first, path.name, str(path))


def choose_per_row(submissions):
    """{row key: (the file graded for it, names of its other files)}, in the order of `submissions`."""
    files = {}
    for path in submissions:
        files.setdefault(row_key(path, unpack.student_id_from_name(path)), []).append(path)
    chosen = {}
    for key, candidates in files.items():
        best, *others = sorted(candidates, key=_preference)
        chosen[key] = (best, sorted(p.name for p in others))
    return chosen


def _grade_safely(path, settings, set_aside=()):
    """Runs in a pool process. A grader bug becomes a row with the reason, never a lost submission."""
    try:
        return grade_submission(path, settings, set_aside) + (None,)
    except Exception:  # noqa: BLE001 (a grader failure must still produce a row)
        key = row_key(path, unpack.student_id_from_name(Path(path)))
        problem = traceback.format_exc(limit=5)
        document = results_document(key, {}, flags=[set_aside_flag(set_aside)] if set_aside else [],
                                    error=f"grader error: {problem.strip().splitlines()[-1]}",
                                    extra={"submission_sha256": _hash_or_none(path), "source": Path(path).name,
                                           "set_aside": list(set_aside)})
        return key, document, problem


def _start_pool_process(settings):
    """A --jobs pool process removes its own temporary folders on SIGTERM/SIGINT (scratch.py), and starts its
    fork server first, so the server imports torch while the process imports the grader."""
    scratch.stop_on_signals()
    if settings.reuse_interpreter:
        forkserver.prestart(settings.limits, settings.isolation, settings.require_sandbox)


def grade_batch(paths, out, settings, *, jobs=1, force=False, console=None):
    """Grade every submission under `paths` into `out`. Returns (documents by key, grader failures)."""
    console = console or Console(stderr=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    submissions = unpack.discover([Path(p) for p in paths])
    failures, todo = [], []
    # Rows graded into this folder by earlier runs stay in the gradebook (a late submission graded on its own
    # must not drop the class), as they stay in the class report, which reads every results.json here.
    documents = {key: document for key, document in report.load_documents(out)
                 if isinstance(document, dict) and isinstance(document.get("extra_data"), dict)
                 and isinstance(document.get("score"), (int, float))}
    this_run = set()
    chosen = choose_per_row(submissions)
    for key, (path, set_aside) in chosen.items():
        cached = None if force else cached_results(out / key / "results.json", _hash_or_none(path), set_aside)
        if cached:
            documents[key] = cached
            this_run.add(key)
            if not (out / key / "feedback.md").exists():
                feedback.write_safely(out / key, cached)
        else:
            todo.append(path)
    set_aside_of = {path: set_aside for path, set_aside in chosen.values()}

    def finish(key, document, problem, path):
        documents[key] = document
        this_run.add(key)
        write_json_atomic(out / key / "results.json", document)
        feedback.write_safely(out / key, document)
        if problem:
            failures.append((path, problem))
        write_gradebook(out, documents)

    with terminal.progress_bar(console) as progress:
        task = terminal.start_task(progress, total=len(chosen), reused=len(chosen) - len(todo))
        if jobs <= 1:
            for path in todo:
                # Students' text (file names here; flags and reasons in the summary table) is escaped: rich reads
                # "[...]" as markup, and a stray closing tag such as a member named "[/bold]/x" raises.
                progress.update(task, description=escape(path.name))
                finish(*_grade_safely(path, settings, set_aside_of[path]), path)
                progress.advance(task)
        else:
            # spawn, not fork: the parent has torch (and its thread pools) loaded already.
            context = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_pool_process,
                                                        initargs=(settings,)) as pool:
                futures = {pool.submit(_grade_safely, path, settings, set_aside_of[path]): path for path in todo}
                for future in concurrent.futures.as_completed(futures):
                    path = futures[future]
                    try:
                        result = future.result()
                    except Exception as exc:  # noqa: BLE001 (a pool process died: still a row)
                        key = row_key(path, unpack.student_id_from_name(path))
                        result = (key, results_document(key, {}, flags=[], error=f"grader error: {exc}",
                                                        extra={"source": path.name}), repr(exc))
                    progress.update(task, description=escape(path.name))
                    finish(*result, path)
                    progress.advance(task)
    write_gradebook(out, documents, say_problems=True)
    report.write_safely(out)
    graded = {key: documents[key] for key in this_run}
    console.print(terminal.summary(graded, reused=len(chosen) - len(todo)))
    return graded, failures

