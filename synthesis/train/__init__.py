"""Training scripts for the demo models (run as ``python -m synthesis.train.NAME``)."""
