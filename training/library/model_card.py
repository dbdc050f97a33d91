"""Model cards: what a model was trained on and how well it does, and whether a scan matches it.

A card lives in the checkpoint's metadata (``meta["card"]``, plain data so that
``torch.load(weights_only=True)`` reads it) and is rendered in ``docs/models.md``. Its
``scans`` part summarises the training scans (spacing, size, channels, intensity histogram),
which is what :func:`match` compares a new scan against to pick a model for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from training.engine.postprocess import CLEAN_UP_WORDS

HIST_BINS = 16


def scan_statistics(image: np.ndarray, spacing_zyx: Sequence[float], channels: int = 1
                    ) -> dict[str, Any]:
    """What a card records of one scan: spacing (z, y, x), shape, channels and the histogram
    of its intensities between their 1st and 99th percentile (shape of the contrast)."""
    a = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(a, [1, 99])
    span = float(hi - lo) or 1.0
    hist, _ = np.histogram(np.clip((a - lo) / span, 0, 1), bins=HIST_BINS, range=(0, 1))
    z, y, x = (1, *a.shape) if a.ndim == 2 else a.shape[-3:]
    return {"spacing": [float(s) for s in spacing_zyx], "shape": [int(z), int(y), int(x)],
            "channels": int(channels), "histogram": (hist / max(hist.sum(), 1)).tolist()}


def summarise(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The ``scans`` part of a card from the statistics of each training scan."""
    sp = np.array([s["spacing"] for s in stats], float)
    sh = np.array([s["shape"] for s in stats], float)
    return {
        "count": len(stats),
        "spacing_min": sp.min(0).tolist(), "spacing_max": sp.max(0).tolist(),
        "shape_min": sh.min(0).astype(int).tolist(), "shape_max": sh.max(0).astype(int).tolist(),
        "channels": sorted({int(s["channels"]) for s in stats}),
        "histogram": np.mean([s["histogram"] for s in stats], axis=0).tolist(),
    }


def _outside(value: float, lo: float, hi: float, tol: float) -> float:
    """How far ``value`` lies outside [lo, hi], as a fraction (0 inside, with ``tol`` slack)."""
    lo, hi = lo * (1 - tol), hi * (1 + tol)
    if value < lo:
        return (lo - value) / max(lo, 1e-6)
    if value > hi:
        return (value - hi) / max(hi, 1e-6)
    return 0.0


def match(card: dict[str, Any], stats: dict[str, Any]) -> tuple[float, list[str]]:
    """Distance of a scan from a card's training scans (0 = looks just like them), and the
    reasons it differs, in words."""
    scans = card["scans"]
    reasons: list[str] = []
    d = 0.0
    if stats["channels"] not in scans["channels"]:
        d += 3.0
        reasons.append(f"{stats['channels']} channel(s), trained on {scans['channels']}")
    for axis, name in ((0, "slice spacing"), (1, "in-plane spacing")):
        off = _outside(stats["spacing"][axis], scans["spacing_min"][axis],
                       scans["spacing_max"][axis], 0.25)
        if off:
            d += min(off, 2.0)
            reasons.append(f"{name} {stats['spacing'][axis]:g} mm, trained on "
                           f"{scans['spacing_min'][axis]:g}–{scans['spacing_max'][axis]:g}")
    off = _outside(stats["shape"][0], scans["shape_min"][0], scans["shape_max"][0], 0.5)
    if off:
        d += min(off, 2.0)
        reasons.append(f"{stats['shape'][0]} slices, trained on "
                       f"{scans['shape_min'][0]}–{scans['shape_max'][0]}")
    p, q = np.asarray(stats["histogram"]), np.asarray(scans["histogram"])
    tv = 0.5 * float(np.abs(p - q).sum())  # total variation between intensity histograms
    d += 2.0 * max(0.0, tv - 0.2)
    if tv > 0.35:
        reasons.append(f"intensity histogram differs (distance {tv:.2f})")
    return d, reasons


