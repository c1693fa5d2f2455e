"""The worker sandbox, exercised for real with a probe script as the worker.

One probe per isolation mode runs concurrently (importing torch dominates
the cost) and reports what it could and could not do; the tests below read
those reports. bwrap-only tests skip when bubblewrap is missing.

The weaker modes (unshare, none) never run student code as uid 0: as root they
need an interpreter that an unprivileged uid can run. The venv's python lives
under /root here, so they run the system python, /usr/bin/python3.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from autograder.cage import sandbox
from autograder.cage.sandbox import Limits, SandboxUnavailable, isolation_available, launch
from autograder.intake.unpack import NOTEBOOK_NAME

AVAILABLE = isolation_available()
needs_bwrap = pytest.mark.skipif(
    not AVAILABLE["bwrap"],
    reason="bubblewrap (bwrap) is not installed or cannot create namespaces here "
           "(apt-get install -y bubblewrap)")

PROBE = r'''
import json, os, socket, sys

cfg = json.loads(sys.stdin.readline())
report = {}


def attempt(fn):
    try:
        fn()
        return "ok"
    except BaseException as exc:
        return type(exc).__name__


def connect():
    with socket.create_connection(("127.0.0.1", cfg["port"]), timeout=3):
        pass


def walk():
    found = []
    skip = set(cfg["prune"])
    for root, dirs, files in os.walk("/"):
        dirs[:] = [d for d in dirs if os.path.join(root, d) not in skip]
        found += [os.path.join(root, f) for f in files if f == cfg["needle"]]
    return found


status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
report["uid"], report["euid"], report["gid"] = os.getuid(), os.geteuid(), os.getgid()
report["cap_eff"] = int(status["CapEff"].strip(), 16)
report["connect"] = attempt(connect)
report["resolve"] = attempt(lambda: socket.getaddrinfo("example.com", 80))
report["write_scratch"] = attempt(lambda: open("written.txt", "w").write("x"))
report["alloc_8g"] = attempt(lambda: bytearray(8 * 2**30))
report["alloc_256m"] = attempt(lambda: bytearray(256 * 2**20))
report["pythonpath"] = os.environ.get("PYTHONPATH")
report["sys_path"] = sys.path
if cfg["walk"]:
    # Opening for writing without writing anything: harmless where it works.
    report["open_venv_rw"] = attempt(lambda: os.close(os.open(cfg["venv_file"], os.O_WRONLY)))
    report["found"] = walk()
    report["exists"] = [p for p in cfg["secrets"] if os.path.exists(p)]
    report["mounts"] = {line.split()[4]: line.split()[5].split(",")[0]
                        for line in open("/proc/self/mountinfo")}
if cfg["torch"]:
    import torch
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 32)
    x = torch.randn(8, 32)
    loss = (layer(x) @ torch.randn(32, 32)).pow(2).mean()
    loss.backward()
    report["torch"] = bool(torch.isfinite(loss)) and layer.weight.grad is not None
    report["threads"] = torch.get_num_threads()
print(json.dumps(report), flush=True)
'''

# A Python that an unprivileged uid can start, for the weaker modes (see the docstring).
SYSTEM_PYTHON = "/usr/bin/python3"
WEAK_PYTHON = SYSTEM_PYTHON if os.geteuid() == 0 else sys.executable
WEAK_MODES = [m for m in ("unshare", "none") if (m == "none" or AVAILABLE[m]) and os.access(WEAK_PYTHON, os.X_OK)]
MODES = ["bwrap"] * AVAILABLE["bwrap"] + WEAK_MODES


def python_for(mode: str) -> str:
    return sys.executable if mode == "bwrap" else WEAK_PYTHON


def reachable_dir(prefix: str) -> Path:
    """A folder an unprivileged uid can reach: pytest's own sit under a 0700 directory."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    base.chmod(0o755)
    return base
# Importing torch dominates the cost, and rlimits are the same in every mode,
# so only the strongest mode (the one grading will use) proves torch runs.
TORCH_MODE = MODES[0]


