"""``python -m loadlab._launch MODULE ARGS…``: run ``python -m MODULE ARGS…`` so that it dies with
its parent.

The server runs as py-spy's child, so the harness cannot give it a parent-death signal directly;
this launcher asks the kernel for one (Linux ``PR_SET_PDEATHSIG``) and then runs the module in the
same interpreter (not ``exec``: py-spy would lose an interpreter replaced under it). If the harness
is killed outright, py-spy gets SIGTERM from the kernel, and the server in turn when py-spy exits.
Its exit code goes to the file named by ``LOADLAB_SERVER_EXIT_FILE``: py-spy, its parent, would
otherwise be the only one to know it. ``loadlab ui`` runs its server through it too (not under
py-spy), with ``LOADLAB_ALLOW_PTRACE`` set so py-spy may attach under Yama.
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
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
            if os.environ.pop("LOADLAB_ALLOW_PTRACE", None):
                # `loadlab ui` attaches py-spy to this server per test; py-spy is its sibling, which
                # Yama's ptrace_scope 1 refuses unless the tracee allows it (PR_SET_PTRACER_ANY).
                libc.prctl(0x59616D61, ctypes.c_ulong(-1))
        except OSError:
            pass
        if os.getppid() == 1:  # the parent died before the request took effect
            sys.exit(1)
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    exit_file = os.environ.pop("LOADLAB_SERVER_EXIT_FILE", None)

    def record(code: int) -> None:
        if exit_file:
            try:
                with open(exit_file, "w") as f:
                    f.write(f"{code}\n")
            except OSError:
                pass

    def terminated(signum: int, frame: object) -> None:
        # uvicorn shuts down on SIGTERM, then raises the signal again with this handler restored:
        # the process ends "killed by SIGTERM", as it would have without the launcher.
        record(-signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, terminated)
    code = 1  # an exception escaping the module exits with 1
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        raise
    finally:
        record(code)


if __name__ == "__main__":
    main()
