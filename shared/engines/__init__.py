"""Engines shared by every bundle: the LR schedule, a resumable sampler, the trainer, warm-up freezing,
fine-tuning setup, validation and inference."""
