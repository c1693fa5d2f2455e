"""The grader's temporary folders, and what happens to them when it is told to stop.

They hold students' notebooks (a submission's work folder, the fork server's folder), so every one is made
here and recorded, and SIGTERM or SIGINT removes them all before the process ends. A handler cannot turn the
signal into an exception and let `finally:` blocks do it: while a submission is graded the judge is inside
pytest, which takes SystemExit or KeyboardInterrupt raised in a check for that check's failure (or for an
interrupted session), so the batch would go on, or write a wrong row. Instead the handler stops everything
below this process, removes the folders itself and ends the process at once with status 128 + the signal.
Rows already written stay (results.json and grades.csv are replaced atomically); the interrupted submission is
graded again on the next run.
"""
import multiprocessing
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

# How long the main process waits for its --jobs pool processes to remove their own folders.
POOL_GRACE_SECONDS = 20.0
STOPPING_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_made = set()


def make(prefix):
    """A new temporary folder under $TMPDIR, removed by remove() or when a stopping signal arrives."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    _made.add(path)
    return path


def remove(path):
    remove_tree(path)
    _made.discard(Path(path))


def remove_tree(path):
    """rmtree that copes with what a sandboxed worker leaves behind: folders made read-only (the sandboxed code
    is installed 0555, a worker can chmod its own folders), files of uid 65534, chains of folders too deep for
    a recursive walk. The tools' tree walk (fts) is not recursive, and as root nothing else is needed."""
    try:
        shutil.rmtree(path)
        return
    except FileNotFoundError:
        return
    except (OSError, RecursionError):
        pass
    for command in (["chmod", "-R", "u+rwx", "--", str(path)], ["rm", "-rf", "--", str(path)]):
        subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)


def stop_on_signals():
    """From now on SIGTERM and SIGINT end this process cleanly (see the module's docstring)."""
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, _stop)


def _stop(signum, _frame):
    for other in STOPPING_SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(other, signal.SIG_IGN)
    # --jobs N: each pool process removes the folders it made itself (same handler), so it goes first.
    pool = multiprocessing.active_children()
    for child in pool:
        child.terminate()
    for child in pool:
        child.join(POOL_GRACE_SECONDS)
    # Then nothing below this process (fork server, workers) may write into a folder while it is removed.
    _kill_descendants()
    for path in sorted(_made):
        remove_tree(path)
    os._exit(128 + signum)


def _kill_descendants():
    from autograder.cage.forkserver import kill_below  # not at import time: forkserver makes its folder with make()

    kill_below(os.getpid(), rounds=5)
