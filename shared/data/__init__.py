"""Data: embedded data sets, preprocessing into a cache, and training-time patch sampling."""