MATCH_LIMIT = 1.0  # above this distance a scan does not look like the model's training scans


def describe(card: dict[str, Any]) -> str:
    """One line for the dock: anatomy, modality, structures."""
    names = ", ".join(c["name"] for c in card.get("classes", [])[1:])
    return f"{card.get('anatomy', '?')} ({card.get('modality', '?')}): {names}"


def recipe_summary(meta: dict[str, Any]) -> str:
    """How the model was trained, in one line, from its checkpoint's config (issue 23's
    recipe or the earlier one)."""
    cfg = meta.get("config") or {}
    steps = f"{cfg.get('steps', meta.get('total_steps', '?'))} steps of batch " \
            f"{cfg.get('labeled_bs', '?')}"
    if int(meta.get("dims", 2)) == 3 and meta.get("sampling") != "patch3d":
        return f"3-D patches {meta.get('size')}; {steps}"
    if int(meta.get("dims", 2)) == 2 and meta.get("sampling") != "patch":
        return (f"whole slices squashed to {meta.get('size')}, random 90-degree turns and "
                f"flips; {cfg.get('optimizer', 'adam')} lr {cfg.get('lr')}; {steps}")
    size = "x".join(str(v) for v in meta.get("size", []))
    aug = cfg.get("augment", "anatomy")
    turn = cfg.get("rotate") or 15
    aug_words = {"anatomy": f"orientation kept: turns up to {turn:g} degrees, scale, gamma, "
                            "contrast, brightness, noise",
                 "mirror-left-right": f"up kept, mirrored left-right: turns up to {turn:g} "
                                      "degrees, left-right mirroring, scale, gamma, contrast, "
                                      "brightness, noise",
                 "any-orientation": f"turns up to {turn:g} degrees plus 90-degree turns and "
                                    "mirroring, scale, gamma, contrast, brightness, noise",
                 "none": "no augmentation"}.get(aug, aug)
    missing = float(cfg.get("missing_channels") or 0)
    if missing > 0 and aug != "none":
        aug_words += f", every channel FLAIR in {100 * missing:.0f} % of patches"
    from training.engine.inference import context_slices, model_channels, whole_slice_factor
    from training.engine.normalization import AIR_WORDS, outside_mode

    reads = model_channels(meta)
    channels = f"{reads} channels in; " if reads > 1 else ""
    air = outside_mode(meta.get("normalization"))
    if reads > 1 and air != "keep":
        channels += f"{AIR_WORDS[air]}; "
    k = context_slices(meta)
    if k:
        channels += f"each slice with {k} neighbouring slice{'s' if k > 1 else ''} on either side; "
    ema = cfg.get("weights_ema") or 0
    start = ", output started at the class shares" if cfg.get("prior_init") else ""

    if int(meta.get("dims", 2)) == 3:
        down = float(meta.get("downsample", 1) or 1)
        grid = f"3-D patches {size}" + (f" of the scan downsampled {down:g}x" if down != 1
                                         else " of the voxel grid")
        aug_words = aug_words.replace("turns up to", "turns about z up to")
        return (f"{grid} ({100 * float(cfg.get('foreground_share', 1 / 3)):.0f} % centred on a "
                f"structure), {aug_words}; {cfg.get('optimizer', 'adamw')} lr {cfg.get('lr')}, "
                f"warm-up {100 * float(cfg.get('lr_warmup', 0)):.0f} %, poly decay, gradient "
                f"clip {cfg.get('clip_grad', 0)}" + (f", weight average {ema}" if ema else "")
                + f"{start}; {steps}; Gaussian sliding-window predict")
    return (f"{channels}native-grid patches {size} "
            f"({100 * float(cfg.get('foreground_share', 1 / 3)):.0f} "
            f"% centred on a structure), {aug_words}; {cfg.get('optimizer', 'adamw')} lr "
            f"{cfg.get('lr')}, warm-up {100 * float(cfg.get('lr_warmup', 0)):.0f} %, poly decay, "
            f"gradient clip {cfg.get('clip_grad', 0)}"
            + (f", weight average {ema}" if ema else "") + f"{start}; {steps}; Gaussian "
            f"sliding-window predict" + _whole_words(whole_slice_factor(meta)))


