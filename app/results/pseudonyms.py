"""Pseudonyms for platform ids in exports.

Pseudonymization replaces platform ids (Prolific PID / MTurk worker id, session and assignment
ids) with ``HMAC-SHA256(key, value)`` prefixes. The default key is derived from the server's
secret key and the experiment, so every file of one experiment agrees (and the same person keeps
the same pseudonym across attempts), but pseudonyms cannot be reversed or linked to another
experiment's export. A custom key can be supplied.
"""

from __future__ import annotations

import hashlib
import hmac

from app.core.schema import Experiment
from app.results.options import ExportOptions


class Pseudonymizer:
    """Maps an id to ``p_<16 hex>`` with a keyed hash; identity when disabled."""

    def __init__(self, key: bytes | None) -> None:
        self.key = key

    def __call__(self, value: str | None) -> str | None:
        if value is None or self.key is None:
            return value
        return "p_" + hmac.new(self.key, value.encode(), hashlib.sha256).hexdigest()[:16]


def pseudonymizer(secret_key: str, exp: Experiment, options: ExportOptions) -> Pseudonymizer:
    if not options.pseudonymize:
        return Pseudonymizer(None)
    if options.pseudonym_key:
        return Pseudonymizer(options.pseudonym_key.encode())
    return Pseudonymizer(hmac.new(secret_key.encode(), f"pseudonym:{exp.id}:{exp.design_seed}".encode(), hashlib.sha256).digest())
