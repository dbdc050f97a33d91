"""Annotation effort over a series of scans: the assistant against interpolation.

A simulated clinician goes through N scans in order. On each it paints one slice at a time
(copying the expert's labels of the slice the product suggests) and clicks Retrain, as the
plugin does, until Dice on the whole scan reaches the target or ``k_max`` slices are painted;
then it moves to the next scan with the model it has taught. Beside it, on the same scan, the
clinician without this tool paints K evenly spaced slices from the structure's first to its last
and fills the rest by shape-based interpolation; the table gives the smallest K that reaches the
target. ``semiseg benchmark effort`` runs it.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from training import IGNORE_INDEX
from training.engine.metrics import mean_dice
from training.interactive.between_scans import train_between_scans
from training.interactive.interpolation import (
    even_slices,
    fuse_with_interpolation,
    interpolate_between_slices,
)
from training.interactive.loop import (
    FINISHED_SCANS_KEPT,
    KEEP_MAIN_PIECE,
    SUGGEST_BODY_FIRST,
    SUGGEST_COVERAGE,
    SUGGEST_MAIN_STRUCTURE,
    SUGGEST_PER_SLICE,
    SUGGEST_SPREAD_UNTIL,
    finetune,
    keep_main_structure,
    limit_to_extent,
    rank_uncertain_slices,
    retrain_extent,
    slice_agreement,
    slice_index,
    sparse_labels,
    split_held_back,
    within_painted_extent,
)
from training.interactive.retrain import (
    HELD_BACK_FRACTION,
    PRIOR_FROM_FILL,
    Shown,
    retrain_once,
)

Row = dict[str, Any]
FUSE_WEIGHTS = (0.1, 0.2, 0.3, 0.5)  # the network's share when blended with interpolation


def interpolation_effort(truth: np.ndarray, target: float, k_max: int, axis: int = 0,
                         fill: Callable[..., np.ndarray] | None = None
                         ) -> tuple[int | None, float]:
    """Smallest K of evenly spaced painted slices whose interpolation reaches ``target``
    (None if none up to ``k_max``), and the Dice at that K (or at ``k_max``). ``fill(labels,
    painted, axis)`` fills the gaps (default: this project's shape interpolation; e.g. ITK's
    contour interpolation, :class:`training.bench.contour_interpolation.ContourInterpolator`).
    """
    fill = fill or interpolate_between_slices
    dice = 0.0
    for k in range(1, k_max + 1):
        painted = even_slices(truth, k, axis)
        filled = fill(sparse_labels(truth, painted, axis), painted, axis)
        dice = mean_dice(filled, truth)
        if dice >= target:
            return len(painted), dice
    return None, dice


def first_slice(truth: np.ndarray, axis: int = 0) -> int:
    """With no model yet, the clinician paints the middle of the structure."""
    return even_slices(truth, 1, axis)[0]


def _middle_out(truth: np.ndarray, axis: int = 0) -> list[int]:
    """The structure's slices from its middle outwards, alternating sides."""
    fg = np.moveaxis(truth, axis, 0)
    present = [int(z) for z in np.flatnonzero(((fg != 0) & (fg != IGNORE_INDEX))
                                              .reshape(len(fg), -1).any(1))]
    mid = first_slice(truth, axis) if present else 0
    return sorted(present, key=lambda z: (abs(z - mid), z))


def _itk_baseline(stack: ExitStack) -> Callable[..., np.ndarray] | None:
    """ITK's contour interpolation (Slicer's Fill between slices) in its own process, closed
    with ``stack``; None when the optional bench extra is not installed."""
    from training.bench.contour_interpolation import (
        ContourInterpolator,
        contour_interpolation_available,
    )

    if not contour_interpolation_available():
        return None
    return stack.enter_context(ContourInterpolator(threads=1))


