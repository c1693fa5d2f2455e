"""Grading untrusted code: a corpus of hostile and broken submissions (tests/hostile_corpus.py), graded end
to end through the command line and the real sandbox, each with its expected outcome.

The corpus is graded in ONE batch per session (`--jobs 2 --check-timeout 5`: the hang case then costs four
5 s limits instead of four 20 s ones); every test below reads that batch's results. A few tests need their
own runs of the command line: a batch killed halfway and resumed, and a host without any sandbox.
docs/threat_model.md says what each outcome defends against.
"""
import csv
import html
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import hostile_corpus as hc

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable
JOBS = 2
CHECK_TIMEOUT = 5
# Only there so that a hung grader fails the session instead of eating CI's time.
TIMEOUT = 1800
PARTS = ("PositionalEncoding", "MultiHeadAttention", "EncoderLayer", "DecoderLayer", "Training")
FULL = {"PositionalEncoding": 15, "MultiHeadAttention": 30, "EncoderLayer": 20, "DecoderLayer": 25, "Training": 10}


def cli(paths, out, *extra, env=None):
    command = [PYTHON, "-m", "autograder", "grade", *map(str, paths), "--out", str(out), *extra]
    environment = dict(os.environ if env is None else env)
    environment.pop("PYTHONPATH", None)  # the grader must find its own package from the repository root
    return subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=TIMEOUT)


class Listener:
    """A TCP and a UDP socket on the host's 127.0.0.1, same port: whatever reaches them was not stopped."""

    def __init__(self):
        for _ in range(20):  # a free TCP port whose UDP twin is free too
            self.tcp, self.udp = socket.socket(), socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.tcp.bind(("127.0.0.1", 0))
            self.port = self.tcp.getsockname()[1]
            try:
                self.udp.bind(("127.0.0.1", self.port))
                break
            except OSError:
                self.tcp.close()
                self.udp.close()
        self.tcp.listen(16)  # a connection completes in the backlog even if never accepted

    def received(self):
        got = []
        for sock, take in ((self.tcp, lambda s: s.accept()[1]), (self.udp, lambda s: s.recvfrom(4096)[1])):
            sock.setblocking(False)
            try:
                while True:
                    got.append(take(sock))
            except BlockingIOError:
                pass
            sock.close()
        return got


@dataclass
class Batch:
    base: Path
    corpus: Path
    out: Path
    tmp: Path
    cases: dict
    returncode: int
    stderr: str
    wall: float
    received: list
    token: str

    def results(self, name):
        path = self.out / self.cases[name].key / "results.json"
        assert path.exists(), f"no results.json for {name} ({self.cases[name].key})"
        # Strict UTF-8: a results.json that Gradescope (or json.load) cannot read is no result.
        return json.loads(path.read_bytes().decode("utf-8"))

    def submitted(self, name):
        return self.corpus / self.cases[name].filename


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    listener = Listener()
    token = secrets.token_hex(6)
    cases = hc.write_corpus(base / "submissions", port=listener.port, token=token)
    # The grader's own temporary files go here, so the test can see that it leaves none behind.
    tmp = base / "tmp"
    tmp.mkdir()
    started = time.monotonic()
    completed = cli([base / "submissions"], base / "out", "--jobs", str(JOBS), "--check-timeout", str(CHECK_TIMEOUT),
                    env={**os.environ, "TMPDIR": str(tmp)})
    wall = time.monotonic() - started
    print(f"\ngraded {len(cases)} hostile submissions in {wall:.0f} s wall clock (--jobs {JOBS})")
    return Batch(base, base / "submissions", base / "out", tmp, cases, completed.returncode, completed.stderr, wall,
                 listener.received(), token)


def parts(results):
    return results["extra_data"]["parts"]


def checks_of(results, part):
    return [t for t in results["tests"] if t["name"].startswith(part + ": ")]


def failed_outputs(results, part):
    return [t["output"] for t in checks_of(results, part) if t["status"] != "passed"]


def assert_parts(results, **expected):
    got = parts(results)
    wrong = {part: (got[part], points) for part, points in expected.items() if got[part] != points}
    assert not wrong, f"parts (got, expected): {wrong}\n{describe(results)}"


