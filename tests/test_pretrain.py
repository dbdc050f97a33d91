"""Label-free pretraining of the New model's network (training.interactive.pretrain) and its use by
new_model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training.engine.checkpoint import CheckpointError, load_checkpoint, read_checkpoint
from training.interactive.new_model import new_model
from training.interactive.pretrain import corrupt, pretrain, unlabelled_slices

NET = {"base": 4, "depth": 2}


def _disc_slices(n: int = 24, size: int = 32, seed: int = 0) -> np.ndarray:
    """Bright discs of random place and size on a dim gradient: MRI-like structure."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(n):
        cy, cx, r = rng.uniform(8, size - 8, 2).tolist() + [rng.uniform(3, 7)]
        img = 0.3 * yy / size + ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
        out.append(img + rng.normal(0, 0.02, img.shape))
    a = np.stack(out).astype(np.float32)
    return (a - a.mean()) / a.std()


def test_corruption_changes_each_slice_and_is_repeatable():
    x = torch.from_numpy(_disc_slices(6))[:, None]
    a = corrupt(x, torch.Generator().manual_seed(1))
    b = corrupt(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert all(not torch.allclose(a[i], x[i]) for i in range(len(x)))
    assert torch.isfinite(a).all()


def test_pretraining_learns_to_restore_and_its_weights_start_a_new_model(tmp_path):
    slices = _disc_slices()
    gen = torch.Generator().manual_seed(5)
    x = torch.from_numpy(slices[:8])[:, None]
    y = corrupt(x, gen)

    def restore_error(path: str) -> float:
        net, _ = load_checkpoint(path)
        with torch.no_grad():
            return F.mse_loss(net(y)["logits"][:, :1], x).item()

    before = pretrain(slices, tmp_path / "p0.pt", steps=1, batch=4, seed=0, device="cpu", **NET)
    after = pretrain(slices, tmp_path / "p.pt", steps=60, batch=4, seed=0, device="cpu", **NET)
    assert restore_error(after) < 0.9 * restore_error(before)
    meta = read_checkpoint(after)["meta"]  # weights_only load: no code in the file
    assert meta["method"] == "pretrain_restore" and meta["size"] == [32, 32]

    started = new_model(tmp_path / "new.pt", ["background", "a", "b"], size=[32, 32],
                        pretrained=after, **NET)
    net, nmeta = load_checkpoint(started)
    pre = read_checkpoint(after)["state_dict"]
    own = net.state_dict()
    body = [k for k in pre if not k.startswith("seg.")]
    assert body and all(torch.equal(own[k], pre[k]) for k in body)
    # a new output layer for the user's classes (one per class and unshuffled pixel)
    assert own["seg.weight"].shape[0] == 3 * net.unshuffle**2
    assert net(y)["logits"].shape[1] == 3
    assert nmeta["untrained"] and nmeta["pretrained_from"] == "p.pt"
    plain = load_checkpoint(new_model(tmp_path / "plain.pt", ["background", "a"],
                                      size=[32, 32], **NET))[0].state_dict()
    assert not torch.equal(plain[body[0]], pre[body[0]])


def test_a_pretrained_file_for_another_network_is_refused(tmp_path):
    path = pretrain(_disc_slices(8), tmp_path / "p.pt", steps=1, batch=2, device="cpu", **NET)
    with pytest.raises(CheckpointError, match="another network"):
        new_model(tmp_path / "new.pt", ["background", "a"], pretrained=path, base=8, depth=2)


def test_unlabelled_slices_read_single_channel_scans_and_leave_the_first_ones_out(tmp_path):
    import SimpleITK as sitk

    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    rows = ["case,image,split"]
    for i in range(3):
        vol = np.random.default_rng(i).normal(100 * (i + 1), 10, (5, 20, 24)).astype(np.float32)
        sitk.WriteImage(sitk.GetImageFromArray(vol), str(root / "images" / f"c{i}.nii.gz"))
        rows.append(f"c{i},images/c{i}.nii.gz,train")
    (root / "index.csv").write_text("\n".join(rows) + "\n")
    every = unlabelled_slices([root], [16, 16])
    assert every.shape == (15, 16, 16) and every.dtype == np.float32
    assert unlabelled_slices([root], [16, 16], skip=1).shape == (10, 16, 16)
    assert unlabelled_slices([root], [16, 16], per_volume=2).shape == (6, 16, 16)
    with pytest.raises(ValueError, match="no single-channel"):
        unlabelled_slices([root], [16, 16], skip=3)


def test_a_new_models_network_trained_with_another_anatomys_labels_starts_new_models(
        tmp_path, capsys, monkeypatch):
    """`semiseg train --new-model-network`: the dock's New-model network, learnt with labels of
    structures the user will not teach; a New model copies all of it but the output layer."""
    import tempfile

    from test_training_synth import write_dataset

    from training.cli import main
    from training.interactive.new_model import NEW_MODEL_NETWORK

    data = write_dataset(tmp_path / "data", n=4)
    out = tmp_path / "start.pt"
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    argv = ["train", "--data", str(data), "--method", "supervised", "--labeled", "1",
            "--dims", "2d", "--steps", "4", "--size", "32", "32", "--labeled-bs", "2",
            "--unlabeled-bs", "0", "--device", "cpu", "--class-names", "background,blob,ring",
            "--new-model-network", "--out", str(out)]
    assert main(argv) == 0
    net, meta = load_checkpoint(out)
    assert {k: meta["network"][k] for k in NEW_MODEL_NETWORK} == NEW_MODEL_NETWORK
    assert meta["class_names"] == ["background", "blob", "ring"] and not meta.get("untrained")
    assert not list((tmp_path / "tmp").iterdir())  # its untrained start was removed
    # it learnt: its weights left the untrained start that new_model draws with the same seed
    start = load_checkpoint(new_model(tmp_path / "untrained.pt", ["background", "blob", "ring"]))[0]
    trained = net.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in start.state_dict().items())

    started = new_model(tmp_path / "new.pt", ["background", "a", "b"], pretrained=out)
    own = load_checkpoint(started)[0].state_dict()
    body = [k for k in trained if not k.startswith("seg.")]
    assert body and all(torch.equal(own[k], trained[k]) for k in body)
    assert own["seg.weight"].shape[0] == 3 * NEW_MODEL_NETWORK["unshuffle"] ** 2

    capsys.readouterr()
    assert main([*argv[:-2], "--init", str(out), "--out", str(tmp_path / "x.pt")]) != 0
    assert "leave out --init" in capsys.readouterr().err
    assert main([*argv[:-2], "--base", "12", "--out", str(tmp_path / "y.pt")]) != 0
    assert (f"--base 12 differs from the New model network's {NEW_MODEL_NETWORK['base']}"
            in capsys.readouterr().err)
