"""Detectors: the logic that turns a network's outputs into losses and boxes (anchors, matching, box coding,
losses, post-processing); the Retina U-Net network itself is :mod:`shared.networks.retina_unet`."""