def _whole_words(factor: float) -> str:
    return f", slices up to {factor:g}x the patch whole" if factor > 1 else " in patch windows"


def render_markdown(card: dict[str, Any], file_name: str) -> str:
    """A card as a Markdown section for ``docs/models.md``."""
    s = card["scans"]
    lines = [f"## {card['anatomy']} — `{file_name}`", "",
             f"- modality: {card['modality']}",
             "- classes: " + ", ".join(f"{c['value']} {c['name']} ({c['color']})"
                                       for c in card["classes"]),
             f"- network: {card.get('network', '')}",
             *([f"- recipe: {card['recipe']}"] if card.get("recipe") else []),
             f"- training data: {card['data']}",
             f"- split: {card['split']}",
             f"- command: `{card['command']}`",
             f"- clean-up of the prediction: {CLEAN_UP_WORDS[card.get('postprocess', 'none')]}"
             + (f" ({card['postprocess_note']})" if card.get("postprocess_note") else ""),
             f"- training scans: {s['count']}; spacing (z, y, x) {s['spacing_min']} – "
             f"{s['spacing_max']} mm; shape {s['shape_min']} – {s['shape_max']}; channels "
             f"{s['channels']}", ""]
    test = card.get("test")
    if test:
        fg = [c["name"] for c in card["classes"][1:]]
        lines += [f"Test split ({test['cases']} {test.get('unit', 'scans')}, 3-D Dice per scan, "
                  f"mean; measured by `{test['command']}`):", "",
                  "| " + " | ".join(["", *fg, "mean"]) + " |",
                  "|" + "---|" * (len(fg) + 2),
                  "| Dice | " + " | ".join(f"{100 * v:.1f}" for v in test["dice"])
                  + f" | {100 * float(np.mean(test['dice'])):.1f} |",
                  "| HD95 (mm) | " + " | ".join(f"{v:.1f}" for v in test["hd95"])
                  + f" | {float(np.mean(test['hd95'])):.1f} |", ""]
    return "\n".join(lines) + "\n"


def dataset_scans(data_dir, split: str | None = None, patients: Sequence[str] | None = None,
                  keep_channels: bool = False):
    """(name, grey image, labels, spacing (z, y, x), channels) per scan of a dataset folder.

    2-D slices (LGG PNGs) are stacked into one scan per patient. ``patients`` picks scans by
    patient (or case) name; otherwise ``split`` picks the split (None = all). With
    ``keep_channels`` an RGB scan comes whole, (z, y, x, c), for a model that reads channels.
    """
    from training.core.io import (
        SLICE_SUFFIXES,
        has_suffix,
        read_labels,
        read_volume,
        rgb_channels,
        rgb_to_grey,
    )
    from training.engine.data import scan_dataset

    cases = [c for c in scan_dataset(data_dir) if c.label is not None]
    if patients:
        wanted = set(patients)
        cases = [c for c in cases if (c.patient or c.name) in wanted or c.name in wanted]
    elif split is not None:
        cases = [c for c in cases if c.split == split]
    slices = bool(cases) and all(has_suffix(c.image, SLICE_SUFFIXES) for c in cases)
    groups: dict[str, list] = {}
    for c in cases:
        groups.setdefault((c.patient or c.name) if slices else c.name, []).append(c)
    for name, group in groups.items():
        imgs, labs, channels, spacing = [], [], 1, None
        for c in group:
            vol = read_volume(c.image)
            channels = vol.data.shape[-1] if vol.rgb else 1
            if keep_channels and vol.rgb:
                imgs.append(rgb_channels(vol.data))
            else:
                im = rgb_to_grey(vol.data) if vol.rgb else vol.data
                imgs.append(im[None] if im.ndim == 2 else im)
            labs.append(read_labels(c.label)[0])
            sp = list(vol.geometry.spacing)[::-1]
            spacing = ([1.0, *sp] if len(sp) == 2 else sp)
        yield name, np.concatenate(imgs), np.concatenate(labs), spacing, channels


