"""Audio in and out: an upload decoded to stereo float32 at the models' rate (ffmpeg, sandboxed; soxr), and
a stem written block by block to WAV, FLAC or MP3 at the output rate, measured on the way (peak, loudness,
presence).

Modules here import each other and `separation.errors` only: nothing about models, plans or requests.
"""
