"""The fork server: imports torch once, then forks each worker into a cage of its own.

A new Python that imports torch costs seconds of CPU; a fork of one that already has costs milliseconds.
The judge (autograder/cage/forkserver.py) starts this file inside bwrap with just enough capabilities to build
namespaces (it never runs student code itself), and a Unix SOCK_SEQPACKET socket as stdin. Each "fork"
request carries the two pipe ends of a new worker and its limits. For each worker:

    server ──fork──▶ keeper      unshare(mount, ipc, pid, uts); fresh tmpfs on /scratch and /dev/shm
                        └─fork─▶ init        pid 1 of the new pid namespace: mounts its /proc, drops every
                                   │         privilege, waits for the worker, exits with its status
                                   └─fork─▶ worker   drops every privilege, sets its limits, runs student code

Isolation is by construction, not by cleanup: whatever a worker writes (files, folders, permissions, SysV or
POSIX IPC objects) lives in namespaces and file systems that belong to it alone, and whatever it starts lives
in its pid namespace. When the worker ends, its init exits, the kernel kills everything left in that pid
namespace, and the last process gone takes the mounts and IPC objects with it: no file tree a student builds
can make that fail. /tmp and the code folder are read-only for every worker.
"""
import ctypes
import json
import os
import resource
import signal
import socket
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import worker  # noqa: E402 (imports harness, and with it torch)

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWPID = 0x20000, 0x04000000, 0x08000000, 0x20000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 1 << 18
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 4, 24, 38
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
SCRATCH = "/scratch"
_libc = ctypes.CDLL(None, use_errno=True)
_statuses = {}


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result, what):
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    _check(_libc.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                       flags, data.encode() if data else None), f"mount {target}")


def _prctl(*args):
    return _libc.prctl(*[ctypes.c_ulong(a) for a in args])


def drop_privileges(uid):
    """Become `uid` with no capabilities in any set, and unable to gain any (no_new_privs)."""
    for cap in range(64):
        if _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:
            break  # EINVAL: past the last capability this kernel knows
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    # Leaving uid 0 clears the capability sets; under a user namespace the uid may not change, so clear them here.
    header, data = _CapHeader(0x20080522, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _set_limits(limits):
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limits.get("memory_bytes"):
        resource.setrlimit(resource.RLIMIT_AS, (limits["memory_bytes"], limits["memory_bytes"]))
    else:
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    resource.setrlimit(resource.RLIMIT_CPU, (limits["cpu_seconds"], limits["cpu_seconds"] + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_bytes"], limits["max_file_bytes"]))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits["max_processes"], limits["max_processes"]))


def _exit_status(status):
    """A child's wait status as an exit code a parent can pass on: 128 + N for a death by signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _init(worker_pid):
    """pid 1 of the worker's namespace: reap everything, and leave with the worker's status when it ends."""
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(70)
        if pid == worker_pid:
            os._exit(_exit_status(status))


def _run_worker(fds, request):
    """The worker itself: its own session, its limits, no privileges, then the student's code."""
    os.setsid()
    os.chdir(SCRATCH)
    os.environ.update(HOME=SCRATCH, TMPDIR=SCRATCH, MPLCONFIGDIR=os.path.join(SCRATCH, ".matplotlib"))
    limits = request["limits"]
    if limits.get("gpu") and not limits.get("memory_bytes"):
        os.environ["AUTOGRADER_GPU_MEMORY_FRACTION"] = str(limits["gpu_memory_fraction"])
    _set_limits(limits)
    drop_privileges(request["uid"])
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)  # after the uid change, which clears it
    requests, responses = fds
    worker.serve(os.fdopen(requests, "rb", buffering=0), os.fdopen(responses, "wb"))


def _enter_namespaces(request):
    _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWUTS), "unshare")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    uid = request["uid"]
    _mount("tmpfs", SCRATCH, "tmpfs", MS_NOSUID | MS_NODEV,
           f"size={request['scratch_bytes']},mode=0700,uid={uid},gid={uid}")
    _mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, f"size={request['shm_bytes']},mode=1777")


def _can_build_cages():
    """Whether this server may unshare and mount (the capabilities bwrap gave it): tried once, in a fork."""
    probe = os.fork()
    if probe == 0:
        try:
            _enter_namespaces({"uid": os.getuid(), "scratch_bytes": 2**20, "shm_bytes": 2**20})
            os._exit(0)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(probe, 0)
    return status == 0


def _keeper(control, fds, request):
    """Runs in the fork of the server: builds the worker's namespaces and waits for their init."""
    control.close()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _enter_namespaces(request)
    uid = request["uid"]
    init = os.fork()
    if init == 0:
        try:
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            child = os.fork()
            if child == 0:
                try:
                    _run_worker(fds, request)
                    os._exit(0)
                except BaseException:  # noqa: BLE001 (before or after student code: the worker is done)
                    traceback.print_exc()
                    os._exit(70)
            for fd in fds:
                os.close(fd)
            drop_privileges(uid)
            _init(child)
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        os._exit(70)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(init, 0)
    os._exit(_exit_status(status))


def _reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _statuses[pid] = os.waitstatus_to_exitcode(status)


def _exit_code(pid, grace=2.0):
    """The keeper's exit code (the worker's, passed on); None if it is not ours."""
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


def main():
    control = socket.socket(fileno=os.dup(0))
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    _prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if not _can_build_cages():
        control.sendall(json.dumps({"ready": False, "error": "the fork server cannot create namespaces"}).encode())
        return
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
            _reap()
            pid = os.fork()
            if pid == 0:
                try:
                    _keeper(control, fds, request)
                except BaseException:  # noqa: BLE001 (before any student code: the server's log says why)
                    traceback.print_exc()
                os._exit(70)
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
