"""Calling a slow upstream service, three ways: /upstream/{blocking, threadpool, async}?ms=.

The app calls its upstream stub, which answers after ``--ms`` (default 50); the app must be
started with ``LOADLAB_UPSTREAM_URL`` pointing at the stub (``make locust`` and ``make serve`` do).
Expect ``blocking`` (a sync HTTP client in ``async def``) at ~1 / (ms/1000) req/s with the canary
waiting behind it; ``threadpool`` capped at 40 / (ms/1000); ``async`` (a shared AsyncClient)
limited only by CPU.

    locust -f loadtests/upstream_routes.py -T async -u 100
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "UpstreamUser"]


class UpstreamUser(LoadlabUser):
    @tag("blocking")
    @task
    def upstream_blocking(self) -> None:
        self.hit("/upstream/blocking", ms=param(self.environment, "ms"))

    @tag("threadpool", "healthy")
    @task
    def upstream_threadpool(self) -> None:
        self.hit("/upstream/threadpool", ms=param(self.environment, "ms"))

    @tag("async", "healthy")
    @task
    def upstream_async(self) -> None:
        self.hit("/upstream/async", ms=param(self.environment, "ms"))


if __name__ == "__main__":
    run_single_user(UpstreamUser)
