"""Training loop, checkpoints and model card of the built-in model."""
