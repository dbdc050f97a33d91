"""``semiseg benchmark``: label efficiency, Predict speed, annotation effort, weak labels.

Split from ``training/cli.py`` so that each command's options and report live apart from the
training and prediction commands; ``main`` there dispatches here.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.cli import _config, _pretrained_on, _prior_init
from training.core.atomic import atomic_write
from training.core.io import DataError
from training.engine.checkpoint import load_checkpoint
from training.methods import parse_spec


def run_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``semiseg benchmark KIND``: the table, printed and written to ``--out``."""
    from training.bench.benchmark import label_efficiency

    if args.benchmark == "weak":
        return _cmd_benchmark_weak(args, argv)
    if args.benchmark == "speed":
        return _cmd_benchmark_speed(args, argv)
    if args.benchmark == "effort":
        return _cmd_benchmark_effort(args, argv)
    methods = [m for m in args.methods if m]
    for m in methods:  # a typo fails here, not after hours of the runs before it
        parse_spec(m)
    cfg = _config(args)
    command = "semiseg " + " ".join(shlex.quote(a) for a in argv)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    if args.choose_step_on_val < 0:
        raise DataError("--choose-step-on-val must be 0 (off) or a number of steps")
    table = label_efficiency(args.data, args.labeled, methods, args.seeds, cfg, args.out,
                             command, log, labeled_set=args.labeled_set,
                             step_every=args.choose_step_on_val)
    print(table)
    return 0


def _cmd_benchmark_speed(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.bench.benchmark import evaluate_split, machine_description
    from training.bench.speed import benchmark_volume, entries_for, speed_table, time_predictions

    if args.repeats < 1:
        raise DataError("--repeats must be at least 1")
    if any(m < 0 for m in args.mc):
        raise DataError("--mc takes 0 (one softmax) or more MC-dropout samples")
    entries = entries_for(args.models)
    volume = benchmark_volume(args.volume, args.shape)
    t0 = time.perf_counter()
    if any(b < 0 for b in args.batch):
        raise DataError("--batch takes 0 (the default) or a positive number of slices")
    batches = [b or None for b in args.batch]
    medians = time_predictions(entries, volume, args.mc, args.repeats,
                               log=lambda m: print(m, file=sys.stderr, flush=True),
                               batches=batches)
    dice = None
    if args.data:
        dice = {i: float(np.mean(evaluate_split(e.path, args.data, "test")["dice"]))
                for i, e in enumerate(entries)}
    header = _header(
        "Predict speed benchmark", argv, machine_description(),
        f"- volume: {args.volume} resampled to {tuple(args.shape)} (z, y, x); median of "
        f"{args.repeats} repeats, models interleaved; timing took "
        f"{time.perf_counter() - t0:.0f} s",
        "- predict + uncertainty = `predict_volume(probabilities=False)` (the plugin's "
        "Predict): the scan's normalisation, the network, labels and the entropy map "
        "(from the same pass; for a native-grid model at the scan's resolution), on CPU.")
    table = speed_table(entries, medians, args.mc, dice, header, batches)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table, encoding="utf-8")
    print(table)
    return 0


def _ends_unless_right(value: str | None, start: str | None) -> float | None:
    """``--ends-unless-right`` as a Dice in (0, 1], or None for always the ends. By default the
    plugin's: for a New model's series (``start`` None) only, where it was chosen."""
    from training.interactive.loop import ENDS_UNLESS_RIGHT

    if value is None:
        return ENDS_UNLESS_RIGHT if start is None else None
    if str(value).lower() == "off":
        return None
    try:
        dice = float(value)
    except ValueError:
        raise DataError(f"--ends-unless-right takes a Dice (e.g. 90 or 0.9) or off, "
                        f"not {value!r}") from None
    dice = dice / 100 if dice > 1 else dice
    if not 0 < dice <= 1:
        raise DataError("--ends-unless-right is a Dice, e.g. 90 or 0.9")
    return dice


def _judging_note(hold_back_from: int | None, k_max: int) -> str:
    """The effort header's words for ``--hold-back-from``: above ``--k-max`` it never happens."""
    if hold_back_from is None:
        return "as the plugin"
    if hold_back_from > k_max:
        return "never (more slices than --k-max)"
    return f"from {hold_back_from} painted slices on"


def _consolidate_note(steps: int) -> str:
    """The effort header's words for ``--consolidate``."""
    return (f"between scans, {steps} more steps on the finished segmentations; " if steps > 0
            else "")


def _taught_note(weight: float | None) -> str:
    """The effort header's words for ``--fuse-weight-taught``."""
    return f" ({weight:g} on a scan that starts from a taught model)" if weight is not None else ""


