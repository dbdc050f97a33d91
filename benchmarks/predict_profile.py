"""Where a model's Predict spends its time: torch's profiler over one ``predict_volume``
(labels + uncertainty, the plugin's Predict) on a real scan resampled to 100 x 256 x 256.

    PYTHONPATH=. python benchmarks/predict_profile.py MODEL.pt [--rows 22]
"""

from __future__ import annotations

import argparse
import statistics
import time

from torch.profiler import profile

from training.bench.speed import benchmark_volume
from training.engine.checkpoint import load_checkpoint
from training.engine.inference import predict_volume


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--volume", default="sample_data/acdc/patient001_frame01.nii.gz")
    ap.add_argument("--rows", type=int, default=22)
    args = ap.parse_args()
    vol = benchmark_volume(args.volume)
    model, meta = load_checkpoint(args.model, device="cpu")
    predict_volume(model, meta, vol[:4], device="cpu", probabilities=False)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predict_volume(model, meta, vol, device="cpu", probabilities=False)
        times.append(time.perf_counter() - t0)
    print(f"predict + uncertainty: median {statistics.median(times):.3f} s of 3")
    with profile() as prof:
        predict_volume(model, meta, vol, device="cpu", probabilities=False)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