def build_card(model_path: str, data_dir: str, anatomy: str, modality: str, command: str,
               split_note: str, train_split: str | None = "train",
               test_split: str | None = "test", train_patients: Sequence[str] | None = None,
               test_patients: Sequence[str] | None = None, device: str = "cpu",
               eval_command: str = "", postprocess: str | None = None,
               postprocess_note: str = "") -> dict[str, Any]:
    """Measure a card for ``model_path``: training scans' statistics and test Dice / HD95.

    ``postprocess`` (a :data:`training.engine.postprocess.POSTPROCESS_MODES` name) is the clean-up
    the
    model's predictions get from now on; the test Dice is measured with it. None keeps the
    checkpoint's own."""
    from training.core.palette import class_color
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import model_channels, predict_volume
    from training.engine.metrics import classes_to_score, dice_hd95, mean_over_cases
    from training.engine.postprocess import model_clean_up

    model, meta = load_checkpoint(model_path, device=device)
    if postprocess is not None:
        meta["postprocess"] = postprocess
    clean_up = model_clean_up(meta)
    names = list(meta.get("class_names") or [])
    n = int(meta["num_classes"])
    if len(names) != n:
        names = ["background"] + [f"class{k}" for k in range(1, n)]
    stats = [scan_statistics(im, sp, ch) for _, im, _, sp, ch in
             dataset_scans(data_dir, train_split, train_patients)]
    if not stats:
        raise ValueError("no training scans found for the card")
    scored = [(predict_volume(model, meta, im, device=device)["labels"], lab, sp)
              for _, im, lab, sp, _ in dataset_scans(data_dir, test_split, test_patients,
                                                      keep_channels=model_channels(meta) > 1)]
    # every class in a prediction or a reference is scored (the evaluate rule)
    n_scored = classes_to_score(((p, r) for p, r, _ in scored), n)
    results = [dice_hd95(p, r, n_scored, sp) for p, r, sp in scored]
    net = meta["network"]
    card = {
        "anatomy": anatomy, "modality": modality,
        "classes": [{"value": k, "name": nm, "color": class_color(k)}
                    for k, nm in enumerate(names)],
        "network": f"{net['dims']}-D U-Net, base {net['base']}, depth {net['depth']}, "
                   f"{net.get('norm', 'group')} norm, dropout {net.get('dropout', 0)}; input "
                   f"{meta.get('size')}"
                   + ("; weights stored as float16" if meta.get("stored_dtype") == "float16"
                      else ""),
        "recipe": recipe_summary(meta),
        "data": str(data_dir), "split": split_note, "command": command,
        "scans": summarise(stats),
        "postprocess": clean_up,
    }
    if postprocess_note:
        card["postprocess_note"] = postprocess_note
    if results:
        m = mean_over_cases(results)
        card["test"] = {"cases": len(results), "dice": m["dice"], "hd95": m["hd95"],
                        "command": eval_command or "semiseg card (predict_volume + dice_hd95)"}
    return card


def write_card(model_path: str, card: dict[str, Any]) -> None:
    """Store ``card`` in the checkpoint's metadata, atomically, with the clean-up it names as
    the model's own (``meta["postprocess"]``, what :func:`predict_volume` applies)."""
    from training.engine.checkpoint import update_meta

    extra = {"postprocess": card["postprocess"]} if card.get("postprocess") else {}
    update_meta(model_path, card=card, **extra)
