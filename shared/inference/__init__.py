"""Inference over whole volumes with any detector of the interface: sliding window, test-time mirroring,
box consolidation, and the MONAI ``Inferer`` the bundles name (:mod:`shared.inference.inferer`)."""
