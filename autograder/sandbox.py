"""Launch the worker process that runs untrusted student code.

The worker is ``python -I -B <scratch>/worker.py`` on stdin/stdout pipes, or
the fork server ``zygote.py`` that forks workers (forkserver.py), inside the
strongest cage the host offers (``Launch.isolation``):

bwrap    New mount namespace with only /usr (+ /bin, /lib links), a few /etc
         files, the Python install and the venv read-only, a small private
         /tmp, /proc, /dev, and the scratch dir read-write at its own path
         (so paths the caller computes stay valid). No network; own pid, ipc
         and uts namespaces; dies with its parent. The repository, the master
         notebook, the checks and other submissions are not there at all.
         As root, bwrap runs without a user namespace and setpriv switches to
         the real uid/gid 65534 with no capabilities and no_new_privs, so
         RLIMIT_NPROC bites (the kernel never applies it to uid 0). As an
         ordinary user, bwrap maps the caller to uid 65534 in a user namespace.
unshare  No network, own pid/ipc/uts/mount namespaces, but the host
         filesystem stays visible. As root the worker drops to uid 65534 if
         that user can reach the interpreter and the scratch dir; here Python
         lives under /root (0700), so it stays uid 0 without any capability.
none     Plain child with rlimits (same uid rule as unshare); callers must
         flag it. ``Launch.notes`` spells out what was and was not possible.

All modes set rlimits in preexec_fn (AS, CPU, FSIZE, CORE=0; NPROC only for a
dropped uid, as for anyone else it counts all their processes) and SIGKILL on
parent death. That signal, like bwrap's --die-with-parent, fires when the
launching *thread* exits: launch from a thread that outlives the worker.
RLIMIT_NPROC counts all processes and threads of uid 65534 on the host, so
concurrent workers share it: size max_processes for the whole pool.

Memory: torch 2.13 CPU with one thread imports and trains a small Transformer
in ~605 MB of address space (~240 MB resident) and will not import below
~512 MB. With 16 threads glibc's per-thread arenas push that to ~1.9 GB,
hence one thread and MALLOC_ARENA_MAX=2 by default. The 4 GiB default leaves
over 3 GiB for student tensors; an 8 GB allocation fails with MemoryError.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import resource
import shutil
import signal
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import scratch

NOBODY = 65534
REPO_ROOT = Path(__file__).resolve().parents[1]
SANDBOXED = Path(__file__).resolve().parent / "sandboxed"
ISOLATIONS = ("bwrap", "unshare", "none")
_TMPFS_BYTES = 256 * 2**20
_SHM_BYTES = 64 * 2**20
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf",
              "passwd", "group", "localtime")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PR_SET_PDEATHSIG = 1


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this host."""


@dataclass
class Limits:
    memory_bytes: int = 4 * 2**30
    cpu_seconds: int = 600
    max_processes: int = 64
    max_file_bytes: int = 64 * 2**20
    threads: int = 1
    # The Training check on a GPU: the worker sees /dev/nvidia* and CUDA_VISIBLE_DEVICES, and RLIMIT_AS is
    # lifted, since the CUDA driver reserves far more address space than any cap fit for the CPU path.
    gpu: bool = False


@dataclass
class Launch:
    argv: list[str]
    env: dict[str, str]
    cwd: str
    preexec_fn: Callable | None
    isolation: str  # "bwrap" | "unshare" | "none"
    uid: int | None = None  # host uid the worker ends up with; None = ours
    notes: list[str] = field(default_factory=list)


def isolation_available() -> dict[str, bool]:
    """Which mechanisms actually work here (probed once, by running them)."""
    return dict(_probe_all())


@functools.lru_cache(maxsize=None)
def _probe_all() -> tuple:
    return (("bwrap", _bwrap_style() is not None), ("unshare", _probe_unshare()),
            ("setuid", os.geteuid() == 0))


