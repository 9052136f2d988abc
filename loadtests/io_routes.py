"""I/O wait, five ways: /io/{async-sleep, blocking-sleep, threadpool-sleep, offload-sleep, helper-sleep}.

Each request waits ``--ms`` (default 50). Expect, with N users and no think time:
``async-sleep`` ~ N / 0.05 req/s; ``threadpool-sleep`` and ``offload-sleep`` the same up to 40
users, then capped at 40 / 0.05 = 800 req/s (AnyIO's 40 threads); ``blocking-sleep`` and
``helper-sleep`` ~ 1 / 0.05 = 20 req/s whatever N, and the ``/health (canary)`` row climbs from
~1 ms to N × 50 ms, because they freeze the event loop.

    locust -f loadtests/io_routes.py -H http://127.0.0.1:8000 -T blocking      # both loop blockers
    locust -f loadtests/io_routes.py -T blocking-sleep                        # one route: its name
    locust -f loadtests/io_routes.py -T healthy --shape step                  # past 40 threads
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "IoUser"]


class IoUser(LoadlabUser):
    @tag("async-sleep", "async", "healthy")
    @task
    def async_sleep(self) -> None:
        self.hit("/io/async-sleep", ms=param(self.environment, "ms"))

    @tag("blocking-sleep", "blocking")
    @task
    def blocking_sleep(self) -> None:
        self.hit("/io/blocking-sleep", ms=param(self.environment, "ms"))

    @tag("threadpool-sleep", "threadpool", "healthy")
    @task
    def threadpool_sleep(self) -> None:
        self.hit("/io/threadpool-sleep", ms=param(self.environment, "ms"))

    @tag("offload-sleep", "offload", "threadpool", "healthy")
    @task
    def offload_sleep(self) -> None:
        self.hit("/io/offload-sleep", ms=param(self.environment, "ms"))

    @tag("helper-sleep", "helper", "blocking")
    @task
    def helper_sleep(self) -> None:
        self.hit("/io/helper-sleep", ms=param(self.environment, "ms"))


if __name__ == "__main__":
    run_single_user(IoUser)
