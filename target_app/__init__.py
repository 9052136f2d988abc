"""The FastAPI app under test: twin routes for every concurrency pattern of FastAPI's
"Concurrency and async / await" page, each demonstrating one execution model."""