def describe(results):
    lines = [results.get("output", "")]
    for test in results["tests"]:
        if test["status"] != "passed":
            lines.append(f"- {test['name']}: " + (test["output"] or "").replace("\n", "\n    ")[:600])
    return "\n".join(lines)


def sandboxed(results):
    isolation = results["extra_data"].get("isolation")
    if isolation == "none":
        pytest.skip("graded without a sandbox here (no bwrap or unshare): this case needs one")
    return isolation


def needs_bwrap(results):
    if results["extra_data"].get("isolation") != "bwrap":
        pytest.skip("needs bubblewrap: without it the worker sees the host's filesystem (see docs/threat_model.md)")


# --------------------------------------------------------------------------- the batch as a whole

def test_batch_completes_with_a_row_for_every_file(batch):
    assert batch.returncode == 0, f"the grader exited with {batch.returncode}\n{batch.stderr[-4000:]}"
    assert "grader failure" not in batch.stderr and "Traceback" not in batch.stderr, batch.stderr[-4000:]
    with open(batch.out / "grades.csv", newline="", encoding="utf-8") as handle:
        rows = {row["student_id"]: row for row in csv.DictReader(handle)}
    keys = {case.key for case in batch.cases.values()}
    assert set(rows) == keys, f"missing rows: {keys - set(rows)}; extra: {set(rows) - keys}"
    for name, case in batch.cases.items():
        results = batch.results(name)
        assert float(rows[case.key]["score"]) == results["score"], name
        assert (rows[case.key]["error"] or None) == results["extra_data"]["error"], name
    assert len(batch.cases) >= 25


def test_grader_leaves_nothing_behind_and_nothing_escapes(batch):
    # torch, imported by the judge, makes its (empty) compile cache folder there; nothing else may remain.
    left = [p for p in batch.tmp.iterdir() if not p.name.startswith("torchinductor_")]
    assert not left, f"left in the grader's TMPDIR: {left}"
    # The ../../escaped-<token> members must not exist anywhere near where the grader ran.
    places = [batch.base, batch.base.parent, batch.base.parent.parent, ROOT, ROOT.parent, Path("/tmp"), Path.cwd()]
    for place in places:
        assert not [p for p in place.iterdir() if batch.token in p.name], f"escaped into {place}"
    assert not [p for p in batch.base.rglob(f"*{batch.token}*")], "an archive member was written out"


def test_results_and_feedback_stay_small(batch):
    for path in batch.out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md", ".html", ".csv"):
            assert path.stat().st_size < 1 << 20, f"{path} is {path.stat().st_size} bytes"


# --------------------------------------------------------------------------- student code that misbehaves

def test_endless_loop_and_huge_allocation_cost_their_own_parts_only(batch):
    results = batch.results("hang_encoder_memory_pe")
    assert_parts(results, PositionalEncoding=0, MultiHeadAttention=30, EncoderLayer=0, DecoderLayer=25, Training=0)
    encoder = failed_outputs(results, "EncoderLayer")
    assert len(encoder) == 4 and all(o.startswith("time limit") for o in encoder), encoder
    memory = failed_outputs(results, "PositionalEncoding") + failed_outputs(results, "Training")
    # Four PositionalEncoding checks (storage, dtype, values, forward) and two Training checks.
    assert len(memory) == 6 and all(o.startswith("memory limit") for o in memory), memory
    assert {e["kind"] for e in results["extra_data"]["events"]} == {"time", "memory"}
    # The reason is there for the student and for the staff, not only a 0.
    feedback = (batch.out / batch.cases["hang_encoder_memory_pe"].key / "feedback.md").read_text(encoding="utf-8")
    assert "ran past the time limit" in feedback and "ran out of memory" in feedback
    report = (batch.out / "report.html").read_text(encoding="utf-8")
    assert batch.cases["hang_encoder_memory_pe"].key in report and "time limit" in report


@pytest.mark.parametrize("name, message", [
    ("os_exit", "the code ended the grading process (exit code 3)"),
    ("segfault", "the code crashed: killed by SIGSEGV"),
    ("kill_self", "the code crashed: killed by SIGKILL"),
])
def test_a_dying_worker_fails_only_the_checks_that_ran_the_code(batch, name, message):
    results = batch.results(name)
    # Only MultiHeadAttention.forward runs the edited method: one check of the part, and Training.
    assert_parts(results, PositionalEncoding=15, MultiHeadAttention=26, EncoderLayer=20, DecoderLayer=25, Training=0)
    failed = failed_outputs(results, "MultiHeadAttention") + failed_outputs(results, "Training")
    assert len(failed) == 3 and all(o.startswith(message) for o in failed), failed


