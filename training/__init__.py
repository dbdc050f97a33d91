"""Qt-free training engine of napari-semiseg: networks, semi-supervised methods, trainer,
inference, metrics and the ``semiseg`` command line.

Sparse-label convention: a label value of 255 means "not annotated" and is ignored by losses.
"""

IGNORE_INDEX = 255

__all__ = ["IGNORE_INDEX"]
