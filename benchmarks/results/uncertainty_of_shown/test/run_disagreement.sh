#!/bin/bash
# usage: test.sh SET SEED   (SET: la|acdc|lgg) -- the 5-scan test series of spread_choice.md
set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
C="--cases 5 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3"
case $1 in
  la) D="--data ../shared/data/left_atrium_2018 --target 90 --split test --pretrained napari_semiseg/models/pretrained/new_model_unet2d.pt";;
  acdc) D="--data ../shared/data/acdc --target 85 --split test";;
  lgg) D="--data ../shared/data/lgg_brain_mri_2d --target 80 --split ''";;
esac
eval .venv/bin/semiseg benchmark effort $C $D --seed $2 --suggest-from disagreement --out runs/shown_unc/test_d/$1_series5_seed$2.md > runs/shown_unc/test_d/$1_seed$2.log 2>&1
