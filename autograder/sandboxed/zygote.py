"""The fork server: imports torch once, then forks a fresh worker for each submission.

A new Python that imports torch costs seconds of CPU; a fork of one that already has costs milliseconds.
The judge (autograder/forkserver.py) starts this file inside the same sandbox a worker gets, with a Unix
SOCK_SEQPACKET socket as stdin. Each "fork" request carries the two pipe ends of a new worker. Before forking,
the server kills whatever the previous worker left running (as the subreaper, every orphan below it becomes its
child) and empties the sandbox's private /tmp and /dev/shm, so no submission sees another's leftovers.

It never runs student code itself, and it is not dumpable, so a worker of the same uid can neither read
its memory nor trace it. Forking before any torch operation is safe: torch starts its thread pools on
first use, and a fork copies only the calling thread.
"""
import ctypes
import json
import os
import shutil
import signal
import socket
import stat
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker  # noqa: E402 (imports harness, and with it torch)

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 1, 4, 36
_libc = ctypes.CDLL(None, use_errno=True)
_statuses = {}


def _reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _statuses[pid] = os.waitstatus_to_exitcode(status)


def _children():
    me = str(os.getpid()).encode()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != b"Z":
                yield int(entry)


def _kill_everything_below():
    # A fork bomb keeps handing us new orphans; each round kills all there are, until none is left.
    for _ in range(1000):
        _reap()
        alive = list(_children())
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _mount_points():
    with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
        return [line.split()[4] for line in handle if len(line.split()) > 4]


def _empty(directory):
    """Remove what workers left in a private tmpfs. Entries that are, or lead to, a mount point stay: bwrap
    binds the server's own folder (and the Python install, if it lives under /tmp) at their host paths."""
    def writable_then_retry(function, path, _):
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        function(path)

    mounts = _mount_points()
    for entry in os.scandir(directory):
        if any(m == entry.path or m.startswith(entry.path + "/") for m in mounts):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, stat.S_IRWXU)
                shutil.rmtree(entry.path, onerror=writable_then_retry)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


def _exit_code(pid, grace=2.0):
    """The worker's exit code as Popen reports it (-N: killed by signal N); None if it is not ours."""
    deadline = time.monotonic() + grace
    while pid not in _statuses and time.monotonic() < deadline:
        _reap()
        time.sleep(0.01)
    if pid not in _statuses:
        # Its pipe closed, yet it runs on: it is done as far as the judge is concerned.
        try:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            _statuses[pid] = os.waitstatus_to_exitcode(status)
        except (ProcessLookupError, ChildProcessError):
            return None
    return _statuses.pop(pid)


def _become_worker(control, fds, cwd, private_tmp):
    control.close()
    os.setsid()
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.chdir(cwd)
    os.environ.update(HOME=cwd, MPLCONFIGDIR=os.path.join(cwd, ".matplotlib"))
    if not private_tmp:
        os.environ["TMPDIR"] = cwd
    requests, responses = fds
    worker.serve(os.fdopen(requests, "rb", buffering=0), os.fdopen(responses, "wb"))


def main():
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # bwrap gives us a private /tmp; elsewhere /tmp is the host's and not ours to empty.
    private_tmp = os.environ.get("TMPDIR") == "/tmp"
    control.sendall(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(control, 65536, 2)
        except OSError:
            return
        if not message:
            return  # the judge is gone
        request = json.loads(message)
        reply = {"id": request.get("id")}
        if request["op"] == "fork":
            _kill_everything_below()
            if private_tmp:
                for directory in ("/tmp", "/dev/shm"):
                    _empty(directory)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    _become_worker(control, fds, request["cwd"], private_tmp)
                except BaseException:  # noqa: BLE001 (before any student code: the server's log says why)
                    traceback.print_exc()
                    code = 70
                finally:
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            reply["pid"] = pid
        elif request["op"] == "exit_code":
            reply["code"] = _exit_code(request["pid"])
        else:
            reply["error"] = f"unknown op {request['op']!r}"
        control.sendall(json.dumps(reply).encode())


if __name__ == "__main__":
    main()
