"""The GPU lease scripts' own logic, run on the CPU: which arms train, what happens when no
worker could time its steps, and one pack serving the library script."""

from __future__ import annotations

import json
import sys
from argparse import Namespace
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCH))
    try:
        import gpu_library
        import gpu_paper_budget
    finally:
        sys.path.remove(str(BENCH))
    return gpu_paper_budget, gpu_library


def test_all_labelled_trains_once_per_seed(scripts):
    budget, _ = scripts
    runs = budget._runs("0:0,1:0,0:1", "labelled-only,bcp,all-labelled")
    assert runs == [("labelled-only", 0, 0), ("bcp", 0, 0), ("all-labelled", 0, 0),
                    ("labelled-only", 1, 0), ("bcp", 1, 0),
                    ("labelled-only", 0, 1), ("bcp", 0, 1), ("all-labelled", 0, 1)]


def _args(**kw) -> Namespace:
    base = {"precisions": "fp32,bf16", "max_steps": 30000, "safety": 1.0, "fixed_steps": 0,
            "fixed_precision": None}
    return Namespace(**{**base, **kw})


def test_the_decision_never_leaves_workers_waiting_for_nothing(scripts):
    budget, _ = scripts
    import time

    end = time.time() + 100
    assert budget._decide(_args(), {}, end)["runs"] == []
    failed = {"a": {"fp32": None, "bf16": None}}
    assert "failed" in budget._decide(_args(), failed, end)["why"]
    assert budget._decide(_args(), {"a": {"fp32": 1.0, "bf16": 0.5}}, time.time() + 5)[
        "runs"] == []  # no time left to train
    ok = budget._decide(_args(), {"a": {"fp32": 0.02, "bf16": 0.01},
                                  "b": {"fp32": 0.04, "bf16": 0.03}}, end)
    # the slowest arm sets the pace, and the precision with more steps wins
    assert ok["runs"] == ["a", "b"] and ok["precision"] == "bf16"
    assert 2900 <= ok["steps"] <= 3000


def test_the_library_script_reads_a_paper_budget_pack(scripts, tmp_path):
    """One ACDC upload serves both scripts: its train volumes are the cardiac model's."""
    _, library = scripts
    rng = np.random.default_rng(0)
    vols = {n: (rng.integers(0, 900, (3, 12, 10)).astype(np.uint16),
                rng.integers(0, 4, (3, 12, 10)).astype(np.uint8)) for n in ("p1", "p2")}
    info = {"names": list(vols), "sets": {}, "class_names": ["background", "RV", "Myo", "LV"]}
    arrays = {f"img_{n}": v[0] for n, v in vols.items()}
    arrays |= {f"lab_{n}": v[1] for n, v in vols.items()}
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    np.savez(tmp_path / "pack.npz", **arrays)
    meta, volumes = library._pack_contents(np.load(tmp_path / "pack.npz"))
    assert list(meta) == ["acdc_unet2d"] and meta["acdc_unet2d"]["scans"] == 2
    assert meta["acdc_unet2d"]["class_names"] == info["class_names"]
    images, labels = volumes("acdc_unet2d")
    assert [i.tolist() for i in images] == [vols["p1"][0].tolist(), vols["p2"][0].tolist()]
    assert [x.tolist() for x in labels] == [vols["p1"][1].tolist(), vols["p2"][1].tolist()]


def test_a_gpu_optimiser_falls_back_where_torch_has_no_fused_form():
    from training.methods.base import _optimizer

    seen = []

    class Old(torch.optim.SGD):  # a torch whose optimiser does not know `fused`
        def __init__(self, params, fused=None, **kw):
            seen.append(fused)
            if fused is not None:
                raise TypeError("unexpected keyword argument 'fused'")
            super().__init__(params, **kw)

    p = [torch.nn.Parameter(torch.zeros(2))]
    opt = _optimizer(Old, p, torch.device("cuda"), lr=0.1)
    assert isinstance(opt, Old) and seen == [True, None]
    seen.clear()
    _optimizer(Old, p, torch.device("cpu"), lr=0.1)
    assert seen == [None]  # the CPU keeps the plain loop: its numbers stay as they were


def test_a_pack_in_parts_trains_on_the_union_of_its_scans(scripts, tmp_path, monkeypatch):
    """Parts small enough for one device call each: together they hold every scan once."""
    import SimpleITK as sitk

    _, library = scripts
    root = tmp_path / "data" / "tiny"
    for sub in ("images", "labels"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(5):
        img = rng.integers(0, 900, (3, 12, 10)).astype(np.int16)
        lab = rng.integers(0, 2, (3, 12, 10)).astype(np.uint8)
        sitk.WriteImage(sitk.GetImageFromArray(img), str(root / "images" / f"c{k}.nii.gz"))
        sitk.WriteImage(sitk.GetImageFromArray(lab), str(root / "labels" / f"c{k}.nii.gz"))
    entry = {"data": "tiny", "labeled": "5", "class_names": ["background", "blob"],
             "config": {"size": [8, 8]}}
    monkeypatch.setitem(library.LIBRARY, "tiny", entry)
    whole, parts = tmp_path / "whole.npz", tmp_path / "split.npz"
    for out, n in ((whole, 1), (parts, 2)):
        assert library.cmd_pack(Namespace(data=str(tmp_path / "data"), models=["tiny"],
                                          out=str(out), parts=n)) == 0
    files = sorted(str(p) for p in tmp_path.glob("split.part*.npz"))
    assert len(files) == 2 and not parts.exists()
    meta, volumes = library._merged_contents(files)
    ref_meta, ref_volumes = library._merged_contents([str(whole)])
    assert meta["tiny"]["scans"] == ref_meta["tiny"]["scans"] == 5

    def pairs(get) -> list[tuple[bytes, bytes]]:  # (image, label) per scan, in any order
        images, labels = get("tiny")
        return sorted((i.tobytes(), x.tobytes()) for i, x in zip(images, labels, strict=True))

    assert len(pairs(volumes)) == 5 and pairs(volumes) == pairs(ref_volumes)


def test_the_library_lease_stashes_each_part_and_names_a_missing_one(tmp_path):
    # Each device call's carried part is gone from the working tree at the next call, so the
    # script keeps it in a stash that outlives the call, and refuses to train on fewer parts.
    import subprocess

    work, stash, out = tmp_path / "work", tmp_path / "stash", tmp_path / "out"
    (work / ".gpu").mkdir(parents=True)
    (work / ".gpu" / "library.part0.npz").write_bytes(b"part 0")
    script = str(BENCH / "gpu_library_lease.sh")
    env = {"PATH": "/usr/bin:/bin", "STASH": str(stash), "PARTS": "2"}
    done = subprocess.run(["bash", script, "--stash"], cwd=work, env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (stash / "library.part0.npz").read_bytes() == b"part 0"
    (work / ".gpu" / "library.part0.npz").unlink()  # the next call no longer has it
    done = subprocess.run(["bash", script, str(out), "1"], cwd=work, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert "library.part1.npz" in done.stdout
    assert "library.part1.npz" in (out / "error.txt").read_text()
