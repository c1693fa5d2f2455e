"""The fork server and the cage of each worker: workers forked from one interpreter that imported torch once,
each into namespaces and file systems of its own, so that nothing one worker does reaches the next.

Each test loads hand-written "student" code through WorkerClient, as grading does. Code reports what it
sees by raising: the load report carries the message back.
"""
import json
import os
import time

import pytest
import torch

from autograder.cage import forkserver, sandbox
from autograder.cage.client import StudentError, WorkerClient
from autograder.reference import load_arguments

pytestmark = pytest.mark.skipif(not sandbox.isolation_available()["bwrap"],
                                reason="the fork server runs only in bwrap (apt-get install -y bubblewrap)")


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


WHO = report('[os.path.basename(sys.argv[0]), sys.path[0], os.getpid(), os.readlink("/proc/self/ns/pid"), '
             'os.readlink("/proc/self/ns/ipc"), os.readlink("/proc/self/ns/mnt"), os.getcwd(), os.getuid()]')


def test_workers_are_forked_from_one_server_each_into_namespaces_of_its_own(tmp_path, fresh_server):
    first, second = run_code(tmp_path / "a", WHO), run_code(tmp_path / "b", WHO)
    assert first[0] == second[0] == "zygote.py"
    assert first[1] == second[1], "both workers must come from the same server (same code folder)"
    # pid 2 in a pid namespace of its own (its init is pid 1), with ipc and mount namespaces that are not the
    # server's. (Namespace numbers are reused once a namespace is gone, so the two workers' may be equal.)
    assert first[2] == second[2] == 2
    server = forkserver.shared(sandbox.Limits()).pid
    for index, kind in ((3, "pid"), (4, "ipc"), (5, "mnt")):
        assert first[index] != os.readlink(f"/proc/{server}/ns/{kind}") != second[index]
    assert first[6] == second[6] == sandbox.SCRATCH
    assert first[7] == second[7] == sandbox.worker_uid() != 0
    # The client's folder is only for a worker started on its own.
    assert not (tmp_path / "a" / "worker").exists()


SYSV = ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\nlibc.shmget.restype = ctypes.c_int\n"
        "def segment(create):\n    return libc.shmget(0x5eed, 4096, (0o1666 if create else 0o666))\n"
        "def deep(levels):\n    home = os.getcwd()\n    for _ in range(levels):\n"
        "        os.mkdir('d')\n        os.chdir('d')\n    os.chdir(home)\n")


def test_nothing_one_worker_leaves_reaches_the_next(tmp_path, fresh_server):
    plant = SYSV + report(
        'dict(pid=__import__("subprocess").Popen(["sleep", "300"], start_new_session=True).pid, '
        'files=[open(p, "w").write("x") for p in ["left.txt", os.environ["TMPDIR"] + "/left.txt", "/dev/shm/left"]], '
        'deep=deep(1200), '
        'shm=segment(True) >= 0, patched=setattr(torch, "leftover", 1))')
    planted = run_code(tmp_path / "a", plant)
    assert planted["shm"], "the planting worker could create a SysV segment"
    look = SYSV + report(
        f'dict(torch=hasattr(torch, "leftover"), files=[os.path.exists(p) for p in '
        f'["left.txt", os.environ["TMPDIR"] + "/left.txt", "/dev/shm/left", "d"]], '
        f'shm=segment(False) >= 0, processes=sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))')
    seen = run_code(tmp_path / "b", look)
    # Its namespace holds its init (1) and itself (2): the sleeper, any other worker and the server are not there.
    assert seen == {"torch": False, "files": [False, False, False, False], "shm": False, "processes": [1, 2]}


def test_a_worker_can_write_nowhere_but_its_own_scratch(tmp_path, fresh_server):
    probe = (
        "import os, sys\n"
        "def _try(action):\n"
        "    try:\n        action()\n        return 'written'\n"
        "    except OSError as error:\n        return type(error).__name__\n"
        "ACTIONS = [('code', lambda: open(os.path.join(sys.path[0], 'matplotlib.py'), 'w')),\n"
        "           ('code_mode', lambda: os.chmod(sys.path[0], 0o777)),\n"
        "           ('tmp', lambda: open('/tmp/planted.py', 'w')),\n"
        "           ('site', lambda: open(os.path.join(sys.path[-1], 'planted.pth'), 'w')),\n"
        "           ('prefix', lambda: open(os.path.join(sys.prefix, 'planted'), 'w')),\n"
        "           ('scratch', lambda: open('mine.txt', 'w'))]\n"
        "import json\nraise RuntimeError(json.dumps({name: _try(action) for name, action in ACTIONS}))\n")
    seen = run_code(tmp_path, probe)
    assert seen.pop("scratch") == "written"
    assert set(seen.values()) <= {"PermissionError", "OSError"}, seen


