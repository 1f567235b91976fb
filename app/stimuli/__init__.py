"""Stimulus sets: importing banks (validated by the torch-free ``synthesis.bank``) into the database
and the media store, deleting them, streamed bank uploads, and serving media by content hash.
May import ``app.core`` only."""
