"""``semiseg benchmark weak``: slice tags -> CAM -> weak masks -> cam_weak, split by patient.

For a 2-D slice dataset with patients and image-level tags (LGG ``index.csv``: ``patient``,
``slice``, ``has_tumor``), each patient's slices are stacked into one volume (as the plugin opens
an LGG folder). Reported on the test patients, against the expert masks:

- Dice of the weak masks on positive slices (the tags are given, as when a user tags slices):
  plain CAM thresholding and the random-walker refinement;
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
from training.cam import volume_cam
from training.checkpoint import load_checkpoint
from training.data import TrainData, scan_dataset
from training.inference import predict_volume
from training.io import DataError, read_image, read_labels
from training.normalization import DEFAULT_NORMALIZATION, normalize_intensity
from training.tags import read_tags
from training.trainer import TrainConfig, train
from training.weak import train_from_tags
from training.weak_masks import dice, weak_masks


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
) -> str:
    """Run every arm on one patient split; write ``results.json`` and return a Markdown table."""
    t0 = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    patients = load_patients(data_dir, tag_file)
    names = list(patients)
    if not 0 < test_patients < len(names):
        raise DataError(f"--test-patients must be between 1 and {len(names) - 1}")
    test = {p: patients[p] for p in names[-test_patients:]}
    train_p = {p: patients[p] for p in names[:-test_patients]}
    log(f"train patients {list(train_p)}; test patients {list(test)}")
    norm = dict(DEFAULT_NORMALIZATION)
    results: dict[str, dict] = {}

    def progress(name: str) -> Callable[[dict], None]:
        def on(e: dict) -> None:
            if e.get("type") == "progress" and (e["step"] % 50 == 0 or e["step"] == e["total"]):
                loss = e.get("losses", {}).get("loss", float("nan"))
                log(f"  {name} step {e['step']}/{e['total']} loss {loss:.3f} "
                    f"({time.perf_counter() - t0:.0f} s)")
        return on

    # 1) tags only: classifier -> CAM -> weak masks -> cam_weak
    cfg = replace(config, method="cam_weak", checkpoint=str(out / "cam_weak.pt"))
    res = train_from_tags([d["image"] for d in train_p.values()],
                          [d["tags"] for d in train_p.values()], cfg,
                          classifier_steps=classifier_steps, normalization=norm,
                          on_event=progress("cam_weak"))
    assert res.checkpoint and res.classifier
    train_weak = dict(zip(train_p, res.weak, strict=True))
    results["weak masks on train patients (what cam_weak learns from)"] = _scores(
        {p: np.where(w == IGNORE_INDEX, 0, w) for p, w in train_weak.items()}, train_p)
    clf, _ = load_checkpoint(res.classifier, device="cpu")
    thr, rw, by_cls = {}, {}, {}
    for pid, d in test.items():
        x = normalize_intensity(d["image"], norm)
        cam, prob = volume_cam(clf, x, config.size, normalised=True)
        thr[pid] = weak_masks(x, cam, d["tags"], refine=False)
        rw[pid] = weak_masks(x, cam, d["tags"], refine=True)
        assert prob is not None
        guessed = (prob > 0.5).astype(np.int8)  # no tags: the classifier decides
        by_cls[pid] = weak_masks(x, cam, guessed, refine=True)
        results.setdefault("_classifier_acc", {"correct": 0, "n": 0})
        results["_classifier_acc"]["correct"] += int((guessed == d["tags"]).sum())
        results["_classifier_acc"]["n"] += len(guessed)
    results["CAM threshold 0.5 (tags given)"] = _scores(thr, test)
    results["CAM + random walker = weak mask (tags given)"] = _scores(rw, test)
    results["CAM + random walker, classifier decides the tag"] = _scores(by_cls, test)
    log(f"weak masks done ({time.perf_counter() - t0:.0f} s)")
    results["cam_weak network (tags only)"] = _scores(_predict(res.checkpoint, test), test)
    log(f"cam_weak: {results['cam_weak network (tags only)']}")

    # 2) a few dense masks: supervised alone, and combined with the tags
    chosen = dense_slices(train_p, dense, config.seed)
    user = []
    for pid, d in train_p.items():
        lab = np.full(d["mask"].shape, IGNORE_INDEX, np.uint8)
        for z in chosen.get(pid, []):
            lab[z] = d["mask"][z]
        user.append(lab)
    imgs = [d["image"] for d in train_p.values()]
    sup_data = TrainData.from_arrays(imgs, user, num_classes=2, normalization=norm)
    sup_cfg = replace(config, method="supervised", checkpoint=str(out / f"dense{dense}.pt"),
                      unlabeled_bs=0)
    path = train(sup_cfg, sup_data, on_event=progress(f"supervised {dense} dense"))
    assert path
    results[f"supervised, {dense} dense masks"] = _scores(_predict(path, test), test)
    log(f"supervised dense: {results[f'supervised, {dense} dense masks']}")

    combo_cfg = replace(cfg, checkpoint=str(out / f"cam_weak_dense{dense}.pt"))
    combo = train_from_tags(imgs, [d["tags"] for d in train_p.values()], combo_cfg,
                            user_labels=user, classifier_steps=0, classifier=clf,
                            normalization=norm, on_event=progress("cam_weak + dense"))
    assert combo.checkpoint
    results[f"cam_weak network, tags + {dense} dense masks"] = _scores(
        _predict(combo.checkpoint, test), test)

    full_data = TrainData.from_arrays(imgs, [d["mask"] for d in train_p.values()],
                                      num_classes=2, normalization=norm)
    full_cfg = replace(sup_cfg, checkpoint=str(out / "all_masks.pt"))
    path = train(full_cfg, full_data, on_event=progress("all masks"))
    assert path
    results["supervised, all train masks (ceiling)"] = _scores(_predict(path, test), test)
    wall = time.perf_counter() - t0
    acc = results.pop("_classifier_acc")
    meta = {"command": command, "wall_s": wall, "machine": _machine(),
            "train_patients": list(train_p), "test_patients": list(test),
            "dense_slices": chosen, "classifier_test_accuracy": acc["correct"] / acc["n"],
            "config": {"steps": config.steps, "classifier_steps": classifier_steps,
                       "size": list(config.size), "base": config.base, "depth": config.depth,
                       "labeled_bs": config.labeled_bs, "lr": config.lr, "seed": config.seed}}
    text = json.dumps({"meta": meta, "results": results}, indent=1)
    (out / "results.json").write_text(text, encoding="utf-8")
    return _table(results, meta)


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


def _table(results: dict, meta: dict) -> str:
    lines = [
        "# Weak supervision on LGG: slice tags -> CAM -> weak masks -> cam_weak",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}. Wall time: {meta['wall_s'] / 60:.1f} min.",
        "",
        f"Split by patient. Train: {', '.join(meta['train_patients'])}. "
        f"Test: {', '.join(meta['test_patients'])}.",
        f"Tag classifier accuracy on test slices: {meta['classifier_test_accuracy']:.3f}.",
        "",
        "| arm | Dice on positive slices (mean ± sd, n) | false-positive rate on negative slices |",
        "|---|---|---|",
    ]
    for name, r in results.items():
        fp = "-" if r["fp_rate"] is None else f"{r['fp_rate']:.3f} (n={r['n_neg']})"
        lines.append(f"| {name} | {100 * r['dice']:.1f} ± {100 * r['dice_sd']:.1f} "
                     f"(n={r['n_pos']}) | {fp} |")
    return "\n".join(lines) + "\n"
