"""Detectors: the interface every detector implements (:mod:`shared.detectors.interface`), their planning
from the training data (:mod:`shared.detectors.planning`), export (:mod:`shared.detectors.export`) and
Retina U-Net's parts (anchors, matching, box coding, losses, post-processing); the Retina U-Net network
itself is :mod:`shared.networks.retina_unet`."""
