"""Per-student feedback and the class report, from results.json documents built as the pipeline builds them.

Grading real submissions takes minutes, so the class here is synthetic: pipeline.results_document with
outcomes that tell the usual stories (a named bug, a time limit, a crash, an unreadable archive, a
forbidden API). The batch hooks run through grade_batch with grade_submission replaced; the `report`
command runs through the real command line.
"""
import base64
import csv
import html
import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autograder import batch
from autograder.reports import feedback, report
from autograder.checks.bug_variants import FINGERPRINTS
from autograder.pipeline import Settings, results_document
from autograder.rubric import PARTS, RUBRIC

ROOT = Path(__file__).resolve().parents[1]
CANARY = "PRINTED-BY-THE-STUDENT"  # what student code printed: the TA's log, never the student's feedback
VALUE_TESTS = {part: [k for k, line in RUBRIC.items() if line.part == part][1:3] for part in PARTS}
FLAGS = ["the notebook has no executed cells (outputs cleared?)", "cells were run out of order",
         "locked cell 'ffn' was edited; graded with the original given code",
         "class EncoderLayer found by name: its cell has no nbgrader metadata"]


def _bug_lines(bug):
    return f"Likely bug: {bug['title']}. Hint: {bug['hint']}"


def synthetic_document(key, story, rng):
    """One student's results.json content; `story` says what went wrong."""
    outcomes = {test: (True, "") for test in RUBRIC}
    extra = {"source": f"{key}.tar.gz", "student_output": CANARY,
             "events": [{"op": "pe", "kind": "exception", "message": CANARY}]}
    flags = rng.sample(FLAGS, rng.choice((0, 0, 1, 2)))
    withheld, error = {}, None
    if story == "bug":
        fingerprint = rng.choice(FINGERPRINTS)
        bug = fingerprint.public()
        for test in VALUE_TESTS[fingerprint.part]:
            message = f"output: largest absolute error {rng.uniform(0.1, 3):.3g} at index (0, 1, 2)"
            outcomes[test] = (False, f"{message}\n{_bug_lines(bug)}")
        extra["named_bugs"] = {fingerprint.part: [bug]}
    elif story == "unnamed":
        outcomes["test_decoder_is_causal"] = (False, "changing target token 3 changed the output at position 1: "
                                                     "the self-attention sees the future")
        extra["named_bugs"] = {"DecoderLayer": []}
    elif story == "time":
        for test in VALUE_TESTS["EncoderLayer"]:
            outcomes[test] = (False, "time limit: `layer_forward` took longer than 20 s")
    elif story == "crash":
        for test in ("test_training_loss_is_finite", "test_training_loss_falls"):
            outcomes[test] = (False, "the code crashed: killed by SIGKILL (likely the memory limit)")
    elif story == "forbidden":
        flags.append("forbidden API in MultiHeadAttention: F.scaled_dot_product_attention (cell 11, line 24)")
        withheld["MultiHeadAttention"] = "MultiHeadAttention uses F.scaled_dot_product_attention; attention must be " \
                                         "written from scratch"
    elif story == "unreadable":
        outcomes, error = {}, "could not unpack the submission (ReadError: not a gzip file)"
    return results_document(key, outcomes, flags=flags, withheld=withheld, error=error,
                            elapsed=rng.uniform(20, 90), extra=extra)


STORIES = ("perfect", "bug", "bug", "time", "perfect", "bug", "unnamed", "crash", "forbidden", "bug", "unreadable",
           "bug")


def write_class(out, size=len(STORIES), seed=0):
    """results.json for `size` students under out/<id>/; returns {id: story}."""
    rng, stories = random.Random(seed), {}
    for i in range(size):
        key, story = f"2023-{10001 + i}", STORIES[i % len(STORIES)]
        batch.write_json_atomic(Path(out) / key / "results.json", synthetic_document(key, story, rng))
        stories[key] = story
    return stories


def by_story(stories, story):
    return next(key for key, s in stories.items() if s == story)


@pytest.fixture
def graded_class(tmp_path):
    out = tmp_path / "out"
    return out, write_class(out)


