"""``python -m loadlab._launch MODULE ARGS…``: run ``python -m MODULE ARGS…`` so that it dies with
its parent.

The server runs as py-spy's child, so the harness cannot give it a parent-death signal directly;
this launcher asks the kernel for one (Linux ``PR_SET_PDEATHSIG``) and then runs the module in the
same interpreter (not ``exec``: py-spy would lose an interpreter replaced under it). If the harness
is killed outright, py-spy gets SIGTERM from the kernel, and the server in turn when py-spy exits.
Deliberately tiny: it imports nothing of loadlab's.
"""

import ctypes
import os
import runpy
import signal
import sys


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m loadlab._launch MODULE [ARGS...]")
    if sys.platform == "linux":
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass
        if os.getppid() == 1:  # the parent died before the request took effect
            sys.exit(1)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
