"""Doing nothing, two ways: /trivial/async and /trivial/sync.

Measures the cost of the threadpool hop. Expect ``async`` to serve the most requests per second
of any route (thousands on 2 cores) and ``sync`` about half to 0.6 of that: every ``def`` call
goes to a worker thread and back, which costs far more than the "about 100 ns" of the source page.
Run each alone to compare ceilings (both at once share the CPU):

    locust -f loadtests/trivial_routes.py -u 20 -T async -t 20s --headless
    locust -f loadtests/trivial_routes.py -u 20 -T sync -t 20s --headless
"""

from locust import run_single_user, tag, task

from loadtests.common import CanaryUser, LoadlabUser

__all__ = ["CanaryUser", "TrivialUser"]


class TrivialUser(LoadlabUser):
    @tag("async", "healthy")
    @task
    def trivial_async(self) -> None:
        self.hit("/trivial/async")

    @tag("sync", "threadpool", "healthy")
    @task
    def trivial_sync(self) -> None:
        self.hit("/trivial/sync")


if __name__ == "__main__":
    run_single_user(TrivialUser)
