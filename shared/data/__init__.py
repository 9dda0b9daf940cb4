"""Data: the embedded synthetic data sets (``synthetic``); preprocessing and sampling live beside it."""
