"""Clean-up of a shipped model's prediction: keep each structure's main 3-D piece(s).

A 2-D network predicts slice by slice, so a few slices far from the structure can carry
specks of it (for example a right ventricle painted in a slice below the heart). A structure
that may lie in several parts (a brain lesion) keeps every piece of like size instead. A
model's card says which clean-up won on its validation scans (``card["postprocess"]``); the same
function serves ``semiseg predict``, ``semiseg card`` and the dock's Predict.
"""

from __future__ import annotations

import numpy as np

#: The clean-ups a card can name. "none": the network's labels as they are; "foreground": the
#: largest 3-D piece of all structures together; "per_class": each class's largest piece;
#: "small_pieces": pieces of all structures together under SMALL_PIECE_SHARE of the largest
#: dropped (a lesion in several parts keeps them).
POSTPROCESS_MODES = ("none", "foreground", "per_class", "small_pieces")

#: chosen for the LGG card on out-of-fold patients (benchmarks/results/lgg_folds_clean_up.md)
SMALL_PIECE_SHARE = 0.25

#: each clean-up in words, for cards and help
CLEAN_UP_WORDS = {"none": "none", "foreground": "the largest 3-D piece of all structures kept",
                  "per_class": "each structure's largest 3-D piece kept",
                  "small_pieces": f"3-D pieces under {100 * SMALL_PIECE_SHARE:.0f} % of the "
                                  "largest one dropped"}


def model_clean_up(meta: dict) -> str:
    """The clean-up a checkpoint's metadata names (``meta["postprocess"]``); "none" if unset."""
    mode = str(meta.get("postprocess") or "none")
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"the model names an unknown clean-up {mode!r}")
    return mode


def keep_main_pieces(labels: np.ndarray, mode: str = "per_class") -> np.ndarray:
    """``labels`` (z, y, x) with everything outside the main 3-D piece(s) set to background.

    Connectivity is full (26-connected in 3-D). A class with no voxel stays empty.
    """
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"unknown clean-up {mode!r}; choose one of {', '.join(POSTPROCESS_MODES)}")
    labels = np.asarray(labels)
    if mode == "none":
        return labels
    if mode == "small_pieces":
        return drop_small_pieces(labels, SMALL_PIECE_SHARE)
    if mode == "foreground":
        return np.where(_largest_piece(labels != 0), labels, 0).astype(labels.dtype)
    out = labels.copy()
    for c in np.unique(labels):
        if c != 0:
            mask = labels == c
            out[mask & ~_largest_piece(mask)] = 0
    return out


def drop_small_pieces(labels: np.ndarray, fraction: float) -> np.ndarray:
    """``labels`` without the 3-D pieces of the foreground (all structures together) that are
    smaller than ``fraction`` of the largest piece's voxels.

    Softer than keeping the largest piece alone: a lesion in two parts of like size keeps both,
    while a speck far from the structure goes. 26-connected, as :func:`keep_main_pieces`.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], not {fraction}")
    labels = np.asarray(labels)
    pieces, sizes = _pieces(labels != 0)
    if len(sizes) <= 2:  # background and at most one piece
        return labels
    small = np.flatnonzero(sizes < fraction * sizes.max())
    return np.where(np.isin(pieces, small[small > 0]), 0, labels).astype(labels.dtype)


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest fully connected piece of a boolean ``mask`` (all of it if one piece)."""
    pieces, sizes = _pieces(mask)
    return mask if len(sizes) <= 2 else pieces == int(sizes.argmax())


def _pieces(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fully connected pieces of a boolean ``mask`` (0 outside it) and each one's voxel
    count (index 0, outside, counted as 0)."""
    from scipy.ndimage import label

    pieces, n = label(mask, structure=np.ones((3,) * mask.ndim, bool))
    sizes = np.bincount(pieces.ravel(), minlength=n + 1)
    sizes[0] = 0
    return pieces, sizes
