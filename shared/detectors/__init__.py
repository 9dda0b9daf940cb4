"""Detectors: networks (``retina_unet_network``) and the logic that turns their outputs into losses and boxes."""