def run_probe(tmp: Path, mode: str, port: int, secrets: list[str]) -> dict:
    scratch = reachable_dir(f"scratch-{mode}-")
    worker = scratch / "worker.py"
    worker.write_text(PROBE)
    proc = launch(worker, scratch, Limits(), isolation=mode, python=python_for(mode))
    cfg = {"port": port, "needle": NOTEBOOK_NAME, "walk": mode == "bwrap",
           "torch": mode == TORCH_MODE,
           "secrets": secrets, "venv_file": str(Path(sys.prefix) / "pyvenv.cfg"),
           "prune": ["/proc", "/sys", "/dev", "/usr", *sandbox._python_roots(sys.executable)]}
    proc.stdin.write((json.dumps(cfg) + "\n").encode())
    proc.stdin.flush()
    return {"proc": proc, "scratch": scratch}


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sandbox")
    decoy = tmp / "elsewhere" / NOTEBOOK_NAME
    decoy.parent.mkdir()
    decoy.write_text("{}")
    repo = sandbox.REPO_ROOT
    secrets = [str(decoy), str(repo / "source"), str(repo / "autograder"),
               str(repo / "tests"), "/work/main/source", "/work/main/autograder"]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    running = {m: run_probe(tmp, m, listener.getsockname()[1], secrets) for m in MODES}
    results = {}
    for mode, item in running.items():
        out, _ = item["proc"].communicate(timeout=180)
        log = (item["scratch"] / "worker.stderr").read_text()
        assert item["proc"].returncode == 0, f"{mode} probe failed:\n{log}"
        results[mode] = json.loads(out) | {"scratch": item["scratch"],
                                           "launch": item["proc"].sandbox}
    listener.close()
    yield results
    for item in running.values():
        shutil.rmtree(item["scratch"], ignore_errors=True)


