"""The event loop starved of the GIL: most users ask for reports, which compute in worker threads
(``def``), while a few ask for quotes, whose small computation runs on the loop."""

from locust import FastHttpUser, constant, task


class Analyst(FastHttpUser):
    wait_time = constant(0.0)

    @task(3)
    def report(self) -> None:
        self.client.get("/report")

    @task(1)
    def quote(self) -> None:
        self.client.get("/quote")
