"""The RoFormer family (MSST-style configs and checkpoints): the model, its checkpoint loading (strict, the
mask heads a request needs on first use), what one forward allocates, and the plan's model type."""
