import os
import pickle
from pathlib import Path

import pytest
import torch

from training.engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.engine.networks import UNet


def test_round_trip_rebuilds_network(tmp_path):
    net = UNet(2, 1, 3, base=4, depth=2, edge_head=True)
    meta = {"num_classes": 3, "class_names": ["bg", "a", "b"], "size": [32, 32], "dims": 2}
    path = save_checkpoint(tmp_path / "m.pt", net, meta)
    model, got = load_checkpoint(path)
    assert got["class_names"] == ["bg", "a", "b"] and got["network"]["edge_head"]
    for a, b in zip(net.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [p for p in os.listdir(tmp_path) if p != "m.pt"] == []  # no temporary left


def test_failed_save_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    net = UNet(2, 1, 2, base=4, depth=1)
    path = save_checkpoint(tmp_path / "m.pt", net, {"step": 1})
    before = (tmp_path / "m.pt").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, net, {"step": 2})
    assert (tmp_path / "m.pt").read_bytes() == before
    assert os.listdir(tmp_path) == ["m.pt"]


def test_corrupt_and_foreign_files_raise_checkpoint_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not a napari-semiseg"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    p = tmp_path / "evil.pt"
    torch.save({"format": "napari-semiseg-checkpoint/1", "meta": _Evil()}, p)
    with pytest.raises(CheckpointError, match="Python objects besides weights") as err:
        load_checkpoint(p)
    assert "system" in str(err.value)  # what it tried to call
    # torch's own advice, loading again with weights_only=False, never reaches the user
    assert "weights_only" not in str(err.value)
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(CheckpointError, match="Python objects besides weights"):
        load_checkpoint(plain)


def test_a_file_that_is_no_model_says_so(tmp_path, disc_scan):
    import SimpleITK as sitk

    scan = tmp_path / "scan.nii.gz"  # a scan picked where a model was asked for
    sitk.WriteImage(sitk.GetImageFromArray(disc_scan[0]), str(scan))
    with pytest.raises(CheckpointError, match="not a model file .it looks compressed") as err:
        load_checkpoint(scan)
    assert "weights_only" not in str(err.value)
    net = UNet(2, 1, 2, base=4, depth=2)
    whole = Path(save_checkpoint(tmp_path / "m.pt", net, {"num_classes": 2, "dims": 2}))
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        load_checkpoint(cut)
    cut.write_bytes(b"")
    with pytest.raises(CheckpointError, match="the file is empty"):
        load_checkpoint(cut)


def test_a_compacted_checkpoint_is_half_the_size_and_predicts_the_same(tmp_path):

    import numpy as np

    from training.engine.checkpoint import compact_checkpoint, load_checkpoint, save_checkpoint
    from training.engine.inference import predict_volume
    from training.engine.networks import UNet

    torch.manual_seed(0)
    net = UNet(2, 1, 3, base=8, depth=3)
    meta = {"num_classes": 3, "dims": 2, "size": [32, 32], "normalization": None}
    full = save_checkpoint(tmp_path / "m.pt", net, meta)
    small = compact_checkpoint(full, tmp_path / "m16.pt")
    assert Path(small).stat().st_size < 0.6 * Path(full).stat().st_size
    a, _ = load_checkpoint(full)
    b, meta_b = load_checkpoint(small)  # loads with weights_only, into float32 parameters
    assert meta_b["stored_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in b.parameters())
    vol = np.random.default_rng(0).normal(size=(4, 40, 40)).astype(np.float32)
    pa = predict_volume(a, meta, vol, device="cpu")["probabilities"]
    pb = predict_volume(b, meta_b, vol, device="cpu")["probabilities"]
    assert np.abs(pa - pb).max() < 1e-2
