"""Data: embedded data sets, validation, fingerprint and plan, preprocessing into a cache keyed by its
transform chain, patch sampling and augmentation as dictionary transforms (``transforms_*``) that the
bundle configs list."""
