"""Data: embedded data sets, validation, fingerprint and plan, preprocessing into a cache, patch sampling
and augmentation."""
