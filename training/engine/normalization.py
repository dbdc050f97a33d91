"""Intensity normalisation applied in every loader and at inference (stored in checkpoints)."""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage

DEFAULT_NORMALIZATION: dict = {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}
SAMPLE_VOXELS = 1 << 20
#: ``scheme["outside"]`` for a scan with channels: "keep" (default) reads the air around the
#: body as it is; "darkest" sets it to a channel's darkest value in each channel that shows it
#: grey (not dark by that channel's own range), and leaves the others untouched;
#: "darkest_everywhere" does so in every channel (measured on LGG folds: it shifts the other
#: scans' statistics too, benchmarks/results/lgg_folds_air_outside.md)
OUTSIDE_MODES = ("keep", "darkest", "darkest_everywhere")
#: each treatment of the air in words, for cards
AIR_WORDS = {"keep": "the air around the body read as it is",
             "darkest": "the air around the body set darkest in a channel that shows it grey",
             "darkest_everywhere": "the air around the body set darkest in every channel"}
# a voxel is dark in a channel below this share of the channel's 0.5-99.5 percentile range
DARK_SHARE = 0.1


def normalize_intensity(volume: np.ndarray, scheme: dict | None = None) -> np.ndarray:
    """Per-volume percentile clip then z-score, as float32.

    ``scheme`` is a plain dict (``kind``, ``low``, ``high``) so checkpoints can store it.
    A constant volume maps to zeros.
    """
    scheme = scheme or DEFAULT_NORMALIZATION
    if scheme.get("kind") != "percentile_zscore":
        raise ValueError(f"unknown normalisation {scheme.get('kind')!r}")
    v = np.ascontiguousarray(volume, dtype=np.float32)
    # percentiles of ~1 M evenly strided voxels: the same clip values to a fraction of a grey
    # level, and a quarter of the time of an exact percentile on a 100 x 256 x 256 scan
    flat = v.reshape(-1)
    sample = flat[:: max(1, flat.size // SAMPLE_VOXELS)]
    lo, hi = (float(q) for q in np.percentile(sample, [scheme["low"], scheme["high"]]))
    # the clip, centring and scaling in torch, whose passes use every thread: about a third
    # less time than NumPy's on a 100 x 256 x 256 scan (benchmarks/results/
    # act_speed_fused_post.md); the caller's array is not touched (clamp makes a copy)
    t = torch.from_numpy(v if v.flags.writeable else v.copy()).clamp(lo, hi)
    t -= float(t.mean())
    std = math.sqrt(float(t.square().sum()) / max(t.numel(), 1))
    if std < 1e-8:
        return np.zeros_like(v)
    t /= std
    return t.numpy()


def dark_level(channel: np.ndarray) -> float:
    """The grey level at or under which a channel's voxel counts as dark: :data:`DARK_SHARE`
    of the way up its 0.5-99.5 percentile range (of ~1 M evenly strided voxels)."""
    sample = _strided(channel).astype(np.float32)
    lo, hi = (float(q) for q in np.percentile(sample, [0.5, 99.5]))
    return lo + DARK_SHARE * (hi - lo)


def _strided(a: np.ndarray) -> np.ndarray:
    """About :data:`SAMPLE_VOXELS` evenly strided values of ``a``, flattened."""
    flat = a.reshape(-1)
    return flat[:: max(1, flat.size // SAMPLE_VOXELS)]


def outside_the_body(volume: np.ndarray, levels: list[float] | None = None) -> np.ndarray:
    """(z, y, x) bool: the air around the body in a (z, y, x, c) scan: voxels that most
    channels show dark and that reach the slice's edge through such voxels (so a dark
    ventricle inside the head is not air).

    One sequence of a scan may hold its air at a grey level instead of black (an export or
    scanner setting): the LGG patient TCGA_FG_A4MU's pre-contrast air is 61 of 255 where every
    other train patient's is 0-6, and the LGG model missed its abnormality (27 Dice; 75 with
    that air set to 0). Most channels still show the air dark, which is what finds it here."""
    v = np.asarray(volume)
    if v.ndim != 4:
        raise ValueError(f"expected a (z, y, x, channels) scan, got shape {v.shape}")
    levels = levels or [dark_level(v[..., k]) for k in range(v.shape[-1])]
    votes = np.zeros(v.shape[:3], np.int16)
    for k in range(v.shape[-1]):
        votes += v[..., k] <= levels[k]
    dark = votes * 2 > v.shape[-1]
    # pieces of dark voxels, slice by slice (no link across slices), that touch an edge
    in_slice = np.zeros((3, 3, 3), bool)
    in_slice[1] = ndimage.generate_binary_structure(2, 1)
    pieces, _ = ndimage.label(dark, in_slice)
    edge = np.union1d(np.unique(pieces[:, [0, -1], :]), np.unique(pieces[:, :, [0, -1]]))
    edge = edge[edge > 0]
    if not len(edge):
        return np.zeros(dark.shape, bool)
    keep = np.zeros(int(pieces.max()) + 1, bool)
    keep[edge] = True
    return keep[pieces]


def outside_mode(scheme: dict | None) -> str:
    """What a normalisation scheme does with the air around the body (:data:`OUTSIDE_MODES`)."""
    mode = str((scheme or {}).get("outside", "keep"))
    if mode not in OUTSIDE_MODES:
        raise ValueError(f"unknown treatment of the air outside the body {mode!r} (one of "
                         f"{', '.join(OUTSIDE_MODES)})")
    return mode


def normalize_channels(volume: np.ndarray, scheme: dict | None = None) -> np.ndarray:
    """A multi-channel scan (z, y, x, c), channels last as readers and napari hold RGB, as the
    networks take it: (z, c, y, x) float32, each channel normalised on its own (the LGG
    pre-contrast, FLAIR and post-contrast channels have unrelated grey scales). The air
    around the body (:func:`outside_the_body`) is first set to a channel's darkest value as
    ``scheme["outside"]`` says (:data:`OUTSIDE_MODES`)."""
    v = np.asarray(volume)
    if v.ndim != 4:
        raise ValueError(f"expected a (z, y, x, channels) scan, got shape {v.shape}")
    mode = outside_mode(scheme)
    levels = [dark_level(v[..., k]) for k in range(v.shape[-1])] if mode != "keep" else []
    air = outside_the_body(v, levels) if mode != "keep" else None
    air_sample = _strided(air) if air is not None else None

    def channel(k: int) -> np.ndarray:
        ch = v[..., k]
        if air is not None and air_sample.any() and (
                mode == "darkest_everywhere"
                or float(np.median(_strided(ch)[air_sample])) > levels[k]):
            ch = np.where(air, ch.min(), ch)
        return normalize_intensity(ch, scheme)

    return np.stack([channel(k) for k in range(v.shape[-1])], 1)


def normalize_scan(volume: np.ndarray, scheme: dict | None = None, channels: int = 1
                   ) -> np.ndarray:
    """A grey scan (z, y, x) by :func:`normalize_intensity`, one with ``channels`` > 1
    (z, y, x, c) by :func:`normalize_channels`: what training and Predict both call."""
    return (normalize_intensity(volume, scheme) if channels == 1
            else normalize_channels(volume, scheme))
