"""Weight files: the manifest (`configs/weights.yaml`: every file, its size, sha256, hosts and terms) and
checks of a weights folder against it (`manifest`), verified resumable downloads (`download`), and the
`python -m separation.weights` command (`__main__`).

Modules here import each other and `separation.errors` only.
"""