def test_sys_exit_and_lone_surrogates(batch):
    results = batch.results("sys_exit_surrogates")
    # scaled_dot_product exits: every MultiHeadAttention check but the projections' one (no call to it).
    assert_parts(results, PositionalEncoding=15, MultiHeadAttention=4, EncoderLayer=0, DecoderLayer=25, Training=0)
    exits = failed_outputs(results, "MultiHeadAttention")
    assert len(exits) == 7 and all(o.startswith("your code raised an error") and "SystemExit: student says bye" in o
                                   for o in exits), exits
    assert "leaving now" in results["extra_data"]["student_output"]
    # The surrogate became a replacement character; the student's feedback was written, not lost.
    folder = batch.out / batch.cases["sys_exit_surrogates"].key
    assert "student says bye" in (folder / "feedback.md").read_bytes().decode("utf-8")
    assert (folder / "feedback.html").exists()
    # The lone surrogates in the JSON: that cell is skipped, the locked one counts as edited.
    notebook = json.loads(batch.submitted("sys_exit_surrogates").read_bytes())
    encoder_cell = hc.index_of_part(notebook, "EncoderLayer")
    flags = results["extra_data"]["flags"]
    assert f"cell {encoder_cell} cannot be parsed (UnicodeEncodeError); it was skipped" in flags, flags
    assert "locked cell 'setup' was edited; graded with the original given code" in flags, flags
    lost = failed_outputs(results, "EncoderLayer") + failed_outputs(results, "Training")
    assert len(lost) == 6 and all("class EncoderLayer is not defined" in o for o in lost), lost


def test_print_flood_is_capped_and_the_submission_graded(batch):
    results = batch.results("print_flood")
    assert results["score"] == 100, describe(results)
    path = batch.out / batch.cases["print_flood"].key / "results.json"
    assert path.stat().st_size < 1 << 20
    assert 0 < len(results["extra_data"]["student_output"]) <= 4000


def test_network_is_unreachable_from_student_code(batch):
    results = batch.results("network")
    sandboxed(results)
    assert batch.received == [], f"the host listener received {batch.received}"
    assert results["score"] == 100, describe(results)
    log = results["extra_data"]["student_output"]
    outcomes = {(where, label): outcome for where, label, outcome in re.findall(r"network (\w+) ([\w-]+): (\w+)", log)}
    # The code did run its attempts, at definition and in __init__; every TCP one failed and DNS did not
    # resolve (the UDP datagram went to the sandbox's own loopback: the listener above got nothing).
    labels = ("tcp-local", "udp-local", "tcp-public", "tcp-public-dns", "dns")
    assert set(outcomes) == {(where, label) for where in ("definition", "init") for label in labels}, log[:800]
    assert all(outcome not in ("sent", "resolved") for (_, label), outcome in outcomes.items()
               if label != "udp-local"), outcomes


def test_patched_comparisons_do_not_raise_the_score(batch):
    base, top = batch.results("determinism_00"), batch.results("patch_toplevel")
    # A top-level cell never runs in the grader: identical results.
    assert top["score"] == base["score"]
    assert [(t["name"], t["status"], t["score"]) for t in top["tests"]] == \
           [(t["name"], t["status"], t["score"]) for t in base["tests"]]
    # The same patches in a class body do run in the worker; the judge compares in its own process, so
    # they can only break the submission's own results, never pass a check.
    inside = batch.results("patch_classbody")
    assert "comparison functions patched" in inside["extra_data"]["student_output"]
    assert inside["score"] <= base["score"]
    passed = {t["name"] for t in base["tests"] if t["status"] == "passed"}
    assert {t["name"] for t in inside["tests"] if t["status"] == "passed"} <= passed


