"""``semiseg benchmark weak``: slice tags -> localisation -> weak masks -> cam_weak, by patient.

For a 2-D slice dataset with patients and image-level tags (LGG ``index.csv``: ``patient``,
``slice``, ``has_tumor``), each patient's slices are stacked into one volume (as the plugin opens
an LGG folder). With ``folds`` >= 2 every patient is held out once (patient-level
cross-validation) and the table gives the mean and spread over folds. Reported on the held-out
patients, against the expert masks:

- each localiser's hit rate (map peak inside the tumour) and weak-mask Dice (tags given, as when
  a user tags slices), and plain CAM thresholding;
- Dice of trained networks on positive slices and their false-positive rate on negative slices
  (share of negative slices with any predicted foreground): ``cam_weak`` from tags only,
  a supervised network on a few dense masks, both together, and all masks (ceiling).
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from training import IGNORE_INDEX
from training.core.device import pick_device
from training.core.io import DataError, read_image, read_labels
from training.engine.checkpoint import load_checkpoint
from training.engine.data import TrainData, scan_dataset
from training.engine.inference import predict_volume
from training.engine.metrics import dice
from training.engine.normalization import DEFAULT_NORMALIZATION, normalize_intensity
from training.fit.trainer import TrainConfig, train
from training.weak.cam import train_classifier, volume_cam
from training.weak.from_tags import train_from_tags
from training.weak.localise import (
    DEFAULT_LOCALISER,
    LOCALISERS,
    WEAK_MASK_RECIPE,
    anomaly_map,
    combine,
    hit_rate,
)
from training.weak.tags import read_tags
from training.weak.weak_masks import weak_masks


def load_patients(root: str | Path, tag_file: str | Path | None = None) -> dict[str, dict]:
    """Per patient: ``image`` (z, y, x) raw grey, ``mask`` (z, y, x) 0/1, ``tags`` (z,) int8."""
    root = Path(root)
    tags = read_tags(tag_file or root / "index.csv")
    cases = scan_dataset(root)
    by_patient: dict[str, list] = {}
    for c in cases:
        if c.label is None or c.patient is None:
            raise DataError(f"case {c.name} needs a mask and a patient for this benchmark")
        by_patient.setdefault(c.patient, []).append(c)
    out = {}
    for pid, cs in sorted(by_patient.items()):
        imgs, masks, tg = [], [], []
        for c in cs:  # index.csv lists slices in order
            imgs.append(read_image(c.image)[0][0])
            masks.append((read_labels(c.label)[0][0] > 0).astype(np.uint8))
            if (c.name, 0) not in tags:
                raise DataError(f"no tag for {c.name}")
            tg.append(tags[(c.name, 0)])
        out[pid] = {"image": np.stack(imgs), "mask": np.stack(masks),
                    "tags": np.asarray(tg, np.int8)}
    return out


def dense_slices(train: dict[str, dict], k: int, seed: int) -> dict[str, list[int]]:
    """``k`` slices for dense masks, half positive and half negative, drawn over the train
    patients (what a user would outline by hand)."""
    rng = np.random.default_rng(seed)
    pos = [(p, z) for p, d in train.items() for z in np.flatnonzero(d["tags"] == 1)]
    neg = [(p, z) for p, d in train.items() for z in np.flatnonzero(d["tags"] == 0)]
    chosen = [pos[i] for i in rng.choice(len(pos), (k + 1) // 2, replace=False)]
    chosen += [neg[i] for i in rng.choice(len(neg), k // 2, replace=False)]
    out: dict[str, list[int]] = {}
    for p, z in chosen:
        out.setdefault(p, []).append(int(z))
    return out


def _scores(pred: dict[str, np.ndarray], test: dict[str, dict]) -> dict:
    dices, fps = [], []
    for pid, d in test.items():
        for z, t in enumerate(d["tags"]):
            if d["mask"][z].any():
                dices.append(dice(pred[pid][z] == 1, d["mask"][z]))
            elif t == 0:
                fps.append(bool((pred[pid][z] == 1).any()))
    return {"dice": float(np.mean(dices)), "dice_sd": float(np.std(dices)),
            "n_pos": len(dices), "fp_rate": float(np.mean(fps)) if fps else None,
            "n_neg": len(fps)}


def _predict(ckpt: str, test: dict[str, dict]) -> dict[str, np.ndarray]:
    model, meta = load_checkpoint(ckpt, device="cpu")
    return {pid: predict_volume(model, meta, d["image"], device="cpu")["labels"]
            for pid, d in test.items()}


def patient_folds(names: list[str], folds: int, test_patients: int) -> list[list[str]]:
    """Held-out patients per run: ``folds`` >= 2 splits the sorted patients round-robin into
    that many folds (each patient tested once); otherwise one split, the last
    ``test_patients``."""
    if folds >= 2:
        if folds > len(names):
            raise DataError(f"--folds {folds} needs at least {folds} patients, "
                            f"found {len(names)}")
        return [names[i::folds] for i in range(folds)]
    if not 0 < test_patients < len(names):
        raise DataError(f"--test-patients must be between 1 and {len(names) - 1}")
    return [names[-test_patients:]]


def weak_benchmark(
    data_dir: str,
    config: TrainConfig,
    out_dir: str | Path,
    test_patients: int = 4,
    dense: int = 8,
    classifier_steps: int = 300,
    command: str = "",
    log: Callable[[str], None] = print,
    tag_file: str | None = None,
    folds: int = 0,
    localiser: str = DEFAULT_LOCALISER,
) -> str:
    """Every arm on each patient split (``folds`` >= 2: patient-level cross-validation);
    writes ``results.json`` and returns a Markdown table of the mean and spread over splits."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patients = load_patients(data_dir, tag_file)
    names = list(patients)
    splits = patient_folds(names, folds, test_patients)
    runs = []
    for i, held in enumerate(splits):
        test = {p: patients[p] for p in held}
        train_p = {p: patients[p] for p in names if p not in held}
        log(f"split {i + 1}/{len(splits)}: train {list(train_p)}; test {list(test)}")
        runs.append(_one_split(train_p, test, config, out / f"split{i}", dense,
                               classifier_steps, localiser, log, t0))
    meta = {"command": command, "wall_s": time.perf_counter() - t0, "machine": _machine(),
            "splits": [r["meta"] for r in runs], "localiser": localiser, "dense": dense,
            "config": {"steps": config.steps, "classifier_steps": classifier_steps,
                       "size": list(config.size), "base": config.base, "depth": config.depth,
                       "labeled_bs": config.labeled_bs, "lr": config.lr, "seed": config.seed}}
    text = json.dumps({"meta": meta, "runs": [r["results"] for r in runs],
                       "localisation": [r["localisation"] for r in runs]}, indent=1)
    (out / "results.json").write_text(text, encoding="utf-8")
    return _table(runs, meta)


