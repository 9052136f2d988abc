"""Soak: mixed load on the healthy routes of several families, for ``make soak`` (10 minutes).

Run with ``-T healthy`` (``loadlab soak`` does): io, deps, db and trivial users share the load, one
canary watches. What to expect: flat throughput and latency, and a server whose memory (RSS)
levels off after warming up instead of climbing minute after minute.

    locust -f loadtests/soak.py -T healthy -u 20 -t 10m
"""

from locust import run_single_user

from loadtests.common import CanaryUser
from loadtests.db_routes import DbUser
from loadtests.deps_routes import DepsUser
from loadtests.io_routes import IoUser
from loadtests.trivial_routes import TrivialUser

__all__ = ["CanaryUser", "DbUser", "DepsUser", "IoUser", "TrivialUser"]

if __name__ == "__main__":
    run_single_user(IoUser)
