"""The RoFormer family (MSST-style configs and checkpoints): its members, BS-RoFormer and Mel-Band RoFormer,
and what they share (the transformer, the STFT and heads-in-groups forward, checkpoint loading: strict, the
mask heads a request needs on first use; what one forward allocates), and the plan's two model types."""
