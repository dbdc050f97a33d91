#!/usr/bin/env bash
# Everything one GPU lease runs, in one call (issues 23 and 27): a lease is 15 minutes with
# the machine's start, and what travels is at most 64 MiB, so one ACDC pack serves it all.
#
#   1. the training step, the earlier pipeline against the recipe's, alone on the GPU
#      (benchmarks/step_times.py; the target: >= 10x faster than 0.054 s/step);
#   2. side by side until the deadline: the papers'-budget arms on the recipe (labelled-only
#      and bcp on labelled sets 0 and 1, all-labelled once; gpu_paper_budget.py run) and the
#      library's cardiac model (gpu_library.py train);
#   3. what comes back: at most 8 files of at most 16 MiB under $OUT.
#
# Here:    PYTHONPATH=. .venv/bin/python benchmarks/gpu_paper_budget.py pack \
#              --data ../shared/data/acdc --out .gpu/acdc_train.npz
#          .venv/bin/python -m pip download --no-deps monai==1.6.1 -d .whl
# Device:  bash benchmarks/gpu_lease.sh .gpu/acdc_train.npz "$OUT" 330   (carry .gpu .whl)
# Here:    gpu_paper_budget.py evaluate on the returned folder; semiseg card on the model.
set -u
PACK=$1
OUT=$2
TRAIN_S=${3:-330}
# smaller settings for a dry run on a CPU: DEVICE=cpu SIZE=64 BS=2 STEPS=6 PROBE=6 LIBBATCH=2
DEVICE=${DEVICE:-cuda} SIZE=${SIZE:-256} BS=${BS:-12} STEPS=${STEPS:-25} PROBE=${PROBE:-30}
LIBBATCH=${LIBBATCH:-24}
WORK=/tmp/lease
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
if ! python3 -c "import monai" 2>/dev/null; then  # the GPU image has torch but no MONAI
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=.:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$WORK/gpu.txt" 2>&1
python3 -c "import torch, monai; print('torch', torch.__version__, 'monai', monai.__version__)" \
  >> "$WORK/gpu.txt" 2>&1
date +"%T start" | tee -a "$WORK/times.txt"

# 1. alone on the GPU
timeout 150 python3 benchmarks/step_times.py --pack "$PACK" --device "$DEVICE" \
  --samplings resize patch --precisions fp32 bf16 --methods supervised bcp \
  --size "$SIZE" "$SIZE" --base 16 --depth 4 --bs "$BS" --rounds 2 --steps "$STEPS" \
  --out "$OUT/step_times_gpu.md" > "$WORK/step_times.log" 2>&1
date +"%T step times done (rc $?)" | tee -a "$WORK/times.txt"

# 2. side by side, two CPU threads each
export OMP_NUM_THREADS=2
python3 benchmarks/gpu_paper_budget.py run --pack "$PACK" --out "$WORK/pb" --work "$WORK/pbw" \
  --budget-s "$TRAIN_S" --runs "${RUNS:-0:0,1:0}" --size "$SIZE" --labeled-bs "$BS" --unlabeled-bs "$BS" \
  --probe-steps "$PROBE" --probe-timeout-s 90 --safety 1.5 --threads 2 > "$WORK/paper_budget.log" 2>&1 &
python3 benchmarks/gpu_library.py train --pack "$PACK" --out "$WORK/lib" --models acdc_unet2d \
  --minutes "$(python3 -c "print(round(($TRAIN_S - 20) / 60, 2))")" --batch "$LIBBATCH" --device "$DEVICE" \
  > "$WORK/library.log" 2>&1 &
wait
date +"%T training done" | tee -a "$WORK/times.txt"

# 3. back: two 7.8 MB checkpoints per archive
cp "$WORK"/pb/summary.json "$WORK"/pb/log.txt "$WORK"/lib/report.json "$WORK" 2>/dev/null
tar -C "$WORK" -czf "$OUT/logs.tar.gz" gpu.txt times.txt step_times.log paper_budget.log \
  library.log summary.json log.txt report.json 2>/dev/null
cd "$WORK/pb" 2>/dev/null && {
  tar -cf "$OUT/pb_set0.tar" labelled-only_set0_seed0.pt bcp_set0_seed0.pt 2>/dev/null
  tar -cf "$OUT/pb_set1.tar" labelled-only_set1_seed0.pt bcp_set1_seed0.pt 2>/dev/null
  tar -cf "$OUT/pb_all.tar" all-labelled_set0_seed0.pt -C "$WORK/lib" acdc_unet2d.pt 2>/dev/null
}
ls -la "$OUT"
tail -n 5 "$WORK/step_times.log" "$WORK/paper_budget.log" "$WORK/library.log"
