#!/bin/bash
# seeds 1 and 2 of the ACDC and LGG test scans each taught alone from a New model (after the
# choice; nothing chosen on these)
cd /work/main
export OMP_NUM_THREADS=1
run() { # set index spread seed
  case $1 in
    acdc) D="--data ../shared/data/acdc --split test --offset $2 --target 85";;
    lgg) D="--data ../shared/data/lgg_brain_mri_2d --split '' --offset $2 --target 80";;
  esac
  eval .venv/bin/semiseg benchmark effort $D --cases 1 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --spread-until $3 --seed $4 --out runs/spread_seeds/out/$1_$2_spread$3_seed$4.md > runs/spread_seeds/out/$1_$2_spread$3_seed$4.log 2>&1
}
export -f run
{
for s in 1 2; do for k in acdc lgg; do for i in 0 1 2 3 4; do echo "$k $i 5 $s"; echo "$k $i 0 $s"; done; done; done
} > runs/spread_seeds/out/args2
xargs -P 2 -L 1 bash -c 'run $0 $1 $2 $3' < runs/spread_seeds/out/args2
