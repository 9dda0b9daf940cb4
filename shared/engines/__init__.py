"""Training and inference engines and their handlers."""
