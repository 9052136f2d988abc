"""Load for the example app: pick one pattern with ``--tags blocking`` (or ``fixed``, ``sync``)."""

from locust import FastHttpUser, constant, tag, task


class Visitor(FastHttpUser):
    wait_time = constant(0.02)

    @tag("blocking")
    @task
    def blocking(self) -> None:
        self.client.get("/blocking")

    @tag("fixed")
    @task
    def fixed(self) -> None:
        self.client.get("/fixed")

    @tag("sync")
    @task
    def sync(self) -> None:
        self.client.get("/sync")
