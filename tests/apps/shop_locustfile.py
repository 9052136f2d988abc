"""Mixed traffic on the shop: every route, as a user session would call them."""

from locust import FastHttpUser, constant, task


class Shopper(FastHttpUser):
    wait_time = constant(0.02)

    @task(3)
    def orders(self) -> None:
        self.client.get("/orders")

    @task(3)
    def cart(self) -> None:
        self.client.get("/cart")

    @task(2)
    def export(self) -> None:
        self.client.get("/export")

    @task(2)
    def signup(self) -> None:
        self.client.post("/signup")

    @task(1)
    def health(self) -> None:
        self.client.get("/health")
