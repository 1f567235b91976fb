"""Side-by-side performance measurements (``make bench`` runs ``python -m benchmarks``)."""
