"""The admin panel and accounts: passwords and sessions, the login guard, dashboard and audit
log, stimulus sets, experiments (forms, monitoring, previews, exclusions) and export downloads.
May import ``app.core``, ``app.stimuli``, ``app.experiments``, ``app.participation`` and
``app.results``."""
