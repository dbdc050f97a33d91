"""``semiseg train`` under torchrun with two CPU processes (gloo)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_training_synth import write_dataset

from training.engine.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_torchrun_two_ranks_step_and_one_checkpoint(tmp_path):
    data = write_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "training", "train", "--data", str(data), "--method", "mean_teacher",
           "--labeled", "1", "--steps", "3", "--size", "16", "16", "--base", "4", "--depth", "2",
           "--labeled-bs", "2", "--device", "cpu", "--log-every", "1",
           "--out", str(out / "model.pt")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for rank in (0, 1):
        assert f"[rank {rank}] step 3/3" in proc.stderr
    assert sorted(os.listdir(out)) == ["model.pt"]  # exactly one checkpoint, no temporaries
    assert proc.stderr.count("done:") == 1
    _, meta = load_checkpoint(out / "model.pt")
    assert meta["steps_done"] == 3
