"""ASGI entry point for uvicorn/gunicorn: ``uvicorn app.asgi:app`` (settings from the environment)."""

import gc

from app.main import create_app

app = create_app()

# What exists now (modules, routes, mappers, compiled statements: ~150,000 objects) lives as
# long as the worker. Frozen, the cyclic garbage collector no longer scans it on every full
# collection; under the load benchmark those scans paused each worker for ~100 ms every ~10 s,
# stalling every request in flight, and were most of the save endpoint's p99 latency.
gc.freeze()
