"""Weights between tasks: encoder export with a manifest, import of released encoders, transfer."""
