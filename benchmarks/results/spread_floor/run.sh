#!/bin/bash
cd /work/main
export OMP_NUM_THREADS=1
run() { # set index spread patient
  case $1 in
    acdc) D="--data ../shared/data/acdc --split train --offset $2 --target 85";;
    lgg) D="--data ../shared/data/lgg_brain_mri_2d --patients $4 --split '' --target 80";;
  esac
  eval .venv/bin/semiseg benchmark effort $D --cases 1 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --spread-until $3 --seed 0 --out runs/floor/out/$1_$2_spread$3.md > runs/floor/out/$1_$2_spread$3.log 2>&1
}
export -f run
mkdir -p runs/floor/out
LGG=(TCGA_CS_4943_20000902 TCGA_CS_6186_20000601 TCGA_CS_6667_20011105 TCGA_DU_5849_19950405 TCGA_DU_5853_19950823 TCGA_DU_5874_19950510 TCGA_DU_6407_19860514 TCGA_DU_7014_19860618 TCGA_DU_7294_19890104 TCGA_DU_7300_19910814)
{
for i in $(seq 5 19); do echo "acdc $i 5 -"; echo "acdc $i 0 -"; done
for i in $(seq 0 9); do echo "lgg $i 5 ${LGG[$i]}"; echo "lgg $i 0 ${LGG[$i]}"; done
} > runs/floor/out/args
xargs -P 2 -L 1 bash -c 'run $0 $1 $2 $3' < runs/floor/out/args
