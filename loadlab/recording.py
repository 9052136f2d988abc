"""py-spy on the server's child processes, each by its own recorder at a lower rate (issue 18).

``py-spy record --subprocesses`` samples every process of the tree at the loop's rate, in the
loop's mode, and looks for new children ten times a second. For a one-process server that is
mostly waste: a process pool's idle workers and multiprocessing's resource tracker were sampled
100 times a second, pausing each, and cost as much py-spy CPU as the server itself
(``benchmarks/pyspy_cost.py``). So for such a server the main recorder samples the server's own
process only (exact, at ``--rate``), and :class:`ChildRecorders` attaches one ``py-spy record
--pid`` per child, found by polling the tree twice a second: ``--nonblocking`` (nothing there needs
an exact stack) at a tenth of the rate. At the end, :meth:`ChildRecorders.merge_into` writes one
``profile.raw.txt`` as ``--subprocesses`` would have: every line gets its ``process …`` prefix,
and a child's counts are multiplied by the rate ratio, so a count still means "this many of the
main recorder's samples" and shares across processes stay comparable.

Attaching by PID needs ptrace rights on processes the recorder did not start: root, or Yama's
``ptrace_scope`` 0. Elsewhere :func:`can_split` is False and the harness records the old way.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from loadlab.processes import PYSPY_STOP_LADDER, ManagedProcess, pyspy_argv

CHILD_RATE_DIVISOR = 10  # children are sampled at a tenth of the loop's rate
POLL_S = 0.5
MIN_AGE_S = 0.5  # a child younger than this may not have its interpreter up yet


def can_split() -> bool:
    """True when a recorder may attach to a process it did not start (root, or no Yama restriction)."""
    if os.geteuid() == 0:
        return True
    try:
        return int(Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()) == 0
    except (OSError, ValueError):
        return True  # no Yama: classic ptrace rules (same user) apply


def split_recording(*, server: str, workers: int, attach: bool) -> bool:
    """Whether a server is recorded the split way: one uvicorn process whose loop is its own (with
    ``--workers N`` or gunicorn the loops are children, recorded with ``--subprocesses``)."""
    return server == "uvicorn" and workers == 1 and not attach and can_split()


def median_cpu(timeseries: list[dict[str, Any]], key: str) -> float | None:
    """The median of a process's CPU over a run's seconds (the first, a start-up, left out)."""
    values = [p[f"{key}_cpu_percent"] for p in timeseries[1:] if f"{key}_cpu_percent" in p]
    return round(statistics.median(values), 1) if values else None


def child_rate(main_rate: int) -> int:
    return max(1, round(main_rate / CHILD_RATE_DIVISOR))


def process_frame(pid: int, cmdline: str) -> str:
    """The frame py-spy writes for a process under ``--subprocesses``."""
    return f'process {pid}:"{cmdline}"'


def _cmdline(proc: psutil.Process) -> str:
    return " ".join(proc.cmdline())


def _is_python(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.Error, IndexError):
        return "python" in Path(proc.cmdline()[0]).name
    return False


@dataclass
class _Child:
    pid: int
    command: str
    chain: list[str]  # process frames from the server down to this child
    output: Path
    recorder: ManagedProcess
    exit_code: int | None = None


@dataclass
class ChildRecorders:
    """One ``py-spy record --pid`` per Python child of the server, started as the children appear."""

    main_output: Path
    main_rate: int
    log_path: Path
    native: bool = False
    children: dict[int, _Child] = field(default_factory=dict)
    server: tuple[int, str] | None = None  # pid, command line
    _stop: threading.Event = field(default_factory=threading.Event)
    _closing: bool = False
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rate(self) -> int:
        return child_rate(self.main_rate)

    def watch(self, server_pid: Callable[[], int | None]) -> None:
        """Poll the server's tree from a thread until :meth:`stop`."""
        self._thread = threading.Thread(
            target=self._run, args=(server_pid,), name="loadlab-child-recorders", daemon=True
        )
        self._thread.start()

    def _run(self, server_pid: Callable[[], int | None]) -> None:
        pid = server_pid()
        if pid is None:
            return
        with contextlib.suppress(psutil.Error):
            self.server = (pid, _cmdline(psutil.Process(pid)))
        while not self._stop.wait(POLL_S):
            with contextlib.suppress(psutil.Error):
                self._scan(psutil.Process(pid))

    def _scan(self, server: psutil.Process) -> None:
        now = time.time()
        tree = server.children(recursive=True)
        pids = {server.pid, *(p.pid for p in tree)}
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                if proc.pid in self.children or now - proc.create_time() < MIN_AGE_S or not _is_python(proc):
                    continue
                command = _cmdline(proc)
                chain = [process_frame(p.pid, _cmdline(p)) for p in reversed(proc.parents()) if p.pid in pids]
                chain.append(process_frame(proc.pid, command))
                output = self.main_output.with_name(f".{self.main_output.stem}.child-{proc.pid}.txt")
                # --native cannot be combined with --nonblocking in py-spy
                argv = pyspy_argv(
                    output,
                    rate=self.rate,
                    native=self.native,
                    nonblocking=not self.native,
                    pid=proc.pid,
                    subprocesses=False,
                )
                with self._lock:
                    if self._closing:
                        return
                    recorder = ManagedProcess(
                        argv, name="py-spy (child)", log_path=self.log_path, stop_ladder=PYSPY_STOP_LADDER
                    )
                    self.children[proc.pid] = _Child(proc.pid, command, chain, output, recorder.start())

    @property
    def pids(self) -> list[int]:
        """The recorders' PIDs."""
        return [c.recorder.pid for c in list(self.children.values())]  # a copy: the watcher adds

    def recorder_pids(self) -> dict[int, int]:
        """Each child's PID → its recorder's PID."""
        return {pid: c.recorder.pid for pid, c in list(self.children.items())}

    def stop(self) -> None:
        """Stop every recorder (SIGINT: each writes its file), then the polling. Re-entrant.

        The polling thread must outlive the recorders it started: each gets SIGTERM from the kernel
        when the thread that forked it ends (``PR_SET_PDEATHSIG`` follows the thread), and would
        die without writing its file."""
        with self._lock:
            self._closing = True
        for child in self.children.values():
            if child.exit_code is None:
                child.exit_code = child.recorder.stop()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def merge_into(self, output: Path) -> dict[str, Any]:
        """Rewrite ``output`` (the main recorder's, server only) with process prefixes and append
        each child's samples, scaled to the main rate. Returns what ``run.json`` keeps of it."""
        factor = self.main_rate / self.rate
        summary: dict[str, Any] = {"mode": "split", "rate": self.main_rate, "children_rate": self.rate, "children": []}
        if self.server is None or not output.exists():
            return summary
        prefix = process_frame(*self.server)
        lines = [f"{prefix};{line}" for line in output.read_text().splitlines() if line.strip()]
        for child in self.children.values():
            samples = 0
            with contextlib.suppress(OSError):
                for line in child.output.read_text().splitlines():
                    body, _, count = line.rpartition(" ")
                    if body and count.isdigit():
                        samples += int(count)
                        lines.append(f"{';'.join(child.chain)};{body} {max(1, round(int(count) * factor))}")
                child.output.unlink()
            summary["children"].append(
                {"pid": child.pid, "command": child.command, "samples": samples, "exit_code": child.exit_code}
            )
        tmp = output.with_name(output.name + ".merging")
        tmp.write_text("".join(f"{line}\n" for line in lines))
        tmp.replace(output)
        return summary
