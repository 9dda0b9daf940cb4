"""Data: embedded data sets, the data set fingerprint and plan, preprocessing to a cache, sampling."""
