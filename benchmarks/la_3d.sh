#!/usr/bin/env bash
# Short 3D run on left_atrium_2018: 4 labelled cases, volumes downsampled 2x, 32x64x64 patches,
# labelled-only vs bcp vs all-labelled on the same (small) budget, scored on the 20 test cases.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD" OMP_NUM_THREADS=1
STEPS="${STEPS:-60}"
OUT="${OUT:-benchmarks/results/la_3d.md}"
.venv/bin/python -m training benchmark label-efficiency \
  --data /work/shared/data/left_atrium_2018 --labeled 4 --methods bcp --seeds 1 \
  --dims 3d --steps "$STEPS" --size 32 64 64 --downsample 2 --base 8 --depth 3 \
  --labeled-bs 2 --unlabeled-bs 2 --device cpu --out "$OUT"
