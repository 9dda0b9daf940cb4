"""Engines shared by every bundle: the learning-rate schedule, a resumable sampler, the trainer."""
