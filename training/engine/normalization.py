"""Intensity normalisation applied in every loader and at inference (stored in checkpoints)."""

from __future__ import annotations

import math

import numpy as np
import torch

DEFAULT_NORMALIZATION: dict = {"kind": "percentile_zscore", "low": 0.5, "high": 99.5}
SAMPLE_VOXELS = 1 << 20


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


def normalize_channels(volume: np.ndarray, scheme: dict | None = None) -> np.ndarray:
    """A multi-channel scan (z, y, x, c), channels last as readers and napari hold RGB, as the
    networks take it: (z, c, y, x) float32, each channel normalised on its own (the LGG
    pre-contrast, FLAIR and post-contrast channels have unrelated grey scales)."""
    v = np.asarray(volume)
    if v.ndim != 4:
        raise ValueError(f"expected a (z, y, x, channels) scan, got shape {v.shape}")
    return np.stack([normalize_intensity(v[..., k], scheme) for k in range(v.shape[-1])], 1)


def normalize_scan(volume: np.ndarray, scheme: dict | None = None, channels: int = 1
                   ) -> np.ndarray:
    """A grey scan (z, y, x) by :func:`normalize_intensity`, one with ``channels`` > 1
    (z, y, x, c) by :func:`normalize_channels`: what training and Predict both call."""
    return (normalize_intensity(volume, scheme) if channels == 1
            else normalize_channels(volume, scheme))
