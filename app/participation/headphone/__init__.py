"""Headphone checks: the generated stimuli (:mod:`.signals`) and the trial sets, scoring, decision
and saving (:mod:`.screening`)."""
