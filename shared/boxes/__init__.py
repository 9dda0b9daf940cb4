"""Box conventions: modes, conversions and overlaps.

Inside the code boxes are MONAI ``StandardMode`` xyzxyz ``(x1, y1, z1, x2, y2, z2)`` floats; files hold
world-millimetre ``cccwhd`` ``(cx, cy, cz, w, h, d)``. This ``__init__`` imports nothing heavy: import
the submodule you need (``shared.boxes.ops``).
"""
