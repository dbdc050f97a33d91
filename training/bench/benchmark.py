"""Label-efficiency benchmark: labelled-only vs methods vs all-labelled, on the same budget."""

from __future__ import annotations

import json
import os
import platform
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training.core.atomic import atomic_write
from training.core.io import read_image, read_labels
from training.engine.checkpoint import companion_path, load_checkpoint, read_meta
from training.engine.data import class_names_from_index, load_train_data, scan_dataset
from training.engine.inference import model_channels, predict_volume
from training.engine.metrics import classes_to_score, dice_hd95, mean_over_cases
from training.engine.postprocess import POSTPROCESS_MODES, keep_main_pieces
from training.fit.trainer import TrainConfig, method_settings, train

LABELED_ONLY = "labelled-only"
ALL_LABELED = "all-labelled"
MIN_GAP = 0.01  # below one Dice point the ratio is noise, not a measurement


def evaluate_split(model_path: str, data_dir: str, split: str = "test") -> dict:
    """Mean per-class Dice / HD95 of a checkpoint on one split of a dataset folder, its
    labels as the network gives them (no clean-up)."""
    return evaluate_clean_ups(model_path, data_dir, split, ("none",))["none"]


def evaluate_clean_ups(
    model_path: str, data_dir: str, split: str = "test",
    modes: Sequence[str] = POSTPROCESS_MODES,
) -> dict[str, dict]:
    """:func:`evaluate_split` for each clean-up in ``modes`` (``training.engine.postprocess``),
    every scan predicted once."""
    model, meta = load_checkpoint(model_path, device="cpu")
    scored = []
    for case in scan_dataset(data_dir):
        if case.split != split or case.label is None:
            continue
        img, geometry = read_image(case.image, channels=model_channels(meta))
        ref, _ = read_labels(case.label)
        pred = predict_volume(model, meta, img, device="cpu", clean_up=False)["labels"]
        scored.append((pred, ref, list(geometry.spacing)[::-1][: ref.ndim]))
    if not scored:
        raise ValueError(f"no labelled cases in split {split!r}")
    # every class in a prediction or a reference, not only the model's (the evaluate rule)
    n = classes_to_score(((p, r) for p, r, _ in scored), int(meta["num_classes"]))
    out = {}
    for mode in modes:
        results = [dice_hd95(keep_main_pieces(p, mode), r, n, sp) for p, r, sp in scored]
        out[mode] = {**mean_over_cases(results), "cases": len(results)}
    return out


def clean_up_chosen_on_val(val: dict[str, dict] | None) -> str:
    """The clean-up with the best mean val Dice, as a shipped model's card chooses it
    (``benchmarks/postprocess_choice.py``); a tie keeps the simpler one, and no val split
    means none."""
    if not val:
        return "none"
    best = "none"
    for mode in POSTPROCESS_MODES:
        if mode in val and np.mean(val[mode]["dice"]) > np.mean(val[best]["dice"]):
            best = mode
    return best


def _stale(lock: Path) -> bool:
    """A lock written on this machine by a process that no longer runs."""
    try:
        host, pid = lock.read_text(encoding="utf-8").split()
        if host != socket.gethostname():
            return False  # another machine's process: cannot tell, so wait
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):  # no lock, one being written, or one from an older version
        return False
    return False


def run_one(
    name: str, seed: int, data_dir: str, labeled: str, base_config: TrainConfig,
    workdir: Path, log: Callable[[str], None], wait: bool = True, step_every: int = 0,
) -> dict | None:
    """Train and evaluate one (method, seed) run, caching its result as JSON.

    When another invocation sharing ``workdir`` is training the same run, wait for it, or
    with ``wait=False`` return None at once so the caller can do other runs first.
    ``step_every`` > 0 keeps a snapshot every that many steps, and the run is scored with the
    snapshot its val scans choose (:func:`_score`)."""
    stem = name.replace(":", "_").replace(",", "_").replace("=", "")
    cache = workdir / f"{stem}_seed{seed}.json"
    if cache.exists():
        return _rescored(cache, data_dir, log, step_every)
    lock = cache.with_suffix(".lock")
    if _stale(lock):  # its holder was killed (SIGTERM skips the cleanup below)
        log(f"{lock.name}: its process is gone; running {name} seed {seed} here")
        lock.unlink(missing_ok=True)
    try:  # another invocation sharing this folder may be training the same run: wait for it
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}".encode())
        os.close(fd)
    except FileExistsError:
        if not wait:
            return None
        log(f"waiting for {name} seed {seed} (another run holds {lock.name})")
        while not cache.exists():
            if not lock.exists() or _stale(lock):
                lock.unlink(missing_ok=True)
                return run_one(name, seed, data_dir, labeled, base_config, workdir, log,
                               step_every=step_every)
            time.sleep(10)
        return json.loads(cache.read_text(encoding="utf-8"))
    try:
        return _train_and_evaluate(name, seed, data_dir, labeled, base_config, workdir, log,
                                   cache, stem, step_every)
    finally:
        lock.unlink(missing_ok=True)


