#!/bin/bash
# usage: run.sh SET SEED [SUGGEST]   (SET: la|acdc|lgg; SUGGEST: a --suggest-from value)
# The 5-scan test series of spread_choice.md; with SUGGEST=disagreement, D's series
# (written to runs/shown_unc/test_d/, copied to ../test_disagreement/).
set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
C="--cases 5 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3"
case $1 in
  la) D="--data ../shared/data/left_atrium_2018 --target 90 --split test --pretrained napari_semiseg/models/pretrained/new_model_unet2d.pt";;
  acdc) D="--data ../shared/data/acdc --target 85 --split test";;
  lgg) D="--data ../shared/data/lgg_brain_mri_2d --target 80 --split ''";;
esac
S=""; W=runs/shown_unc/test
if [ -n "${3:-}" ]; then S="--suggest-from $3"; W=runs/shown_unc/test_d; fi
mkdir -p $W
eval .venv/bin/semiseg benchmark effort $C $D --seed $2 $S --out $W/$1_series5_seed$2.md > $W/$1_seed$2.log 2>&1
