"""Grading a folder of submissions: resumable, parallel, and every submission gets a gradebook row.

A finished submission's results.json records its content hash and the grader's version; a rerun with
the same --out reuses it unless --force, so a batch killed halfway loses nothing. grades.csv is rebuilt
from the results of this batch at the end (and after each submission, so a kill leaves a usable file).
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

from . import GRADER_VERSION, feedback, forkserver, report, terminal, unpack
from .gradebook import write_gradebook
from .pipeline import grade_submission, results_document, row_key


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path, document):
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    # "replace": a file name with undecodable bytes reaches here as lone surrogates, which UTF-8 cannot hold.
    temporary.write_bytes(json.dumps(document, indent=2, ensure_ascii=False).encode("utf-8", "replace"))
    os.replace(temporary, path)


def cached_results(path, sha256):
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        extra = document["extra_data"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if extra.get("submission_sha256") == sha256 and extra.get("grader_version") == GRADER_VERSION:
        return document
    return None


def _grade_safely(path, settings):
    """Runs in a pool process. A grader bug becomes a row with the reason, never a lost submission."""
    try:
        return grade_submission(path, settings) + (None,)
    except Exception:  # noqa: BLE001 (a grader failure must still produce a row)
        key = row_key(path, unpack.student_id_from_name(Path(path)))
        problem = traceback.format_exc(limit=5)
        document = results_document(key, {}, flags=[], error=f"grader error: {problem.strip().splitlines()[-1]}",
                                    extra={"submission_sha256": file_sha256(path), "source": Path(path).name})
        return key, document, problem


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
    for path in submissions:
        key = row_key(path, unpack.student_id_from_name(path))
        cached = None if force else cached_results(out / key / "results.json", file_sha256(path))
        if cached:
            documents[key] = cached
            this_run.add(key)
            if not (out / key / "feedback.md").exists():
                feedback.write_safely(out / key, cached)
        else:
            todo.append(path)

    def finish(key, document, problem, path):
        if key in this_run and documents[key]["extra_data"].get("source") != document["extra_data"].get("source"):
            document["extra_data"]["flags"].append(f"another file for {key} was also submitted: "
                                                   f"{documents[key]['extra_data'].get('source')}")
        documents[key] = document
        this_run.add(key)
        write_json_atomic(out / key / "results.json", document)
        feedback.write_safely(out / key, document)
        if problem:
            failures.append((path, problem))
        write_gradebook(out, documents)

    with terminal.progress_bar(console) as progress:
        task = terminal.start_task(progress, total=len(submissions), reused=len(submissions) - len(todo))
        if jobs <= 1:
            for path in todo:
                # Students' text (file names here; flags and reasons in the summary table) is escaped: rich reads
                # "[...]" as markup, and a stray closing tag such as a member named "[/bold]/x" raises.
                progress.update(task, description=escape(path.name))
                finish(*_grade_safely(path, settings), path)
                progress.advance(task)
        else:
            # spawn, not fork: the parent has torch (and its thread pools) loaded already.
            context = multiprocessing.get_context("spawn")
            # Each pool process starts its fork server first, so the server imports torch while the
            # process imports the grader.
            start = {"initializer": forkserver.prestart,
                     "initargs": (settings.limits, settings.isolation, settings.require_sandbox)}
            with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context,
                                                        **(start if settings.reuse_interpreter else {})) as pool:
                futures = {pool.submit(_grade_safely, path, settings): path for path in todo}
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
    console.print(terminal.summary(graded, reused=len(submissions) - len(todo)))
    return graded, failures