def _next_slice(truth: np.ndarray, painted: Sequence[int], prediction: np.ndarray | None,
                uncertainty: np.ndarray | None, axis: int, extent: tuple[int, int] | None,
                **suggest: Any) -> int | None:
    """The slice the clinician paints next: the product's suggestion, or, with no model or
    one that sees the structure nowhere, the structure's slices from its middle out; only
    between ``extent``'s ends when given."""
    def inside(z: int) -> bool:
        return z not in painted and (extent is None or extent[0] <= z <= extent[1])

    sees = prediction is not None and bool(((prediction != 0) & (prediction != IGNORE_INDEX))
                                           .any())
    if uncertainty is None or not sees:
        return next((z for z in _middle_out(truth, axis) if inside(z)), None)
    ranked = rank_uncertain_slices(uncertainty, list(painted), axis, prediction=prediction,
                                   coverage=suggest["coverage"], per_slice=suggest["per_slice"],
                                   main_structure=suggest["main_structure"],
                                   start_at_body=suggest["body_first"],
                                   # the gaps between painted ends (none known: no gaps)
                                   spread_until=suggest["spread_until"] if extent else 0,
                                   within=extent)
    return int(ranked[0][0]) if ranked else None


def learning_effort(
    image: np.ndarray,
    truth: np.ndarray,
    model: str | None,
    class_names: Sequence[str],
    target: float,
    k_max: int,
    work: Path,
    steps: int = 200,
    method: str = "supervised",
    axis: int = 0,
    device: str | None = "cpu",
    seed: int = 0,
    fuse_weight: float | None = None,
    hold_back_from: int | None = None,
    coverage: float = SUGGEST_COVERAGE,
    per_slice: str = SUGGEST_PER_SLICE,
    main_structure: bool = SUGGEST_MAIN_STRUCTURE,
    main_piece: bool = KEEP_MAIN_PIECE,
    ends: str | None = None,
    body_first: bool = SUGGEST_BODY_FIRST,
    spread_until: int = SUGGEST_SPREAD_UNTIL,
    pretrained: str | None = None,
    earlier: Sequence[tuple[np.ndarray, np.ndarray]] = (),
    network: dict | None = None,
    ends_first: bool = False,
    ends_every_scan: bool = False,
    rebase_to: str | None = None,
    ends_unless_right: float | None = None,
    fuse_weight_taught: float | None = None,
    anchor_with_finished: bool = True,
    fuse_weight_right: float | None = None,
    taught_lr: float | None = None,
    share_from_painted: bool = False,
    prior_taught: str | None = None,
    suggest_from: str | None = None,
    fuse_by_gap: str | None = None,
    **config: Any,
) -> tuple[Row, str | None]:
    """Paint-and-retrain on one scan until ``target``; returns (row, the model to go on with).

    Once ``hold_back_from`` slices are painted and the model has learnt something, each
    Retrain is judged on held-back painted slices. None does as the plugin: never for a model
    taught from scratch (``model`` None), from 2 slices for a model it was given.

    ``ends_first``: with no model yet, the clinician paints as the dock's New model asks, the
    structure's first, middle and last slices, and the prediction stays between the ends (the
    dock's "Structure ends at outer painted slices", ticked for a New model's first scan).
    ``ends_every_scan``: so on a scan with a model too, the suggestions then between the ends.
    ``rebase_to`` (the model the series started from): the scan's first Retrain starts from
    whichever of it and the carried model scores better on the slices painted so far, which
    neither has trained on; a model fine-tuned on earlier scans may have drifted from what the
    starting model knew.
    ``ends_unless_right`` (with ``ends_every_scan``, on a scan with a model): the clinician
    paints the structure's middle slice first; where the model's prediction there already
    reached this Dice, they go on one suggested slice per Retrain, without the ends;
    otherwise they paint the first and last slices too, as ``ends_every_scan``.
    ``fuse_weight_taught``: the network's share in the blend on a scan that starts from a model
    already taught (None: ``fuse_weight`` on every scan).
    ``anchor_with_finished`` False: no anchor (the model's own confident voxels as
    pseudo-labels) in a Retrain that also learns from ``earlier`` scans.
    ``fuse_weight_right``: the network's share on a scan where the model had the middle slice
    right (``ends_unless_right``), so that no ends are painted.
    ``taught_lr``: the learning rate of a Retrain that starts from a model that has learnt
    something (None: the fine-tune's default).
    ``share_from_painted``: each Retrain reads the blend's share off this scan's painted slices
    that the network had not trained on (:mod:`training.interactive.blend_share`);
    ``fuse_weight`` where there are none yet.
    ``prior_taught``: the shape prior (``config["prior"]``) of a Retrain on a scan that starts
    from a model already taught ("none": without it; None: as on every scan).
    ``suggest_from``: the uncertainty the suggestions read where a Retrain blends ("network",
    "shown" or "disagreement"; :class:`Shown`); None: the plugin's, ``retrain.SUGGEST_FROM``.
    ``fuse_by_gap``: the network's share grows from 0 on a painted slice to the share midway
    between two, on every scan ("all") or on a scan that starts from a taught model
    ("taught"); None or "off": a constant share, as the dock.
    """
    from dataclasses import replace

    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.interactive.new_model import is_untrained, new_model

    if hold_back_from is None:
        hold_back_from = 2 if model is not None else k_max + 1
    painted: list[int] = []
    retrain_s: list[float] = []
    rejected = 0
    rebased = False
    dice = 0.0
    current = model
    uncertainty = None
    prediction = None

    # Retrain shows the network, or its blend with the interpolation between the trained slices
    if fuse_weight is not None and fuse_weight_taught is not None and _taught(model):
        fuse_weight = fuse_weight_taught
    if prior_taught is not None and _taught(model):
        config = {**config, "prior": None if prior_taught == "none" else prior_taught}
    by_gap = {"share_by_gap": fuse_by_gap == "all" or (fuse_by_gap == "taught"
                                                       and _taught(model))}
    shown = Shown(fuse_weight=fuse_weight, ends=ends, main_piece=main_piece, device=device,
                  share_from_painted=share_from_painted, **by_gap,
                  **({} if suggest_from is None else {"suggest_from": suggest_from}))
    evidence: list = []  # per painted slice: Dice of the blend at each share
    seen: set[int] = set()  # this scan's slices the current model trained on, or was judged by
    shares: list[float] = []
    if current is not None:
        net, meta = load_checkpoint(current, device=device)
        res = predict_volume(net, meta, image, device=device)
        prediction, uncertainty = res["labels"], res["uncertainty"]
        dice = mean_dice(prediction, truth)
    start_dice = dice if current is not None else None  # the scan's first Predict
    trajectory: list[float] = []
    extent: tuple[int, int] | None = None
    middle_right = False
    if ends_unless_right is not None and current is not None and ends_every_scan \
            and dice < target:
        # the middle slice is painted first; where the model already had it right, no ends
        spread = even_slices(truth, min(3, k_max), axis)  # the ends' protocol's middle
        if spread:
            middle = int(spread[len(spread) // 2])
            sl = slice_index(truth.ndim, axis, middle)
            middle_right = slice_agreement(prediction[sl], truth[sl]) >= ends_unless_right
            painted = [middle] if middle_right else []
            if middle_right and fuse_weight is not None and fuse_weight_right is not None:
                shown = replace(shown, fuse_weight=fuse_weight_right)
    if ((ends_first and current is None) or ends_every_scan) and dice < target \
            and not middle_right:
        if axis != 0:
            raise ValueError("ends_first paints along z (axis 0)")
        painted = [int(z) for z in even_slices(truth, min(3, k_max), axis)]
        # as the dock's Retrain takes it: from the painted slices that show the structure
        extent = retrain_extent(sparse_labels(truth, painted, axis), axis)
        shown = replace(shown, extent=extent)
    first_batch = bool(painted)  # the ends and the middle, painted before the first Retrain
    while dice < target and (first_batch or len(painted) < k_max):
        if first_batch:
            first_batch = False
        else:
            nxt = _next_slice(truth, painted, prediction, uncertainty, axis, extent,
                              coverage=coverage, per_slice=per_slice,
                              main_structure=main_structure, body_first=body_first,
                              spread_until=spread_until)
            if nxt is None:
                break
            painted.append(nxt)
        if current is None:
            current = new_model(work / "new.pt", class_names, seed=seed, pretrained=pretrained,
                                in_channels=scan_channel_count(image),
                                **(network or {}))
        elif rebase_to is not None and not retrain_s and current != rebase_to:
            current, rebased = _better_base(current, rebase_to, image, truth, painted, axis,
                                            shown)
        # as the plugin's Retrain: a model that has learnt something is judged on held-back
        # painted slices and kept when the retrain does worse there
        judged = not is_untrained(current) and len(painted) >= hold_back_from
        train_z, held = (split_held_back(painted, HELD_BACK_FRACTION, seed) if judged
                         else (list(painted), []))
        out = work / f"v{len(painted)}-{time.monotonic_ns()}.pt"
        lr = {"lr": taught_lr} if taught_lr is not None and not is_untrained(current) else {}
        fresh = [z for z in painted if z not in seen]
        seen |= set(fresh)  # scored once: by the network that never saw them
        result = retrain_once(current, image, sparse_labels(truth, train_z, axis), out,
                              fresh=fresh if share_from_painted and axis == 0 else (),
                              share_evidence=evidence,
                              reference=sparse_labels(truth, held, axis),
                              held_back=[(axis, z) for z in held], method=method, steps=steps,
                              seed=seed, shown=shown, class_names=list(class_names),
                              other_labelled=earlier,
                              **({**config, "anchor": None} if earlier and not anchor_with_finished
                                 else config) | lr)
        assert result is not None  # nothing stops it
        retrain_s.append(result.train_s)
        evidence = result.share_evidence
        if result.share is not None:
            shares.append(result.share)
        if result.verdict.adopted:
            current, prediction = result.checkpoint, result.prediction.copy()
            uncertainty = result.uncertainty
        else:
            rejected += 1
            if result.kept_prediction is not None:  # the kept model with every painted slice
                prediction = result.kept_prediction.copy()
                uncertainty = result.kept_uncertainty
            if extent is not None:  # as the dock: the kept prediction stays within the ends
                prediction = limit_to_extent(prediction, extent, axis)
        for z in painted:  # the user's slices are kept as painted
            idx = [slice(None)] * truth.ndim
            idx[axis] = z
            prediction[tuple(idx)] = truth[tuple(idx)]
        dice = mean_dice(prediction, truth)
        trajectory.append(dice)
    row = {"painted": len(painted), "slices": painted, "dice": dice, "rejected": rejected,
           "reached": dice >= target, "retrain_s": retrain_s, "trajectory": trajectory,
           "rebased": rebased, "start_dice": start_dice, "middle_right": middle_right,
           "shares": shares, "segmentation": prediction}
    return row, current


def _better_base(carried: str, start: str, image: np.ndarray, truth: np.ndarray,
                 painted: Sequence[int], axis: int, shown: Any) -> tuple[str, bool]:
    """The carried model, or the series' starting model where that one scores better on the
    painted slices (ties keep the carried model). Returns (model, whether it is the start)."""
    from training.interactive.retrain import mean_score, score_slices

    reference = sparse_labels(truth, painted, axis)
    slices = [(axis, z) for z in painted]
    scores = [mean_score(score_slices(shown.predict(m, image, reference)[0], reference, slices))
              for m in (carried, start)]
    if scores[1] is not None and (scores[0] is None or scores[1] > scores[0]):
        return start, True
    return carried, False


def effort_benchmark(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    target: float,
    start: str | None = None,
    k_max: int = 12,
    steps: int = 200,
    method: str = "supervised",
    device: str | None = "cpu",
    log: Callable[[str], None] | None = None,
    work_dir: str | Path | None = None,
    fuse_weight: float | None = None,
    hold_back_from: int | None = None,
    coverage: float = SUGGEST_COVERAGE,
    per_slice: str = SUGGEST_PER_SLICE,
    main_structure: bool = SUGGEST_MAIN_STRUCTURE,
    main_piece: bool = KEEP_MAIN_PIECE,
    ends: str | None = None,
    body_first: bool = SUGGEST_BODY_FIRST,
    spread_until: int = SUGGEST_SPREAD_UNTIL,
    spread_new_only: bool = True,
    pretrained: str | None = None,
    replay: bool | str = False,
    network: dict | None = None,
    ends_first: bool = False,
    ends_every_scan: bool = False,
    baselines_only: bool = False,
    rebase: bool = False,
    ends_unless_right: float | None = None,
    consolidate: int = 0,
    finished_kept: int = FINISHED_SCANS_KEPT,
    fuse_weight_taught: float | None = None,
    anchor_with_finished: bool = True,
    judge_taught: bool = False,
    fuse_weight_right: float | None = None,
    taught_lr: float | None = None,
    share_from_painted: bool = False,
    prior_taught: str | None = None,
    suggest_from: str | None = None,
    fuse_by_gap: str | None = None,
    seed: int = 0,
    **config: Any,
) -> list[Row]:
    """One row per scan, in order: slices painted and Dice for learning and interpolation,
    and for ITK's contour interpolation (3D Slicer's "Fill between slices") when that optional
    extra is installed. ``baselines_only``: no learning, the baselines alone.

    ``hold_back_from`` None does as the plugin: Retrains of a model taught from scratch are
    not judged on held-back slices, on any scan; from a ``start`` model, from 2 slices.

    ``replay``: each Retrain also trains on the scans done before, on the slices painted there
    (True or ``"painted"``) or on the whole segmentation the user finished there
    (``"finished"``: the painted slices and the prediction kept between them; the most recent
    ``finished_kept``, by default as many as the dock keeps).
    ``consolidate`` (with ``replay="finished"``): between scans, the carried model trains this
    many more steps on every finished segmentation, the last one's first (the time the user
    takes to open the next scan). ``judge_taught``: on a scan that starts from a model already
    taught, Retrains are judged on held-back painted slices from 2 painted slices.
    ``spread_until`` (:func:`training.interactive.loop.rank_uncertain_slices`) applies on the
    scans that start with no model when ``spread_new_only``, else on every scan."""
    if hold_back_from is None:
        hold_back_from = 2 if start is not None else k_max + 1
    rows = []
    model = start
    earlier: list[tuple[np.ndarray, np.ndarray]] = []  # painted slices of the scans done
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp, ExitStack() as stack:
        itk = _itk_baseline(stack)
        for i, (name, image, truth) in enumerate(cases):
            run_seed = 1000 * seed + i
            work = Path(tmp) / f"scan{i}"
            work.mkdir()
            t0 = time.perf_counter()
            if baselines_only:
                row: Row = {"painted": None, "slices": [], "dice": float("nan"),
                            "rejected": 0, "reached": False, "retrain_s": [],
                            "trajectory": []}
            else:
                row, model = learning_effort(
                    image, truth, model, class_names, target, k_max, work, steps=steps,
                    method=method, device=device, seed=run_seed, fuse_weight=fuse_weight,
                    hold_back_from=(2 if judge_taught and _taught(model) else hold_back_from),
                    coverage=coverage, per_slice=per_slice,
                    main_structure=main_structure, main_piece=main_piece, ends=ends,
                    body_first=body_first,
                    spread_until=0 if spread_new_only and model is not None else spread_until,
                    pretrained=pretrained, network=network,
                    ends_first=ends_first, ends_every_scan=ends_every_scan,
                    rebase_to=start if rebase else None,
                    earlier=list(earlier[-finished_kept:] if replay == "finished"
                                 else earlier),
                    ends_unless_right=ends_unless_right,
                    fuse_weight_taught=fuse_weight_taught,
                    anchor_with_finished=anchor_with_finished,
                    fuse_weight_right=fuse_weight_right, taught_lr=taught_lr,
                    share_from_painted=share_from_painted, prior_taught=prior_taught,
                    suggest_from=suggest_from, fuse_by_gap=fuse_by_gap,
                    **config)
            finished = row.pop("segmentation", None)
            if replay == "finished" and finished is not None:
                earlier.append((image, np.asarray(finished, dtype=np.uint8)))
                if consolidate > 0 and model is not None and i + 1 < len(cases):
                    # as the dock does while the user opens the next scan
                    model = train_between_scans(
                        model, earlier[-finished_kept:], work / "consolidated.pt",
                        consolidate, method=method, seed=run_seed, device=device,
                        **{k: v for k, v in config.items()
                           if k in ("labeled_bs", "unlabeled_bs", "lr")})
            elif replay:
                earlier.append((image, sparse_labels(truth, row["slices"])))
            k_interp, d_interp = interpolation_effort(truth, target, k_max)
            row.update({"case": name, "interp_painted": k_interp, "interp_dice": d_interp,
                        "wall_s": time.perf_counter() - t0})
            if itk is not None:
                row["itk_painted"], row["itk_dice"] = interpolation_effort(truth, target, k_max,
                                                                           fill=itk)
            rows.append(row)
            if log and baselines_only:
                log(f"{name}: interpolation {k_interp} slices (Dice {d_interp:.3f})")
            elif log:
                if row.get("start_dice") is not None:
                    log(f"{name}: first Predict, before any painting: Dice "
                        f"{row['start_dice']:.3f}")
                log(f"{name}: slices {row['slices']}, Dice after each Retrain "
                    f"{[round(d, 3) for d in row['trajectory']]}"
                    + (f", network's share {row['shares']}" if row.get("shares") else ""))
                log(f"{name}: learning {row['painted']} slices (Dice {row['dice']:.3f}), "
                    f"interpolation {k_interp} slices (Dice {d_interp:.3f}), "
                    f"{row['wall_s']:.0f} s")
    return rows


def effort_table(rows: Sequence[Row], target: float, k_max: int, header: str) -> str:
    """Markdown: per scan, then totals; a scan that never reached the target counts as k_max.
    ITK's contour interpolation gets its columns when the rows have it; rows without learning
    (``baselines_only``) show the baselines alone."""
    itk = any("itk_painted" in r for r in rows)
    learnt = any(r["painted"] is not None for r in rows)

    def needed(k: int | None) -> str:
        return f"{k}" if k is not None else f">{k_max}"

    cols = ["#", "scan"]
    if learnt:
        cols += ["first Predict, before painting", "learning: slices painted", "Dice reached",
                 "Dice after each Retrain", "retrains rejected", "s per retrain (median)"]
    cols += ["interpolation: slices needed", "its Dice"]
    if itk:
        cols += ["ITK contour interpolation (Slicer): slices needed", "its Dice"]
    lines = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for i, r in enumerate(rows, 1):
        cells = [str(i), r["case"]]
        if learnt:
            med = f"{np.median(r['retrain_s']):.0f}" if r["retrain_s"] else "—"
            steps = " ".join(f"{100 * d:.0f}" for d in r.get("trajectory", []))
            first = r.get("start_dice")  # None: no model yet on this scan
            cells += ["—" if first is None else f"{100 * first:.1f}",
                      f"{r['painted']}" + ("" if r["reached"] else " (target not reached)"),
                      f"{100 * r['dice']:.1f}", steps, str(r.get("rejected", 0)), med]
        cells += [needed(r["interp_painted"]), f"{100 * r['interp_dice']:.1f}"]
        if itk:
            cells += [needed(r.get("itk_painted")), f"{100 * r.get('itk_dice', 0.0):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")

    def total(key: str) -> int:
        return sum(r.get(key) if r.get(key) is not None else k_max for r in rows)

    total_i = total("interp_painted")
    lines.append("")
    if learnt:
        total_l = sum(r["painted"] for r in rows)
        lines.append(f"- total slices painted: learning **{total_l}**, interpolation "
                     f"**{total_i}** ({100 * total_l / max(total_i, 1):.0f} %)"
                     + (f", ITK contour interpolation **{total('itk_painted')}** "
                        f"({100 * total_l / max(total('itk_painted'), 1):.0f} %)" if itk else "")
                     + f"; target Dice {100 * target:.0f}")
        later = [r["painted"] for r in rows[1:]]
        lines.append(f"- from the second scan on: {np.mean(later):.1f} slices per scan"
                     if later else "- one scan only")
        third = [r["painted"] for r in rows[2:]]
        if third:
            lines.append(f"- from the third scan on: {np.mean(third):.1f} slices per scan")
        rebased = [str(i + 1) for i, r in enumerate(rows) if r.get("rebased")]
        if rebased:
            lines.append(f"- the first Retrain started from the starting model, not the carried "
                         f"one, on scan {', '.join(rebased)}")
    else:
        lines.append(f"- total slices needed: interpolation **{total_i}**"
                     + (f", ITK contour interpolation **{total('itk_painted')}**" if itk
                        else "") + f"; target Dice {100 * target:.0f}")
    return "\n".join(lines) + "\n"


def scan_channel_count(image: np.ndarray) -> int:
    """Channels of a scan as :func:`load_cases` gives it: (z, y, x) grey, (z, y, x, c)."""
    return int(image.shape[-1]) if image.ndim == 4 else 1


def load_cases(data_dir: str | Path, n: int, split: str | None, offset: int = 0,
               keep_channels: bool = False, patients: Sequence[str] | None = None
               ) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], list[str]]:
    """The first ``n`` labelled cases of ``split`` (after ``offset``), and the class names.
    ``patients`` names the cases (or patients of slice stacks) instead, in that order: sets
    such as LGG keep their splits in a file of their own (``benchmarks/splits``).

    2-D slice stacks (LGG PNGs) are grouped by patient into one volume each. With
    ``keep_channels`` an RGB scan comes whole, (z, y, x, c), for a model that reads channels
    (as the dock gives it); otherwise as its grey (FLAIR) channel.
    """
    from training.core.io import (
        SLICE_SUFFIXES,
        DataError,
        has_suffix,
        read_image,
        read_labels,
        read_volume,
        rgb_channels,
    )
    from training.engine.data import class_names_from_index, scan_dataset

    pool = [c for c in scan_dataset(data_dir) if c.label is not None
            and (split is None or c.split in (split, None))]
    slices = all(has_suffix(c.image, SLICE_SUFFIXES) for c in pool)
    groups: dict[str, list] = {}
    for c in pool:  # 2-D slices make one volume per patient; a 3-D scan is a volume by itself
        groups.setdefault((c.patient or c.name) if slices else c.name, []).append(c)
    if patients:
        missing = [p for p in patients if p not in groups]
        if missing:
            raise DataError(f"no labelled scans of {missing[0]!r} in {data_dir}")
        names = list(patients)[offset: offset + n]
    else:
        names = list(groups)[offset: offset + n]
    cases, max_label = [], 1
    for key in names:
        imgs, labs = [], []
        for c in groups[key]:
            vol = read_volume(c.image) if keep_channels else None
            if vol is not None and vol.rgb:
                imgs.append(rgb_channels(vol.data))
            else:
                imgs.append(read_image(c.image)[0])
            labs.append(read_labels(c.label)[0])
        image, truth = np.concatenate(imgs), np.concatenate(labs)
        truth = np.where(truth == IGNORE_INDEX, 0, truth).astype(np.uint8)
        max_label = max(max_label, int(truth.max()))
        cases.append((key, image, truth))
    class_names = class_names_from_index(data_dir) or (
        ["background"] + [f"structure {k}" for k in range(1, max_label + 1)])
    return cases, class_names


