"""Cheap routes as fast as Locust can ask: the generator needs about as much CPU as the server."""

from locust import FastHttpUser, task


class Hammer(FastHttpUser):
    @task(5)
    def tiny(self) -> None:
        self.client.get("/tiny")

    @task(1)
    def remote(self) -> None:
        self.client.get("/remote")
