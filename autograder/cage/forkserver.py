"""The judge's side of the fork server (sandboxed/zygote.py): one sandboxed Python per grading process that
has imported torch already, and forks each submission's worker into a cage of its own.

A worker started on its own pays for a new interpreter and `import torch` (seconds of CPU) every time; a
fork costs milliseconds. The server runs in bwrap with the capabilities to build namespaces, and no student
code ever runs in it. Each worker gets new mount, ipc, pid and uts namespaces, its own tmpfs for /scratch and
/dev/shm, its limits, and no privileges (zygote.py); when it ends, the kernel takes all of that with it.
What workers share with the server: the read-only code, the network namespace (empty), and the uid.
Nothing to clean up between workers, and nothing a worker does can reach the next one.
"""
import atexit
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from autograder.cage import sandbox, scratch



class ForkserverError(RuntimeError):
    """The fork server did not start or stopped answering."""


def process_table():
    """{pid: (parent pid, state, CPU seconds)} of every process we can see."""
    table, tick = {}, os.sysconf("SC_CLK_TCK")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        # Fields after the command name: state, ppid, ..., utime and stime at 11 and 12.
        table[int(entry.name)] = (int(fields[1]), fields[0].decode(), (int(fields[11]) + int(fields[12])) / tick)
    return table


def descendants(root, table=None):
    table = process_table() if table is None else table
    family, frontier = set(), [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, (ppid, _, _) in table.items() if ppid == parent and pid not in family]
        family.update(children)
        frontier += children
    return family


def kill_below(root, rounds=20):
    """SIGKILL every live process below `root`, in rounds: a fork bomb keeps making new ones."""
    for _ in range(rounds):
        table = process_table()
        alive = [pid for pid in descendants(root, table) if table[pid][1] != "Z"]
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)


