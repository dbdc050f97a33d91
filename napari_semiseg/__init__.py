"""napari-semiseg: an annotation assistant that learns from a few corrected slices."""

__version__ = "0.1.0"
