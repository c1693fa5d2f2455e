"""The judge's handle on a worker: send an operation, wait with a deadline, survive anything.

A worker that hangs is killed at the deadline; one that dies (sys.exit, os._exit, a segfault, the kernel's
OOM killer) is noticed on the next read. Either way the failure becomes a StudentError for that one
check, and the next call starts a fresh worker and loads the submission again.

The judge never waits on student code without a deadline: requests are written without blocking, under the
same deadline as the answer (a worker that stops reading is killed), and an answer longer than
MAX_ANSWER_BYTES is refused from its length header, before a byte of it is read or decoded.
"""
import os
import select
import signal
import time
from pathlib import Path

from autograder.cage import attention_oracle, forkserver, sandbox
from autograder.sandboxed import protocol

# The largest answer any check expects is a PE table of 100 x 512 float64 values (about 0.5 MB as base64).
MAX_ANSWER_BYTES = 8 * 2**20



def _text(value):
    """Student-controlled text made safe to write: a lone surrogate (print("\\udcff")) would make every UTF-8
    writer downstream raise, results.json's included, and with it the whole batch."""
    return str(value).encode("utf-8", "replace").decode("utf-8")


class StudentError(Exception):
    """A check could not get an answer from the student's code. kind: exception, memory, time, crash, protocol."""

    def __init__(self, kind, message):
        super().__init__(message)
        self.kind, self.message = kind, message