def fixed_k_rows(
    cases: Sequence[tuple[str, np.ndarray, np.ndarray]],
    class_names: Sequence[str],
    k: int,
    steps: int = 200,
    method: str = "supervised",
    device: str | None = "cpu",
    log: Callable[[str], None] | None = None,
    work_dir: str | Path | None = None,
    pretrained: str | None = None,
    network: dict | None = None,
    prior_fill: str | None = None,
    **config: Any,
) -> list[Row]:
    """From scratch on each scan, the same K evenly spaced painted slices for both: one Retrain
    of a new model against interpolation (and ITK's contour interpolation, when that optional
    extra is installed), Dice on the slices nobody painted."""
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.interactive.image_priors import fill_between_slices
    from training.interactive.new_model import new_model

    rows = []
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp, ExitStack() as stack:
        itk = _itk_baseline(stack)
        for i, (name, image, truth) in enumerate(cases):
            painted = even_slices(truth, k)
            sparse = sparse_labels(truth, painted)
            rest = [z for z in range(truth.shape[0]) if z not in painted]
            interp = interpolate_between_slices(sparse, painted)
            # what the dock shows at once, and fuses the network with
            registered = fill_between_slices(sparse, image, "register", painted)
            start = new_model(Path(tmp) / f"new{i}.pt", class_names, seed=i,
                              pretrained=pretrained, in_channels=scan_channel_count(image),
                              **(network or {}))
            t0 = time.perf_counter()
            if (prior_fill or ("register" if PRIOR_FROM_FILL else "interpolation")) \
                    == "register" and config.get("prior") == "interpolation":
                config["prior_filled"] = registered  # the prior's pseudo-labels from it
            ckpt = finetune(start, image, sparse, (), method=method, steps=steps,
                            out_path=Path(tmp) / f"m{i}.pt", seed=i, device=device,
                            class_names=list(class_names), **config)
            train_s = time.perf_counter() - t0
            net, meta = load_checkpoint(ckpt, device=device)
            res = predict_volume(net, meta, image, device=device)
            pred = res["labels"]
            row = {"case": name, "painted": painted, "train_s": train_s,
                   "learning": mean_dice(pred[rest], truth[rest]),
                   "interpolation": mean_dice(interp[rest], truth[rest]),
                   "registered": mean_dice(registered[rest], truth[rest]),
                   "fused": {}}
            if itk is not None:
                row["itk"] = mean_dice(itk(sparse, painted)[rest], truth[rest])
            for w in FUSE_WEIGHTS:  # the network blended with the registered fill, as shown
                fused = fuse_with_interpolation(res["probabilities"], sparse, weight=w,
                                                filled=registered)
                row["fused"][w] = mean_dice(fused[rest], truth[rest])
                # ... keeping only its main 3-D piece and the pieces on painted slices
                main = keep_main_structure(fused, sparse)
                row["fused"][f"{w} main"] = mean_dice(main[rest], truth[rest])
                # ... and nothing beyond the outermost painted slices (what interpolation knows)
                inside = within_painted_extent(main, sparse)
                row["fused"][f"{w} main extent"] = mean_dice(inside[rest], truth[rest])
            rows.append(row)
            if log:
                log(f"{name}: learning {row['learning']:.3f}, interpolation "
                    f"{row['interpolation']:.3f} ({train_s:.0f} s)")
    return rows


