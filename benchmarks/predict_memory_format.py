"""Predict (labels + uncertainty) with a 2-D model's weights in the default layout or channels-last.

Both layouts are timed on the same volume, alternating repeat by repeat, so a noisy machine
slows both alike; the medians and their ratio are reported, with the largest difference of the
uncertainty maps and the share of voxels whose label differs.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python benchmarks/predict_memory_format.py \\
        --models napari_semiseg/models/acdc_unet2d.pt napari_semiseg/models/la_unet2d.pt \\
        --out benchmarks/results/predict_memory_format.md
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--volume", default="sample_data/acdc/patient001_frame01.nii.gz")
    p.add_argument("--shape", nargs=3, type=int, default=[100, 256, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import training.engine.inference as inf
    from training.bench.benchmark import machine_description
    from training.bench.speed import benchmark_volume
    from training.engine.checkpoint import load_checkpoint

    vol = benchmark_volume(a.volume, a.shape)
    layouts = {"default": torch.contiguous_format, "channels-last": torch.channels_last}
    rows = []
    for path in a.models:
        model, meta = load_checkpoint(path, device="cpu")
        secs: dict[str, list[float]] = {k: [] for k in layouts}
        outs = {}
        for r in range(a.repeats + 1):  # the first round warms up and is not timed
            for name, fmt in layouts.items():
                inf.MEMORY_FORMAT = fmt
                t0 = time.perf_counter()
                outs[name] = inf.predict_volume(model, meta, vol, device="cpu",
                                                probabilities=False)
                if r:
                    secs[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in secs.items()}
        unc = float((torch.from_numpy(outs["default"]["uncertainty"])
                     - torch.from_numpy(outs["channels-last"]["uncertainty"])).abs().max())
        changed = float((outs["default"]["labels"] != outs["channels-last"]["labels"]).mean())
        rows.append((path, med["default"], med["channels-last"], unc, changed))
        print(rows[-1], flush=True)
    inf.MEMORY_FORMAT = torch.channels_last
    lines = ["# Predict with weights in the default layout or channels-last", "",
             f"- command: `OMP_NUM_THREADS={torch.get_num_threads()} PYTHONPATH=. python "
             f"benchmarks/predict_memory_format.py "
             f"{' '.join(shlex.quote(x) for x in (argv if argv is not None else sys.argv[1:]))}`",
             f"- machine: {machine_description()}",
             f"- volume: {a.volume} resampled to {tuple(a.shape)}; median of {a.repeats} "
             "repeats, the two layouts alternating; the dock's Predict (labels + uncertainty)", "",
             "| model | default, s | channels-last, s | speed-up | max uncertainty difference "
             "| voxels whose label differs |", "|---|---|---|---|---|---|"]
    for path, d, c, unc, changed in rows:
        lines.append(f"| {path} | {d:.2f} | {c:.2f} | {d / c:.2f}x | {unc:.1e} "
                     f"| {100 * changed:.4f} % |")
    with open(a.out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
