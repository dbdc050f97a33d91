#!/bin/bash
# Patient-level folds for the LGG library recipe (issue 23): out-of-fold predictions on all
# 30 train + val patients, so a predict-time choice (clean-up) is made on 30 patients, not 5.
# Fold 0 is the split's own val fold (its 25-patient model is `git show
# 9bee266:napari_semiseg/models/lgg_flair_unet2d.pt`); folds 1-5 each hold out every 5th
# train patient and train the shipped command, seed 0, on the other 20 train + the 5 val.
# Usage: benchmarks/lgg_folds.sh FOLD [WORK]   (FOLD 1-5; about 40 min on one core)
# EXTRA='--augment mirror-left-right' appends training options: a recipe candidate's folds.
set -euo pipefail
F=${1:?usage: lgg_folds.sh FOLD [WORK]}
W=${2:-runs/lgg_folds}
PY=${PY:-.venv/bin/python}
D=../shared/data/lgg_brain_mri_2d
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
mkdir -p "$W"
TRAIN=$("$PY" - "$F" <<'PY'
import json
import sys

fold = int(sys.argv[1])
split = json.load(open("benchmarks/splits/lgg.json"))
held = split["train"][fold - 1::5]
print(",".join([p for p in split["train"] if p not in held] + split["val"]))
PY
)
"$PY" -m training train --data "$D" --method supervised --labeled "$TRAIN" --channels 3 \
  --missing-channels 0.2 --class-names 'background,FLAIR abnormality' --dims 2d --steps 8000 \
  --size 256 256 --unshuffle 2 --base 12 --depth 4 --dropout 0.1 --labeled-bs 4 \
  --unlabeled-bs 0 --seed 0 --prior-init 0 --checkpoint-every 500 --log-every 100 \
  --out "$W/fold$F.pt" ${EXTRA:-}
