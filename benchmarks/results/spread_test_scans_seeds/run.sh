#!/bin/bash
# the spread of the headline "each LA test scan taught alone from a New model" figure:
# seeds 1 and 2 beside the seed-0 runs of benchmarks/results/spread_test_scans (measured after
# the choice; nothing is chosen on these)
cd /work/main
export OMP_NUM_THREADS=1
run() { # index spread seed
  .venv/bin/semiseg benchmark effort --data ../shared/data/left_atrium_2018 --split test --offset $1 --target 90 --pretrained napari_semiseg/models/pretrained/new_model_unet2d.pt --cases 1 --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --spread-until $2 --seed $3 --out runs/spread_seeds/out/la_$1_spread$2_seed$3.md > runs/spread_seeds/out/la_$1_spread$2_seed$3.log 2>&1
}
export -f run
{
for s in 1 2; do for i in 0 1 2 3 4; do echo "$i 5 $s"; echo "$i 0 $s"; done; done
} > runs/spread_seeds/out/args
xargs -P 2 -L 1 bash -c 'run $0 $1 $2' < runs/spread_seeds/out/args
