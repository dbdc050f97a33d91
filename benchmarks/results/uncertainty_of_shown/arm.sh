#!/bin/bash
# usage: arm.sh ARM SET [SEED]   (ARM: A0|P|Q|R|D|G|GT; SET: S1|S2|S3|LV|AT)
# A0 = the dock before runs/shown_unc/rule.md (suggestions by the network's uncertainty).
# G, GT: the share by gap of ../share_by_gap/rule.md. OUT: where runs go (runs/prior_taught).
set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
ARM=$1; SET=$2; SEED=${3:-0}; OUT=${OUT:-runs/prior_taught}
COMMON="--k-max 8 --steps 200 --prior interpolation --seed $SEED"
PRE="--pretrained napari_semiseg/models/pretrained/new_model_unet2d.pt"
case $SET in
  S1) S="--data ../shared/data/left_atrium_2018 --cases 4 --target 90 --split train $PRE";;
  S2) S="--data ../shared/data/lgg_brain_mri_2d --cases 5 --offset 5 --target 80 --split '' $PRE";;
  LV) S="--data ../shared/data/lgg_brain_mri_2d --cases 5 --patients TCGA_CS_5395_19981004,TCGA_DU_6401_19831001,TCGA_DU_8164_19970111,TCGA_FG_7643_20021104,TCGA_HT_7877_19980917 --target 80 --split '' $PRE";;
  S3) S="--data ../shared/data/left_atrium_2018 --cases 4 --offset 16 --target 90 --split train --start runs/ceiling/la16.pt --hold-back-from 99 --ends-every-scan";;
  AT) S="--cases 5 --data ../shared/data/acdc --target 85 --split train";;
esac
W="--fuse-weight 0.3"
case $ARM in
  A0) A="--suggest-from network";;
  R) A="--suggest-from shown";;
  D) A="--suggest-from disagreement";;
  P) A="--suggest-from network --prior-taught none";;
  Q) A="--suggest-from network --prior-taught none --fuse-weight-taught 1.0";;
  G) W="--fuse-weight 0.7"; A="--suggest-from network --fuse-by-gap all";;
  GT) A="--suggest-from network --fuse-weight-taught 0.7 --fuse-by-gap taught";;
esac
SUF=""; [ "$SEED" != 0 ] && SUF="_seed$SEED"
mkdir -p "$OUT"
eval .venv/bin/semiseg benchmark effort $S $COMMON $W $A --out $OUT/${SET}_${ARM}${SUF}.md > $OUT/${SET}_${ARM}${SUF}.log 2>&1
