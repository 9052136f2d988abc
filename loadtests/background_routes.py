"""Background tasks, two ways: /background/{sync, blocking}?ms=.

Both answer at once and then run a task that sleeps ``--ms`` (default 50) after the response.
Expect both rows to be fast — the damage is not on the route that caused it: ``blocking`` (an
``async def`` task calling ``time.sleep``) freezes the loop after each answer, so the
``/health (canary)`` row and the event-loop lag climb; ``sync`` (a ``def`` task, run in the
threadpool) leaves them alone. The case where only the canary and the loop lag tell the truth.

    locust -f loadtests/background_routes.py -T blocking -u 5
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "BackgroundUser"]


class BackgroundUser(LoadlabUser):
    @tag("sync", "threadpool", "healthy")
    @task
    def background_sync(self) -> None:
        self.hit("/background/sync", ms=param(self.environment, "ms"))

    @tag("blocking")
    @task
    def background_blocking(self) -> None:
        self.hit("/background/blocking", ms=param(self.environment, "ms"))


if __name__ == "__main__":
    run_single_user(BackgroundUser)
