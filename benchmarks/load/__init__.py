"""Load benchmark of the participant side: simulated participants against a real multi-worker
uvicorn on PostgreSQL. Run ``python -m benchmarks.load --help``; see ``benchmarks.load.run``."""
