"""Metamer Lab web app: participant pages, JSON API, admin panel and exports. Never imports torch.

The data flow, and the package that owns each step::

    bank (folder/.zip) --stimuli--> stimulus set --experiments--> experiment
        --participation--> participants, trial plans, answers --results--> CSVs, figures, stats

Packages (what each owns; what each may import from ``app``):

* ``core``          settings, database, schema, media store, security, HTTP plumbing, CLI plumbing (nothing)
* ``stimuli``       bank import and deletion, uploads, the media route (core)
* ``experiments``   the spec, its form, pure trial planning, experiments in the DB, cached context (core)
* ``participation`` arrival, recruitment, saving, stage, headphone checks, participant pages and API (core, experiments)
* ``results``       analysis, statistics, figures, monitoring, exports (core, experiments)
* ``admin``         accounts and the admin panel (core, stimuli, experiments, participation, results)

``main`` (the app factory), ``asgi``, ``cli`` and ``demo`` wire the packages together.
"""
