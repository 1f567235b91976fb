"""Synthesis benchmarks: this engine vs one-at-a-time (the paper's way) vs plenoptic, and a GPU check."""
