"""The process ``benchmarks/pyspy_cost.py`` samples: a busy main thread, idle threads, idle children.

``python -m benchmarks._spytarget THREADS CHILDREN [DEPTH]``: the main thread counts as fast as it
can (holding the GIL, as a CPU-bound handler does) and prints ``<monotonic time> <count>`` every
0.1 s, so the cost of each py-spy setting is read as the count's rate with and without it. THREADS
threads wait on an event (as idle AnyIO workers do, at a stack DEPTH frames deep) and CHILDREN
spawned processes sleep (as an idle process pool's workers do).
"""

from __future__ import annotations

import multiprocessing
import sys
import threading
import time


def _child() -> None:
    while True:
        time.sleep(3600)


def _park(event: threading.Event, depth: int) -> None:
    if depth > 0:
        _park(event, depth - 1)
    else:
        event.wait()


def main() -> None:
    threads, children = int(sys.argv[1]), int(sys.argv[2])
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    never = threading.Event()
    for i in range(threads):
        threading.Thread(target=_park, args=(never, depth), name=f"idle-{i}", daemon=True).start()
    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_child, daemon=True) for _ in range(children)]
    for p in procs:
        p.start()
    n, next_print = 0, time.monotonic()
    while True:
        n += 1
        if n & 0x3FFF == 0:
            now = time.monotonic()
            if now >= next_print:
                print(f"{now:.4f} {n}", flush=True)
                next_print = now + 0.1


if __name__ == "__main__":
    main()
