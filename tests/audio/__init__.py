"""Audio: cochleagram front end, eSpeak NG speech, clips, waveform metamers and the demo word bank."""