def _runs(argv: list[str], **kwargs) -> bool:
    try:
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30, **kwargs).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@functools.lru_cache(maxsize=None)
def _bwrap_style() -> str | None:
    """"privileged" (root, real uid switch), "userns" (uid mapped in a user
    namespace) or None; root tries privileged first, since containers without
    CAP_SYS_ADMIN may still allow user namespaces."""
    if not shutil.which("bwrap"):
        return None
    styles = ("privileged", "userns") if os.geteuid() == 0 else ("userns",)
    for style in styles:
        tmp = scratch.make("sandbox-probe-")
        try:
            probe = Path(tmp, "probe.py")
            probe.write_text("import sys\n")
            try:
                spec = _bwrap_launch(probe, Path(tmp), Limits(), sys.executable, style)
            except SandboxUnavailable:
                return None
            hand_over(Path(tmp), spec.uid)
            if _runs(spec.argv, env=spec.env, cwd=spec.cwd):
                return style
        finally:
            scratch.remove(tmp)
    return None


def _probe_unshare() -> bool:
    exe = shutil.which("unshare")
    return bool(exe) and _runs([exe, *_unshare_flags(), "--", "true"])


@functools.lru_cache(maxsize=None)
def _nobody_can_run(python: str) -> bool:
    """Can uid 65534 start this interpreter (e.g. not behind a 0700 /root)?"""
    if os.geteuid() != 0:
        return False
    return _runs([python, "-I", "-c", "import encodings, site"], cwd="/",
                 preexec_fn=_drop_to_nobody)


def _nobody_can_reach(path: Path) -> bool:
    for parent in path.resolve().parents:
        st = parent.stat()
        if not (st.st_mode & stat.S_IXOTH or st.st_uid == NOBODY):
            return False
    return True


@functools.lru_cache(maxsize=None)
def _bwrap_help() -> str:
    try:
        return subprocess.run(["bwrap", "--help"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def worker_command(worker_py: Path, scratch: Path, limits: Limits, *,
                   isolation: str = "auto", python: str = sys.executable) -> Launch:
    """Describe how to start the worker. Also hands ``scratch`` (recursively)
    to the worker's uid when it differs from ours, so it can write there."""
    worker_py, scratch = Path(worker_py).absolute(), Path(scratch).absolute()
    _refuse_repo_exposure(scratch, "scratch directory")
    mode = _choose(isolation)
    if mode == "bwrap":
        launch = _bwrap_launch(worker_py, scratch, limits, python, _bwrap_style())
    else:
        launch = _plain_launch(worker_py, scratch, limits, python, mode)
    hand_over(scratch, launch.uid)
    return launch


def _choose(isolation: str) -> str:
    if isolation not in ("auto", *ISOLATIONS):
        raise ValueError(f"unknown isolation {isolation!r}")
    available = isolation_available()
    if isolation == "auto":
        return next((m for m in ("bwrap", "unshare") if available[m]), "none")
    if isolation != "none" and not available[isolation]:
        raise SandboxUnavailable(f"{isolation} does not work on this host")
    return isolation


def _refuse_repo_exposure(path: Path, what: str) -> None:
    resolved = path.resolve()
    if resolved == REPO_ROOT or resolved in REPO_ROOT.parents:
        raise SandboxUnavailable(f"{what} {resolved} would expose the repository")


def _base_env(scratch: str, tmpdir: str, limits: Limits) -> dict[str, str]:
    threads = str(limits.threads)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": scratch,
        "TMPDIR": tmpdir,
        "USER": "nobody",
        "LOGNAME": "nobody",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        # Ignored under -I, kept for anything the worker itself spawns.
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONIOENCODING": "utf-8",
        "PYTHONHASHSEED": "0",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": os.path.join(scratch, ".matplotlib"),
        "CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES", "0") if limits.gpu else "",
        # Each extra malloc arena reserves 64 MB of address space, which
        # RLIMIT_AS counts; two keep torch's footprint near 600 MB.
        "MALLOC_ARENA_MAX": "2",
    }
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = threads
    return env


def _python_argv(python: str, worker_py: Path) -> list[str]:
    # -I drops PYTHONPATH, the user site and the script's directory from
    # sys.path but keeps the venv's site-packages; -B since -I also ignores
    # PYTHONDONTWRITEBYTECODE.
    return [python, "-I", "-B", str(worker_py)]


