"""The judge's handle on a worker: send an operation, wait with a deadline, survive anything.

A worker that hangs is killed at the deadline; one that dies (sys.exit, os._exit, a segfault, the kernel's
OOM killer) is noticed on the next read. Either way the failure becomes a StudentError for that one
check, and the next call starts a fresh worker and loads the submission again.
"""
import os
import select
import shutil
import signal
import time
from pathlib import Path

from . import protocol, sandbox

WORKER_FILES = ("worker.py", "harness.py", "protocol.py")
HERE = Path(__file__).resolve().parent


class StudentError(Exception):
    """A check could not get an answer from the student's code. kind: exception, memory, time, crash, protocol."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


class WorkerClient:
    def __init__(self, scratch, load_args, *, limits=None, isolation="auto", require_sandbox=False,
                 load_timeout=60.0):
        self.scratch = Path(scratch)
        self.load_args = load_args
        self.limits = limits or sandbox.Limits()
        self.isolation, self.require_sandbox = isolation, require_sandbox
        self.load_timeout = load_timeout
        self.process = None
        self.load_report = None
        self.isolation_used = None
        self.events = []   # (op, kind, message) of every failed call, for the report
        self.output = []   # what the student's code printed, capped by the worker

    # -- lifecycle

    def _start(self):
        code_dir = self.scratch / "worker"
        code_dir.mkdir(parents=True, exist_ok=True)
        for name in WORKER_FILES:
            shutil.copyfile(HERE / name, code_dir / name)
        self.process = sandbox.launch(code_dir / "worker.py", self.scratch, self.limits,
                                      isolation=self.isolation, require=self.require_sandbox)
        self.isolation_used = self.process.sandbox.isolation
        self.load_report = self._request("load", self.load_args, self.load_timeout)

    def close(self):
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.process.wait()
        self.process = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def loaded(self):
        """Start the worker if needed and return its load report ({defined, errors})."""
        if self.process is None:
            try:
                self._start()
            except StudentError:
                self.close()
                raise
        return self.load_report

    # -- calls

    def call(self, op, timeout, **args):
        self.loaded()
        try:
            return self._request(op, args, timeout)
        except StudentError as error:
            self.events.append((op, error.kind, error.message))
            raise

    def _request(self, op, args, timeout):
        deadline = time.monotonic() + timeout
        try:
            protocol.write_message(self.process.stdin, {"op": op, "args": args})
            response = protocol.read_message(lambda n: self._read(n, deadline, op, timeout))
        except (BrokenPipeError, EOFError):
            raise self._died() from None
        except protocol.ProtocolError as exc:
            self.close()
            raise StudentError("protocol", f"the worker's answer was unreadable ({exc})") from None
        if response.get("output"):
            self.output.append(str(response["output"]))
        if not isinstance(response, dict) or not response.get("ok"):
            kind = response.get("kind") if response.get("kind") in ("memory", "exception") else "exception"
            raise StudentError(kind, str(response.get("error", "unknown error"))[:2000])
        return response.get("result")

    def _read(self, n, deadline, op, timeout):
        remaining = deadline - time.monotonic()
        ready = remaining > 0 and select.select([self.process.stdout], [], [], remaining)[0]
        if not ready:
            self.close()
            raise StudentError("time", f"time limit: `{op}` took longer than {timeout:g} s")
        return os.read(self.process.stdout.fileno(), n)

    def _died(self):
        process, self.process = self.process, None
        try:
            code = process.wait(timeout=5)
        except Exception:  # noqa: BLE001 (whatever happened, the worker is gone for us)
            code = None
        self.process = process
        self.close()
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (likely the memory limit)" if -code == signal.SIGKILL else ""
            return StudentError("crash", f"the code crashed: killed by {name}{hint}")
        return StudentError("crash", f"the code ended the grading process (exit code {code})")
