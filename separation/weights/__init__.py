"""Weight files: the manifest (`configs/weights.yaml`: every file, its size, sha256, hosts and terms, and
each model's terms label) and checks of a weights folder against it (`manifest`), verified resumable
downloads that fall through a file's hosts in order (`download`), probes of which hosts still answer
(`probe`), and the `python -m separation.weights` command with the cog.yaml build lines (`command`).

Modules here import each other and `separation.errors` only.
"""
