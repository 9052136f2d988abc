"""Reading a file, two ways: /files/{blocking, async}?kb=.

Each request reads ``--kb`` KiB (default 256) of a generated file, in chunks. Expect ``blocking``
(sync ``open``/``read`` in ``async def``) to hold the loop for every chunk — small on a warm page
cache, so the canary suffers mildly, more with a large ``--kb`` — and ``async`` (``anyio.open_file``)
to pay a threadpool hop per chunk yet keep the loop free.

    locust -f loadtests/files_routes.py --kb 4096 -u 10
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser, param

__all__ = ["CanaryUser", "FilesUser"]


class FilesUser(LoadlabUser):
    @tag("blocking")
    @task
    def files_blocking(self) -> None:
        self.hit("/files/blocking", kb=param(self.environment, "kb"))

    @tag("async", "threadpool", "healthy")
    @task
    def files_async(self) -> None:
        self.hit("/files/async", kb=param(self.environment, "kb"))


if __name__ == "__main__":
    run_single_user(FilesUser)
