"""CPU-bound work: concurrency does not help, parallelism does (processes, not threads)."""

import asyncio
from typing import Any

from fastapi import APIRouter, Depends

from target_app.resources import Resources, resources
from target_app.routes._params import Work, thread_name
from target_app.work import burn_cpu

router = APIRouter(prefix="/cpu", tags=["cpu"])


@router.get("/async")
async def cpu_async(work: Work = 20) -> dict[str, Any]:
    """Pure-Python work in ``async def``: it runs on the loop and blocks every other request.

    Under load: one request at a time per process, ~1000 / work requests per second.
    """
    return {"work": work, "checksum": burn_cpu(work), "thread": thread_name()}


@router.get("/threadpool")
def cpu_threadpool(work: Work = 20) -> dict[str, Any]:
    """Pure-Python work in ``def``: offloaded to a thread, so the loop stays responsive,
    but the GIL lets only one thread compute at a time.

    Under load: still ~1000 / work requests per second on any number of cores; ``/health``
    stays fast-ish (the loop gets the GIL every 5 ms switch interval).
    """
    return {"work": work, "checksum": burn_cpu(work), "thread": thread_name()}


@router.get("/process")
async def cpu_process(work: Work = 20, res: Resources = Depends(resources)) -> dict[str, Any]:
    """Pure-Python work in a ``ProcessPoolExecutor`` (``LOADLAB_PROCESS_WORKERS`` processes):
    true parallelism.

    Under load: up to min(workers, cores) × 1000 / work requests per second, and the loop stays
    free. The cost is pickling arguments and results, and a process per worker.
    """
    loop = asyncio.get_running_loop()
    checksum = await loop.run_in_executor(res.process_pool, burn_cpu, work)
    return {"work": work, "checksum": checksum, "thread": "process pool"}
