"""Results: accuracy by condition, statistics and figures (pure functions), live monitoring, and
the exports (tables, summaries, model predictions, zip bundle, ``metamers export``).
May import ``app.core`` and ``app.experiments``."""
