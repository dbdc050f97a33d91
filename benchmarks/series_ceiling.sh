#!/bin/bash
# How far can a New model's series get (issue 26)? A New model's network, from the shipped
# learnt start, taught with the full expert labels of the first N LA train scans, then the
# series' loop from it on LA test scans 3-5 (no held-back judgement, as a New model's scans).
# Usage: benchmarks/series_ceiling.sh N [WORK]   (about 4 + 4 minutes on 2 CPU cores)
# Results: benchmarks/results/la_effort_ceiling_taught_by_n_scans.md
set -euo pipefail
N=${1:?usage: series_ceiling.sh N [WORK]}
W=${2:-runs/ceiling}
PY=${PY:-.venv/bin/python}
D=../shared/data/left_atrium_2018
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$W"
"$PY" - "$D" "$W/start$N.pt" <<'PY'
import sys

from training.engine.data import class_names_from_index
from training.interactive.new_model import new_model

data, out = sys.argv[1], sys.argv[2]
names = class_names_from_index(data) or ["background", "left atrium"]
new_model(out, names, seed=0,
          pretrained="napari_semiseg/models/pretrained/new_model_unet2d.pt")
PY
"$PY" -m training train --data "$D" --method supervised --labeled "$N" --init "$W/start$N.pt" \
  --steps 1500 --labeled-bs 8 --unlabeled-bs 0 --seed 0 --log-every 500 --out "$W/la$N.pt"
"$PY" -m training benchmark effort --data "$D" --cases 3 --offset 2 --split test --target 90 \
  --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --hold-back-from 99 \
  --start "$W/la$N.pt" --out "$W/effort2_la$N.md"
