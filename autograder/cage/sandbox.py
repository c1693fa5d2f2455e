"""Launch the process that runs untrusted student code, in a cage that fails closed.

The worker is ``python -I -B <code>/worker.py`` on stdin/stdout pipes, or the fork server ``zygote.py`` that
forks a fresh cage per worker (forkserver.py). ``Launch.isolation`` says which cage:

bwrap    The only mode ``auto`` picks; without it grading is refused (INSTALL_BWRAP says how to get it).
         New mount namespace with only /usr (+ /bin, /lib links), a few /etc files, the Python install, the
         venv and the code folder, all read-only; /tmp an empty read-only tmpfs; the worker's own writable
         /scratch, a tmpfs. Nothing of the host is writable. No network; own pid, ipc and uts namespaces;
         dies with its parent. The repository, the master notebook, the checks and other submissions are
         not there at all. As root, bwrap runs without a user namespace and the worker switches to the real
         uid ``worker_uid()`` (one per grading process) with no capabilities and no_new_privs, so
         RLIMIT_NPROC bites (the kernel never applies it to uid 0). As an ordinary user, bwrap maps the caller
         to uid 65534 in a user namespace. Root never uses that style: uid 65534 there is uid 0 outside.
unshare  Only when named. No network, own pid/ipc/uts/mount namespaces, but the host filesystem stays
         visible. As root the worker drops to worker_uid() if that uid can reach the interpreter and the
         scratch folder; where it cannot (Python under a 0700 /root), the mode is refused.
none     Only when named: a plain child with rlimits, same uid rule; results are flagged.

Every mode refuses to leave student code running as uid 0 (SandboxUnavailable), and sets rlimits in
preexec_fn (AS, CPU, FSIZE, CORE=0; NPROC for a dropped uid) and SIGKILL on parent death. That signal, like
bwrap's --die-with-parent, fires when the launching *thread* exits: launch from a thread that outlives the
worker. A fork server gets no address-space cap itself (it never runs student code); it sets each worker's.

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
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from autograder.cage import scratch

NOBODY = 65534
# As root, each grading process gives its workers a uid of their own (WORKER_UID_BASE + its pid): RLIMIT_NPROC
# counts processes per uid across the host, so with one shared uid a fork bomb in one job would starve the others.
WORKER_UID_BASE = 200000
REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOXED = Path(__file__).resolve().parents[1] / "sandboxed"
ISOLATIONS = ("bwrap", "unshare", "none")
SCRATCH_BYTES = 256 * 2**20
SCRATCH = "/scratch"  # inside bwrap: the worker's own writable folder, a tmpfs; /tmp is read-only
# What a fork server needs to build each worker's namespaces (autograder/sandboxed/zygote.py); it runs no
# student code, and every worker drops all of them.
_SERVER_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SYS_RESOURCE")
INSTALL_BWRAP = "install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap)"
SHM_BYTES = 64 * 2**20
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "nsswitch.conf",
              "passwd", "group", "localtime")
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_PR_SET_PDEATHSIG = 1


class SandboxUnavailable(RuntimeError):
    """The requested isolation cannot be provided on this host."""


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = 4 * 2**30  # RLIMIT_AS; None only for the Training check on a GPU
    cpu_seconds: int = 600
    max_processes: int = 64
    max_file_bytes: int = 64 * 2**20
    threads: int = 1
    # The worker sees /dev/nvidia* and CUDA_VISIBLE_DEVICES. The address-space cap stays on for every check but
    # training (the CUDA driver reserves far more address space than any cap fit for the CPU path), which
    # gets gpu_memory_fraction of the device instead.
    gpu: bool = False
    gpu_memory_fraction: float = 0.5

    def for_training(self) -> "Limits":
        return dataclasses.replace(self, memory_bytes=None) if self.gpu else self

    def as_message(self) -> dict:
        return dataclasses.asdict(self)


def worker_uid() -> int:
    """The host uid this process's workers run as."""
    return WORKER_UID_BASE + os.getpid() if os.geteuid() == 0 else NOBODY


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
    """"privileged" (root: real uid switch) or "userns" (an ordinary user: uid mapped in a user namespace), if
    bwrap works here. Root never uses a user namespace: its uid 65534 there would be uid 0 on the host."""
    if not shutil.which("bwrap"):
        return None
    style = "privileged" if os.geteuid() == 0 else "userns"
    tmp = scratch.make("sandbox-probe-")
    try:
        probe = Path(tmp, "probe.py")
        probe.write_text("import sys\n")
        try:
            spec = _bwrap_launch(probe, Path(tmp), Limits(), sys.executable, style)
        except SandboxUnavailable:
            return None
        return style if _runs(spec.argv, env=spec.env, cwd=spec.cwd) else None
    finally:
        scratch.remove(tmp)


def _probe_unshare() -> bool:
    exe = shutil.which("unshare")
    return bool(exe) and _runs([exe, *_unshare_flags(), "--", "true"])


