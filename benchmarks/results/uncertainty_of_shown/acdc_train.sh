#!/bin/bash
# usage: acdc_train.sh ARM SEED  (ARM: network|shown)
set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
.venv/bin/semiseg benchmark effort --cases 5 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --data ../shared/data/acdc --target 85 --split train --seed $2 --suggest-from $1 --out runs/shown_unc/acdc_train_$1_seed$2.md > runs/shown_unc/acdc_train_$1_seed$2.log 2>&1