def _one_split(train_p: dict, test: dict, config: TrainConfig, out: Path, dense: int,
               classifier_steps: int, localiser: str, log: Callable[[str], None],
               t0: float) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    norm = dict(DEFAULT_NORMALIZATION)
    results: dict[str, dict] = {}

    def progress(name: str) -> Callable[[dict], None]:
        def on(e: dict) -> None:
            if e.get("type") == "progress" and (e["step"] % 100 == 0 or e["step"] == e["total"]):
                loss = e.get("losses", {}).get("loss", float("nan"))
                log(f"  {name} step {e['step']}/{e['total']} loss {loss:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
        return on

    # 1) localisation candidates on the held-out patients (tags given, as a user gives them)
    xs_train = [normalize_intensity(d["image"], norm) for d in train_p.values()]
    tg_train = [d["tags"] for d in train_p.values()]
    clf = train_classifier(xs_train, tg_train, size=config.size, steps=classifier_steps,
                           base=config.base, depth=config.depth, seed=config.seed,
                           device=pick_device(config.device), on_event=progress("classifier"))
    assert clf is not None
    maps: dict[str, dict[str, np.ndarray]] = {k: {} for k in LOCALISERS}
    correct = n_tags = 0
    for pid, d in test.items():
        x = normalize_intensity(d["image"], norm)
        cam, prob = volume_cam(clf, x, config.size, normalised=True)
        anom = anomaly_map(x, d["tags"])
        maps["cam"][pid], maps["anomaly"][pid] = cam, anom
        maps["cam*anomaly"][pid] = combine(cam, anom)
        assert prob is not None
        correct += int(((prob > 0.5).astype(np.int8) == d["tags"]).sum())
        n_tags += len(prob)
    localisation = {}
    for kind, by_pid in maps.items():
        hits = [hit_rate(by_pid[p], test[p]["mask"]) for p in test]
        rw = {p: weak_masks(normalize_intensity(test[p]["image"], norm), by_pid[p],
                            test[p]["tags"], **WEAK_MASK_RECIPE[kind]) for p in test}
        localisation[kind] = {"hits": sum(h for h, _ in hits), "n": sum(n for _, n in hits),
                              "weak_mask": _scores(rw, test)}
        log(f"  localiser {kind}: hit rate {localisation[kind]['hits']}/"
            f"{localisation[kind]['n']}, weak-mask Dice "
            f"{100 * localisation[kind]['weak_mask']['dice']:.1f}")
    thr = {p: weak_masks(test[p]["image"], maps["cam"][p], test[p]["tags"], refine=False)
           for p in test}
    results["CAM threshold 0.5 (tags given)"] = _scores(thr, test)
    how = "random walker" if WEAK_MASK_RECIPE[localiser].get("refine") else "half-peak blob"
    results[f"weak masks: {localiser} map, {how} (tags given)"] = \
        localisation[localiser]["weak_mask"]

    # 2) networks: tags only, a few dense masks, both, all masks
    cfg = replace(config, method="cam_weak", checkpoint=str(out / "cam_weak.pt"))
    imgs = [d["image"] for d in train_p.values()]
    res = train_from_tags(imgs, tg_train, cfg, classifier_steps=0, classifier=clf,
                          normalization=norm, localiser=localiser,
                          on_event=progress("cam_weak"))
    assert res.checkpoint
    results["weak masks on train patients (what cam_weak learns from)"] = _scores(
        {p: np.where(w == IGNORE_INDEX, 0, w) for p, w in zip(train_p, res.weak, strict=True)},
        train_p)
    results["cam_weak network (tags only)"] = _scores(_predict(res.checkpoint, test), test)
    log(f"  cam_weak: {results['cam_weak network (tags only)']}")

    chosen = dense_slices(train_p, dense, config.seed)
    user = []
    for pid, d in train_p.items():
        lab = np.full(d["mask"].shape, IGNORE_INDEX, np.uint8)
        for z in chosen.get(pid, []):
            lab[z] = d["mask"][z]
        user.append(lab)
    sup_data = TrainData.from_arrays(imgs, user, num_classes=2, normalization=norm)
    sup_cfg = replace(config, method="supervised", checkpoint=str(out / f"dense{dense}.pt"),
                      unlabeled_bs=0)
    path = train(sup_cfg, sup_data, on_event=progress(f"supervised {dense} dense"))
    assert path
    results[f"supervised, {dense} dense masks"] = _scores(_predict(path, test), test)

    combo_cfg = replace(cfg, checkpoint=str(out / f"cam_weak_dense{dense}.pt"))
    combo = train_from_tags(imgs, tg_train, combo_cfg, user_labels=user, classifier_steps=0,
                            classifier=clf, normalization=norm, localiser=localiser,
                            on_event=progress("cam_weak + dense"))
    assert combo.checkpoint
    results[f"cam_weak network, tags + {dense} dense masks"] = _scores(
        _predict(combo.checkpoint, test), test)

    full_data = TrainData.from_arrays(imgs, [d["mask"] for d in train_p.values()],
                                      num_classes=2, normalization=norm)
    full_cfg = replace(sup_cfg, checkpoint=str(out / "all_masks.pt"))
    path = train(full_cfg, full_data, on_event=progress("all masks"))
    assert path
    results["supervised, all train masks (ceiling)"] = _scores(_predict(path, test), test)
    log(f"  split done ({time.perf_counter() - t0:.0f} s): "
        + "; ".join(f"{k}: {100 * v['dice']:.1f}" for k, v in results.items()))
    meta = {"train_patients": list(train_p), "test_patients": list(test),
            "dense_slices": chosen, "classifier_test_accuracy": correct / max(n_tags, 1)}
    return {"results": results, "localisation": localisation, "meta": meta}


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def _mean_sd(values: list[float]) -> str:
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    return f"{np.mean(v):.1f} ± {np.std(v):.1f}" if len(v) > 1 else f"{v[0]:.1f}"


def _table(runs: list[dict], meta: dict) -> str:
    k = len(runs)
    what = f"mean ± sd over {k} patient folds" if k > 1 else "one patient split"
    lines = [
        "# Weak supervision on LGG: slice tags -> localisation -> weak masks -> cam_weak",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. Wall time: {meta['wall_s'] / 60:.1f} min.",
        "",
    ]
    for i, m in enumerate(meta["splits"]):
        lines.append(f"- split {i + 1}: test {', '.join(m['test_patients'])}; tag classifier "
                     f"accuracy on their slices {m['classifier_test_accuracy']:.3f}")
    lines += [
        "",
        f"## Localisation candidates ({what}; held-out patients, tags given)",
        "",
        "| localiser | hit rate: map peak inside the tumour | weak-mask Dice on tumour slices |",
        "|---|---|---|",
    ]
    for kind in LOCALISERS:
        rates = [100 * r["localisation"][kind]["hits"] / max(r["localisation"][kind]["n"], 1)
                 for r in runs]
        dices = [100 * r["localisation"][kind]["weak_mask"]["dice"] for r in runs]
        lines.append(f"| {kind} | {_mean_sd(rates)} % | {_mean_sd(dices)} |")
    lines += [
        "",
        f"## Arms ({what}; localiser `{meta['localiser']}`)",
        "",
        "| arm | Dice on tumour slices | false-positive rate on tumour-free slices, % |",
        "|---|---|---|",
    ]
    for name in runs[0]["results"]:
        d = [100 * r["results"][name]["dice"] for r in runs]
        fp = [None if r["results"][name]["fp_rate"] is None
              else 100 * r["results"][name]["fp_rate"] for r in runs]
        lines.append(f"| {name} | {_mean_sd(d)} | {_mean_sd(fp)} |")
    return "\n".join(lines) + "\n"
