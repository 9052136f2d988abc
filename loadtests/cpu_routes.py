"""CPU-bound work, three ways: /cpu/{async, threadpool, process}?work= (1 unit ≈ 1 ms of CPU).

Each request burns ``--work`` units (default 20). Expect on 2 cores: ``async`` ~ 1000 / work
req/s and the ``/health (canary)`` row waiting behind every computation (the loop computes);
``threadpool`` about the same throughput — the GIL lets one thread compute at a time — but the
canary stays fast; ``process`` up to ~2× more (two processes, two cores), minus the pickling.
Locust itself needs CPU too: keep users low (``-u 5``) or the generator check marks the run invalid.

    locust -f loadtests/cpu_routes.py -u 5 -T process
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "CpuUser"]


class CpuUser(LoadlabUser):
    @tag("async", "blocking")
    @task
    def cpu_async(self) -> None:
        self.hit("/cpu/async", work=param(self.environment, "work"))

    @tag("threadpool", "healthy")
    @task
    def cpu_threadpool(self) -> None:
        self.hit("/cpu/threadpool", work=param(self.environment, "work"))

    @tag("process", "healthy")
    @task
    def cpu_process(self) -> None:
        self.hit("/cpu/process", work=param(self.environment, "work"))


if __name__ == "__main__":
    run_single_user(CpuUser)
