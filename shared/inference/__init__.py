"""Inference over whole volumes: sliding window, test-time mirroring, box consolidation."""