def _fused_label(key: float | str) -> str:
    return (str(key).replace(" main extent", " (main piece, within the painted extent)")
            .replace(" main", " (main piece)"))


def fixed_k_table(rows: Sequence[Row], k: int, header: str) -> str:
    keys = [k_ for k_ in rows[0]["fused"]] if rows else list(FUSE_WEIGHTS)
    fused_cols = " | ".join(f"fused, w = {_fused_label(w)}" for w in keys)
    itk = any("itk" in r for r in rows)
    lines = [header, "", f"| scan | painted slices (K = {k}) | learning, Dice on the rest | "
             f"{fused_cols} | registered fill | interpolation, Dice on the rest | "
             + ("ITK contour interpolation (Slicer) | " if itk else "") + "retrain s |",
             "|---|---|---|" + "---|" * len(keys) + "---|---|" + ("---|" if itk else "")
             + "---|"]
    for r in rows:
        fused = " | ".join(f"{100 * r['fused'][w]:.1f}" for w in keys)
        lines.append(f"| {r['case']} | {r['painted']} | {100 * r['learning']:.1f} | {fused} | "
                     f"{100 * r['registered']:.1f} | {100 * r['interpolation']:.1f} | "
                     + (f"{100 * r.get('itk', float('nan')):.1f} | " if itk else "")
                     + f"{r['train_s']:.0f} |")
    interp = np.array([r["interpolation"] for r in rows])

    def summary(label: str, values: np.ndarray) -> str:
        return (f"- {label}: **{100 * values.mean():.1f} ± {100 * values.std():.1f}**, "
                f"≥ interpolation on {int((values >= interp).sum())} of {len(rows)} scans")

    lines += ["", summary("learning", np.array([r["learning"] for r in rows]))]
    lines += [summary(f"fused w = {_fused_label(w)}".replace(" (", ", ").rstrip(")"),
                      np.array([r["fused"][w] for r in rows])) for w in keys]
    lines += [summary("registered fill", np.array([r["registered"] for r in rows]))]
    if itk:
        lines += [summary("ITK contour interpolation",
                          np.array([r.get("itk", np.nan) for r in rows]))]
    lines += [f"- interpolation: **{100 * interp.mean():.1f} ± {100 * interp.std():.1f}** "
              f"(± = spread over scans)"]
    return "\n".join(lines) + "\n"


def _taught(model: str | None) -> bool:
    """A scan starts from a model that has learnt something."""
    from training.interactive.new_model import is_untrained

    return model is not None and not is_untrained(model)
