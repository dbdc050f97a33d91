"""Predict time of untrained act student shapes beside a trained teacher (exploration).

Speed hardly depends on the weights, so a student's shape can be timed before it is trained.
Each is a batch-norm student predicting whole slices (its default), timed as the dock's
Predict on a real scan resampled to 100 x 256 x 256, median of 5, interleaved.

    OMP_NUM_THREADS=2 PYTHONPATH=. .venv/bin/python benchmarks/student_arch_speed.py \
        --teacher <an act run>.teacher.pt --student <the same run>.pt
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

SHAPES = ((8, 2, 4), (16, 1, 4), (12, 1, 4), (12, 2, 8), (8, 3, 4))  # base, depth, unshuffle


def main() -> None:
    from training.bench.speed import benchmark_volume
    from training.engine.checkpoint import load_checkpoint
    from training.engine.inference import predict_volume
    from training.engine.networks import tiny_student

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student", required=True, help="a trained student, for its meta")
    ap.add_argument("--volume", default="sample_data/acdc/patient001_frame01.nii.gz")
    ap.add_argument("--shapes", nargs="*", default=None,
                    help="student shapes to time as base,depth,unshuffle (default: SHAPES)")
    a = ap.parse_args()
    shapes = SHAPES if a.shapes is None else [tuple(int(v) for v in s.split(",")) for s in a.shapes]
    torch.set_num_threads(2)
    vol = benchmark_volume(a.volume)
    student, meta = load_checkpoint(a.student, device="cpu")
    models = {"teacher": load_checkpoint(a.teacher, device="cpu"), "trained": (student, meta)}
    for base, depth, r in shapes:
        net = tiny_student(2, 1, meta["network"]["num_classes"], base=base, depth=depth,
                           norm="batch", unshuffle=r).eval()
        models[f"b{base}d{depth}u{r}"] = (net, {**meta, "network": net.config})
    for m, mt in models.values():
        predict_volume(m, mt, vol[:4], device="cpu", probabilities=False)
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(5):
        for k, (m, mt) in models.items():
            t0 = time.perf_counter()
            predict_volume(m, mt, vol, device="cpu", probabilities=False)
            times[k].append(time.perf_counter() - t0)
    teacher = statistics.median(times["teacher"])
    for k, v in times.items():
        print(f"{k}: {statistics.median(v):.3f} s, {teacher / statistics.median(v):.2f}x")


if __name__ == "__main__":
    main()
