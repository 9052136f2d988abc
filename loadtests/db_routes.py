"""A database query, three ways: /db/{blocking, threadpool, async}?rows= (~0.08 ms per row).

Each query reads ``--rows`` rows (default 500, ~40 ms). Expect ``blocking`` (the sync sqlite3
driver in ``async def``) to serialise every request and drag the ``/health (canary)`` row with
it; ``threadpool`` (sync driver in ``def``) to keep the canary fast and, as SQLite releases the
GIL, to run two queries at once on 2 cores; ``async`` (aiosqlite) to keep the loop free too.

    locust -f loadtests/db_routes.py -T blocking -u 10
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "DbUser"]


class DbUser(LoadlabUser):
    @tag("blocking")
    @task
    def db_blocking(self) -> None:
        self.hit("/db/blocking", rows=param(self.environment, "rows"))

    @tag("threadpool", "healthy")
    @task
    def db_threadpool(self) -> None:
        self.hit("/db/threadpool", rows=param(self.environment, "rows"))

    @tag("async", "healthy")
    @task
    def db_async(self) -> None:
        self.hit("/db/async", rows=param(self.environment, "rows"))


if __name__ == "__main__":
    run_single_user(DbUser)
