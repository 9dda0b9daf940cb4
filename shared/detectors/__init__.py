"""Detectors: anchors, matching, box coding, the Retina U-Net detector logic (networks live beside them)."""
