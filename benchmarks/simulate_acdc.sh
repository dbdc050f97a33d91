#!/usr/bin/env bash
# The simulated clinician on ACDC test volumes: K = 1, 3, 5 corrected slices, supervised vs
# semi-supervised fine-tuning, from the shipped model. Writes benchmarks/results/acdc_simulate.md.
#   bash benchmarks/simulate_acdc.sh [CASES] [STEPS]
set -euo pipefail
cd "$(dirname "$0")/.."
CASES=${1:-6}
STEPS=${2:-40}
DATA=${DATA:-../shared/data/acdc}
MODEL=napari_semiseg/models/acdc_unet2d.pt
OUT=${OUT:-benchmarks/results/acdc_simulate.md}
TMP=$(mktemp -d)
start=$(date +%s)
VARIANTS=${VARIANTS:-"supervised mean_teacher supervised+anchor mean_teacher+anchor"}
for variant in $VARIANTS; do
  method=${variant%+anchor}
  extra=()
  [ "$variant" != "$method" ] && extra=(--anchor 0.9)
  for k in 1 3 5; do
    OMP_NUM_THREADS=1 .venv/bin/semiseg simulate --data "$DATA" --model "$MODEL" \
      --corrections "$k" --strategy uncertainty --retrain-steps "$STEPS" --method "$method" \
      --cases "$CASES" "${extra[@]}" --out "$TMP/$variant-$k.md" >/dev/null
  done
done
{
  echo "# Simulated clinician on ACDC test volumes"
  echo
  echo "Command: \`VARIANTS=\"$VARIANTS\" bash benchmarks/simulate_acdc.sh $CASES $STEPS\` (each block is one"
  echo "\`semiseg simulate\` call). Machine: $(uname -m), $(nproc) cores, 1 torch thread, shared"
  echo "with other jobs; wall time $(( $(date +%s) - start )) s. Start model: the shipped"
  echo "\`acdc_unet2d.pt\`. Dice is the mean foreground Dice on the slices that were **not**"
  echo "corrected, before and after one retrain of $STEPS steps. \`+anchor\` = \`--anchor 0.9\`:"
  echo "the start model's voxels of confidence >= 0.9 off the corrected slices are kept as"
  echo "pseudo-labels (what the plugin's Retrain does)."
  echo
  echo "| variant | K | Dice before | Dice after | change | cases worse |"
  echo "|---|---|---|---|---|---|"
  for variant in $VARIANTS; do
    for k in 1 3 5; do
      f="$TMP/$variant-$k.md"
      mean=$(grep '^| \*\*mean' "$f" | awk -F'|' '{print $7"|"$8"|"$9}')
      worse=$(grep -v '^| \*\*mean' "$f" | awk -F'|' 'NR>4 && $9+0 < 0 {n++} END {print n+0}')
      echo "| $variant | $k |$mean| $worse |"
    done
  done
  echo
  for variant in $VARIANTS; do
    for k in 1 3 5; do
      echo "## $variant, K = $k"
      echo
      cat "$TMP/$variant-$k.md"
      echo
    done
  done
} > "$OUT"
rm -rf "$TMP"
echo "wrote $OUT"