def scoring_rule(meta: dict | None = None, step_every: int = 0) -> str:
    """How a run's checkpoint (its ``meta``) is predicted when scored; a cached run scored
    otherwise is scored again, so one table never mixes rules."""
    if step_every > 0:
        return (f"{_windows(meta)}; snapshot (every {step_every} steps) and clean-up chosen "
                "on val")
    return f"{_windows(meta)}; clean-up chosen on val"


def snapshot_path(checkpoint: Path, step: int) -> Path:
    """Where a run keeps its weights at ``step``, for the val split to choose among."""
    return companion_path(checkpoint, f"step{step}")


def snapshots(checkpoint: Path) -> list[tuple[int, Path]]:
    """A run's kept snapshots as (step, path), by step."""
    found = []
    for p in checkpoint.parent.glob(f"{checkpoint.stem}.step*{checkpoint.suffix}"):
        step = p.name[len(checkpoint.stem) + len(".step"):-len(checkpoint.suffix)]
        if step.isdigit():
            found.append((int(step), p))
    return sorted(found)


def _windows(meta: dict | None = None) -> str:
    from training.engine.inference import whole_slice_factor

    return f"whole_slice_up_to={whole_slice_factor(meta or {}):g}"


def _score(path: str, data_dir: str, step_every: int = 0) -> dict:
    """Test metrics with the clean-up chosen on the val split (the product's rule for a
    shipped model), the raw test metrics beside them, and the val ones of each clean-up.

    With ``step_every`` > 0 the run's snapshots (:func:`snapshots`) compete too, as the
    papers' code keeps its best checkpoint on val: the test row is the (snapshot, clean-up)
    with the best mean val Dice (a tie keeps the later step), and the last step's own row,
    scored by the plain rule, is kept beside it."""
    # The val split is what method options are chosen on; test is only reported.
    has_val = any(c.split == "val" and c.label is not None for c in scan_dataset(data_dir))
    val = evaluate_clean_ups(path, data_dir, "val") if has_val else None
    chosen = clean_up_chosen_on_val(val)
    test = evaluate_clean_ups(path, data_dir, "test", sorted({"none", chosen}))
    last = {**test[chosen], "clean_up": chosen, "raw": test["none"],
            "val": val[chosen] if val else None, "val_by_clean_up": val,
            "scored_with": scoring_rule(read_meta(path))}
    if step_every <= 0:
        return last
    steps = int(read_meta(path).get("steps_done") or 0)
    best = {"step": steps, "path": path, "mode": chosen, "val": val}
    val_by_step = {str(steps): val}
    for step, snap in reversed(snapshots(Path(path))):
        if not has_val:
            break
        sval = evaluate_clean_ups(str(snap), data_dir, "val")
        val_by_step[str(step)] = sval
        mode = clean_up_chosen_on_val(sval)
        if np.mean(sval[mode]["dice"]) > np.mean(best["val"][best["mode"]]["dice"]):
            best = {"step": step, "path": str(snap), "mode": mode, "val": sval}
    if best["path"] == path:
        test_best = test
    else:
        test_best = evaluate_clean_ups(best["path"], data_dir, "test",
                                       sorted({"none", best["mode"]}))
    return {**test_best[best["mode"]], "clean_up": best["mode"], "raw": test_best["none"],
            "val": best["val"][best["mode"]], "val_by_clean_up": best["val"],
            "step_chosen": best["step"], "val_by_step": val_by_step,
            "last_step": {k: last[k] for k in ("dice", "hd95", "clean_up", "val")},
            "scored_with": scoring_rule(read_meta(path), step_every)}


