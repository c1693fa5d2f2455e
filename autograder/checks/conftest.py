"""Fixtures every hidden check uses; the grading pipeline supplies their context through pytest's config.

- student: runs a harness operation on the student's classes in the sandboxed worker. When the code
  raises, hangs, crashes or runs out of memory, the check fails with what happened, in plain words.
- reference: runs the same operation on the master notebook's classes, in this process.
- settings: the device and the training configuration of this grading run.
"""
import time

import pytest

from autograder.assignment import classes_needed
from autograder.cage.client import StudentError

PREFIX = {"time": "", "memory": "", "crash": "", "protocol": "", "exception": "your code raised an error:\n"}


class Student:
    def __init__(self, client, timeout, budget):
        self.client, self.timeout = client, timeout
        self.deadline = time.monotonic() + budget
        self.load_failure = None

    def run(self, op, *, timeout=None, **args):
        return self.start(op, timeout=timeout, **args)()

    def start(self, op, *, timeout=None, **args):
        """run(), in two halves: send now, and return a function that waits for the answer."""
        needed = classes_needed(op, args.get("kind"))
        # A load past its time limit (a class body that sleeps runs into the wall-time backstop, 4 x 60 s) is not
        # tried again: every one of the 23 checks would wait that long again, far past the submission's budget.
        if self.load_failure is not None:
            pytest.fail(f"the submission could not be loaded: {self.load_failure}", pytrace=False)
        try:
            report = self.client.loaded()
        except StudentError as error:
            if error.kind == "time":
                self.load_failure = error.message
            pytest.fail(f"the submission could not be loaded: {error.message}", pytrace=False)
        for name in needed:
            if not report["defined"].get(name):
                load_errors = [e["error"] for e in report["errors"] if e["label"].endswith(f": {name}")]
                detail = f": {load_errors[0]}" if load_errors else ""
                pytest.fail(f"class {name} is not defined in the notebook{detail}", pytrace=False)
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail("time limit: the submission used up its total grading time", pytrace=False)
        try:
            # On a GPU, training gets a worker of its own, without the address-space cap the checks keep.
            client = self.client.training_client() if op == "train" else self.client
            answer = client.start(op, min(timeout or self.timeout, remaining), **args)
        except StudentError as error:
            pytest.fail(PREFIX[error.kind] + error.message, pytrace=False)

        def result():
            try:
                return answer()
            except StudentError as error:
                pytest.fail(PREFIX[error.kind] + error.message, pytrace=False)

        return result


@pytest.fixture(scope="session")
def grading(request):
    return request.config.grading


@pytest.fixture(scope="session")
def student(grading):
    return Student(grading.client, grading.settings.check_timeout, grading.settings.submission_budget)


@pytest.fixture(scope="session")
def reference(grading):
    return grading.reference


@pytest.fixture(scope="session")
def settings(grading):
    return grading.settings
