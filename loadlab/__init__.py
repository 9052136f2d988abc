"""loadlab: load-test and profile ASGI apps, and name what blocked the event loop."""

__version__ = "0.1.0"