def _gap_note(by_gap: str | None) -> str:
    """The effort header's words for ``--fuse-by-gap`` (None or "off": nothing to say)."""
    where = {"all": "", "taught": " on a scan that starts from a taught model"}
    return (f" (rising from 0 on a painted slice to that x sqrt(t), t = 1 midway between two"
            f"{where[by_gap]})" if by_gap in where else "")


def _replay_note(replay: str | None, kept: int | None = None) -> str:
    """The effort header's words for ``--replay``."""
    if replay == "finished":
        return ("each Retrain also trains on the earlier scans' finished segmentations"
                + (f" (the {kept} most recent)" if kept else "") + "; ")
    return "each Retrain also trains on the earlier scans painted slices; " if replay else ""


def _header(title: str, argv: Sequence[str], machine: str, *lines: str) -> str:
    """The top of a benchmark table: title, the exact command, the machine, then ``lines``."""
    return "\n".join([f"# {title}", "",
                      "- command: `semiseg " + " ".join(shlex.quote(a) for a in argv) + "`",
                      f"- machine: {machine}", *lines])


def _network_overrides(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` words as new-model arguments: numbers as numbers, ``size=N`` a square
    patch."""
    from training.interactive.new_model import NEW_MODEL_NETWORK

    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        keys = {*NEW_MODEL_NETWORK, "unshuffle", "size", "whole_slice_up_to"}
        if not sep or key not in keys:
            raise DataError(f"--new-network takes KEY=VALUE with KEY one of {sorted(keys)}, "
                            f"not {pair!r}")
        number = float(value) if "." in value else int(value) if value.isdigit() else value
        out[key] = [number, number] if key == "size" else number
    return out


def _cmd_benchmark_effort(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.bench.benchmark import machine_description
    from training.bench.effort import effort_benchmark, effort_table, load_cases

    target = args.target / 100 if args.target > 1 else args.target
    if not 0 < target <= 1:
        raise DataError("--target is a Dice, e.g. 90 or 0.9")
    if args.cases < 1 or args.k_max < 1:
        raise DataError("--cases and --k-max must be at least 1")
    start = None if args.start == "scratch" else args.start
    args.ends_unless_right = _ends_unless_right(args.ends_unless_right, start)
    if args.replay is None:
        from training.interactive.loop import REPLAY_FINISHED

        args.replay = "finished" if REPLAY_FINISHED else "none"
    if args.replay == "none":
        args.replay = None
    if args.consolidate is None:  # as the dock: a New model's series only
        from training.interactive.between_scans import TRAIN_BETWEEN_SCANS_STEPS

        args.consolidate = (TRAIN_BETWEEN_SCANS_STEPS
                            if start is None and args.replay == "finished" else 0)
    if args.consolidate < 0:
        raise DataError("--consolidate STEPS: STEPS >= 0")
    if args.consolidate and args.replay != "finished":
        raise DataError("--consolidate trains on finished scans: it needs --replay finished")
    if args.finished_kept is not None and (args.replay != "finished" or args.finished_kept < 1):
        raise DataError("--finished-kept N: N >= 1, with --replay finished")
    if args.prior_taught is not None and not args.prior:
        raise DataError("--prior-taught changes --prior on later scans: give --prior")
    if args.taught_lr is not None and not args.taught_lr > 0:
        raise DataError(f"--taught-lr must be above 0, not {args.taught_lr}")
    if args.fuse_weight_right is not None and args.fuse_weight is None:
        raise DataError("--fuse-weight-right W changes --fuse-weight's blend: give --fuse-weight")
    if args.fuse_weight_taught is not None and args.fuse_weight is None:
        raise DataError("--fuse-weight-taught W changes --fuse-weight's blend: give --fuse-weight")
    if args.fuse_by_gap is not None and args.fuse_weight is None:
        raise DataError("--fuse-by-gap shapes --fuse-weight's blend: give --fuse-weight")
    if args.fuse_weight_from_painted and args.fuse_weight is None:
        raise DataError("--fuse-weight-from-painted reads --fuse-weight's blend share off the "
                        "painted slices: give --fuse-weight")
    if args.finished_kept is None:
        from training.interactive.loop import FINISHED_SCANS_KEPT

        args.finished_kept = FINISHED_SCANS_KEPT
    rebase_note = ("; each scan's first Retrain from the better, on its painted slices, of "
                   "this and the carried model")
    if args.rebase and start is None:
        raise DataError("--rebase chooses between the carried model and --start MODEL: give one")
    from training.interactive.new_model import NEW_MODEL_CHANNELS

    new_model_channels = args.new_model_channels or NEW_MODEL_CHANNELS
    channels = 1
    if start is not None:  # a bad checkpoint is refused before any work
        from training.engine.inference import model_channels

        if args.new_model_channels:
            raise DataError("--new-model-channels is for a New model: leave out --start")
        channels = model_channels(load_checkpoint(start)[1])
    cases, names = load_cases(args.data, args.cases, args.split or None, args.offset,
                              keep_channels=channels > 1 or (start is None
                                                             and new_model_channels == "all"),
                              patients=[p for p in args.patients.split(",") if p])
    if not cases:
        raise DataError(f"no labelled scans in split {args.split!r} of {args.data}")
    if start is not None:
        names = load_checkpoint(start)[1].get("class_names") or names
    t0 = time.perf_counter()
    extra: dict = {"prior": args.prior} if args.prior else {}
    if args.pretrained:
        extra["pretrained"] = args.pretrained
    if args.prior_init is not None:
        extra["prior_init"] = bool(args.prior_init)
    if args.new_network:
        extra["network"] = _network_overrides(args.new_network)
    if args.prior_fill:
        if not args.fixed_k:
            raise DataError("--prior-fill goes with --fixed-k (a Retrain follows the plugin)")
        extra["prior_fill"] = args.prior_fill
    start_weights = (f"{_pretrained_on(args.pretrained)}: {args.pretrained}" if args.pretrained
                     else "random")
    if args.new_network:
        start_weights += f"; network {' '.join(args.new_network)}"
    if start is None and any(c[1].ndim == 4 for c in cases):
        start_weights += f"; reads the scan's {cases[0][1].shape[-1]} channels"
    if args.fixed_k:
        from training.bench.effort import fixed_k_rows, fixed_k_table

        if start is not None:
            raise DataError("--fixed-k measures a new model from scratch: leave --start out")
        rows = fixed_k_rows(cases, names, args.fixed_k, args.steps, args.method, args.device,
                            log=lambda m: print(m, file=sys.stderr, flush=True), **extra)
        header = _header(
            "A new structure from K painted slices: one Retrain against interpolation", argv,
            f"{machine_description()}; took {time.perf_counter() - t0:.0f} s",
            f"- new model (2-D U-Net, {start_weights}), one Retrain: {args.method}, {args.steps} "
            f"steps, prior {args.prior or 'none'}"
            f"{f' (from the {args.prior_fill} fill)' if args.prior_fill else ''}; the same K "
            f"slices, evenly spaced from the "
            f"structure's first to its last, for both arms")
        table = fixed_k_table(rows, args.fixed_k, header)
        atomic_write(args.out, lambda fh: fh.write(table.encode()))
        print(table)
        return 0
    from training.interactive.interpolation import ENDS
    from training.interactive.loop import (
        KEEP_MAIN_PIECE,
        PAINT_ENDS_EVERY_SCAN,
        SUGGEST_BODY_FIRST,
        SUGGEST_COVERAGE,
        SUGGEST_MAIN_STRUCTURE,
        SUGGEST_PER_SLICE,
        SUGGEST_SPREAD_UNTIL,
    )

    # the plugin's: on a New model's first scan; asked for: on every scan with painted ends
    spread = SUGGEST_SPREAD_UNTIL if args.spread_until is None else args.spread_until
    spread_new_only = args.spread_until is None
    coverage = SUGGEST_COVERAGE if args.coverage is None else args.coverage
    every_scan = (PAINT_ENDS_EVERY_SCAN if args.ends_every_scan is None
                  else args.ends_every_scan)
    per_slice = args.slice_score or SUGGEST_PER_SLICE
    main = (SUGGEST_MAIN_STRUCTURE if args.suggest_within is None
            else args.suggest_within == "main")
    main_piece = KEEP_MAIN_PIECE if args.fused_pieces is None else args.fused_pieces == "main"
    ends = args.ends or ENDS
    body_first = (SUGGEST_BODY_FIRST if args.first_suggestion is None
                  else args.first_suggestion == "body")
    judging = _judging_note(args.hold_back_from, args.k_max)
    rows = effort_benchmark(cases, names, target, start, args.k_max, args.steps, args.method,
                            args.device, log=lambda m: print(m, file=sys.stderr, flush=True),
                            fuse_weight=args.fuse_weight, hold_back_from=args.hold_back_from,
                            coverage=coverage, per_slice=per_slice, main_structure=main,
                            main_piece=main_piece, ends=ends, body_first=body_first,
                            spread_until=spread, spread_new_only=spread_new_only,
                            replay=args.replay,
                            ends_first=args.first_scan == "ends",
                            baselines_only=args.baselines_only,
                            ends_every_scan=every_scan, rebase=args.rebase,
                            ends_unless_right=args.ends_unless_right,
                            consolidate=args.consolidate,
                            finished_kept=args.finished_kept,
                            fuse_weight_taught=args.fuse_weight_taught,
                            anchor_with_finished=args.anchor_with_finished == "on",
                            judge_taught=args.judge_taught,
                            fuse_weight_right=args.fuse_weight_right,
                            taught_lr=args.taught_lr,
                            share_from_painted=args.fuse_weight_from_painted,
                            prior_taught=args.prior_taught,
                            suggest_from=args.suggest_from,
                            fuse_by_gap=args.fuse_by_gap,
                            seed=args.seed, **extra)
    header = _header(
        "Annotation effort: assistant vs interpolation", argv,
        f"{machine_description()}; took {time.perf_counter() - t0:.0f} s",
        f"- start: {args.start}"
        f"{rebase_note if args.rebase else ''}"
        f"{f' (a new model, weights: {start_weights})' if start is None else ''}; "
        f"{_replay_note(args.replay, args.finished_kept)}"
        f"{_consolidate_note(args.consolidate)}"
        f"Retrain = `finetune` as the plugin calls it (anchored"
        f"{', not where finished scans teach' if args.anchor_with_finished == 'off' else ''}), "
        + ("judged from 2 painted slices on a scan from a taught model, "
           if args.judge_taught else "") +
        f"{args.method}, {args.steps} steps"
        f"{f', learning rate {args.taught_lr:g} from a taught model' if args.taught_lr else ''}"
        f", prior {args.prior or 'none'}"
        f"{f' ({args.prior_taught} on a scan from a taught model)' if args.prior_taught else ''}"
        f", fused with the fill "
        f"between painted slices (registered): {args.fuse_weight or 'no'}"
        f"{_taught_note(args.fuse_weight_taught)}"
        f"{_gap_note(args.fuse_by_gap) if args.fuse_weight else ''}"
        + (f" ({args.fuse_weight_right:g} where the model had the middle slice right)"
           if args.fuse_weight_right is not None else "") +
        (" (each Retrain's share read off the painted slices the network had not trained "
         "on, where there are some)" if args.fuse_weight_from_painted else "") +
        f"{' (its main 3-D piece kept)' if args.fuse_weight and main_piece else ''}"
        f"{f'; where a structure ends between painted slices: {ends}' if args.prior else ''}"
        + ("; on the first scan (no model yet) the structure's first, middle and last slices "
           "are painted before the first Retrain and the prediction kept between the ends, "
           "then" if args.first_scan == "ends" and start is None and not every_scan
           else "; on every scan the structure's first, middle and last slices are painted "
           "before its first Retrain and the prediction kept between the ends"
           + (f" (on a scan with a model, the middle slice first, and the ends only where the "
              f"model's Dice there was below {args.ends_unless_right:g})"
              if args.ends_unless_right is not None else "") + ", then"
           if every_scan else "; ")
        + " one slice painted per Retrain, the slice the product suggests (the structure's "
        f"middle slice before any model exists); "
        f"held-back judgement of each Retrain: {judging}; suggestions weighted by distance "
        f"to the painted slices with power {coverage:g}, slice score: {per_slice} "
        f"uncertainty near the structure"
        f"{_suggest_note(args.suggest_from) if args.fuse_weight else ''}"
        f"{' (its main 3-D piece only)' if main else ''}"
        f"{'; on a scan with nothing painted, its largest section first' if body_first else ''}"
        + (f"; between painted ends, the middle of the longest unpainted run first until "
           f"{spread} slices are painted"
           f"{' (on a scan that starts with no model)' if spread_new_only else ''}"
           if spread else ""),
        "- interpolation: K evenly spaced slices from the structure's first to its last, "
        "filled by shape-based interpolation; smallest K that reaches the target",
        "- Dice: mean over structures, whole scan (painted slices included, as the user "
        "ends up with them)")
    table = effort_table(rows, target, args.k_max, header)
    atomic_write(args.out, lambda fh: fh.write(table.encode()))
    print(table)
    return 0


def _cmd_benchmark_weak(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.bench.weak_benchmark import weak_benchmark

    cfg = _config(args, seed=args.seed, prior_init=_prior_init(args, default=0))  # as train --tags
    command = "semiseg " + " ".join(shlex.quote(a) for a in argv)
    table = weak_benchmark(args.data, cfg, args.out, test_patients=args.test_patients,
                           dense=args.dense, classifier_steps=args.classifier_steps,
                           command=command, tag_file=args.tags, folds=args.folds,
                           localiser=args.localiser,
                           log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.table:
        Path(args.table).parent.mkdir(parents=True, exist_ok=True)
        Path(args.table).write_text(table, encoding="utf-8")
    print(table)
    return 0


def _suggest_note(suggest_from: str | None) -> str:
    """The effort header's words for ``--suggest-from`` (None: the plugin's)."""
    from training.interactive.retrain import SUGGEST_FROM

    return {"disagreement": " (the network's, raised to the blend's where it and the fill "
                            "disagree)",
            "shown": " (of the blend shown)"}.get(suggest_from or SUGGEST_FROM, "")
