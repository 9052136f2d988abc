"""Mostly Python computing on the event loop, with some blocking sleeps and remote awaits."""

from locust import FastHttpUser, constant, task


class Analyst(FastHttpUser):
    wait_time = constant(0.02)

    @task(4)
    def compute(self) -> None:
        self.client.get("/compute")

    @task(1)
    def sleepy(self) -> None:
        self.client.get("/sleepy")

    @task(2)
    def remote(self) -> None:
        self.client.get("/remote")
