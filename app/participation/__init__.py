"""The participant's side: arrival from Prolific/MTurk, balancing slots and fixed trial plans,
saving answers, the stage a participant is at, headphone checks, researcher previews, and the
participant pages and JSON API. May import ``app.core`` and ``app.experiments``."""
