"""Per-class Dice and HD95 with MONAI, with explicit rules for empty structures.

Rules: a class absent from both prediction and reference scores Dice 1 and HD95 0 (or NaN = not
scored, with ``empty_score=nan``, which ``semiseg evaluate`` uses); a class present
in only one of them scores Dice 0 and HD95 = the volume diagonal (worst case, in spacing units).
Reference voxels labelled 255 (not annotated) are excluded from both. Which classes are scored
at all is :func:`classes_to_score`: every class in the prediction or the reference.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance

from training import IGNORE_INDEX


def classes_to_score(
    pairs: Iterable[tuple[np.ndarray, np.ndarray]], num_classes: int | None = None
) -> int:
    """The class count C to score (prediction, reference) pairs with: classes 1..C-1.

    The rule shared by ``semiseg evaluate``, the benchmarks and model cards: every class that
    appears in **either** the prediction or the reference, on annotated voxels (reference not
    255), is scored, together with classes 1..``num_classes``-1 when a count is given (say by
    the model's card). Counting the references alone would leave a class found only in the
    prediction unscored, and a model that paints a structure that is not there would get an
    inflated mean Dice; under this rule that class scores Dice 0. 255 in a prediction is no
    class. At least 2 (background and one structure).
    """
    top = 0
    for pred, ref in pairs:
        pred, ref = np.asarray(pred), np.asarray(ref)
        annotated = ref != IGNORE_INDEX
        for a in (ref[annotated], pred[annotated & (pred != IGNORE_INDEX)]):
            if a.size:
                top = max(top, int(a.max()))
    return max(2, int(num_classes or 0), top + 1)


def _one_hot(a: np.ndarray, c: int) -> torch.Tensor:
    return torch.from_numpy((a == c).astype(np.float32))[None, None]


def dice_hd95(
    pred: np.ndarray,
    reference: np.ndarray,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    empty_score: float = 1.0,
) -> dict[str, list[float]]:
    """Dice and HD95 for classes 1..C-1 of one (z, y, x) (or 2D) label volume pair."""
    pred = np.asarray(pred)
    ref = np.asarray(reference)
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from reference {ref.shape}")
    ignore = ref == IGNORE_INDEX
    if ignore.any():
        pred = np.where(ignore, 0, pred)
        ref = np.where(ignore, 0, ref)
    sp = list(spacing) if spacing is not None else [1.0] * ref.ndim
    diagonal = float(np.sqrt(sum((s * n) ** 2 for s, n in zip(sp, ref.shape, strict=True))))
    dice_metric = DiceMetric(include_background=True, reduction="none")
    dices, hds = [], []
    for c in range(1, num_classes):
        p, r = _one_hot(pred, c), _one_hot(ref, c)
        ps, rs = bool(p.any()), bool(r.any())
        if not ps and not rs:
            dices.append(empty_score)
            hds.append(0.0 if empty_score == 1.0 else float("nan"))
            continue
        if ps != rs:
            dices.append(0.0)
            hds.append(diagonal)
            continue
        dices.append(float(dice_metric(p, r).item()))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            hd = compute_hausdorff_distance(p, r, include_background=True, percentile=95,
                                            spacing=sp)
        hds.append(float(hd.item()))
    return {"dice": dices, "hd95": hds}


def mean_over_cases(per_case: Sequence[dict[str, list[float]]]) -> dict[str, list[float]]:
    """Class-wise mean of :func:`dice_hd95` results over cases; NaN (not scored) is left out,
    and a class scored in no case stays NaN."""
    if not per_case:
        return {"dice": [], "hd95": []}
    out = {}
    for k in ("dice", "hd95"):
        a = np.array([r[k] for r in per_case], dtype=np.float64)
        n = np.sum(~np.isnan(a), axis=0)
        out[k] = np.where(n > 0, np.nansum(a, axis=0) / np.maximum(n, 1), np.nan).tolist()
    return out