@functools.lru_cache(maxsize=None)
def _uid_can_run(python: str, uid: int) -> bool:
    """Can `uid` start this interpreter (e.g. not behind a 0700 /root)?"""
    if os.geteuid() != 0:
        return False
    return _runs([python, "-I", "-c", "import encodings, site"], cwd="/",
                 preexec_fn=functools.partial(_drop_to, uid))


def _uid_can_reach(path: Path, uid: int) -> bool:
    for parent in path.resolve().parents:
        st = parent.stat()
        if not (st.st_mode & stat.S_IXOTH or st.st_uid == uid):
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
                   isolation: str = "auto", python: str = sys.executable, server: bool = False) -> Launch:
    """Describe how to start the worker (or, with server=True, a fork server that builds a cage per worker).

    Refuses (SandboxUnavailable) what would leave student code running as uid 0 on the host. In the weaker
    modes the worker's uid is handed ``scratch``, its working folder on the host."""
    worker_py, scratch = Path(worker_py).absolute(), Path(scratch).absolute()
    _refuse_repo_exposure(scratch, "scratch directory")
    mode = _choose(isolation)
    if mode == "bwrap":
        launch = _bwrap_launch(worker_py, scratch, limits, python, _bwrap_style(), server=server)
    elif server:
        raise SandboxUnavailable("a fork server needs bwrap")
    else:
        launch = _plain_launch(worker_py, scratch, limits, python, mode)
        hand_over(scratch, launch.uid)
    if os.geteuid() == 0 and launch.uid is None:
        raise SandboxUnavailable(f"--isolation {mode} would run student code as uid 0 here (no unprivileged uid can "
                                 f"run {python}); {INSTALL_BWRAP}")
    return launch


def resolve_isolation(isolation: str, require: bool = False) -> str:
    """The cage grading will use, or SandboxUnavailable saying why none is acceptable: bwrap for auto, a weaker
    mode only when named (and never one that would run student code as uid 0 or, with require, without a
    network namespace). Checked once, before any grading, so that a refusal costs nobody a row."""
    mode = _choose(isolation)
    if require and mode == "none":
        raise SandboxUnavailable("--require-sandbox, but --isolation none has no sandbox")
    if mode != "bwrap":
        folder = scratch.make("sandbox-check-")
        try:
            os.chmod(folder, 0o755)
            worker_command(folder / "worker.py", folder, Limits(), isolation=mode)
        finally:
            scratch.remove(folder)
    return mode


WEAKER_CAGE = {"unshare": "unshare (no network, but the host's files are visible to student code)",
               "none": "no sandbox at all (student code has the network and the host's files)"}


def _choose(isolation: str) -> str:
    """auto means bwrap: never a silent fall back to a weaker cage. A weaker one must be asked for by name."""
    if isolation not in ("auto", *ISOLATIONS):
        raise ValueError(f"unknown isolation {isolation!r}")
    available = isolation_available()
    if isolation == "auto":
        if not available["bwrap"]:
            raise SandboxUnavailable(f"bwrap does not work here: {INSTALL_BWRAP}, or name a weaker sandbox "
                                     "with --isolation unshare or --isolation none")
        return "bwrap"
    if isolation != "none" and not available[isolation]:
        raise SandboxUnavailable(f"{isolation} does not work on this host"
                                 + (f": {INSTALL_BWRAP}" if isolation == "bwrap" else ""))
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
    if limits.gpu and limits.memory_bytes is None:
        env["AUTOGRADER_GPU_MEMORY_FRACTION"] = str(limits.gpu_memory_fraction)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
        env[var] = threads
    return env


def _python_argv(python: str, worker_py: Path) -> list[str]:
    # -I drops PYTHONPATH, the user site and the script's directory from
    # sys.path but keeps the venv's site-packages; -B since -I also ignores
    # PYTHONDONTWRITEBYTECODE.
    return [python, "-I", "-B", str(worker_py)]


