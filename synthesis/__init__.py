"""Metamer synthesis and the stimulus-bank format.

Importing this package does not import torch: ``synthesis.bank`` and ``synthesis.media`` are
torch-free so that the web app can read and validate banks without the synthesis extras.
"""

__version__ = "0.1.0"
