"""Routes that do nothing: what is left is the cost of the execution model itself."""

from fastapi import APIRouter

router = APIRouter(prefix="/trivial", tags=["trivial"])


@router.get("/async")
async def trivial_async() -> dict[str, bool]:
    """``async def`` doing nothing: runs directly on the loop, the cheapest route there is."""
    return {"ok": True}


@router.get("/sync")
def trivial_sync() -> dict[str, bool]:
    """``def`` doing nothing: every call still hops to a worker thread and back.

    The source page says ``async def`` saves "about 100 ns" elsewhere; in FastAPI the hop costs
    tens of microseconds, which shows at thousands of requests per second.
    """
    return {"ok": True}