def _rescored(cache: Path, data_dir: str, log: Callable[[str], None],
              step_every: int = 0) -> dict:
    """A cached result, scored again from its checkpoint when the scoring rule changed since
    (the training itself is kept)."""
    result = json.loads(cache.read_text(encoding="utf-8"))
    ckpt = cache.with_suffix(".pt")
    if not ckpt.exists():
        if result.get("scored_with") != scoring_rule(step_every=step_every):
            log(f"{cache.name}: scored with {result.get('scored_with', 'an older rule')}, and "
                "its checkpoint is gone: kept as it was")
        return result
    rule = scoring_rule(read_meta(ckpt), step_every)
    if result.get("scored_with") == rule:
        return result
    if step_every > 0 and not snapshots(ckpt):
        log(f"{cache.name}: trained without snapshots, so its last step competes alone")
    log(f"{cache.name}: scoring again ({result.get('scored_with', 'older rule')} -> {rule})")
    result = {**result, **_score(str(ckpt), data_dir, step_every)}
    atomic_write(cache, lambda fh: fh.write(json.dumps(result).encode()))
    return result


def _train_and_evaluate(name, seed, data_dir, labeled, base_config, workdir, log, cache, stem,
                        step_every=0):
    if name == LABELED_ONLY:
        data = load_train_data(data_dir, labeled, use_unlabeled=False)
        cfg = replace(base_config, method="supervised")
    elif name == ALL_LABELED:
        pool = [c for c in scan_dataset(data_dir) if c.split in (None, "train")]
        data = load_train_data(data_dir, ",".join(c.name for c in pool), use_unlabeled=False)
        cfg = replace(base_config, method="supervised")
    else:
        data = load_train_data(data_dir, labeled)
        settings = method_settings(name)
        cfg = replace(base_config, **{**settings, "method_opts": {
            **base_config.method_opts, **settings["method_opts"]}})
    cfg = replace(cfg, seed=seed, checkpoint=str(workdir / f"{stem}_seed{seed}.pt"))
    if step_every > 0:
        cfg = replace(cfg, checkpoint_every=step_every, first_checkpoint_s=0.0)
    t0 = time.perf_counter()
    log(f"start {name} seed {seed}")

    def on_event(e: dict) -> None:
        if e["type"] == "progress" and e["step"] % 250 == 0:
            log(f"  {name} s{seed} step {e['step']}/{e['total']} "
                f"loss {e['losses']['loss']:.3f}")
        if e["type"] == "checkpoint" and step_every > 0:
            # the next save overwrites the checkpoint: keep this step's weights aside
            weights = Path(e["path"]).read_bytes()
            atomic_write(snapshot_path(Path(cfg.checkpoint), e["step"]),
                         lambda fh: fh.write(weights))

    path = train(cfg, data, on_event=on_event)
    train_s = time.perf_counter() - t0
    result = {"name": name, "seed": seed, "train_seconds": train_s,
              "step_seconds": train_s / max(cfg.steps, 1),
              **_score(str(path), data_dir, step_every)}
    cache.write_text(json.dumps(result), encoding="utf-8")
    log(f"done {name} seed {seed}: mean Dice {np.mean(result['dice']):.4f} ({train_s:.0f} s)")
    return result


