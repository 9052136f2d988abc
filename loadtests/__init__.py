"""Locust scenarios for the target app: one locustfile per route family, plus shared pieces.

Only this package imports ``locust`` (importing it monkey-patches the process with gevent), and
only the files Locust itself loads import it: the ``*_routes.py`` locustfiles and the modules they
pull in through :mod:`loadtests.common`. :mod:`loadtests.budgets` is pure and safe to import
anywhere.
"""
