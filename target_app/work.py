"""A deterministic unit of pure-Python CPU work, for the ``/cpu/*`` routes.

One unit is 25,000 rounds of integer arithmetic in the interpreter: about 1 ms of one core on the
reference machine (2 cores; ``python -m target_app.work`` measures it on yours). It holds the GIL
the whole time, which is the point: threads cannot run it in parallel, processes can.
"""

import time

ROUNDS_PER_UNIT = 25_000
MAX_WORK = 1500  # units; keeps one call under ~2 s even on a slow core


def burn_cpu(work: int) -> int:
    """Do ``work`` units of pure-Python computation and return a checksum of it."""
    acc = 0
    for _ in range(work):
        for i in range(ROUNDS_PER_UNIT):
            acc = (acc * 31 + i) % 1_000_003
    return acc


def measure_unit_ms(units: int = 200) -> float:
    """Milliseconds of one unit on this machine, in this process."""
    start = time.perf_counter()
    burn_cpu(units)
    return (time.perf_counter() - start) * 1000 / units


if __name__ == "__main__":
    print(f"one work unit costs {measure_unit_ms():.2f} ms of CPU here")
