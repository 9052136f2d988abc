"""``loadlab doctor``: can this machine profile? Each check says what it found and, if it failed,
what to do about it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from loadlab.processes import LOOPBACK, free_port, pyspy_binary
from loadlab.recording import can_split

# py-spy 0.4 reads the interpreter's memory layout; it supports CPython up to this version.
PYSPY_MAX_PYTHON = (3, 13)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _pyspy_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    return out.stdout.strip() or out.stderr.strip()


def run_checks() -> Iterator[Check]:
    binary = pyspy_binary()
    yield Check(
        "py-spy installed",
        binary is not None,
        _pyspy_version(binary) if binary else "not found next to this Python or on PATH",
        "pip install 'py-spy>=0.4.2' (make installs it into .venv)",
    )
    py = sys.version_info[:2]
    yield Check(
        "Python supported by py-spy",
        py <= PYSPY_MAX_PYTHON,
        f"Python {py[0]}.{py[1]}",
        f"use Python {PYSPY_MAX_PYTHON[0]}.{PYSPY_MAX_PYTHON[1]} or older, or profile with --no-profile",
    )
    scope_file = Path("/proc/sys/kernel/yama/ptrace_scope")
    if scope_file.exists():
        scope = scope_file.read_text().strip()
        yield Check(
            "ptrace_scope",
            scope in ("0", "1"),
            f"kernel.yama.ptrace_scope = {scope} (`loadlab profile` starts the app under py-spy: 0 and 1 allow "
            "it; `loadlab ui` attaches py-spy to the running app: 0 allows it, 1 too as loadlab's launcher opts "
            "in with PR_SET_PTRACER, 2 only as root)",
            "sudo sysctl kernel.yama.ptrace_scope=1",
        )
    else:
        yield Check("ptrace_scope", True, "no Yama LSM: ptrace is governed by capabilities only")
    yield _attach_check(binary)
    yield _attach_pid_check(binary)
    yield Check(
        "how one uvicorn process is recorded",
        True,
        "the loop by the app's own sampler at --rate, the rest of the server's process by py-spy at a fifth "
        "without pausing it, each child process by a recorder of its own, non-pausing, at a tenth (attaching "
        "by PID is allowed; --loop-by-pyspy: py-spy pauses the server's process at --rate)"
        if can_split()
        else "by one pausing py-spy with --subprocesses at the full rate, as attaching by PID is not allowed here: "
        "profiling then costs 15-25% of the throughput (run as root or with ptrace_scope 0 for the cheaper way)",
    )
    try:
        port = free_port(LOOPBACK)
        yield Check("free port on 127.0.0.1", True, f"e.g. {port}")
    except OSError as exc:
        yield Check("free port on 127.0.0.1", False, str(exc), "free a port or check the loopback interface")


def _attach_check(binary: str | None) -> Check:
    name = "py-spy can sample a child process"
    if binary is None:
        return Check(name, False, "py-spy missing", "install py-spy first")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        cmd = [binary, "record", "--rate", "50", "--duration", "1", "--format", "raw", "--output", str(out)]
        cmd += [
            "--",
            sys.executable,
            "-c",
            "import time\nend = time.time() + 1.5\nwhile time.time() < end: pass",
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            return Check(name, False, "py-spy did not finish within 30 s", "run `py-spy record -- python -c 1` by hand")
        if out.exists() and out.stat().st_size > 0:
            return Check(name, True, "recorded a 1 s test profile")
        message = (proc.stderr or proc.stdout).strip().splitlines()
        return Check(
            name,
            False,
            message[-1] if message else f"py-spy exited with {proc.returncode}",
            "in Docker run with --cap-add SYS_PTRACE; elsewhere run as root or lower ptrace_scope; "
            "or profile with --no-profile",
        )


# A process that allows any tracer, as loadlab's launcher does for `loadlab ui`'s server, then computes.
_TRACEE = """
import ctypes, sys, time
if sys.platform == "linux":
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(0x59616D61, ctypes.c_ulong(-1))
end = time.time() + 4
while time.time() < end: pass
"""


def _attach_pid_check(binary: str | None) -> Check:
    """What `loadlab ui` needs: py-spy attaching to a running process that is not its child."""
    name = "py-spy can attach to a running process (loadlab ui)"
    if binary is None:
        return Check(name, False, "py-spy missing", "install py-spy first")
    with tempfile.TemporaryDirectory() as tmp, subprocess.Popen([sys.executable, "-c", _TRACEE]) as tracee:
        out = Path(tmp) / "raw.txt"
        cmd = [binary, "record", "--pid", str(tracee.pid), "--rate", "50", "--duration", "1"]
        cmd += ["--format", "raw", "--output", str(out)]
        try:
            time.sleep(0.3)  # let it reach its loop
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            proc = None
        finally:
            tracee.kill()
        if out.exists() and out.stat().st_size > 0:
            return Check(name, True, "recorded 1 s of a running process by its PID")
        message = (proc.stderr or proc.stdout).strip().splitlines() if proc is not None else ["timed out"]
        return Check(
            name,
            False,
            message[-1] if message else "py-spy wrote nothing",
            "run as root, or with CAP_SYS_PTRACE (Docker: --cap-add SYS_PTRACE), or lower ptrace_scope to 1; "
            "or run `loadlab ui --no-profile`",
        )
