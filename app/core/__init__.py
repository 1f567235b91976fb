"""Shared plumbing: settings, engine and sessions, the database schema, the media store, tokens and
security headers, templating, the per-process runtime and request dependencies, HTTP middleware,
the shared rate limit and the CLI's common helpers. Imports nothing else from ``app``."""