def _setpriv(drop: bool) -> list[str]:
    exe = shutil.which("setpriv")
    if not exe:
        return []
    ids = [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"] if drop else []
    # An empty bounding set means even a uid-0 worker execs without caps.
    return [exe, *ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _plain_launch(worker_py: Path, scratch: Path, limits: Limits, python: str,
                  mode: str) -> Launch:
    notes: list[str] = []
    root = os.geteuid() == 0
    drop = root and _nobody_can_run(python) and _nobody_can_reach(scratch) and (
        worker_py.is_relative_to(scratch) or _nobody_can_reach(worker_py))
    if root and not drop:
        notes.append(f"worker runs as root: uid {NOBODY} cannot reach the Python "
                     "installation or the scratch directory")
    if mode == "none":
        notes.append("NO SANDBOX: worker has network and sees the whole filesystem")
    argv = _python_argv(python, worker_py)
    if mode == "unshare":
        wrapper = _setpriv(drop)
        if drop and not wrapper:
            raise SandboxUnavailable("setpriv is needed to drop privileges after unshare")
        # The first process in a new pid namespace ignores default-action
        # signals such as RLIMIT_CPU's SIGXCPU, so a shell (not exec'ing its
        # only command) takes that place and the worker runs as pid 2.
        init = ["/bin/sh", "-c", '"$@"; exit $?', "sandbox-init"]
        argv = [shutil.which("unshare"), *_unshare_flags(), "--", *wrapper, *init, *argv]
        notes.append("unshare: no network, but the host filesystem is visible")
    preexec = _make_preexec(limits, nproc=drop, drop_uid=drop and mode == "none")
    return Launch(argv=argv, env=_base_env(str(scratch), str(scratch), limits),
                  cwd=str(scratch), preexec_fn=preexec, isolation=mode,
                  uid=NOBODY if drop else None, notes=notes)


def _unshare_flags() -> list[str]:
    flags = ["--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    return flags


def _bwrap_launch(worker_py: Path, scratch: Path, limits: Limits, python: str,
                  style: str | None) -> Launch:
    root = style == "privileged"
    notes = [] if root else [f"uid {NOBODY} only inside a user namespace (uid "
                             f"{os.geteuid()} outside), so RLIMIT_NPROC is not set"]
    args = ["bwrap", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    if root:
        # No user namespace: setpriv below drops to the *real* uid 65534.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL"]
        # Just enough for bwrap's own chdir into the 0700 scratch dir of uid
        # 65534 and for setpriv, which then drops every capability.
        args += [a for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP",
                               "CAP_DAC_READ_SEARCH") for a in ("--cap-add", cap)]
    else:
        args += ["--unshare-all", "--unshare-user", "--uid", str(NOBODY),
                 "--gid", str(NOBODY)]
        if "--disable-userns" in _bwrap_help():
            args.append("--disable-userns")
    mounts = _Mounts()
    mounts.ro("/usr")
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            mounts.add("--symlink", os.readlink(link), link)
        elif os.path.isdir(link):
            mounts.ro(link)
    for name in _ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            mounts.ro(f"/etc/{name}")
    mounts.add("--proc", "/proc")
    mounts.add("--dev", "/dev")
    if limits.gpu:
        for device in sorted(glob.glob("/dev/nvidia*")):
            mounts.add("--dev-bind", device, device)
    mounts.add("--perms", "1777", "--size", str(_SHM_BYTES), "--tmpfs", "/dev/shm")
    mounts.add("--perms", "1777", "--size", str(_TMPFS_BYTES), "--tmpfs", "/tmp")
    for path in _python_roots(python):
        _refuse_repo_exposure(Path(path), "Python installation")
        mounts.ro(os.path.realpath(path), path)
    mounts.bind(str(scratch))
    if not worker_py.is_relative_to(scratch):
        mounts.ro(str(worker_py))
    args += mounts.args + ["--chdir", str(scratch), "--"]
    argv = args + (_setpriv(True) if root else []) + _python_argv(python, worker_py)
    if root and not _setpriv(True):
        raise SandboxUnavailable("setpriv is needed to leave uid 0 inside bwrap")
    return Launch(argv=argv, env=_base_env(str(scratch), "/tmp", limits),
                  cwd=str(scratch), preexec_fn=_make_preexec(limits, nproc=root),
                  isolation="bwrap", uid=NOBODY if root else None, notes=notes)


class _Mounts:
    """bwrap arguments, creating missing parent directories world-readable
    (bwrap would make them 0700 root, which uid 65534 cannot traverse)."""

    def __init__(self):
        self.args: list[str] = []
        self.known: set[str] = {"/"}

    def add(self, *args: str) -> None:
        self.args += args
        self.known.add(args[-1])

    def _parents(self, dest: str) -> None:
        for parent in reversed(Path(dest).parents):
            if str(parent) not in self.known:
                self.add("--perms", "0755", "--dir", str(parent))

    def ro(self, src: str, dest: str | None = None) -> None:
        self._parents(dest or src)
        self.add("--ro-bind", src, dest or src)

    def bind(self, path: str) -> None:
        self._parents(path)
        self.add("--bind", path, path)


@functools.lru_cache(maxsize=None)
def _python_roots(python: str) -> tuple[str, ...]:
    """Directories the interpreter needs: its prefixes and site-packages."""
    code = ("import json, site, sys; print(json.dumps([sys.prefix, sys.base_prefix, "
            "sys.exec_prefix, sys.base_exec_prefix, *site.getsitepackages()]))")
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import site
        paths = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                 *site.getsitepackages()]
    else:
        out = subprocess.run([python, "-I", "-c", code], capture_output=True,
                             text=True, timeout=60, check=True)
        paths = json.loads(out.stdout)
    paths += [os.path.dirname(os.path.abspath(python)),
              os.path.dirname(os.path.realpath(python))]
    wanted = set()
    for p in paths:
        if os.path.isdir(p):
            wanted.update({os.path.abspath(p), os.path.realpath(p)})
    # /usr is bound already; nested entries come along with their parent.
    kept = [p for p in sorted(wanted) if not p.startswith("/usr/") and p != "/usr"]
    return tuple(p for p in kept
                 if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in kept))


def _drop_to_nobody() -> None:
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)


