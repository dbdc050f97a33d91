#!/bin/bash
# usage: arm.sh ARM SET [SEED]   (ARM: G|GT; SET: S1|S3|LV|AT)   rule: runs/gap/rule.md
set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
ARM=$1; SET=$2; SEED=${3:-0}
COMMON="--k-max 8 --steps 200 --prior interpolation --seed $SEED --suggest-from network"
PRE="--pretrained napari_semiseg/models/pretrained/new_model_unet2d.pt"
case $SET in
  S1) S="--data ../shared/data/left_atrium_2018 --cases 4 --target 90 --split train $PRE";;
  LV) S="--data ../shared/data/lgg_brain_mri_2d --cases 5 --patients TCGA_CS_5395_19981004,TCGA_DU_6401_19831001,TCGA_DU_8164_19970111,TCGA_FG_7643_20021104,TCGA_HT_7877_19980917 --target 80 --split '' $PRE";;
  S3) S="--data ../shared/data/left_atrium_2018 --cases 4 --offset 16 --target 90 --split train --start runs/ceiling/la16.pt --hold-back-from 99 --ends-every-scan";;
  AT) S="--cases 5 --data ../shared/data/acdc --target 85 --split train";;
esac
case $ARM in
  G) A="--fuse-weight 0.7 --fuse-by-gap all";;
  GT) A="--fuse-weight 0.3 --fuse-weight-taught 0.7 --fuse-by-gap taught";;
esac
SUF=""; [ "$SEED" != 0 ] && SUF="_seed$SEED"
eval .venv/bin/semiseg benchmark effort $S $COMMON $A --out runs/gap/${SET}_${ARM}${SUF}.md > runs/gap/${SET}_${ARM}${SUF}.log 2>&1
