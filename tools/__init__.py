"""Command-line tools built on fire: ``python -m tools.<name> --help``."""
