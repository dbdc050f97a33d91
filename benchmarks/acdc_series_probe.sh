#!/bin/bash
# How well does a New model's network (random start, as the ACDC scratch series) predict a new
# ACDC scan after learning the FULL labels of N train scans? Beside the series' first Predicts.
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1
PY=.venv/bin/python
mkdir -p runs/acdc_probe
$PY - <<'PY'
from training.interactive.new_model import new_model
new_model("runs/acdc_probe/start.pt", ["background", "RV", "Myo", "LV"], seed=0)
PY
for N in 2 8; do
$PY -m training train --data ../shared/data/acdc --method supervised --labeled $N --init runs/acdc_probe/start.pt \
  --steps 1500 --labeled-bs 8 --unlabeled-bs 0 --seed 0 --log-every 500 --out runs/acdc_probe/acdc$N.pt
done
$PY - <<'PY'
from training.bench.effort import load_cases
from training.engine.checkpoint import load_checkpoint
from training.engine.inference import predict_volume
from training.engine.metrics import mean_dice
cases, _ = load_cases("../shared/data/acdc", 10, "val")
for n in (2, 8):
    net, meta = load_checkpoint(f"runs/acdc_probe/acdc{n}.pt", device="cpu")
    ds = [mean_dice(predict_volume(net, meta, img, device="cpu")["labels"], t) for _, img, t in cases]
    print(n, "scans:", " ".join(f"{100*d:.1f}" for d in ds), f"mean {100*sum(ds)/len(ds):.1f}")
PY