def test_filesystem_hunt_finds_nothing(batch):
    results = batch.results("fs_walker")
    needs_bwrap(results)
    outputs = failed_outputs(results, "PositionalEncoding")
    assert outputs, describe(results)
    for output in outputs:
        match = re.search(r"SMUGGLE at_definition=(\[.*?\]) in_forward=(\[.*?\]) entries_seen=(\d+)", output)
        assert match, output
        assert match.group(1) == "[]" and match.group(2) == "[]", output
        assert int(match.group(3)) > 1000, "the walk did not get far"
    assert str(ROOT / "source") not in json.dumps(results)


def test_reference_source_is_not_readable_from_the_worker(batch):
    results = batch.results("reference_thief")
    outputs = failed_outputs(results, "PositionalEncoding")
    assert outputs and all("RuntimeError: LEAK" in o for o in outputs), outputs
    leaked = outputs[0].split("LEAK ", 1)[1]
    assert "<reference" not in leaked and "<given" not in leaked, leaked
    # No MultiHeadAttention but the student's own has a scaled_dot_product: the layers' stand-in computes nothing.
    assert "getsource" not in leaked, leaked


def test_calling_the_workers_reference_attention_earns_nothing(batch):
    assert parts(batch.results("reference_thief"))["MultiHeadAttention"] < 30


def test_no_master_solution_line_reaches_any_output(batch):
    master = hc.master_solution_lines()
    assert len(master) >= 8
    for name, case in batch.cases.items():
        secret = [line for line in master if line not in own_lines(batch.submitted(name))]
        for path in (batch.out / case.key).iterdir():
            text = readable(path)
            assert "BEGIN SOLUTION" not in text, path
            leaked = [line for line in secret if line in text]
            assert not leaked, f"{path} holds master lines the submission does not: {leaked}"
    # The two that went looking hold none of the master's lines themselves: every one of them was checked.
    for name in ("fs_walker", "reference_thief"):
        assert not set(master) & own_lines(batch.submitted(name)), name
    # The staff's files quote students, whose notebooks hold master lines: only the markers are looked for.
    for path in (batch.out / "report.html", batch.out / "grades.csv"):
        assert "BEGIN SOLUTION" not in readable(path), path


def own_lines(path):
    """Code lines of the notebook a submission holds, for the leak check. Every archive of the corpus holds
    the PE-only notebook or nothing, so its lines stand for all of them (the test opens no hostile archive)."""
    if path.name.endswith(".ipynb"):
        return hc.notebook_code_lines(path.read_bytes())
    return hc.notebook_code_lines(hc.dumps(hc.pe_only_notebook()))


def readable(path):
    text = path.read_bytes().decode("utf-8", "replace")
    if path.suffix == ".json":
        strings = []

        def walk(value):
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)
        walk(json.loads(text))
        return "\n".join(strings)
    return html.unescape(text) if path.suffix == ".html" else text


# --------------------------------------------------------------------------- the rules: forbidden APIs, locked cells

def test_forbidden_apis_are_flagged_and_their_parts_withheld(batch):
    results = batch.results("forbidden_modules")
    flags = results["extra_data"]["flags"]
    for part, api in [("MultiHeadAttention", "nn.MultiheadAttention"), ("EncoderLayer", "nn.TransformerEncoderLayer"),
                      ("DecoderLayer", "torch.nn.MultiheadAttention")]:
        assert any(f.startswith(f"forbidden API in {part}: {api} ") for f in flags), (part, flags)
        withheld = [t for t in checks_of(results, part) if t["output"].startswith("points withheld")]
        assert withheld, describe(results)
    assert_parts(results, PositionalEncoding=15, MultiHeadAttention=0, EncoderLayer=0, DecoderLayer=0, Training=10)

    results = batch.results("forbidden_sdpa")
    assert any(f.startswith("forbidden API in MultiHeadAttention: F.scaled_dot_product_attention ")
               for f in results["extra_data"]["flags"]), results["extra_data"]["flags"]
    # It computes the right thing, so every MultiHeadAttention check is lost to the rule alone.
    assert all(t["output"].startswith("points withheld") for t in checks_of(results, "MultiHeadAttention"))
    assert_parts(results, **{**FULL, "MultiHeadAttention": 0})


