"""Demucs v4 bags (htdemucs_ft, htdemucs_6s): their files and loading (`bag`), applying a bag as demucs.api
applies it in bounded memory (`apply`), and the plan's model type (`spec`)."""
