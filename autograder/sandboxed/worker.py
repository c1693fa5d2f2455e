"""The worker: the only process that runs a student's code.

It is forked by the fork server (zygote.py) inside the sandbox, or started on its own with this file,
protocol.py and harness.py copied into its scratch directory. It reads requests on one pipe and answers
on another (stdin and stdout when started on its own), with descriptors 0, 1 and 2 pointed at /dev/null,
so student prints cannot corrupt the protocol; Python-level prints are kept (capped) and returned for
the TA's log. It decides nothing: the judge compares.
"""
import io
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import harness  # noqa: E402
import kernel_watch  # noqa: E402
import protocol  # noqa: E402

STDOUT_CAP = 16 * 1024
# Operations run without the kernel watch: loading defines classes, and training is too long to watch
# cheaply (the static audit is the only line there).
UNWATCHED = ("load", "train")


class CappedText(io.TextIOBase):
    """Keeps the first STDOUT_CAP characters of what student code prints and counts the rest."""

    def __init__(self):
        self.kept, self.dropped = [], 0
        self.size = 0

    def writable(self):
        return True

    def write(self, text):
        text = str(text)
        room = STDOUT_CAP - self.size
        if room > 0:
            self.kept.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def take(self):
        text = "".join(self.kept)
        if self.dropped:
            text += f"\n[... {self.dropped} more characters of output dropped]"
        self.kept, self.dropped, self.size = [], 0, 0
        return text


def serve(requests, responses):
    """Answer requests until the judge closes the pipe. Descriptors 0, 1 and 2 become /dev/null first."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    captured = CappedText()
    sys.stdout = sys.stderr = captured

    def ask_judge(request):
        return protocol.ask(requests, responses, "attention", request)

    namespaces = None
    while True:
        try:
            request = protocol.read_message(requests.read)
        except (EOFError, protocol.ProtocolError):
            return
        watch = kernel_watch.Watch()
        try:
            if request["op"] == "load":
                namespaces, result = harness.load_namespaces(**request["args"], ask=ask_judge)
            else:
                if namespaces is None:
                    raise RuntimeError("no submission loaded")
                if request["op"] in UNWATCHED:
                    result = harness.run(namespaces, request["op"], request["args"])
                else:
                    with watch:
                        result = harness.run(namespaces, request["op"], request["args"])
            response = {"ok": True, "result": result}
        except MemoryError:
            response = {"ok": False, "kind": "memory", "error": "memory limit: the code ran out of memory"}
        except BaseException as exc:  # SystemExit and KeyboardInterrupt from student code included
            message = harness.describe_exception(exc)
            out_of_memory = "can't allocate memory" in message or "out of memory" in message.lower()
            response = {"ok": False, "kind": "memory" if out_of_memory else "exception",
                        "error": ("memory limit: " if out_of_memory else "") + message}
        response["output"] = captured.take()
        response["kernels"] = watch.report()
        try:
            protocol.write_message(responses, response)
        except (TypeError, ValueError) as exc:  # a result that cannot be encoded is the student's problem
            protocol.write_message(responses, {"ok": False, "kind": "exception", "error": f"unencodable result: {exc}"})


def main():
    serve(os.fdopen(os.dup(0), "rb", buffering=0), os.fdopen(os.dup(1), "wb"))


if __name__ == "__main__":
    main()
