#!/usr/bin/env bash
# act's Predict speed, the code of an earlier revision against today's, alternating twice on
# one machine: `semiseg benchmark speed` on the four act students of the methods table (ACDC
# labelled sets 0 and 1, seeds 0 and 1) and their teachers.
#   bash benchmarks/act_speed_ab.sh <revision> <out folder>
set -euo pipefail
rev=${1:?an earlier revision, e.g. c48fce2}
out=${2:?a folder for the four tables}
old=$(mktemp -d)
git archive "$rev" training | tar -x -C "$old"
R=benchmarks/results
M="$R/acdc_act_distilB_set0.runs/act_distil_fraction0.5_seed0.pt $R/acdc_act_distilB_set0.runs/act_distil_fraction0.5_seed1.pt $R/acdc_act_distilB_set1.runs/act_distil_fraction0.5_seed0.pt $R/acdc_act_distilB_set1.runs/act_distil_fraction0.5_seed1.pt"
mkdir -p "$out"
for i in 1 2; do
  for tree in old new; do
    if [ "$tree" = old ]; then src=$old; else src=$PWD; fi
    OMP_NUM_THREADS=2 PYTHONPATH=$src .venv/bin/python -c \
      "import sys; from training.cli import main; sys.exit(main(sys.argv[1:]))" \
      benchmark speed --models $M --volume sample_data/acdc/patient001_frame01.nii.gz \
      --shape 100 256 256 --mc 0 --repeats 5 --out "$out/act_ab_${tree}_$i.md" > /dev/null
    echo "$tree $i: $(grep '^| acdc' "$out/act_ab_${tree}_$i.md" | awk -F'|' '{printf "%s %s %s; ", $3, $6, $8}')"
  done
done
rm -rf "$old"
