"""Predict + uncertainty with denormal floats kept, against flushed (the default), side by side.

Each (model, arm) is timed in a fresh process, since the compute threads take the
flush-to-zero setting when they start: ``SEMISEG_KEEP_DENORMALS=1`` for "kept" (weights as
stored, no flush), nothing for "flushed". Arms alternate within each repeat; medians reported,
with the agreement of the two arms' labels.

    PYTHONPATH=. .venv/bin/python benchmarks/denormal_speed.py \
        --out benchmarks/results/denormal_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "napari_semiseg" / "models"

_CHILD = """
import json, sys, time
import numpy as np
from training.engine.checkpoint import load_checkpoint
from training.engine.inference import predict_volume
from training.bench.speed import benchmark_volume
model, meta = load_checkpoint(sys.argv[1], device="cpu")
volume = benchmark_volume(sys.argv[2], [int(v) for v in sys.argv[3:6]])
predict_volume(model, meta, volume, device="cpu", probabilities=False)  # warm-up
t0 = time.perf_counter()
res = predict_volume(model, meta, volume, device="cpu", probabilities=False)
seconds = time.perf_counter() - t0
np.save(sys.argv[6], res["labels"])
print(json.dumps({"seconds": seconds}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--volume", default="sample_data/acdc/patient001_frame01.nii.gz")
    p.add_argument("--shape", type=int, nargs=3, default=[100, 256, 256])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    import numpy as np
    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in sorted(MODELS.glob("*.pt")):
            payload = torch.load(path, map_location="cpu", weights_only=True)
            tiny = sum(int(((t.abs() < torch.finfo(torch.float32).tiny) & (t != 0)).sum())
                       for t in payload["state_dict"].values() if t.is_floating_point())
            times: dict[str, list[float]] = {"kept": [], "flushed": []}
            for _ in range(a.repeats):
                for arm in times:
                    env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    env.pop("SEMISEG_KEEP_DENORMALS", None)
                    if arm == "kept":
                        env["SEMISEG_KEEP_DENORMALS"] = "1"
                    out = subprocess.run(
                        [sys.executable, "-c", _CHILD, str(path), a.volume, *map(str, a.shape),
                         f"{tmp}/{arm}.npy"], env=env, capture_output=True, text=True,
                        check=True)
                    times[arm].append(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])
            agree = float((np.load(f"{tmp}/kept.npy") == np.load(f"{tmp}/flushed.npy")).mean())
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((path.name, tiny, med["kept"], med["flushed"], agree))
            print(path.name, med, agree, flush=True)
    lines = ["# Denormal floats: predict + uncertainty kept against flushed", "",
             "- command: `PYTHONPATH=. .venv/bin/python benchmarks/denormal_speed.py "
             + " ".join(sys.argv[1:] if argv is None else argv) + "`",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores visible, "
             f"torch {torch.__version__}, default threads",
             f"- volume: {a.volume} resampled to {tuple(a.shape)}; each time in a fresh "
             f"process after one warm-up; median of {a.repeats}, arms alternating", "",
             "| model | denormal weights | kept, s | flushed, s | speed-up | labels equal |",
             "|---|---|---|---|---|---|"]
    for name, n, kept, flushed, agree in rows:
        lines.append(f"| {name} | {n:,} | {kept:.2f} | {flushed:.2f} | {kept / flushed:.1f}× | "
                     f"{100 * agree:.3f} % |")
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
