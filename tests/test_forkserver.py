"""The fork server: workers forked from one interpreter that imported torch once, and nothing of one worker
reaching the next.

Each test loads hand-written "student" code through WorkerClient, as grading does. Code reports what it
sees by raising: the load report carries the message back.
"""
import json
import os
import time

import pytest

from autograder import forkserver, sandbox
from autograder.client import StudentError, WorkerClient
from autograder.reference import load_arguments

BWRAP = sandbox.isolation_available()["bwrap"]


class Unit:
    def __init__(self, source):
        self.source = source

    def as_message(self):
        return {"label": "cell 1", "filename": "<cell 1>", "source": self.source}


def run_code(tmp_path, source, **options):
    """Load `source` as a student's notebook in a forked worker; what it raised, parsed as JSON if it can be."""
    with WorkerClient(tmp_path, load_arguments([Unit(source)]), **options) as client:
        errors = client.loaded()["errors"]
        assert isinstance(client.process, forkserver.ForkedWorker)
    if not errors:
        return None
    message = errors[0]["error"].strip().splitlines()[-1].split(": ", 1)[-1]
    try:
        return json.loads(message)
    except ValueError:
        return message


def report(expression):
    return f"import json, os, sys, torch\nraise RuntimeError(json.dumps({expression}))\n"


@pytest.fixture
def fresh_server():
    forkserver.close_shared()
    yield
    forkserver.close_shared()


WHO = report('[os.path.basename(sys.argv[0]), os.path.dirname(os.getcwd()), os.getpid()]')


def test_workers_are_forked_from_one_server(tmp_path, fresh_server):
    # A forked worker keeps its server's command line; each server has a folder of its own. (Pids say
    # little here: inside bwrap's pid namespace every server is pid 2.)
    first, second = run_code(tmp_path / "a", WHO), run_code(tmp_path / "b", WHO)
    assert first[0] == second[0] == "zygote.py"
    assert first[1] == second[1], "both workers must come from the same server"
    assert first[2] != second[2], "each submission gets a process of its own"
    # The directory handed to the client is only for a worker started on its own.
    assert not (tmp_path / "a" / "worker").exists()


def test_nothing_one_worker_leaves_reaches_the_next(tmp_path, fresh_server):
    plant = report('dict(pid=__import__("subprocess").Popen(["sleep", "300"], start_new_session=True).pid, '
                   'cwd=os.getcwd(), files=[open(p, "w").write("x") for p in '
                   '["left.txt", "../left.txt", os.environ["TMPDIR"] + "/left.txt"]], '
                   'patched=setattr(torch, "leftover", 1))')
    planted = run_code(tmp_path / "a", plant)
    look = report(f'dict(cwd=os.getcwd(), torch=hasattr(torch, "leftover"), '
                  f'files=[os.path.exists(p) for p in ["{planted["cwd"]}/left.txt", "../left.txt", '
                  f'os.environ["TMPDIR"] + "/left.txt"]], '
                  f'sleeper=os.path.exists("/proc/{planted["pid"]}"))')
    seen = run_code(tmp_path / "b", look)
    assert seen["cwd"] != planted["cwd"]
    assert seen == {"cwd": seen["cwd"], "torch": False, "files": [False, False, False], "sleeper": False}


def test_a_worker_that_kills_its_server_costs_only_itself(tmp_path, fresh_server):
    killer = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nimport time\ntime.sleep(30)\n"
    with WorkerClient(tmp_path / "a", load_arguments([Unit(killer)])) as client:
        with pytest.raises(StudentError) as caught:
            client.loaded()
    assert caught.value.kind == "crash"
    assert run_code(tmp_path / "b", report('"fine"')) == "fine"


def test_a_stopped_server_is_woken_for_the_next_worker(tmp_path, fresh_server):
    # Each server has a folder of its own (its pid, inside a pid namespace, is the same for every server).
    stopper = report("[os.path.dirname(os.getcwd()), os.kill(os.getppid(), __import__('signal').SIGSTOP)]")
    server_folder, _ = run_code(tmp_path / "a", stopper)
    # Forked by the same server, not by one started after the stopped one timed out.
    assert run_code(tmp_path / "b", report("os.path.dirname(os.getcwd())")) == server_folder


@pytest.mark.skipif(not any(sandbox.isolation_available()[m] for m in ("bwrap", "unshare")),
                    reason="without a sandbox the worker may run with our own rights")
def test_the_server_cannot_be_read_or_traced_by_a_worker(tmp_path, fresh_server):
    # The server's memory, environment and working directory: what a same-uid process could look at.
    probe = ("import json, os\nppid = os.getppid()\nresults = {}\n"
             "for name, action in [('mem', lambda: open(f'/proc/{ppid}/mem', 'rb').read(1)),\n"
             "                     ('environ', lambda: open(f'/proc/{ppid}/environ', 'rb').read(1)),\n"
             "                     ('cwd', lambda: os.readlink(f'/proc/{ppid}/cwd'))]:\n"
             "    try:\n        action()\n        results[name] = 'read'\n"
             "    except OSError as error:\n        results[name] = type(error).__name__\n"
             "raise RuntimeError(json.dumps(results))\n")
    assert run_code(tmp_path, probe) == {"mem": "PermissionError", "environ": "PermissionError",
                                         "cwd": "PermissionError"}


@pytest.mark.parametrize("code, expected", [
    ("import os\nos._exit(3)\n", "exit code 3"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "killed by SIGSEGV"),
])
def test_a_forked_worker_reports_how_it_ended(tmp_path, fresh_server, code, expected):
    with WorkerClient(tmp_path, load_arguments([Unit(code)])) as client:
        with pytest.raises(StudentError) as caught:
            client.loaded()
    assert caught.value.kind == "crash" and expected in caught.value.message


@pytest.mark.skipif(not BWRAP, reason="the private /tmp is bwrap's")
def test_a_worker_sees_an_empty_private_tmp(tmp_path, fresh_server):
    run_code(tmp_path / "a", "open('/tmp/mine', 'w').write('x')\nopen('/dev/shm/mine', 'w').write('x')\n")
    # What may be in /tmp is what bwrap binds there at its host path: the server's folder, and the Python
    # installation when the checkout lives under /tmp (a CI clone), with the folders that lead to them.
    seen = run_code(tmp_path / "b", report(
        '[name for name in os.listdir("/tmp") if not any((line.split()[4] + "/").startswith(f"/tmp/{name}/") '
        'for line in open("/proc/self/mountinfo"))] + os.listdir("/dev/shm")'))
    assert seen == []


def test_without_reuse_a_worker_is_a_new_interpreter(tmp_path, fresh_server):
    with WorkerClient(tmp_path, load_arguments([Unit(WHO)]), reuse_interpreter=False) as client:
        error = client.loaded()["errors"][0]["error"]
        assert not isinstance(client.process, forkserver.ForkedWorker)
    assert '"worker.py"' in error
    assert (tmp_path / "worker" / "worker.py").exists()


@pytest.mark.parametrize("isolation", [m for m in ("unshare", "none") if sandbox.isolation_available().get(m, True)])
def test_workers_are_forked_without_bwrap_too(tmp_path, fresh_server, isolation):
    first, second = run_code(tmp_path / "a", WHO, isolation=isolation), run_code(tmp_path / "b", WHO, isolation=isolation)
    assert first[0] == second[0] == "zygote.py" and first[1] == second[1] and first[2] != second[2]
