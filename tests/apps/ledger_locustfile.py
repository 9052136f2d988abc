"""Load on the ledger: every request passes the dependency and the middleware."""

from locust import FastHttpUser, constant, task


class Clerk(FastHttpUser):
    wait_time = constant(0)

    @task
    def entries(self) -> None:
        self.client.get("/entries")
