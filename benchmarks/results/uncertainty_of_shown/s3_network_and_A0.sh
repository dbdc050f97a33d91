set -euo pipefail
cd /work/main
export OMP_NUM_THREADS=1
PY=.venv/bin/python
D=../shared/data/left_atrium_2018
W=runs/ceiling
mkdir -p $W
$PY - "$D" "$W/start16.pt" <<'PY'
import sys
from training.engine.data import class_names_from_index
from training.interactive.new_model import new_model
data, out = sys.argv[1], sys.argv[2]
names = class_names_from_index(data) or ["background", "left atrium"]
new_model(out, names, seed=0, pretrained="napari_semiseg/models/pretrained/new_model_unet2d.pt")
PY
$PY -m training train --data "$D" --method supervised --labeled 16 --init "$W/start16.pt" \
  --steps 1500 --labeled-bs 8 --unlabeled-bs 0 --seed 0 --log-every 500 --out "$W/la16.pt"
$PY -m training benchmark effort --data "$D" --cases 4 --offset 16 --split train --target 90 \
  --k-max 8 --steps 200 --prior interpolation --fuse-weight 0.3 --hold-back-from 99 --ends-every-scan \
  --start "$W/la16.pt" --out runs/diag/s3_A0.md
