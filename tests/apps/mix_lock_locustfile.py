"""Reservations queue at a lock while the rest of the mix passes by."""

from locust import FastHttpUser, constant, task


class Buyer(FastHttpUser):
    wait_time = constant(0.01)

    @task(3)
    def reserve(self) -> None:
        self.client.get("/reserve")

    @task(2)
    def remote(self) -> None:
        self.client.get("/remote")

    @task(1)
    def sleepy(self) -> None:
        self.client.get("/sleepy")
