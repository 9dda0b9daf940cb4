"""Reading and writing: images, datalists, atomic outputs, and foreign formats (nnDetection, LUNA16)."""
