"""Train the three library models on a lent GPU within one lease, and bring them back (issue 23,
item 3).

1. ``pack`` (here): each model's training scans, raw (uint16 / uint8), into one ``.npz`` with
   the settings of its CPU command (``LIBRARY`` below). The GPU machine has no ``../shared``.
2. ``train`` (on the GPU machine): for each model in turn, time a few steps, then train as many
   steps as fit its share of ``--minutes`` with the same recipe (patches, augmentation,
   schedule), batch ``--batch``; checkpoints are written under ``--out`` (the tool's $OUT).
3. Here: ``semiseg card`` on each returned checkpoint, as for a CPU-trained model.

    python benchmarks/gpu_library.py pack --out runs/library_pack.npz
    # device: python benchmarks/gpu_library.py train --pack runs/library_pack.npz \\
    #     --out $OUT --minutes 8 --batch 24

One device call carries at most 64 MiB, and the three models' scans take about 150 MB packed
(LGG alone 97 MB). ``pack --parts N`` deals each model's scans round-robin into N files
(``<out>.part0.npz`` ...), each small enough for one call; ``train --pack`` takes them all, and
the model is trained on their union. The parts travel in successive calls to the warm machine
and wait in /tmp there (`gpu_library_lease.sh --stash`): the working tree does not keep them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_paper_budget import _engine_imports  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SPLITS = Path(__file__).resolve().parent / "splits"

# One entry per shipped model: where its training scans are and the recipe settings of its
# CPU command (docs/models.md). "labeled" is what `semiseg train --labeled` takes.
LIBRARY: dict[str, dict] = {
    "acdc_unet2d": {"data": "acdc", "labeled": "31", "class_names": None,
                    "config": {"size": [160, 160], "unshuffle": 2, "base": 12, "depth": 4,
                               "dropout": 0.1}},
    "la_unet2d": {"data": "left_atrium_2018", "labeled": "20",
                  "class_names": ["background", "left atrium"],
                  "config": {"size": [160, 160], "unshuffle": 2, "base": 12, "depth": 4,
                             "dropout": 0.1}},
    "lgg_flair_unet2d": {"data": "lgg_brain_mri_2d", "labeled": "lgg.json:train+val",
                         "class_names": ["background", "FLAIR abnormality"],
                         "channels": 3,
                         "config": {"size": [256, 256], "unshuffle": 2, "base": 12,
                                    "depth": 4, "dropout": 0.1, "missing_channels": 0.2}},
}


def _labeled(spec: str) -> str:
    if ":" in spec:  # "<splits file>:<split>[+<split>...]"
        name, parts = spec.split(":")
        splits = json.loads((SPLITS / name).read_text())
        return ",".join(p for part in parts.split("+") for p in splits[part])
    return spec


def cmd_pack(args: argparse.Namespace) -> int:
    import numpy as np

    from training.engine.data import (
        class_names_from_index,
        patient_stacks,
        read_stack,
        scan_dataset,
        select_labeled,
    )

    parts = [({}, {}) for _ in range(args.parts)]  # (arrays, meta) per file
    for name in args.models:
        entry = LIBRARY[name]
        root = Path(args.data) / entry["data"]
        cases, _ = select_labeled(scan_dataset(root), _labeled(entry["labeled"]))
        groups = patient_stacks(cases)
        class_names = entry["class_names"] or class_names_from_index(root)
        for k, (arrays, meta) in enumerate(parts):
            mine = groups[k::args.parts]
            for i, group in enumerate(mine):
                im, lab = read_stack(group, channels=int(entry.get("channels", 1)))
                small = im.min() >= 0 and im.max() <= 255  # LA and LGG grey levels fit a byte
                arrays[f"{name}/image{i}"] = im.astype(np.uint8 if small else np.uint16)
                arrays[f"{name}/label{i}"] = lab.astype(np.uint8)
            meta[name] = {**entry, "scans": len(mine), "class_names": class_names}
        print(f"{name}: {len(groups)} scans", file=sys.stderr)
    for k, (arrays, meta) in enumerate(parts):
        out = Path(args.out) if args.parts == 1 else _part_path(args.out, k)
        arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        np.savez_compressed(out, **arrays)
        print(f"packed {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return 0


def _part_path(out: str, k: int) -> Path:
    path = Path(out)
    stem = path.name[:-4] if path.name.endswith(".npz") else path.name
    return path.with_name(f"{stem}.part{k}.npz")


def _merged_contents(paths: list[str]) -> tuple[dict, object]:
    """:func:`_pack_contents` over several packs (the parts of one upload): each model's
    scans are the union of its scans in every pack."""
    import numpy as np

    opened = [_pack_contents(np.load(p)) for p in paths]
    meta: dict = {}
    for m, _ in opened:
        for name, entry in m.items():
            total = meta.get(name, {}).get("scans", 0) + entry["scans"]
            meta[name] = {**entry, "scans": total}

    def volumes(name: str) -> tuple[list, list]:
        images, labels = [], []
        for m, get in opened:
            if name in m and m[name]["scans"]:
                im, lab = get(name)
                images += im
                labels += lab
        return images, labels

    return meta, volumes


def _pack_contents(pack) -> tuple[dict, object]:
    """The models a pack holds (name -> settings) and a function giving a model's (images,
    labels). A ``gpu_paper_budget.py pack`` of ACDC holds the cardiac model's training scans
    (its train split): one upload serves both scripts when a lease carries little."""
    if "meta" in pack.files:
        meta = json.loads(bytes(pack["meta"]).decode())
        return meta, lambda name: ([pack[f"{name}/image{i}"] for i in range(meta[name]["scans"])],
                                   [pack[f"{name}/label{i}"] for i in range(meta[name]["scans"])])
    info = json.loads(bytes(pack["info"]).decode())
    meta = {"acdc_unet2d": {**LIBRARY["acdc_unet2d"], "scans": len(info["names"]),
                            "class_names": info["class_names"]}}
    return meta, lambda name: ([pack[f"img_{n}"] for n in info["names"]],
                               [pack[f"lab_{n}"] for n in info["names"]])


def cmd_train(args: argparse.Namespace) -> int:
    _engine_imports()
    from dataclasses import replace

    import torch

    from training.engine.data import TrainData
    from training.fit.trainer import TrainConfig, train

    meta, volumes = _merged_contents(args.pack)
    names = [n for n in args.models if n in meta]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    budget = 60 * args.minutes / max(len(names), 1)
    report = {}
    for name in names:
        m = meta[name]
        images, labels = volumes(name)
        data = TrainData.from_arrays(images, labels, class_names=m["class_names"])
        cfg = replace(TrainConfig(), **m["config"], labeled_bs=args.batch, unlabeled_bs=0,
                      device=args.device, precision=args.precision, deterministic=False,
                      log_every=100)
        start = time.perf_counter()
        deadline = start + budget
        probe_path = out / f"{name}.probe.pt"
        seen: list[float] = []  # seconds at each step of the probe (setup time left out)
        train(replace(cfg, steps=args.probe_steps, log_every=1, checkpoint=str(probe_path)),
              data, on_event=lambda e, s=seen: e["type"] == "progress" and s.append(e["elapsed"]))
        per_step = (seen[-1] - seen[0]) / max(len(seen) - 1, 1)
        probe_path.unlink(missing_ok=True)
        setup = time.perf_counter() - start - seen[-1]
        steps = max(args.probe_steps, int(0.9 * (deadline - time.perf_counter() - setup)
                                          / per_step))
        if args.max_steps:
            steps = min(steps, args.max_steps)
        path = train(replace(cfg, steps=steps, checkpoint=str(out / f"{name}.pt")), data,
                     should_stop=lambda d=deadline: time.perf_counter() > d)
        report[name] = {"steps": steps, "probe_s_per_step": per_step, "checkpoint": path,
                        "device": str(torch.cuda.get_device_name(0)
                                      if torch.cuda.is_available() else "cpu")}
        print(name, report[name], flush=True)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--models", nargs="+", default=list(LIBRARY), choices=list(LIBRARY))
    p.add_argument("--out", required=True)
    p.add_argument("--parts", type=int, default=1,
                   help="split into N files <out>.partK.npz, each small enough for one call")
    t = sub.add_parser("train")
    t.add_argument("--pack", required=True, nargs="+", help="one pack, or all its parts")
    t.add_argument("--out", required=True)
    t.add_argument("--models", nargs="+", default=list(LIBRARY), choices=list(LIBRARY))
    t.add_argument("--minutes", type=float, default=8.0, help="for all models together")
    t.add_argument("--batch", type=int, default=24)
    t.add_argument("--probe-steps", type=int, default=20)
    t.add_argument("--max-steps", type=int, default=0)
    t.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    t.add_argument("--device", default="auto")
    args = ap.parse_args(argv)
    return cmd_pack(args) if args.cmd == "pack" else cmd_train(args)


if __name__ == "__main__":
    raise SystemExit(main())