def test_torch_runs_under_the_default_limits(reports):
    r = reports[TORCH_MODE]
    assert r["torch"] is True
    assert r["threads"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_scratch_is_writable_and_no_repo_on_sys_path(reports, mode):
    r = reports[mode]
    assert r["write_scratch"] == "ok"
    # In bwrap the worker writes to its own tmpfs, which goes with the cage: nothing reaches the host.
    assert (r["scratch"] / "written.txt").exists() == (mode != "bwrap")
    assert r["pythonpath"] is None
    assert not any(str(sandbox.REPO_ROOT) == p for p in r["sys_path"])


@pytest.mark.parametrize("mode", MODES)
def test_memory_limit(reports, mode):
    assert reports[mode]["alloc_8g"] == "MemoryError"
    assert reports[mode]["alloc_256m"] == "ok"
    # The parent is untouched and can still allocate.
    assert len(bytearray(64 * 2**20)) == 64 * 2**20


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_no_network(reports, mode):
    assert reports[mode]["connect"] != "ok"
    assert reports[mode]["resolve"] != "ok"


def test_none_mode_is_really_unsandboxed(reports):
    # The control: the same probe reaches the host listener without a sandbox,
    # so the failures above are the sandbox's doing.
    assert reports["none"]["connect"] == "ok"
    assert reports["none"]["launch"].isolation == "none"
    assert any("NO SANDBOX" in n for n in reports["none"]["launch"].notes)


@needs_bwrap
def test_bwrap_hides_the_repository(reports):
    r = reports["bwrap"]
    assert r["found"] == []
    assert r["exists"] == []
    repo = str(sandbox.REPO_ROOT)
    venv = os.path.realpath(sys.prefix)
    exposed = [m for m in r["mounts"] if m == repo or m.startswith(repo + "/")]
    assert all(m == venv or m.startswith(venv + "/") for m in exposed), exposed


@needs_bwrap
def test_bwrap_runs_unprivileged_and_read_only(reports):
    r = reports["bwrap"]
    uid = sandbox.worker_uid()
    assert r["uid"] == r["euid"] == uid != 0 and r["gid"] == uid
    assert r["cap_eff"] == 0
    assert r["open_venv_rw"] != "ok"
    venv = os.path.realpath(sys.prefix)
    assert r["mounts"][venv] == "ro" and r["mounts"]["/usr"] == "ro"
    # The code folder (here the probe's) and /tmp are read-only; the only writable place is the cage's own tmpfs.
    assert r["mounts"][str(r["scratch"])] == "ro" and r["mounts"]["/tmp"] == "ro"
    assert r["mounts"][sandbox.SCRATCH] == "rw"
    if sandbox._bwrap_style() == "privileged":  # a real uid change: NPROC applies
        assert reports["bwrap"]["launch"].uid == uid


# -- rlimits and process control, with tiny probes (no torch) --------------

def start(tmp_path, code: str, mode: str, **limits) -> tuple:
    scratch = tmp_path / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    if mode != "bwrap":
        for folder in (scratch, *scratch.parents):
            if folder == Path("/tmp"):
                break
            folder.chmod(0o755)
    worker = scratch / "worker.py"
    worker.write_text(code)
    return launch(worker, scratch, Limits(**limits), isolation=mode, python=python_for(mode)), scratch


@pytest.mark.parametrize("mode", MODES)
def test_file_size_limit(tmp_path, mode):
    # Python ignores SIGXFSZ, so the write fails with EFBIG instead of killing.
    code = ("import errno\ntry:\n    open('big.bin', 'wb').write(bytes(2 * 2**20))\n"
            "    print('wrote')\nexcept OSError as exc:\n"
            "    print(errno.errorcode[exc.errno])\n")
    proc, scratch = start(tmp_path, code, mode, max_file_bytes=2**20)
    out, _ = proc.communicate(timeout=60)
    assert out == b"EFBIG\n"
    if mode != "bwrap":
        assert (scratch / "big.bin").stat().st_size <= 2**20


def test_cpu_limit_kills_a_busy_loop(tmp_path):
    procs = {m: start(tmp_path / m, "while True:\n    pass\n", m, cpu_seconds=1)[0]
             for m in MODES}
    started = time.monotonic()
    for mode, proc in procs.items():
        proc.wait(timeout=30)
        assert proc.returncode != 0, mode
    # Well before the SIGKILL backstop (hard limit + 5 s of CPU).
    assert time.monotonic() - started < 15
    if "none" in procs:
        assert procs["none"].returncode == -signal.SIGXCPU


@pytest.mark.skipif(sandbox._bwrap_style() != "privileged",
                    reason="RLIMIT_NPROC is only set when bwrap runs as root and drops the uid")
def test_process_limit_stops_a_fork_bomb(tmp_path):
    code = ("import os\nkids = 0\ntry:\n    for _ in range(200):\n        if os.fork() == 0:\n"
            "            os.execv('/bin/sleep', ['sleep', '5'])\n        kids += 1\n"
            "except OSError:\n    print('stopped', kids, flush=True)\n")
    proc, _ = start(tmp_path, code, "bwrap", max_processes=20)
    out, _ = proc.communicate(timeout=30)
    assert out.startswith(b"stopped"), out
    assert int(out.split()[1]) < 20
    proc.wait(timeout=10)  # the pid namespace took the sleeping children along


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_killing_the_group_kills_escaped_grandchildren(tmp_path, mode):
    token = f"sandbox-test-{os.getpid()}-{mode}"
    code = ("import subprocess, sys\n"
            f"subprocess.Popen(['/bin/sh', '-c', 'sleep 60; :', '{token}'],\n"
            "                 start_new_session=True)\n"
            "print('ready', flush=True)\nsys.stdin.read()\n")
    proc, _ = start(tmp_path, code, mode)
    assert proc.stdout.readline() == b"ready\n"
    # Polled: on a loaded machine /proc can show the grandchild a moment after the worker says ready.
    deadline = time.monotonic() + 10
    while not _pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _pids_with(token), "grandchild did not start"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _pids_with(token) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pids_with(token)


def _pids_with(token: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and token.encode() in Path("/proc", entry, "cmdline").read_bytes():
                pids.append(int(entry))
        except OSError:
            pass
    return pids


NET_PROBE = (
    "import os, socket, sys\n"
    "port = int(sys.stdin.readline())\n"
    "try:\n"
    "    socket.create_connection(('127.0.0.1', port), timeout=3).close()\n"
    "    net = 'reached'\n"
    "except OSError:\n"
    "    net = 'isolated'\n"
    "open('mine.txt', 'w').write('x')\n"
    "print(os.getuid(), net, ','.join(sorted(os.listdir('/'))), flush=True)\n")


def expected_root_listing(scratch: Path, python: str = sys.executable) -> str:
    """What / may hold inside bwrap: the system directories, plus the first
    component of every path the sandbox binds (they depend on where the
    checkout and its interpreter live, so CI differs from a laptop)."""
    tops = {"dev", "etc", "proc", "tmp", "usr", sandbox.SCRATCH.strip("/")}
    tops |= {link.lstrip("/") for link in sandbox._SYSTEM_LINKS if os.path.lexists(link)}
    for path in (*sandbox._python_roots(python), str(scratch)):
        tops.add(Path(path).parts[1])
    return ",".join(sorted(tops))


def talk(proc, port: int) -> list[str]:
    out, _ = proc.communicate(f"{port}\n".encode(), timeout=60)
    return out.decode().split()


@pytest.fixture
def host_listener():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.skipif(os.geteuid() != 0 or not AVAILABLE["bwrap"], reason="needs root and bubblewrap")
def test_root_never_uses_the_user_namespace_style(tmp_path, monkeypatch):
    # Inside a user namespace created by root, the worker's uid 65534 is uid 0 on the host: it would own every
    # root-owned file it can reach. Refused, not used as a fallback.
    assert sandbox._bwrap_style() == "privileged"
    monkeypatch.setattr(sandbox, "_bwrap_style", lambda: "userns")
    with pytest.raises(SandboxUnavailable, match="uid 0"):
        start(tmp_path, NET_PROBE, "bwrap")


@needs_bwrap
def test_bwrap_worker_sees_only_what_it_needs(tmp_path, host_listener):
    proc, scratch = start(tmp_path, NET_PROBE, "bwrap")
    assert talk(proc, host_listener) == [str(sandbox.worker_uid()), "isolated", expected_root_listing(scratch)], \
        (scratch / "worker.stderr").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="as an ordinary user the worker runs as that user, never uid 0")
@pytest.mark.parametrize("mode", ["unshare", "none"])
def test_weaker_modes_refuse_to_run_student_code_as_root(tmp_path, mode):
    if mode == "unshare" and not AVAILABLE["unshare"]:
        pytest.skip("unshare does not work here")
    scratch = reachable_dir("sandbox-root-")
    try:
        (scratch / "worker.py").write_text("print('ran')\n")
        # The venv's python lives under /root (0700): no unprivileged uid can start it, so the worker would be root.
        if not sandbox._uid_can_run(sys.executable, sandbox.worker_uid()):
            with pytest.raises(SandboxUnavailable, match="uid 0"):
                launch(scratch / "worker.py", scratch, Limits(), isolation=mode)
        if os.access(SYSTEM_PYTHON, os.X_OK):
            proc = launch(scratch / "worker.py", scratch, Limits(), isolation=mode, python=SYSTEM_PYTHON)
            assert proc.communicate(timeout=60)[0] == b"ran\n"
            assert proc.sandbox.uid == sandbox.worker_uid() != 0
    finally:
        shutil.rmtree(scratch)


# -- the command itself -----------------------------------------------------

@needs_bwrap
def test_launch_description(tmp_path):
    scratch = tmp_path / "s"
    scratch.mkdir()
    spec = sandbox.worker_command(scratch / "worker.py", scratch, Limits(threads=3))
    assert spec.isolation == "bwrap"
    assert "-I" in spec.argv and spec.argv[-1] == str(scratch / "worker.py")
    assert spec.env["HOME"] == sandbox.SCRATCH and spec.env["OMP_NUM_THREADS"] == "3"
    assert "PYTHONPATH" not in spec.env and callable(spec.preexec_fn)
    if AVAILABLE["bwrap"]:
        assert spec.isolation == "bwrap"
        joined = " ".join(spec.argv)
        assert "--unshare-net" in joined or "--unshare-all" in joined
        binds = [spec.argv[i + 1] for i, a in enumerate(spec.argv) if a.endswith("bind")]
        repo, venv = str(sandbox.REPO_ROOT), os.path.realpath(sys.prefix)
        # Of the repository, at most the virtualenv living inside it.
        assert [b for b in binds if b.startswith(repo)] == (
            [venv] if venv.startswith(repo + "/") else [])


def test_require_refuses_without_a_network_sandbox(tmp_path, monkeypatch):
    scratch = tmp_path / "s"
    scratch.mkdir()
    with pytest.raises(SandboxUnavailable):
        launch(scratch / "worker.py", scratch, Limits(), isolation="none", require=True)
    monkeypatch.setattr(sandbox, "isolation_available",
                        lambda: {"bwrap": False, "unshare": False, "setuid": False})
    with pytest.raises(SandboxUnavailable):
        launch(scratch / "worker.py", scratch, Limits(), require=True)
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        sandbox.worker_command(scratch / "worker.py", scratch, Limits(), isolation="bwrap")
    # auto never falls back to a weaker cage: without bwrap it refuses, and says how to get it.
    with pytest.raises(SandboxUnavailable, match="apt-get install -y bubblewrap"):
        sandbox.worker_command(scratch / "worker.py", scratch, Limits())


def test_scratch_must_not_expose_the_repository():
    with pytest.raises(SandboxUnavailable):
        sandbox.worker_command(sandbox.REPO_ROOT / "w.py", sandbox.REPO_ROOT, Limits())


def test_planted_stderr_symlink_is_not_followed(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    mode = MODES[0]
    proc, scratch = start(tmp_path, "import sys\nsys.stderr.write('noise')\n", mode)
    proc.wait(timeout=30)
    (scratch / "worker.stderr").unlink()
    (scratch / "worker.stderr").symlink_to(victim)
    proc, _ = start(tmp_path, "import sys\nsys.stderr.write('noise')\n", mode)
    proc.wait(timeout=30)
    assert victim.read_text() == "keep"
    assert (scratch / "worker.stderr").read_text() == "noise"
