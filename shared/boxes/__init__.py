"""Boxes: the project's one box convention (``convention``) and vectorised box operations (``ops``)."""
