"""``python -m loadlab._launch CMD …``: run CMD so that it dies with its parent.

The server runs as py-spy's child, so the harness cannot give it a parent-death signal directly;
this launcher asks the kernel for one (Linux ``PR_SET_PDEATHSIG``) and then becomes the server by
``exec`` (same PID, so py-spy profiles the server itself). If the harness is killed outright, py-spy
gets SIGTERM from the kernel, and the server in turn gets SIGTERM when py-spy exits: no orphan.
Deliberately tiny: it imports nothing of loadlab's, so the server starts as fast as without it.
"""

import ctypes
import os
import signal
import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m loadlab._launch COMMAND [ARGS...]")
    if sys.platform == "linux":
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() == 1:  # the parent died before the request took effect
            sys.exit(1)
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
