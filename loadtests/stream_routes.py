"""Streaming responses, three ways: /stream/{async, sync, blocking}?chunks=&ms=.

Each response sends ``--chunks`` chunks (default 5), ``--ms`` apart (default 50): ~250 ms per
request. Locust reads the whole body, so the row's time is the whole stream. Expect ``async``
to serve N streams at once with the canary fast; ``sync`` the same up to 40 streams (each holds a
worker thread); ``blocking`` to serialise streams, deliver each body at once at the end, and
hold the canary for every chunk.

    locust -f loadtests/stream_routes.py -T blocking -u 5
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "StreamUser"]


class StreamUser(LoadlabUser):
    def stream(self, path: str) -> None:
        self.hit(path, chunks=param(self.environment, "chunks"), ms=param(self.environment, "ms"))

    @tag("async", "healthy")
    @task
    def stream_async(self) -> None:
        self.stream("/stream/async")

    @tag("sync", "threadpool", "healthy")
    @task
    def stream_sync(self) -> None:
        self.stream("/stream/sync")

    @tag("blocking")
    @task
    def stream_blocking(self) -> None:
        self.stream("/stream/blocking")


if __name__ == "__main__":
    run_single_user(StreamUser)