def test_forbidden_names_in_comments_and_strings_are_not_flagged_and_top_level_code_never_runs(batch):
    results = batch.results("toplevel_heavy_mentions")
    assert not [f for f in results["extra_data"]["flags"] if f.startswith("forbidden API")]
    # The cells sleep 1000 s, wait for input() and loop forever: run, they would blow the 60 s load limit.
    assert results["score"] == 100, describe(results)
    assert results["execution_time"] < 120


def test_edited_locked_cells_are_flagged_and_graded_as_given(batch):
    results = batch.results("locked_edits_out_of_order")
    flags = results["extra_data"]["flags"]
    for grade_id in ("ffn", "transformer"):
        assert f"locked cell '{grade_id}' was edited; graded with the original given code" in flags, flags
    assert "cells were run out of order" in flags
    # GELU in the FFN would fail the layer checks, the inverted mask would make the loss NaN.
    assert results["score"] == 100, describe(results)


def test_colab_stripped_notebook_is_graded_by_class_name_last_definition(batch):
    from autograder.intake import audit
    results = batch.results("colab_stripped_duplicate")
    notebook = json.loads(batch.submitted("colab_stripped_duplicate").read_bytes())
    last = max(i for i, cell in enumerate(notebook["cells"])
               if cell.get("cell_type") == "code" and "class MultiHeadAttention" in hc.cell_text(cell))
    flags = results["extra_data"]["flags"]
    # One plain flag for the stripped metadata, none per class.
    assert flags == [f"class MultiHeadAttention is defined 2 times; graded the one in cell {last}",
                     audit.STRIPPED_FLAG], flags
    assert results["score"] == 100, describe(results)


def test_duplicated_class_is_graded_from_its_grade_id_cell(batch):
    results = batch.results("duplicate_grade_id")
    notebook = json.loads(batch.submitted("duplicate_grade_id").read_bytes())
    own_cell = hc.index_of_part(notebook, "MultiHeadAttention")
    assert f"class MultiHeadAttention is defined 2 times; graded the one in cell {own_cell}" in \
           results["extra_data"]["flags"]
    assert_parts(results, PositionalEncoding=15, MultiHeadAttention=0, EncoderLayer=20, DecoderLayer=25, Training=0)
    assert all("NotImplementedError" in o for o in failed_outputs(results, "MultiHeadAttention"))


def test_syntax_error_costs_that_part_only(batch):
    results = batch.results("determinism_00")  # DecoderLayer's cell has a syntax error
    notebook = json.loads(batch.submitted("determinism_00").read_bytes())
    cell = hc.index_of_part(notebook, "DecoderLayer")
    assert any(re.match(rf"cell {cell} has a syntax error \(line \d+: .*\); it was skipped", f)
               for f in results["extra_data"]["flags"]), results["extra_data"]["flags"]
    assert_parts(results, PositionalEncoding=15, EncoderLayer=20, DecoderLayer=0, Training=0)
    assert all(o.startswith("class DecoderLayer is not defined") for o in failed_outputs(results, "DecoderLayer"))
    # MultiHeadAttention, with its own bug, is graded as usual: some checks pass, the bug is named.
    assert 0 < parts(results)["MultiHeadAttention"] < 30 and results["extra_data"]["named_bugs"]["MultiHeadAttention"]


def test_grading_the_same_submission_twenty_times_gives_identical_results(batch):
    runs = [batch.results(f"determinism_{n:02d}") for n in range(hc.DETERMINISM_COPIES)]
    first = runs[0]
    assert 0 < first["score"] < 100 and first["extra_data"]["named_bugs"], describe(first)
    for other in runs[1:]:
        assert other["score"] == first["score"]
        assert other["tests"] == first["tests"]
        assert other["output"] == first["output"]
        assert other["extra_data"]["flags"] == first["extra_data"]["flags"]
        assert other["extra_data"]["named_bugs"] == first["extra_data"]["named_bugs"]


# --------------------------------------------------------------------------- archives and file names

INTAKE_ERRORS = [
    ("not_a_tar", "not a tar archive"),
    ("empty_tar", "archive is empty"),
    ("corrupt_gzip", "corrupt gzip data"),
    ("not_json", "notebook is not valid JSON"),
    ("nbformat3", "notebook format is 3, need nbformat 4"),
    ("dotdot_member", "archive member escapes the work directory: ../../escaped-"),
    ("symlink_member", "is a symlink, not a regular file"),
    ("hardlink_member", "is a hardlink, not a regular file"),
    ("tar_bomb", "archive larger than 200 MB uncompressed"),
    ("zip_disguised", "not a tar archive (it is a zip file)"),
    ("no_notebook", "no Assignment2-1 notebook in the archive (found: README.txt, [/bold]/notes.txt"),
    ("undecodable_name", "notebook is not valid JSON"),
]


