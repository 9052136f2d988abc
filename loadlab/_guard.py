"""``python -m loadlab._guard``: end a dead harness's processes, whatever they did to escape.

The harness starts one guardian (in a session of its own, so nothing that stops the harness stops
it) and writes to its stdin the token it put into the environment of each child it starts. Every
process of that tree inherits the token, even one that ignores SIGTERM or detached itself with
``setsid`` or a double fork. When stdin closes — the harness exited, or was killed with SIGKILL —
the guardian sends SIGTERM to every process that still carries one of the tokens, waits a little,
and sends SIGKILL to those left. The harness's own stop ladder has normally stopped them all
already; this is the net under it. Deliberately tiny: it reads ``/proc`` and imports nothing else.
"""

from __future__ import annotations

import os
import signal
import sys
import time

TOKEN_VAR = "LOADLAB_PROC_TOKEN"
GRACE_S = 3.0


def carriers(tokens: set[str], exclude: set[int]) -> list[int]:
    """PIDs of the processes whose initial environment holds one of ``tokens`` (Linux ``/proc``)."""
    wanted = {f"{TOKEN_VAR}={t}".encode() for t in tokens}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                env = set(f.read().split(b"\0"))
            with open(f"/proc/{entry}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if state != b"Z" and env & wanted:
            found.append(int(entry))
    return found


def sweep(tokens: set[str], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM, then SIGKILL after ``grace_s``, every process carrying a token; return their PIDs."""
    me = {os.getpid()}
    pids = carriers(tokens, me)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and carriers(tokens, me):
        time.sleep(0.1)
    for pid in carriers(tokens, me):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C on the terminal is the harness's to handle
    tokens: set[str] = set()
    for line in sys.stdin:
        token = line.strip()
        if token:
            tokens.add(token)
    if tokens:
        sweep(tokens)


if __name__ == "__main__":
    main()