def _ms(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    v = np.asarray(values, dtype=np.float64) * scale
    if len(v) > 1:
        return f"{v.mean():.{digits}f} ± {v.std():.{digits}f}"
    return f"{v.mean():.{digits}f}"


def _versus(method: Sequence[float], baseline: Sequence[float] | None) -> str:
    """Mean test Dice difference to labelled-only, and whether it lies beyond the seeds' spread:
    every seed of the method above (or below) every seed of the baseline."""
    if not baseline:
        return "—"
    diff = 100 * (np.mean(method) - np.mean(baseline))
    if min(len(method), len(baseline)) < 2:
        verdict = "one seed, no spread"
    elif min(method) > max(baseline):
        verdict = "above every seed"
    elif max(method) < min(baseline):
        verdict = "below every seed"
    else:
        verdict = "within the spread"
    return f"{diff:+.1f}, {verdict}"


def render_table(results: dict[str, list[dict]], class_names: list[str], header: str) -> str:
    """Markdown table: per-class Dice / HD95 and mean Dice as mean ± std over seeds, gap."""
    fg = class_names[1:]
    mean_dice = {k: [float(np.mean(r["dice"])) for r in rs] for k, rs in results.items()}
    lo = np.mean(mean_dice.get(LABELED_ONLY, [np.nan]))
    hi = np.mean(mean_dice.get(ALL_LABELED, [np.nan]))
    by_step = any("step_chosen" in r for rs in results.values() for r in rs)
    cols = ([f"Dice {c}" for c in fg] + ["mean Dice"] + [f"HD95 {c}" for c in fg]
            + ["mean HD95", "gap recovered", "vs labelled-only", "val mean Dice", "clean-up",
               "mean Dice, no clean-up"]
            + (["step chosen on val", "mean Dice, last step", "gap recovered, last step"]
               if by_step else []) + ["s/step"])
    last = {k: [float(np.mean(r.get("last_step", r)["dice"])) for r in rs]
            for k, rs in results.items()}
    lo_last = np.mean(last.get(LABELED_ONLY, [np.nan]))
    hi_last = np.mean(last.get(ALL_LABELED, [np.nan]))
    lines = [header, "", "| run | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, rs in results.items():
        cells = [_ms([r["dice"][i] for r in rs], 100) for i in range(len(fg))]
        cells.append(_ms(mean_dice[name], 100))
        cells += [_ms([r["hd95"][i] for r in rs]) for i in range(len(fg))]
        cells.append(_ms([float(np.mean(r["hd95"])) for r in rs]))
        if name in (LABELED_ONLY, ALL_LABELED) or not np.isfinite(hi - lo):
            cells.append("—")
        elif hi - lo < MIN_GAP:
            cells.append("n/a (gap < 1 pt)")
        else:
            gaps = [(d - lo) / (hi - lo) * 100 for d in mean_dice[name]]
            cells.append(_ms(gaps, 1, 0) + " %")
        cells.append(_versus(mean_dice[name], mean_dice.get(LABELED_ONLY))
                     if name != LABELED_ONLY else "—")
        vals = [float(np.mean(r["val"]["dice"])) for r in rs if r.get("val")]
        cells.append(_ms(vals, 100) if len(vals) == len(rs) else "—")
        cells.append(", ".join(str(r.get("clean_up", "—")) for r in rs))
        raw = [float(np.mean(r.get("raw", r)["dice"])) for r in rs]
        cells.append(_ms(raw, 100) if all("raw" in r for r in rs) else "—")
        if by_step:
            cells.append(", ".join(str(r.get("step_chosen", "—")) for r in rs))
            cells.append(_ms(last[name], 100))
            if name in (LABELED_ONLY, ALL_LABELED) or not hi_last - lo_last >= MIN_GAP:
                cells.append("—")
            else:
                cells.append(_ms([(d - lo_last) / (hi_last - lo_last) * 100
                                  for d in last[name]], 1, 0) + " %")
        cells.append(f"{np.mean([r['step_seconds'] for r in rs]):.2f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Dice in %, HD95 in the images' spacing units (mm; ACDC's is a 1 mm "
              "placeholder); mean ± std "
              "over seeds. Gap recovered = (method − labelled-only) / (all-labelled − "
              "labelled-only), computed on mean Dice per seed against the seed-mean baselines. "
              "Vs labelled-only: difference of mean test Dice, and whether every seed of the run "
              "lies above (below) every seed of labelled-only. "
              "Val mean Dice is on the val split, the only one method options are chosen on. "
              "Clean-up: what each seed's run keeps of its prediction (none; the largest 3-D "
              "piece of all structures, foreground; or of each class, per_class), chosen on the "
              "val split as a shipped model's card chooses it; Dice and HD95 are with it, and "
              "the raw mean Dice is beside it (— for a run scored before this rule)."]
    if by_step:
        lines[-1] += (" Step chosen on val: each run kept its weights every few steps, and "
                      "the row is the snapshot (with its clean-up) of best mean val Dice, as "
                      "the papers' code keeps its best checkpoint; the last step's mean Dice "
                      "and gap, scored by the plain rule, are beside it.")
    return "\n".join(lines) + "\n"


def label_efficiency(
    data_dir: str,
    labeled: str,
    methods: Sequence[str],
    seeds: int,
    base_config: TrainConfig,
    out: str,
    command: str,
    log: Callable[[str], None] = print,
    labeled_set: int = 0,
    step_every: int = 0,
) -> str:
    """Run the whole benchmark and write the markdown table to ``out``; returns the table.

    ``labeled_set`` 0 labels the first ``labeled`` patients (the SSL4MIS convention); K >= 1
    draws that many patients of the train pool with seed K, so a claim can be checked on
    another labelled set."""
    labeled = labelled_patients(data_dir, labeled, labeled_set)
    log(f"labelled set {labeled_set}: {labeled}")
    out_path = Path(out)
    workdir = out_path.with_suffix(".runs")
    workdir.mkdir(parents=True, exist_ok=True)
    names = [LABELED_ONLY, *[m for m in methods if m != "supervised"], ALL_LABELED]
    start = time.perf_counter()
    # methods before baselines, so parallel invocations sharing the baselines need not wait
    order = names[1:-1] + [LABELED_ONLY, ALL_LABELED]
    runs = [(name, seed) for seed in range(seeds) for name in order]
    done: dict[tuple[str, int], dict] = {}
    # First pass skips runs another invocation holds; the second waits for them.
    for wait in (False, True):
        for name, seed in runs:
            if (name, seed) in done:
                continue
            result = run_one(name, seed, data_dir, labeled, base_config, workdir, log, wait,
                             step_every)
            if result is None:
                continue
            done[name, seed] = result
            results = {n: [done[n, s] for s in range(seeds) if (n, s) in done] for n in names}
            partial = {k: v for k, v in results.items() if v}
            _write(out_path, partial, data_dir, command, start, base_config, seeds, labeled,
                   final=False)
    results = {n: [done[n, s] for s in range(seeds)] for n in names}
    return _write(out_path, results, data_dir, command, start, base_config, seeds, labeled,
                  final=True)


def labelled_patients(data_dir: str, labeled: str, labeled_set: int) -> str:
    """``labeled`` as it is for set 0; for set K >= 1, N train-pool patients drawn with seed K
    (comma-separated names, in pool order)."""
    if labeled_set <= 0:
        return labeled
    if not str(labeled).strip().isdigit():
        raise ValueError("--labeled-set draws patients: give --labeled as a number")
    n = int(labeled)
    patients: list[str] = []
    for c in scan_dataset(data_dir):
        pid = c.patient or c.name
        if c.split in (None, "train") and pid not in patients:
            patients.append(pid)
    if not 0 < n < len(patients):
        raise ValueError(f"--labeled {n}: the train pool has {len(patients)} patients")
    picks = sorted(np.random.default_rng(labeled_set).choice(len(patients), n, replace=False))
    return ",".join(patients[i] for i in picks)


def machine_description() -> str:
    """CPU model, core count, torch threads and versions, for benchmark headers."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPU cores visible, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, {platform.system()} {platform.release()}")


def _write(out_path, results, data_dir, command, start, cfg, seeds, labeled, final) -> str:
    names = class_names_from_index(data_dir)
    if names is None:
        first = next(iter(results.values()))[0]
        names = ["background"] + [f"class{i}" for i in range(1, len(first["dice"]) + 1)]
    wall = time.perf_counter() - start
    optimiser = {"sgd": "SGD (momentum 0.9)", "adamw": "AdamW"}.get(cfg.optimizer, "Adam")
    header = "\n".join([
        "# Label-efficiency benchmark" + ("" if final else " (partial, still running)"),
        "",
        f"- command: `{command}`",
        f"- machine: {machine_description()}",
        f"- wall time: {wall / 60:.1f} min (this invocation; cached runs not re-timed)",
        f"- budget: {cfg.steps} steps per run, batch {cfg.labeled_bs}+{cfg.unlabeled_bs}, "
        f"{cfg.dims}D, size {cfg.size}, U-Net base {cfg.base} depth {cfg.depth}, "
        f"{optimiser} lr {cfg.lr} poly, seeds {seeds}; evaluated on the test split "
        f"(3D Dice per volume; predicted with {_windows()}, a batch-norm network with "
        f"{_windows({'network': {'norm': 'batch'}})}; each run's clean-up chosen on its val "
        "scans).",
        f"- labelled patients: {labeled}",
    ])
    table = render_table(results, names, header)
    out_path.write_text(table, encoding="utf-8")
    return table
