"""The budget rules live in :mod:`loadlab.budgets` (``loadlab smoke`` judges a user's app with
them, where this checkout's ``loadtests`` is not installed); re-exported for the locustfiles."""

from loadlab.budgets import (  # noqa: F401
    PERCENTILES,
    BudgetError,
    Budgets,
    Check,
    GateVerdict,
    RowStats,
    evaluate,
    parse_endpoint_budgets,
)