def test_the_server_cannot_be_read_or_traced_by_a_worker(tmp_path, fresh_server):
    # The worker's parent is the init of its own pid namespace; the server is not even visible.
    probe = ("import json, os\nppid = os.getppid()\nresults = {'ppid': ppid}\n"
             "for name, action in [('mem', lambda: open(f'/proc/{ppid}/mem', 'rb').read(1)),\n"
             "                     ('environ', lambda: open(f'/proc/{ppid}/environ', 'rb').read(1))]:\n"
             "    try:\n        action()\n        results[name] = 'read'\n"
             "    except OSError as error:\n        results[name] = type(error).__name__\n"
             "raise RuntimeError(json.dumps(results))\n")
    assert run_code(tmp_path, probe) == {"ppid": 1, "mem": "PermissionError", "environ": "PermissionError"}


def test_a_worker_that_kills_what_it_can_costs_only_itself(tmp_path, fresh_server):
    killer = ("import os, signal\nfor pid in [int(p) for p in os.listdir('/proc') if p.isdigit()]:\n"
              "    try:\n        os.kill(pid, signal.SIGKILL if pid != os.getpid() else 0)\n"
              "    except OSError:\n        pass\nos.kill(1, signal.SIGSTOP)\nos._exit(9)\n")
    with WorkerClient(tmp_path / "a", load_arguments([Unit(killer)])) as client:
        with pytest.raises(StudentError) as caught:
            client.loaded()
    assert caught.value.kind == "crash"
    assert run_code(tmp_path / "b", report('"fine"')) == "fine"


@pytest.mark.parametrize("code, expected", [
    ("import os\nos._exit(3)\n", "exit code 3"),
    ("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n", "killed by SIGSEGV"),
])
def test_a_forked_worker_reports_how_it_ended(tmp_path, fresh_server, code, expected):
    with WorkerClient(tmp_path, load_arguments([Unit(code)])) as client:
        with pytest.raises(StudentError) as caught:
            client.loaded()
    assert caught.value.kind == "crash" and expected in caught.value.message


STOP_AFTER_LOAD = ("import os, signal, threading\n"
                   "threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGSTOP)).start()\n")


def test_a_worker_that_stops_reading_cannot_block_the_judge(tmp_path, fresh_server):
    with WorkerClient(tmp_path, load_arguments([Unit(STOP_AFTER_LOAD)])) as client:
        client.loaded()
        time.sleep(1.0)
        big = torch.zeros(1, 2**20, 4)  # far more than a pipe holds: the write itself would block
        started = time.monotonic()
        with pytest.raises(StudentError) as caught:
            client.call("pe", 1.0, dim=4, seq_len_max=10, X=big)
        waited = time.monotonic() - started
    assert caught.value.kind == "time" and "stopped reading" in caught.value.message
    # The wall-time backstop of a 1 s limit, not forever.
    assert waited < 30


HUGE_ANSWER = ("import torch, torch.nn as nn\n"
               "class PositionalEncoding(nn.Module):\n"
               "    def __init__(self, dim, seq_len_max):\n"
               "        super().__init__()\n"
               "        self.register_buffer('PE', torch.zeros(1, 4 * 2**20, 4))\n"
               "    def forward(self, X):\n"
               "        return X\n")


def test_an_answer_larger_than_any_check_needs_is_refused_unread(tmp_path, fresh_server):
    with WorkerClient(tmp_path, load_arguments([Unit(HUGE_ANSWER)])) as client:
        with pytest.raises(StudentError) as caught:
            client.call("pe", 20.0, dim=4, seq_len_max=10, X=torch.zeros(1, 1, 4))
    assert caught.value.kind == "protocol" and "exceeds the limit" in caught.value.message


def test_the_address_space_cap_holds_for_checks_and_is_lifted_only_for_gpu_training(tmp_path, fresh_server):
    limits = sandbox.Limits(gpu=True)
    probe = report('open("/proc/self/limits").read().split("Max address space")[1].split()[0]')
    assert run_code(tmp_path / "a", probe, limits=limits) == str(limits.memory_bytes)
    with WorkerClient(tmp_path / "b", load_arguments([Unit(probe)]), limits=limits) as client:
        trainer = client.training_client()
        assert trainer is not client and trainer.limits.memory_bytes is None
        message = trainer.loaded()["errors"][0]["error"]
    assert '"unlimited"' in message
    assert sandbox.Limits().for_training().memory_bytes == sandbox.Limits().memory_bytes


def test_without_reuse_a_worker_is_a_new_interpreter_in_a_cage_of_its_own(tmp_path, fresh_server):
    with WorkerClient(tmp_path, load_arguments([Unit(WHO)]), reuse_interpreter=False) as client:
        error = client.loaded()["errors"][0]["error"]
        assert not isinstance(client.process, forkserver.ForkedWorker)
    assert '"worker.py"' in error and f'"{sandbox.SCRATCH}"' in error
    assert (tmp_path / "worker" / "worker.py").exists()