@pytest.mark.parametrize("name, reason", INTAKE_ERRORS, ids=[n for n, _ in INTAKE_ERRORS])
def test_unusable_upload_gets_a_zero_row_with_its_reason(batch, name, reason):
    results = batch.results(name)
    assert results["score"] == 0
    assert reason in (results["extra_data"]["error"] or ""), results["extra_data"]["error"]
    assert all(t["output"] == results["extra_data"]["error"] for t in results["tests"])
    with open(batch.out / "grades.csv", newline="", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["student_id"] == batch.cases[name].key)
    assert reason in row["error"]


GRADED_WITH_A_FLAG = [
    ("wrong_notebook_name", "notebook name is not Assignment2-1_Transformer_from_scratch.ipynb: graded my_transformer.ipynb"),
    ("several_candidates", "several candidate notebooks: picked Assignment2-1_Transformer_from_scratch.ipynb"),
    ("bad_student_id", "file name holds no valid student ID (YYYY-NNNNN)"),
    ("undecodable_name", "file name 2098-00054-?.ipynb mentions 2098-00054 but is not a submission name"),
]


@pytest.mark.parametrize("name, flag", GRADED_WITH_A_FLAG, ids=[n for n, _ in GRADED_WITH_A_FLAG])
def test_odd_upload_is_still_graded_with_a_flag(batch, name, flag):
    results = batch.results(name)
    assert any(f.startswith(flag) for f in results["extra_data"]["flags"]), results["extra_data"]["flags"]
    if name != "undecodable_name":
        # The notebook inside has PositionalEncoding done and nothing else: 15 proves it was graded.
        assert results["extra_data"]["error"] is None and results["score"] == 15, describe(results)


# --------------------------------------------------------------------------- batches: kill and resume, --force