def _namespace_pid(pid):
    """The pid as the innermost pid namespace of the process sees it, and how deep that namespace is."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("NSpid:"):
                    fields = line.split()[1:]
                    return int(fields[-1]), len(fields)
    except OSError:
        pass
    return None, 0


def _host_pid(root, inner_pid):
    """Our pid for `root` or the process below it that calls itself inner_pid in its own namespace (without a
    pid namespace, as with --isolation none, that is `root` itself)."""
    matches = [(depth, pid) for pid in descendants(root) | {root}
               for inner, depth in [_namespace_pid(pid)] if inner == inner_pid]
    return max(matches)[1] if matches else None


class ForkedWorker:
    """The part of a Popen that WorkerClient uses, for a worker forked by the server."""
    # Its keeper passes on a death by signal N as exit code 128 + N, as bwrap does for a lone worker.
    relays_signals = True

    def __init__(self, server, inner_pid, stdin, stdout):
        self.server, self.inner_pid = server, inner_pid
        self.stdin, self.stdout = stdin, stdout
        self.sandbox = server.process.sandbox
        # CPU budgets count everything below the server: the worker, and whatever it started.
        self.pid = server.pid
        self.returncode = None

    def kill(self):
        self.server.kill_workers()

    def wait(self, timeout=None):  # noqa: ARG002 (the server waits at most a few seconds)
        if self.returncode is None:
            self.returncode = self.server.exit_code(self.inner_pid)
        return self.returncode


class Forkserver:
    """One sandboxed server per grading process (and per set of limits). Its folder holds only its read-only
    code and its log; no worker can write there, or anywhere else on the host (sandbox.py, bwrap)."""

    def __init__(self, limits, isolation="auto", require=False, start_timeout=120.0):
        self.key = (limits, isolation, require)
        self.limits = limits
        self.root = scratch.make("autograde-workers-")
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            code = sandbox.install_code(self.root / "code")
            self.process = sandbox.launch(code / "zygote.py", self.root, limits, isolation=isolation,
                                          require=require, server=True, stdin=theirs.fileno(),
                                          stdout=subprocess.DEVNULL)
        except BaseException:
            self.control.close()
            scratch.remove(self.root)
            raise
        finally:
            theirs.close()
        self.ready_by = time.monotonic() + start_timeout
        self.pid = None  # ours for the server process, once it has said it is ready
        self.asked = 0

    def alive(self):
        return self.process.poll() is None

    def _ask(self, request, fds=(), timeout=30.0):
        """Send a request and wait for its own answer. Answers carry the request's number: one that comes
        after its asker gave up (a stopped server, woken later) is dropped, not taken for the next one's."""
        self.asked += 1
        message = json.dumps({**request, "id": self.asked}).encode()
        try:
            if fds:
                socket.send_fds(self.control, [message], list(fds))
            else:
                self.control.sendall(message)
        except OSError as error:
            raise ForkserverError(f"the fork server is gone ({error})") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._receive(deadline - time.monotonic())
            if reply.get("id") == self.asked:
                return reply

    def _receive(self, timeout):
        if timeout <= 0:
            raise ForkserverError("the fork server did not answer in time")
        self.control.settimeout(timeout)
        try:
            data = self.control.recv(65536)
        except (socket.timeout, OSError) as error:
            raise ForkserverError(f"the fork server did not answer ({error or 'timed out'})") from None
        if not data:
            raise ForkserverError(f"the fork server exited (code {self.process.poll()}); see "
                                  f"{self.root / 'worker.stderr'}")
        return json.loads(data)

    def _await_ready(self):
        if self.pid is None:
            reply = self._receive(self.ready_by - time.monotonic())
            if not reply.get("ready"):
                raise ForkserverError(reply.get("error") or "the fork server did not start")
            self.pid = _host_pid(self.process.pid, reply["pid"])
            if self.pid is None:
                raise ForkserverError("the fork server's process could not be found")

    def spawn(self, limits=None):
        """A new worker in a cage of its own (autograder/sandboxed/zygote.py), on fresh pipes."""
        self._await_ready()
        limits = limits or self.limits
        requests_read, requests_write = os.pipe()
        responses_read, responses_write = os.pipe()
        request = {"op": "fork", "uid": self.process.sandbox.uid or sandbox.worker_uid(),
                   "limits": limits.as_message(), "scratch_bytes": sandbox.SCRATCH_BYTES,
                   "shm_bytes": sandbox.SHM_BYTES}
        try:
            reply = self._ask(request, fds=(requests_read, responses_write))
        except ForkserverError:
            os.close(requests_write)
            os.close(responses_read)
            raise
        finally:
            os.close(requests_read)
            os.close(responses_write)
        return ForkedWorker(self, reply["pid"], os.fdopen(requests_write, "wb"),
                            os.fdopen(responses_read, "rb", buffering=0))

    def exit_code(self, inner_pid):
        try:
            return self._ask({"op": "exit_code", "pid": inner_pid}, timeout=10.0).get("code")
        except (OSError, ForkserverError):
            return None

    def kill_workers(self):
        """SIGKILL every process below the server (rounds, for a fork bomb's newest children). Each worker's
        pid namespace dies with its init anyway; this is for the judge not to wait on that."""
        if self.pid is not None:
            kill_below(self.pid)

    def close(self):
        self.kill_workers()
        self.control.close()
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        scratch.remove(self.root)


_shared = None


def shared(limits, isolation="auto", require=False):
    """This process's fork server for these settings: started on first use, restarted when it has died.
    Starting is not waiting: the server imports torch while the judge goes on (until its first spawn).
    Workers' own address-space caps do not matter to the server: each spawn sets its worker's."""
    global _shared
    limits = dataclasses.replace(limits, memory_bytes=None)
    if _shared is not None and (_shared.key != (limits, isolation, require) or not _shared.alive()):
        close_shared()
    if _shared is None:
        _shared = Forkserver(limits, isolation, require)
    return _shared


def prestart(limits, isolation="auto", require=False):
    """shared(), for a process about to grade: a failure here shows again, with its reason, at the first spawn."""
    try:
        shared(limits, isolation, require)
    except (sandbox.SandboxUnavailable, OSError):
        pass


def close_shared():
    global _shared
    server, _shared = _shared, None
    if server is not None:
        server.close()


atexit.register(close_shared)
