"""The network's share in the blend, read off the slices the user painted on this scan.

A Retrain shows the network's probabilities blended with the fill between the painted slices.
A fixed share (0.3) suits a network that has seen two or three slices of a new structure; a
network taught by earlier scans may already be better than the fill, and a fixed share then
drags it down (benchmarks/results/la_effort_ceiling_taught_by_n_scans.md). Each slice the user
paints is a fair test of both: the previous network never trained on it, and the fill between
its two painted neighbours never saw it. The share that would have drawn those slices best is
the share for this scan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from training import IGNORE_INDEX

#: The shares tried on the painted slices.
SHARES = (0.0, 0.15, 0.3, 0.5, 0.7, 0.85, 1.0)


def painted_between(labels: np.ndarray, z: int) -> tuple[int, int] | None:
    """The nearest painted slices below and above slice ``z`` (axis 0), or None when ``z`` has
    no painted slice on one side."""
    painted = np.flatnonzero((np.asarray(labels) != IGNORE_INDEX).reshape(len(labels), -1)
                             .any(1))
    below, above = painted[painted < z], painted[painted > z]
    if not len(below) or not len(above):
        return None
    return int(below[-1]), int(above[0])


def share_scores(network_probs: np.ndarray, labels: np.ndarray, grey: np.ndarray, z: int,
                 shares: Sequence[float] = SHARES, ends: str | None = None
                 ) -> dict[float, float] | None:
    """Dice on painted slice ``z`` of the blend at each share: ``network_probs`` (C, z, y, x)
    from a network that did not train on ``z``, the fill between the painted neighbours of
    ``z`` on ``grey``. None when ``z`` is not between two painted slices or shows nothing."""
    from training.engine.metrics import mean_dice
    from training.interactive.image_priors import fill_between_slices
    from training.interactive.interpolation import fuse_with_interpolation

    labels = np.asarray(labels)
    gap = painted_between(labels, z)
    if gap is None:
        return None
    lo, hi = gap
    # only the two neighbours, on the stretch between them: the fill that would have shown z
    two = np.full((hi - lo + 1, *labels.shape[1:]), IGNORE_INDEX, labels.dtype)
    two[0], two[-1] = labels[lo], labels[hi]
    filled = fill_between_slices(two, np.asarray(grey)[lo:hi + 1], "register")
    probs = np.asarray(network_probs)[:, lo:hi + 1]
    truth = labels[z]
    scores = {}
    for s in shares:
        shown = fuse_with_interpolation(probs, two, weight=float(s), ends=ends, filled=filled)
        scores[float(s)] = mean_dice(shown[z - lo], truth)
    if all(np.isnan(v) for v in scores.values()):
        return None
    return scores


def slices_read(network_probs: np.ndarray, labels: np.ndarray, grey: np.ndarray,
                slices: Sequence[int], ends: str | None = None) -> list[dict[float, float]]:
    """:func:`share_scores` of each of ``slices`` that can be read (between two painted ones,
    showing something)."""
    rows = (share_scores(network_probs, labels, grey, int(z), ends=ends) for z in slices)
    return [row for row in rows if row is not None]


def choose_share(evidence: Sequence[Mapping[float, float]], default: float) -> float:
    """The share with the best mean Dice over the scored slices; ties, or no evidence, go to
    the share nearest ``default``."""
    rows = [e for e in evidence if e]
    if not rows:
        return default
    shares = sorted(rows[0])
    means = {}
    for s in shares:
        values = [r[s] for r in rows if s in r and not np.isnan(r[s])]
        if values:
            means[s] = float(np.mean(values))
    if not means:
        return default
    best = max(means.values())
    return min((s for s in means if means[s] >= best - 1e-9), key=lambda s: abs(s - default))