@functools.lru_cache(maxsize=None)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _make_preexec(limits: Limits, *, nproc: bool, drop_uid: bool = False) -> Callable:
    libc = _libc()  # loaded now: the forked child should not go looking for it

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if not limits.gpu:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        # SIGXCPU at the soft limit, SIGKILL a little later if it is ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (limits.max_file_bytes, limits.max_file_bytes))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC,
                               (limits.max_processes, limits.max_processes))
        if drop_uid:
            _drop_to_nobody()
        if libc is not None:
            # After the uid change, which would clear it.
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    return preexec


def install_code(dest: Path) -> Path:
    """Copy autograder/sandboxed/ to dest as a whole, read-only and owned by us, never by the sandbox's uid:
    a worker must not be able to change the code the next worker imports."""
    dest = Path(dest)
    shutil.copytree(SANDBOXED, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for entry in dest.iterdir():
        os.chmod(entry, 0o444)
    os.chmod(dest, 0o555)
    return dest


def hand_over(scratch: Path, uid: int | None) -> None:
    """Make the worker's uid own scratch; back to us if an earlier launch
    in the same directory gave it away."""
    uid = os.geteuid() if uid is None else uid
    gid = uid if uid == NOBODY else os.getegid()
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(scratch):
        os.lchown(dirpath, uid, gid)
        for name in filenames + dirnames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def launch(worker_py: Path, scratch: Path, limits: Limits, *, isolation: str = "auto",
           require: bool = False, python: str = sys.executable,
           log_stderr: bool = True, stdin=subprocess.PIPE, stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start the worker; the Launch used is attached as ``proc.sandbox``.

    Its stderr goes to scratch/worker.stderr, capped by RLIMIT_FSIZE (Python
    ignores SIGXFSZ, so overlong writes fail instead of killing it).
    """
    if require and isolation == "none":
        raise SandboxUnavailable("isolation='none' cannot satisfy require=True")
    spec = worker_command(worker_py, scratch, limits, isolation=isolation, python=python)
    if require and spec.isolation not in ("bwrap", "unshare"):
        raise SandboxUnavailable("no network-isolating sandbox (bwrap or unshare) works here")
    stderr = subprocess.DEVNULL
    if log_stderr:
        log = Path(scratch) / "worker.stderr"
        # A previous worker owned this directory and may have left a symlink.
        if log.is_symlink() or log.exists():
            log.unlink()
        stderr = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    try:
        proc = subprocess.Popen(spec.argv, stdin=stdin, stdout=stdout,
                                stderr=stderr, cwd=spec.cwd, env=spec.env,
                                preexec_fn=spec.preexec_fn, start_new_session=True,
                                close_fds=True)
    finally:
        if log_stderr:
            os.close(stderr)
    proc.sandbox = spec
    return proc