def _setpriv(uid: int | None) -> list[str]:
    exe = shutil.which("setpriv")
    if not exe:
        return []
    ids = [f"--reuid={uid}", f"--regid={uid}", "--clear-groups"] if uid is not None else []
    # An empty bounding set means even a uid-0 worker execs without caps.
    return [exe, *ids, "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]


def _plain_launch(worker_py: Path, scratch: Path, limits: Limits, python: str,
                  mode: str) -> Launch:
    notes: list[str] = []
    root = os.geteuid() == 0
    uid = worker_uid()
    drop = root and _uid_can_run(python, uid) and _uid_can_reach(scratch, uid) and (
        worker_py.is_relative_to(scratch) or _uid_can_reach(worker_py, uid))
    if mode == "none":
        notes.append("NO SANDBOX: worker has network and sees the whole filesystem")
    argv = _python_argv(python, worker_py)
    if mode == "unshare":
        wrapper = _setpriv(uid if drop else None)
        if drop and not wrapper:
            raise SandboxUnavailable("setpriv is needed to drop privileges after unshare")
        # The first process in a new pid namespace ignores default-action
        # signals such as RLIMIT_CPU's SIGXCPU, so a shell (not exec'ing its
        # only command) takes that place and the worker runs as pid 2.
        init = ["/bin/sh", "-c", '"$@"; exit $?', "sandbox-init"]
        argv = [shutil.which("unshare"), *_unshare_flags(), "--", *wrapper, *init, *argv]
        notes.append("unshare: no network, but the host filesystem is visible")
    preexec = _make_preexec(limits, nproc=drop, drop_uid=uid if drop and mode == "none" else None)
    return Launch(argv=argv, env=_base_env(str(scratch), str(scratch), limits),
                  cwd=str(scratch), preexec_fn=preexec, isolation=mode,
                  uid=uid if drop else (None if root else os.geteuid()), notes=notes)


def _unshare_flags() -> list[str]:
    flags = ["--net", "--ipc", "--uts", "--pid", "--fork", "--kill-child", "--mount-proc"]
    if os.geteuid() != 0:
        flags.append("--map-root-user")
    return flags


def _bwrap_launch(worker_py: Path, scratch: Path, limits: Limits, python: str,
                  style: str | None, server: bool = False) -> Launch:
    """Nothing of the host is writable inside: the code folder and Python are read-only binds, /tmp is an empty
    read-only tmpfs, and the worker writes only to /scratch, a tmpfs that goes with its cage. A fork server
    (server=True) keeps the capabilities to build such a cage for each worker it forks."""
    root = style == "privileged"
    uid = worker_uid()
    notes = [] if root else [f"uid {uid} only inside a user namespace (uid {os.geteuid()} outside), so "
                             "RLIMIT_NPROC counts all of that user's processes"]
    args = ["bwrap", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
    caps = [a for cap in _SERVER_CAPS for a in ("--cap-add", cap)] if server else []
    if root:
        # No user namespace: setpriv below drops to the *real* uid, or the server's forks do.
        args += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                 "--unshare-cgroup-try", "--cap-drop", "ALL"]
        args += caps or [a for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP") for a in ("--cap-add", cap)]
    else:
        args += ["--unshare-all", "--unshare-user", "--uid", str(uid), "--gid", str(uid), *caps]
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
    mounts.add("--perms", "1777", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm")
    mounts.add("--perms", "0755", "--tmpfs", "/tmp")
    for path in _python_roots(python):
        _refuse_repo_exposure(Path(path), "Python installation")
        mounts.ro(os.path.realpath(path), path)
    code = worker_py.parent
    # Bound read-only at its host path, with its host mode: the worker's uid must be able to read it.
    os.chmod(code, stat.S_IMODE(code.stat().st_mode) | 0o555)
    mounts.ro(str(code))
    mounts.add("--remount-ro", "/tmp")
    if server:
        mounts.add("--perms", "0755", "--dir", SCRATCH)  # each worker gets its own tmpfs here
    else:
        mounts.add("--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", SCRATCH)
    args += mounts.args + ["--chdir", "/" if server else SCRATCH, "--"]
    wrapper = [] if server or not root else _setpriv(uid)
    if root and not server and not wrapper:
        raise SandboxUnavailable("setpriv is needed to leave uid 0 inside bwrap")
    return Launch(argv=args + wrapper + _python_argv(python, worker_py),
                  env=_base_env(SCRATCH, SCRATCH, limits), cwd="/",
                  preexec_fn=_make_preexec(dataclasses.replace(limits, memory_bytes=None) if server else limits,
                                           nproc=root and not server),
                  isolation="bwrap", uid=uid if root else None, notes=notes)


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


def _drop_to(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


@functools.lru_cache(maxsize=None)
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def _make_preexec(limits: Limits, *, nproc: bool, drop_uid: int | None = None) -> Callable:
    libc = _libc()  # loaded now: the forked child should not go looking for it

    def preexec() -> None:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if limits.memory_bytes is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
        # SIGXCPU at the soft limit, SIGKILL a little later if it is ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_FSIZE,
                           (limits.max_file_bytes, limits.max_file_bytes))
        if nproc:
            resource.setrlimit(resource.RLIMIT_NPROC,
                               (limits.max_processes, limits.max_processes))
        if drop_uid is not None:
            _drop_to(drop_uid)
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
    gid = uid if uid != os.geteuid() else os.getegid()
    if os.geteuid() != 0:
        return
    for dirpath, dirnames, filenames in os.walk(scratch):
        os.lchown(dirpath, uid, gid)
        for name in filenames + dirnames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def launch(worker_py: Path, scratch: Path, limits: Limits, *, isolation: str = "auto",
           require: bool = False, python: str = sys.executable, server: bool = False,
           log_stderr: bool = True, stdin=subprocess.PIPE, stdout=subprocess.PIPE) -> subprocess.Popen:
    """Start the worker; the Launch used is attached as ``proc.sandbox``.

    Its stderr goes to scratch/worker.stderr, capped by RLIMIT_FSIZE (Python
    ignores SIGXFSZ, so overlong writes fail instead of killing it).
    """
    if require and isolation == "none":
        raise SandboxUnavailable("isolation='none' cannot satisfy require=True")
    spec = worker_command(worker_py, scratch, limits, isolation=isolation, python=python, server=server)
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
