"""The separation models: what a model type provides (`base`), the registry of types (`registry`), the
chunk engine (`chunking`), the RoFormer family (`roformer/`) and Demucs (`demucs/`).

A model takes a mix [2, samples] and yields progress and final spans of its stems; it never writes files
or calls back up. Modules here import each other, `separation.errors` and `separation.audio.samplerate`
(the models' rate) only.
"""
