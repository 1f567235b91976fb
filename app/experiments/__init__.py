"""Experiments: the specification and its validation, the admin form generated from it, pure trial
planning (Latin-square balancing), experiments in the database and the per-process cached context
that serving one needs. May import ``app.core`` only."""
