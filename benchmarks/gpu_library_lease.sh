#!/usr/bin/env bash
# The three library models trained on a lent GPU within one lease (issue 23, item 3).
#
# One call carries at most 64 MiB with the working tree (about 19 MB), and the models' scans
# take about 156 MB packed, so the parts travel first, one per call, to the warm machine. A part
# carried into the working tree is gone at the next call (seen on the lease of 2026-12-04), but
# /tmp stays while the machine is warm: each call stashes its part in /tmp/library_parts.
#
# Here:    PYTHONPATH=. .venv/bin/python benchmarks/gpu_library.py pack --parts 5 \
#              --out .gpu/library.npz            # 5 files of 29-34 MB
#          .venv/bin/python -m pip download --no-deps --only-binary=:all: monai==1.6.1 -d .whl
# Device:  for K in 0 1 2 3: run "bash benchmarks/gpu_library_lease.sh --stash" carrying
#          .gpu/library.partK.npz (back to back: the machine goes back after 30 s idle), then
#          bash benchmarks/gpu_library_lease.sh "$OUT" 7   carrying .gpu/library.part4.npz .whl
# Here:    semiseg card on each returned checkpoint, against the shipped model on val first.
# Dry run on a CPU: PY=.venv/bin/python DEVICE=cpu BATCH=2 PRECISION=fp32 \
#          bash benchmarks/gpu_library_lease.sh /tmp/out 0.3
set -u
STASH=${STASH:-/tmp/library_parts}
mkdir -p "$STASH"
cp .gpu/library.part*.npz "$STASH"/ 2>/dev/null
if [ "${1:-}" = "--stash" ]; then
  ls -la "$STASH"
  exit 0
fi
OUT=$1
MINUTES=${2:-7}
PARTS=${PARTS:-5}
PY=${PY:-python3} DEVICE=${DEVICE:-cuda} BATCH=${BATCH:-24} PRECISION=${PRECISION:-bf16}
WORK=/tmp/library_lease
mkdir -p "$WORK" "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
packs=()
for ((k = 0; k < PARTS; k++)); do
  f=$STASH/library.part$k.npz
  if [ ! -f "$f" ]; then
    echo "missing $f: carry each part, with --stash, in an earlier call to the same warm machine" | tee "$OUT/error.txt"
    exit 2
  fi
  packs+=("$f")
done
if ! "$PY" -c "import monai" 2>/dev/null; then  # the GPU image has torch but no MONAI
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    .whl/*.whl && export PYTHONPATH=.:/tmp/site
fi
nvidia-smi --query-gpu=name,memory.total --format=csv > "$WORK/gpu.txt" 2>&1
"$PY" benchmarks/gpu_library.py train --pack "${packs[@]}" --out "$WORK/lib" \
  --minutes "$MINUTES" --batch "$BATCH" --precision "$PRECISION" --device "$DEVICE" \
  > "$WORK/library.log" 2>&1
echo "train rc $?" >> "$WORK/gpu.txt"
cp "$WORK"/lib/*.pt "$WORK"/lib/report.json "$OUT" 2>/dev/null
tar -C "$WORK" -czf "$OUT/logs.tar.gz" gpu.txt library.log
ls -la "$OUT"
