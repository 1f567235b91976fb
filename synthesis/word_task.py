"""The demo word task: its vocabulary and clip format, shared by the word model
(:mod:`synthesis.models.words`) and the code that makes its clips (:mod:`synthesis.train.word_clips`),
so that neither imports the other for them."""

from __future__ import annotations

from synthesis.cochleagram import preset

#: The vocabulary, in class order: the category ids (and labels) of the demo audio bank.
WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
]
#: The model's cochleagram front end; it fixes the clip format (1 s at 16 kHz).
FRONT_END = preset("demo")
SAMPLE_RATE = FRONT_END.sample_rate  # Hz
SAMPLES = FRONT_END.samples
