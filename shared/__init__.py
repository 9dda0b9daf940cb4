"""Pre-training and fine-tuning for 3D medical object detection, MONAI-native.

One subpackage per concept: ``boxes`` (the box conventions), ``io`` (images, datalists, foreign
formats), ``data`` (embedded data sets, preprocessing, sampling), ``metrics`` (detection evaluation),
``encoders``/``decoders``/``detectors`` (networks), ``ssl`` (pre-training methods), ``engines``
(training and inference), ``checkpoints`` (weight transfer and import).
"""
