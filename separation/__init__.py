"""Music source separation: BS-RoFormer vocals and Demucs v4 stems, packaged for Cog."""
