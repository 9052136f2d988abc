"""Mixed traffic on the inventory service: reservations queue at the lock, reports burn CPU in
worker threads, quotes and lookups run on the event loop."""

from locust import FastHttpUser, constant, task


class Clerk(FastHttpUser):
    wait_time = constant(0.02)

    @task(5)
    def reserve(self) -> None:
        self.client.post("/reserve")

    @task(2)
    def report(self) -> None:
        self.client.get("/report")

    @task(2)
    def quote(self) -> None:
        self.client.get("/quote")

    @task(2)
    def lookup(self) -> None:
        self.client.get("/lookup")

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
