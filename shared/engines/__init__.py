"""Engines shared by every bundle: the LR schedule, a resumable sampler, the trainer, the fine-tuning freeze phase,
fine-tuning setup, validation and inference."""
