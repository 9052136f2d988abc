"""Child processes are stopped on every path, descendants included."""

import signal
import sys
import textwrap
import time

import psutil
import pytest

from loadlab.processes import ManagedProcess, ProcessError, wait_ready

# A parent that ignores SIGINT and SIGTERM and starts a grandchild: the worst case.
STUBBORN = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def test_stubborn_process_tree_is_killed() -> None:
    ladder = ((signal.SIGINT, 0.3), (signal.SIGTERM, 0.3), (signal.SIGKILL, 2.0))
    with ManagedProcess([sys.executable, "-c", STUBBORN], name="stubborn", stop_ladder=ladder) as proc:
        deadline = time.monotonic() + 10
        while "ready" not in proc.tail() and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    assert len(tree) == 2
    assert proc.returncode == -signal.SIGKILL
    assert proc.leftovers == tree[1:]  # the grandchild was found by PID and killed
    for pid in tree:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_exit_before_ready_reports_the_output() -> None:
    argv = [sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"]
    with ManagedProcess(argv, name="broken") as proc, pytest.raises(ProcessError, match="boom: bad config"):
        wait_ready(proc, "http://127.0.0.1:9/health", timeout=10)