class WorkerClient:
    def __init__(self, scratch, load_args, *, limits=None, isolation="auto", require_sandbox=False,
                 load_timeout=60.0, reuse_interpreter=True):
        # reuse_interpreter: fork the worker from this process's fork server (forkserver.py), which imported
        # torch once; else start a new interpreter in `scratch` (also the fallback when the server fails).
        self.reuse_interpreter = reuse_interpreter
        self.scratch = Path(scratch)
        self.load_args = load_args
        self.limits = limits or sandbox.Limits()
        self.isolation, self.require_sandbox = isolation, require_sandbox
        self.load_timeout = load_timeout
        self.trainer = None  # on a GPU, training runs in a worker of its own without the address-space cap
        self.process = None
        self.load_report = None
        self.isolation_used = None
        self.events = []   # (op, kind, message) of every failed call, for the report
        self.output = []   # what the student's code printed, capped by the worker
        self.kernels = []  # (op, its `kind` arg, names) per answer that says fused attention ran (kernel_watch.py)

    # -- lifecycle

    def _start(self):
        if self.reuse_interpreter and sandbox._choose(self.isolation) == "bwrap":
            try:
                self.process = self._fork()
            except forkserver.ForkserverError as error:
                self.events.append(("start", "grader", f"fork server failed, started a worker on its own: {error}"))
                self.process = None
        if self.process is None:
            code_dir = self.scratch / "worker"
            if not code_dir.exists():
                sandbox.install_code(code_dir)
            self.process = sandbox.launch(code_dir / "worker.py", self.scratch, self.limits,
                                          isolation=self.isolation, require=self.require_sandbox)
        self.isolation_used = self.process.sandbox.isolation
        self.load_report = self._request("load", self.load_args, self.load_timeout)

    def _fork(self):
        try:
            return forkserver.shared(self.limits, self.isolation, self.require_sandbox).spawn(self.limits)
        except forkserver.ForkserverError:
            # A server that died since the last submission is replaced, once.
            forkserver.close_shared()
            return forkserver.shared(self.limits, self.isolation, self.require_sandbox).spawn(self.limits)

    def training_client(self):
        """The client that runs training: this one, or on a GPU a second worker without the address-space cap."""
        if not self.limits.gpu:
            return self
        if self.trainer is None:
            self.trainer = WorkerClient(self.scratch / "trainer", self.load_args, limits=self.limits.for_training(),
                                        isolation=self.isolation, require_sandbox=self.require_sandbox,
                                        load_timeout=self.load_timeout, reuse_interpreter=self.reuse_interpreter)
            self.trainer.events, self.trainer.output = self.events, self.output
        return self.trainer

    def close(self):
        if self.trainer is not None:
            self.trainer.close()
        if self.process is None:
            return
        if isinstance(self.process, forkserver.ForkedWorker):
            self.process.kill()
        else:
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
        return self.start(op, timeout, **args)()

    def start(self, op, timeout, answer_limit=MAX_ANSWER_BYTES, **args):
        """Send an operation and return a function that waits for its answer: the judge can do its own work
        (the reference's training) while the worker runs. Nothing else may be sent before that answer. An
        answer longer than answer_limit bytes is refused unread."""
        self.loaded()
        try:
            finish = self._send(op, args, timeout, answer_limit)
        except StudentError as error:
            self.events.append((op, error.kind, error.message))
            raise

        def answer():
            try:
                return finish()
            except StudentError as error:
                self.events.append((op, error.kind, error.message))
                raise

        return answer

    def _request(self, op, args, timeout):
        return self._send(op, args, timeout)()

    def _send(self, op, args, timeout, answer_limit=MAX_ANSWER_BYTES):
        clock = _Budget(self.process.pid, timeout)
        self._write(protocol.frame({"op": op, "args": args}), clock, op)
        return lambda: self._answer(op, clock, answer_limit, args.get("kind"))

    def _write(self, data, clock, op):
        """Write a whole request without ever blocking: a worker that stops reading runs into the deadline."""
        fd = self.process.stdin.fileno()
        os.set_blocking(fd, False)
        view = memoryview(data)
        while view:
            if not select.select([], [fd], [], clock.wait())[1]:
                if clock.spent():
                    self.close()
                    raise StudentError("time", f"time limit: the worker stopped reading its requests (`{op}`, "
                                               f"{clock.limit:g} s)")
                continue
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                raise self._died() from None

    def _answer(self, op, clock, answer_limit=MAX_ANSWER_BYTES, layer=None):
        # A layer operation's attention stand-in asks the judge before the answer comes (attention_oracle); what
        # it asked stays in self.callbacks, the last operation's only. Every read and write has the op's deadline.
        self.callbacks = []
        while True:
            try:
                response = protocol.read_message(lambda n: self._read(n, clock, op), limit=answer_limit)
                if not protocol.is_callback(response):
                    break
                answer, record = attention_oracle.reply(op, response, len(self.callbacks))
                self.callbacks.append(record)
                self._write(protocol.frame(answer), clock, op)
            except EOFError:
                raise self._died() from None
            except protocol.ProtocolError as exc:
                self.close()
                raise StudentError("protocol", f"the worker's answer was unreadable ({exc})") from None
        if not isinstance(response, dict):
            self.close()
            raise StudentError("protocol", "the worker's answer was not a message")
        if response.get("output"):
            self.output.append(_text(response["output"]))
        if isinstance(response.get("kernels"), list) and response["kernels"]:
            self.kernels.append((op, layer, [_text(name)[:100] for name in response["kernels"][:10]]))
        if not isinstance(response, dict) or not response.get("ok"):
            kind = response.get("kind") if response.get("kind") in ("memory", "exception") else "exception"
            raise StudentError(kind, _text(response.get("error", "unknown error"))[:2000])
        return response.get("result")

    def _read(self, n, clock, op):
        while not select.select([self.process.stdout], [], [], clock.wait())[0]:
            if clock.spent():
                self.close()
                raise StudentError("time", f"time limit: `{op}` took longer than {clock.limit:g} s")
        return os.read(self.process.stdout.fileno(), n)

    def _died(self):
        process, self.process = self.process, None
        try:
            code = process.wait(timeout=5)
        except Exception:  # noqa: BLE001 (whatever happened, the worker is gone for us)
            code = None
        self.process = process
        self.close()
        # bwrap, and the shell that unshare runs as pid 1, relay a worker killed by signal N as exit 128 + N.
        # Without this a segfault read "the code ended the grading process (exit code 139)".
        wrapped = getattr(process, "relays_signals", True) and \
            getattr(getattr(process, "sandbox", None), "isolation", "none") != "none"
        if wrapped and code is not None and 128 < code < 128 + signal.NSIG:
            code = 128 - code
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            hint = " (likely the memory limit)" if -code == signal.SIGKILL else ""
            return StudentError("crash", f"the code crashed: killed by {name}{hint}")
        if code is None:
            return StudentError("crash", "the grading process stopped answering (the code killed it, or its parent)")
        return StudentError("crash", f"the code ended the grading process (exit code {code})")


class _Budget:
    """A time limit counted in the worker's CPU seconds, so a busy machine cannot fail a student's check.

    Wall time is only a backstop (WALL_FACTOR times the limit) for code that sleeps or blocks.
    """
    WALL_FACTOR = 4

    def __init__(self, root, limit):
        self.root, self.limit = root, limit
        self.started, self.cpu_at_start = time.monotonic(), _tree_cpu(root)

    def wait(self):
        # Looked at twice a second: a busy loop's CPU time trails wall time a little, so waiting a whole limit
        # between looks let every limit run to twice its length (a 5 s check 10 s, training 180 s).
        return max(0.05, min(0.5, self.limit, self.started + self.limit * self.WALL_FACTOR - time.monotonic()))

    def spent(self):
        wall = time.monotonic() - self.started
        cpu = _tree_cpu(self.root) - self.cpu_at_start
        return wall >= self.limit * self.WALL_FACTOR or (wall >= self.limit and cpu >= self.limit)


def _tree_cpu(root):
    """CPU seconds used by a worker and all its descendants (bwrap starts a new session, so walk the tree)."""
    table = forkserver.process_table()
    return sum(table[pid][2] for pid in forkserver.descendants(root, table) | {root} if pid in table)