def test_feedback_says_what_failed_and_why(graded_class):
    out, stories = graded_class
    for key in stories:
        feedback.write_feedback(out / key, json.loads((out / key / "results.json").read_text(encoding="utf-8")))
    key = by_story(stories, "bug")
    document = json.loads((out / key / "results.json").read_text(encoding="utf-8"))
    (part, [bug]), = document["extra_data"]["named_bugs"].items()
    md = (out / key / "feedback.md").read_text(encoding="utf-8")
    page = (out / key / "feedback.html").read_text(encoding="utf-8")
    assert f"**Score: {document['score']:g} / 100**" in md
    for text in (f"## {part}: ", bug["title"], bug["hint"], "largest absolute error", "[failed]", "[passed]"):
        assert text in md, text
    assert md.count(bug["title"]) == 1, "the named bug is shown once, not again under every failed check"
    for text in (bug["title"], "Likely bug", "largest absolute error", "✗", "✓"):
        assert feedback._e(text) in page, text
    for name in PARTS:
        assert f"<h2>{name}<span>" in page
    # Self-contained, and nothing from the grader's log.
    assert not re.search(r"<(link|script|img)\b|https?://|url\(", page)
    for key in stories:
        for name in ("feedback.md", "feedback.html"):
            assert CANARY not in (out / key / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("story, note", [("time", "ran past the time limit"), ("crash", "crashed the grading process"),
                                         ("forbidden", "Points withheld"),
                                         ("unreadable", "could not be graded")])
def test_feedback_explains_parts_that_could_not_be_graded(graded_class, story, note):
    out, stories = graded_class
    key = by_story(stories, story)
    document = json.loads((out / key / "results.json").read_text(encoding="utf-8"))
    feedback.write_feedback(out / key, document)
    assert note in (out / key / "feedback.md").read_text(encoding="utf-8")
    assert note in (out / key / "feedback.html").read_text(encoding="utf-8")


def test_feedback_lists_flags(graded_class):
    out, stories = graded_class
    key = by_story(stories, "forbidden")
    feedback.write_feedback(out / key, json.loads((out / key / "results.json").read_text(encoding="utf-8")))
    md = (out / key / "feedback.md").read_text(encoding="utf-8")
    assert "> **Flag:** forbidden API in MultiHeadAttention" in md


def _is_png(data):
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def inline_images(text):
    """The page's images, decoded from their data: URIs."""
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def test_class_report_has_plots_and_tables(graded_class):
    out, stories = graded_class
    page = report.write_report(out)
    text = page.read_text(encoding="utf-8")
    images = inline_images(text)
    assert len(images) == 5 and all(_is_png(image) for image in images)
    for part in PARTS:
        assert f"<td>{part}</td>" in text
    assert f"<b>{len(stories)}</b><span>submissions</span>" in text
    for story in ("unreadable", "time", "crash"):
        key = by_story(stories, story)
        assert f'<td><a href="{key}/feedback.html">{key}</a></td>' in text, story
    assert "could not unpack the submission" in text
    assert by_story(stories, "perfect") not in text.split("Submissions with errors")[1].split("Who carries")[0]


def test_class_report_is_one_self_contained_file(graded_class):
    out, _ = graded_class
    text = report.write_report(out).read_text(encoding="utf-8")
    # Mailed on its own, the page must not need anything else: every image inline, nothing fetched.
    assert re.findall(r"<img\b", text) and all(src.startswith("data:image/png;base64,")
                                              for src in re.findall(r'<img src="([^"]*)"', text))
    assert not re.search(r"<(link|script|iframe|object)\b|url\(|@import|https?://", text)
    assert not (out / "report").exists()


def test_class_report_has_a_row_per_student_with_parts_flags_and_feedback_link(graded_class):
    out, stories = graded_class
    text = report.write_report(out).read_text(encoding="utf-8")
    table = text.split("<h2>Every student</h2>")[1]
    rows = re.findall(r"<tr>(.*?)</tr>", table)[1:]
    assert len(rows) == len(stories)
    for key in stories:
        document = json.loads((out / key / "results.json").read_text(encoding="utf-8"))
        row = next(r for r in rows if f'<a href="{key}/feedback.html">{key}</a>' in r)
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
        parts = document["extra_data"]["parts"]
        assert cells[1:7] == [f"{document['score']:g}", *[f"{parts[p]:g}" for p in PARTS]], key
        assert cells[7] == "–" and cells[8] == f"{document['score']:g}", "no hand-graded points yet"
    forbidden = by_story(stories, "forbidden")
    row = next(r for r in rows if f">{forbidden}</a>" in r)
    assert "forbidden API" in row


def test_class_report_lists_who_carries_which_flags_by_kind(tmp_path):
    rng = random.Random(3)
    flagged = {
        "2023-40001": ["forbidden API in MultiHeadAttention: nn.MultiheadAttention (cell 11, line 3)",
                       "forbidden API in DecoderLayer: F.scaled_dot_product_attention (cell 20, line 9)"],
        "2023-40002": ["locked cell 'ffn' was edited; graded with the original given code"],
        "2023-40003": ["another file for 2023-40003 was also submitted: 2023-40003.ipynb",
                       "graded without a sandbox (no bwrap or unshare available)"],
        "unknown-notes": ["file name holds no valid student ID (YYYY-NNNNN)"],
        "2023-40005": ["the submission was made with a brand-new trick"],
        "2023-40006": [],
    }
    for key, flags in flagged.items():
        document = synthetic_document(key, "perfect", rng)
        document["extra_data"]["flags"] = flags
        batch.write_json_atomic(tmp_path / key / "results.json", document)
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    section = text.split("<h2>Who carries which flags</h2>")[1].split("</section>")[0]
    groups = dict(re.findall(r"<h3>(.*?) \(\d+\)</h3>(.*?)(?=<h3>|$)", section))
    expected = {"forbidden API": {"2023-40001"}, "edited locked cells": {"2023-40002"},
                "duplicates / other files": {"2023-40003"}, "unknown ID": {"unknown-notes"},
                "no sandbox": {"2023-40003"}, "other": {"2023-40005"}}
    assert set(groups) == set(expected)
    for group, keys in expected.items():
        assert set(re.findall(r'<a href="[^"]+">([^<]+)</a>', groups[group])) == keys, group
    assert "nn.MultiheadAttention" in groups["forbidden API"] and "brand-new trick" in groups["other"]
    # The chart counts submissions: two forbidden-API flags on one notebook are one submission.
    assert report._flag_kinds_by_submission(report.load_documents(tmp_path))["forbidden API"] == 1


@pytest.mark.parametrize("flag, code, group", [
    ("forbidden API in DecoderLayer: nn.MultiheadAttention (cell 20, line 9)", "FA", "forbidden API"),
    ("locked cell 'ffn' was edited; graded with the original given code", "LE", "edited locked cells"),
    ("locked cell 'transformer' is missing", "LM", "edited locked cells"),
    ("locked cells could not be checked: too few cells match the handout", "LU", "edited locked cells"),
    ("locked cell 'ffn' appears 2 times", "LD", "duplicates / other files"),
    ("class EncoderLayer is defined 2 times; graded the last", "CD", "duplicates / other files"),
    ("another file for 2023-00001 was also submitted: 2023-00001.ipynb", "SF", "duplicates / other files"),
    ("also submitted, not graded (the archive made by CollectSubmission.sh is preferred over a notebook, then "
     "the newest file): 2023-00001 (1).ipynb", "SF", "duplicates / other files"),
    ("several candidate notebooks: picked a.ipynb over b.ipynb", "CN", "duplicates / other files"),
    ("file name holds no valid student ID (YYYY-NNNNN)", "ID", "unknown ID"),
    ("file name notes_for_2023-00002.ipynb mentions 2023-00002 but is not a submission name for it", "ID",
     "unknown ID"),
    ("graded without a sandbox (no bwrap or unshare available)", "NS", "no sandbox"),
    ("the notebook's cell metadata was stripped (Colab does this); cells were matched to the handout by content",
     "MD", "other"),
    ("class EncoderLayer found by name: its cell has no nbgrader metadata", "MD", "other"),
    ("the notebook was run in fast mode (TRANSFORMER_FAST_RUN=1): its training is not the assignment's", "FR",
     "other"),
    ("class DecoderLayer was found by name in cell 14, not in its handout cell", "CO", "other"),
    ("a flag nobody has named yet: details", "OT", "other"),
])
def test_each_flag_has_a_kind_a_console_code_and_a_report_group(flag, code, group):
    from autograder.reports.flags import kind_of
    kind = kind_of(flag)
    assert (kind.code, kind.group) == (code, group)


def test_ties_for_the_most_common_named_bug_are_all_shown(tmp_path):
    rng = random.Random(4)
    bugs = [fingerprint.public() for fingerprint in FINGERPRINTS if fingerprint.part == "MultiHeadAttention"][:3]
    for number, bug in enumerate([bugs[0], bugs[0], bugs[1], bugs[1], bugs[2]]):
        key = f"2023-{50001 + number}"
        document = synthetic_document(key, "perfect", rng)
        document["extra_data"]["named_bugs"] = {"MultiHeadAttention": [bug]}
        batch.write_json_atomic(tmp_path / key / "results.json", document)
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", text) if "<td>MultiHeadAttention</td>" in r)
    cell = re.findall(r"<td[^>]*>(.*?)</td>", row)[-1]
    assert html.escape(bugs[0]["title"]) in cell and html.escape(bugs[1]["title"]) in cell, cell
    assert html.escape(bugs[2]["title"]) not in cell and cell.endswith("(2)")


def test_class_report_of_an_empty_folder(tmp_path):
    text = report.write_report(tmp_path).read_text(encoding="utf-8")
    assert "No submissions." in text and "<img" not in text


def test_report_command_rebuilds_without_regrading(graded_class):
    out, stories = graded_class
    results = {key: out / key / "results.json" for key in stories}
    before = {key: (path.stat().st_mtime_ns, path.read_bytes()) for key, path in results.items()}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-m", "autograder", "report", str(out)], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    for key, path in results.items():
        assert (path.stat().st_mtime_ns, path.read_bytes()) == before[key], "results.json must not be rewritten"
        assert (out / key / "feedback.md").exists() and (out / key / "feedback.html").exists()
    assert inline_images((out / "report.html").read_text(encoding="utf-8"))
    # It grades nothing, and rebuilds grades.csv from the results it finds (with any hand-graded points).
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(stories)
    for key, path in results.items():
        assert float(rows[key]["score"]) == json.loads(path.read_text(encoding="utf-8"))["score"]
    missing = subprocess.run([sys.executable, "-m", "autograder", "report", str(out / "nowhere")], cwd=ROOT,
                             env=env, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 2 and "not a folder" in missing.stderr


def test_grade_batch_writes_feedback_and_report(tmp_path, monkeypatch):
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    rng = random.Random(1)
    prepared = {}
    for i, story in enumerate(("bug", "perfect", "time")):
        key = f"2023-{20001 + i}"
        (submissions / f"{key}.ipynb").write_text("{}", encoding="utf-8")
        prepared[key] = synthetic_document(key, story, rng)
    monkeypatch.setattr(batch, "grade_submission", lambda path, settings, set_aside=(): (Path(path).stem, prepared[Path(path).stem]))
    documents, failures = batch.grade_batch([submissions], tmp_path / "out", Settings())
    assert not failures and set(documents) == set(prepared)
    for key in prepared:
        assert (tmp_path / "out" / key / "feedback.html").exists()
        assert (tmp_path / "out" / key / "feedback.md").exists()
    assert ">2023-20003</a></td>" in (tmp_path / "out" / "report.html").read_text(encoding="utf-8")


def _browser():
    return next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


def test_report_renders_in_a_real_browser(tmp_path):
    if _browser() is None:
        message = "no chromium to render the report (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":  # .ci/run installs it: missing there is a broken CI, not a skip
            pytest.fail(message + "; CI=true and .ci/run should have installed it")
        pytest.skip(message)
    out = tmp_path / "out"
    write_class(out, size=40)
    page = report.write_report(out)
    shot = tmp_path / "report.png"
    completed = subprocess.run([_browser(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                f"--screenshot={shot}", "--window-size=1280,2000", page.resolve().as_uri()],
                               capture_output=True, text=True, timeout=120)
    assert shot.exists(), completed.stderr[-2000:]
    import matplotlib.image
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    colours = {tuple(p) for p in (pixels[::7, ::7, :3] * 255).astype(int).reshape(-1, 3).tolist()}
    # A blank page, or one whose images failed to load, has a handful of colours; the plots bring hundreds.
    assert len(colours) > 200 and pixels[..., :3].std() > 0.05
    if os.environ.get("REPORT_SCREENSHOT"):  # to look at it: REPORT_SCREENSHOT=/some/file.png pytest ...
        shutil.copyfile(shot, os.environ["REPORT_SCREENSHOT"])


def test_a_late_submission_graded_alone_keeps_the_class_in_the_gradebook(tmp_path, monkeypatch):
    rng = random.Random(2)
    prepared = {f"2023-{30001 + i}": synthetic_document(f"2023-{30001 + i}", story, rng)
                for i, story in enumerate(("bug", "perfect", "perfect"))}
    monkeypatch.setattr(batch, "grade_submission", lambda path, settings, set_aside=(): (Path(path).stem, prepared[Path(path).stem]))
    on_time, late = tmp_path / "on_time", tmp_path / "late"
    for folder, keys in ((on_time, list(prepared)[:2]), (late, list(prepared)[2:])):
        folder.mkdir()
        for key in keys:
            (folder / f"{key}.ipynb").write_text("{}", encoding="utf-8")
    batch.grade_batch([on_time], tmp_path / "out", Settings())
    documents, _ = batch.grade_batch([late], tmp_path / "out", Settings())
    assert set(documents) == {"2023-30003"}, "the return value is what this run graded"
    with open(tmp_path / "out" / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    assert set(rows) == set(prepared)
    for key, document in prepared.items():
        assert float(rows[key]["score"]) == document["score"]
