"""Qt-free training engine of napari-semiseg, grouped by concern; each folder imports only from
the folders listed before it:

- ``core``: reading and writing scans (SimpleITK, DICOM, DICOM-SEG), atomic writes, devices;
- ``engine``: data and the recipe (native-grid patches, augmentation), networks, losses,
  metrics, inference, checkpoints;
- ``methods``: the semi-supervised methods, one module each;
- ``fit``: the training loop that runs a method (progress, cancel, checkpoints, DDP);
- ``weak``: slice tags, localisation maps, weak masks;
- ``interactive``: the annotation loop (one Retrain, interpolation, a New model);
- ``library``: model cards;
- ``bench``: the benchmarks;
- ``cli``: the ``semiseg`` command line.

Label conventions, used everywhere: 255 means "not annotated" (ignored by losses, never
background); in weak label volumes, weak class c is stored as ``WEAK_BASE + c``.
"""

IGNORE_INDEX = 255
WEAK_BASE = 128

__all__ = ["IGNORE_INDEX", "WEAK_BASE"]
