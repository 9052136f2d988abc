"""The canary: a trivial route that shows the collateral damage of a blocked loop."""

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """Trivial ``async def``. Idle it answers in about a millisecond; when another route blocks
    the loop, it waits for the loop like everything else — its latency is the damage done."""
    return {"status": "ok"}