def _pids_holding(text):
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def test_killed_batch_resumes_without_regrading_and_force_regrades(tmp_path):
    subs, out, tmp = tmp_path / "subs", tmp_path / "out", tmp_path / "tmp"
    subs.mkdir()
    tmp.mkdir()
    notebook = hc.pe_only_notebook()
    (subs / "2098-00201.ipynb").write_bytes(hc.dumps(notebook))
    notebook["cells"].append(hc.code_cell("# a second student", execution_count=99))
    (subs / "2098-00202.ipynb").write_bytes(hc.dumps(notebook))
    for number, content in [(203, b"not json"), (204, b"{}"), (205, b'{"nbformat": 3}'), (206, b"[]")]:
        (subs / f"2098-{number:05d}.ipynb").write_bytes(content)
    keys = sorted(f"2098-{n:05d}" for n in range(201, 207))
    env = {**os.environ, "TMPDIR": str(tmp)}
    env.pop("PYTHONPATH", None)

    # --jobs 1 grades in name order: kill as soon as the first results.json is there, while the second
    # submission (another full worker start) is being graded.
    process = subprocess.Popen([PYTHON, "-m", "autograder", "grade", str(subs), "--out", str(out), "--jobs", "1"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not list(out.glob("*/results.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = {p.parent.name: p.stat() for p in out.glob("*/results.json")}
    assert 1 <= len(finished) < len(keys), f"not killed mid-batch: {sorted(finished)}"
    # The sandboxed worker dies with the grader (bwrap --die-with-parent, PR_SET_PDEATHSIG).
    for _ in range(100):
        if not _pids_holding(str(tmp)):
            break
        time.sleep(0.05)
    assert not _pids_holding(str(tmp)), "a worker outlived the killed grader"

    completed = cli([subs], out, "--jobs", "1", env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for key, before in finished.items():
        after = (out / key / "results.json").stat()
        assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns), f"{key} was regraded"
    assert f"reused {len(finished)} of {len(keys)}" in completed.stderr
    assert f"{len(keys)} submissions: {len(keys) - len(finished)} graded, {len(finished)} reused" in completed.stderr
    first = {key: json.loads((out / key / "results.json").read_text(encoding="utf-8")) for key in keys}
    assert rows_of(out) == keys

    completed = cli([subs], out, "--jobs", "1", "--force", env=env)
    assert completed.returncode == 0, completed.stderr[-3000:]
    for key, before in finished.items():
        assert (out / key / "results.json").stat().st_ino != before.st_ino, f"--force did not regrade {key}"
    assert rows_of(out) == keys
    for key in keys:
        again = json.loads((out / key / "results.json").read_text(encoding="utf-8"))
        assert (again["score"], again["tests"]) == (first[key]["score"], first[key]["tests"]), key
    assert first["2098-00201"]["score"] == first["2098-00202"]["score"] == 15


def rows_of(out):
    with open(out / "grades.csv", newline="", encoding="utf-8") as handle:
        return sorted(row["student_id"] for row in csv.DictReader(handle))


# --------------------------------------------------------------------------- no sandbox

def test_without_bwrap_grading_is_refused_and_says_how_to_install_it(tmp_path):
    """A host without bwrap, simulated honestly: PATH holds nothing. No silent fall back to a weaker cage; a
    weaker cage that would run student code as uid 0 is refused even when named."""
    subs = tmp_path / "subs"
    subs.mkdir()
    (subs / "2098-00301.ipynb").write_bytes(hc.dumps(hc.pe_only_notebook()))
    bare = {**os.environ, "PATH": str(tmp_path / "empty")}
    bare.pop("PYTHONPATH", None)
    normal = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def start(out, *extra, env):
        return subprocess.Popen([PYTHON, "-m", "autograder", "grade", str(subs), "--out", str(tmp_path / out), *extra],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = {"auto": start("auto", env=bare),
            "require_none": start("require_none", "--require-sandbox", "--isolation", "none", env=normal)}
    if os.geteuid() == 0:  # the venv's python lives under /root here: no unprivileged uid can run it
        runs["none_as_root"] = start("none_as_root", "--isolation", "none", env=normal)
    done = {name: (p.wait(timeout=TIMEOUT), p.communicate()[1]) for name, p in runs.items()}
    expected = {"auto": "apt-get install -y bubblewrap", "require_none": "--require-sandbox",
                "none_as_root": "uid 0"}
    for name, (code, stderr) in done.items():
        assert code == 2, (name, stderr[-2000:])
        assert "error: cannot sandbox student code" in stderr and expected[name] in stderr, stderr[-2000:]
        assert not (tmp_path / name).exists(), "nothing may be graded (or written) after a refusal"


# --------------------------------------------------------------------------- cheap in-process checks of the fixes

def test_a_load_past_its_time_limit_is_not_retried_by_every_check():
    from autograder.checks.conftest import Student
    from autograder.cage.client import StudentError

    class SlowToLoad:
        loads = 0

        def loaded(self):
            SlowToLoad.loads += 1
            raise StudentError("time", "time limit: `load` took longer than 60 s")

    student = Student(SlowToLoad(), 20, 240)
    for _ in range(23):
        with pytest.raises(pytest.fail.Exception, match="could not be loaded: time limit"):
            student.run("pe", dim=4, seq_len_max=4, X=None)
    assert SlowToLoad.loads == 1


@pytest.mark.parametrize("setup, use", [
    ("from torch.nn import MultiheadAttention as MA", "MA(dim, head_num)"),
    ("import torch.nn as tnn", "tnn.MultiheadAttention(dim, head_num)"),
    ("from torch import nn as tnn", "tnn.MultiheadAttention(dim, head_num)"),
    ("import torch as T", "T.nn.functional.scaled_dot_product_attention"),
])
def test_forbidden_api_behind_an_alias_imported_in_another_cell(setup, use):
    from autograder.intake import audit
    from autograder.intake.notebook_code import extract

    notebook = hc.fill_handout({"DecoderLayer": [hc.REF["DecoderLayer"][0] + f"\nself.spare = {use}",
                                                 hc.REF["DecoderLayer"][1]]})
    hc.append_to_first_code_cell(notebook, setup)
    findings = audit.forbidden_api(extract(notebook))
    assert list(findings.withheld) == ["DecoderLayer"], findings.flags
