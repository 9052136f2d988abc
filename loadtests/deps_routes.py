"""Dependencies: /deps/{async, sync, mixed, pool}?ms= — they follow the same rule as routes.

``async`` (an ``async def`` dependency that awaits ``--ms``) and ``sync`` (a ``def`` dependency
that blocks ``--ms`` in the threadpool) both leave the loop free: expect the canary to stay at
~1 ms; ``sync`` caps at 40 / (ms/1000) req/s. ``mixed`` chains async → def → async → def and
answers with the thread of each step. ``pool`` holds one of 4 pooled resources for ``--ms``:
past 4 concurrent users it queues (and answers 503 after 1 s waiting) — a pool smaller than the
threadpool is the bottleneck, not the threads.

    locust -f loadtests/deps_routes.py -T sync -u 50
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "DepsUser"]


class DepsUser(LoadlabUser):
    @tag("async", "healthy")
    @task
    def deps_async(self) -> None:
        self.hit("/deps/async", ms=param(self.environment, "ms"))

    @tag("sync", "threadpool", "healthy")
    @task
    def deps_sync(self) -> None:
        self.hit("/deps/sync", ms=param(self.environment, "ms"))

    @tag("mixed", "healthy")
    @task
    def deps_mixed(self) -> None:
        self.hit("/deps/mixed", ms=param(self.environment, "ms"))

    @tag("pool")
    @task
    def deps_pool(self) -> None:
        self.hit("/deps/pool", ms=param(self.environment, "ms"))


if __name__ == "__main__":
    run_single_user(DepsUser)
