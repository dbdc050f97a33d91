"""Any structure: a new model from named structures, and a structure added to a trained model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from training import IGNORE_INDEX
from training.engine.checkpoint import load_checkpoint, read_checkpoint
from training.engine.networks import UNet
from training.interactive.loop import finetune
from training.interactive.new_model import new_model
from training.methods.base import grown, load_compatible

TINY = {"labeled_bs": 2, "unlabeled_bs": 0, "lr": 1e-2}


def _scan(seed=0):
    """Two bright structures on a noisy background, (8, 32, 32)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:8, 0:32, 0:32]
    truth = np.zeros((8, 32, 32), np.uint8)
    truth[(y - 10) ** 2 + (x - 10) ** 2 < 25] = 1
    truth[(y - 22) ** 2 + (x - 22) ** 2 < 16] = 2
    image = (truth.astype(np.float32) * 300 + rng.normal(0, 30, truth.shape)).astype(np.float32)
    return image, truth


def test_grown_head_keeps_the_old_classes_weights():
    torch.manual_seed(0)
    old = UNet(2, 1, 3, base=4, depth=2, sdf_head=True)
    new = UNet(2, 1, 4, base=4, depth=2, sdf_head=True)
    fresh = {k: v.clone() for k, v in new.state_dict().items()}
    load_compatible(new, old.state_dict())
    for k, v in old.state_dict().items():
        got = new.state_dict()[k]
        if got.shape == v.shape:
            assert torch.equal(got, v), k
        else:  # an output layer: old rows copied, the new class's row freshly initialised
            assert torch.equal(got[: v.shape[0]], v), k
            assert torch.equal(got[v.shape[0]:], fresh[k][v.shape[0]:]), k
    assert set(grown(new, old.state_dict())) == set(old.state_dict())


def test_a_new_model_learns_two_named_structures_from_painted_slices(tmp_path):
    image, truth = _scan()
    # full resolution: these kidneys are a few pixels wide in a 32-px toy scan (the default
    # New-model network runs at half resolution, chosen on real LA scans)
    start = new_model(tmp_path / "new.pt", ["background", "left kidney", "right kidney"],
                      size=[32, 32], base=4, depth=2, unshuffle=1)
    assert read_checkpoint(start)["meta"]["untrained"] is True
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[1, 6]] = truth[[1, 6]]
    out = finetune(start, image, sparse, steps=60, out_path=tmp_path / "v1.pt", device="cpu",
                   anchor=0.9, **TINY)
    model, meta = load_checkpoint(out)
    assert meta["class_names"] == ["background", "left kidney", "right kidney"]
    assert not meta.get("untrained")
    # a New model predicts in patch windows, and its Retrains keep what it was made with
    from training.engine.inference import prediction_window

    assert meta["whole_slice_up_to"] == 1.0
    assert prediction_window(meta, (39, 47)) == [32, 32]
    fast = new_model(tmp_path / "fast.pt", ["background", "kidney"], size=[32, 32], base=4,
                     depth=2, unshuffle=1, whole_slice_up_to=1.6)
    fast = finetune(fast, image, np.where(sparse == 2, 1, sparse).astype(np.uint8), steps=1,
                    out_path=tmp_path / "f1.pt", device="cpu", **TINY)
    assert prediction_window(load_checkpoint(fast)[1], (39, 47)) == [40, 48]  # whole slice
    from training.engine.inference import predict_volume

    pred = predict_volume(model, meta, image, device="cpu")["labels"]
    for c in (1, 2):  # both structures found on slices nobody painted
        inter = ((pred == c) & (truth == c))[2:6].sum()
        assert 2 * inter / ((pred == c)[2:6].sum() + (truth == c)[2:6].sum()) > 0.7


def test_painting_an_unknown_label_adds_a_structure_to_a_trained_model(tmp_path):
    image, truth = _scan(1)
    two = np.where(truth == 2, 0, truth)
    start = new_model(tmp_path / "a.pt", ["background", "left"], size=[32, 32], base=4, depth=2)
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[1, 6]] = two[[1, 6]]
    trained = finetune(start, image, sparse, steps=5, out_path=tmp_path / "b.pt", device="cpu",
                       **TINY)
    sparse[[1, 6]] = truth[[1, 6]]  # now class 2 is painted too
    out = finetune(trained, image, sparse, steps=5, out_path=tmp_path / "c.pt", device="cpu",
                   class_names=["background", "left", "right"], **TINY)
    meta = read_checkpoint(out)["meta"]
    assert meta["num_classes"] == 3 and meta["network"]["num_classes"] == 3
    assert meta["class_names"] == ["background", "left", "right"]
    # unnamed: the new class still gets a name
    out2 = finetune(trained, image, sparse, steps=2, out_path=tmp_path / "d.pt", device="cpu",
                    **TINY)
    assert read_checkpoint(out2)["meta"]["class_names"] == ["background", "left", "structure 2"]


@pytest.mark.parametrize("names", [["background"], ["background", ""], ["bg", "a", "a"]])
def test_new_model_refuses_bad_names(tmp_path, names):
    with pytest.raises(ValueError):
        new_model(tmp_path / "m.pt", names)


def _scratch_job(tmp_path, **job):
    """A job for a tiny untrained model, slices 1 and 6 of a two-structure scan painted:
    (job, the painted labels, the truth)."""
    from napari_semiseg.retrain_job import RetrainJob

    image, truth = _scan(2)
    start = new_model(tmp_path / "n.pt", ["background", "a", "b"], size=[32, 32], base=4,
                      depth=2)
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[1, 6]] = truth[[1, 6]]
    np.save(tmp_path / "image.npy", image)
    np.save(tmp_path / "labels.npy", sparse)
    job = RetrainJob(model_path=str(start), image=str(tmp_path / "image.npy"),
                     labels=str(tmp_path / "labels.npy"), out_dir=str(tmp_path),
                     method="supervised", device="cpu",
                     config={"labeled_bs": 2, "unlabeled_bs": 0}, **job)
    return job, sparse, truth


def test_retrain_with_a_shape_prior_follows_the_registered_fill_where_it_covers(tmp_path):
    from napari_semiseg.retrain_job import run_retrain
    from training.interactive.image_priors import fill_between_slices

    job, sparse, _ = _scratch_job(tmp_path, steps=2, fuse_weight=0.0)
    events: list[dict] = []
    run_retrain(job, events.append, lambda: False)
    done = events[-1]
    assert done["type"] == "done"
    pred = np.load(done["prediction"])
    # with the network's share at 0 the prior shown at once (the painted slices carried by
    # registration) decides between the painted slices, so the result never falls below it
    filled = fill_between_slices(sparse, np.load(job.image), "register")
    np.testing.assert_array_equal(pred[1:7], filled[1:7])


def test_the_prior_can_train_on_the_registered_fill_shown(tmp_path, monkeypatch):
    """By default the shape prior's pseudo-labels come from shape interpolation (the network
    learnt more from them on LA train scans); with PRIOR_FROM_FILL they come from the
    registered fill the Retrain shows at once."""
    import training.interactive.interpolation as interpolation
    import training.interactive.retrain as retrain
    from napari_semiseg.retrain_job import run_retrain
    from training.interactive.image_priors import fill_between_slices

    seen = []
    real = interpolation.interpolation_prior

    def spy(labels, *args, **kw):
        seen.append(kw.get("filled"))
        return real(labels, *args, **kw)

    monkeypatch.setattr(interpolation, "interpolation_prior", spy)
    job, sparse, _ = _scratch_job(tmp_path, steps=2, fuse_weight=0.3)
    job = replace(job, config={**job.config, "prior": "interpolation"})  # as the dock asks
    assert not retrain.PRIOR_FROM_FILL
    run_retrain(job, lambda e: None, lambda: False)
    assert seen == [None]
    seen.clear()
    monkeypatch.setattr(retrain, "PRIOR_FROM_FILL", True)
    run_retrain(job, lambda e: None, lambda: False)
    assert len(seen) == 1 and seen[0] is not None
    np.testing.assert_array_equal(seen[0], fill_between_slices(sparse, np.load(job.image),
                                                               "register"))


def test_an_early_preview_is_predicted_from_the_first_checkpoint_in_time(tmp_path):
    from napari_semiseg.retrain_job import run_retrain

    job, _, truth = _scratch_job(tmp_path, steps=3, first_preview_s=1e-9)
    events: list[dict] = []
    run_retrain(job, events.append, lambda: False)
    previews = [e for e in events if e["type"] == "prediction"]
    assert [e["step"] for e in previews] == [1]  # after the first step past the seconds given
    assert np.load(previews[0]["path"]).shape == truth.shape
    assert events[-1]["type"] == "done"
    # the same Retrain without the preview learns exactly the same: when a preview comes
    # (it depends on the machine's speed) must not change the result
    plain: list[dict] = []
    (tmp_path / "plain").mkdir()
    run_retrain(replace(job, first_preview_s=0.0, out_dir=str(tmp_path / "plain")),
                plain.append, lambda: False)
    np.testing.assert_array_equal(np.load(plain[-1]["prediction"]),
                                  np.load(events[-1]["prediction"]))
    np.testing.assert_array_equal(np.load(plain[-1]["uncertainty"]),
                                  np.load(events[-1]["uncertainty"]))


def test_with_the_shape_prior_the_registered_fill_is_the_first_preview_at_once(tmp_path):
    from napari_semiseg.retrain_job import run_retrain
    from training.interactive.image_priors import fill_between_slices

    job, sparse, _ = _scratch_job(tmp_path, steps=4, fuse_weight=0.3, preview_every=2)
    events: list[dict] = []
    run_retrain(job, events.append, lambda: False)
    previews = [e for e in events if e["type"] == "prediction"]
    first = previews[0]
    assert first["source"] == "registration" and first["step"] == 0
    assert events.index(first) < next(i for i, e in enumerate(events)
                                      if e["type"] == "progress")  # before any training
    image = np.load(job.image)
    np.testing.assert_array_equal(np.load(first["path"]),
                                  fill_between_slices(sparse, image, "register"))
    assert [e["step"] for e in previews[1:]] == [2]  # then the network's, fused


def test_painting_an_unnamed_value_names_it_and_the_values_below(tmp_path):
    from napari_semiseg.session import Session

    s = Session(np.zeros((3, 8, 8), np.float32), autosave=False)
    s.set_class_names(["background", "a", "b"])
    idx = (np.array([1]), np.array([2]), np.array([2]))
    s.detect_painted_slices(indices=[(idx, np.array([0]), np.array([4]))])
    assert s.settings.class_names == ["background", "a", "b", "structure 3", "structure 4"]
    s.detect_painted_slices(indices=[(idx, np.array([4]), np.array([1]))])  # a known value
    assert len(s.settings.class_names) == 5


def test_a_user_who_paints_the_ends_gets_nothing_beyond_them(tmp_path):
    from napari_semiseg.retrain_job import run_retrain

    def predictions(job) -> list[np.ndarray]:
        events: list[dict] = []
        run_retrain(job, events.append, lambda: False)
        assert events[-1]["type"] == "done"
        return [np.load(e["path"]) for e in events if e["type"] == "prediction"] + [
            np.load(events[-1]["prediction"])]

    job, sparse, _ = _scratch_job(tmp_path, steps=2, preview_every=1)
    assert sparse[1].any() and sparse[6].any()  # both painted slices show a structure
    free = predictions(job)
    assert any(p[[0, 7]].any() for p in free)  # an untrained network paints beyond them
    (tmp_path / "limited").mkdir()
    limited = predictions(replace(job, extent=[1, 6], out_dir=str(tmp_path / "limited")))
    assert len(limited) == len(free)
    for p, f in zip(limited, free, strict=True):
        assert not p[[0, 7]].any()
        np.testing.assert_array_equal(p[1:7], f[1:7])  # inside, the same prediction


def test_a_new_models_first_retrain_starts_at_the_painted_class_shares(tmp_path):
    image, truth = _scan()
    start = new_model(tmp_path / "new.pt", ["background", "left kidney", "right kidney"],
                      size=[32, 32], base=4, depth=2, unshuffle=2)
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[1, 6]] = truth[[1, 6]]
    painted = truth[[1, 6]].ravel()
    shares = np.bincount(painted, minlength=3) / painted.size
    want = torch.log(torch.as_tensor(shares, dtype=torch.float32)).repeat_interleave(4)
    still = {**TINY, "lr": 1e-12}  # one step that moves nothing
    first = finetune(start, image, sparse, steps=1, out_path=tmp_path / "v1.pt", device="cpu",
                     prior_init=True, **still)
    assert torch.allclose(read_checkpoint(first)["state_dict"]["seg.bias"], want, atol=1e-4)
    # the dock's New model starts at equal odds (NEW_MODEL_PRIOR_INIT)
    plain = finetune(start, image, sparse, steps=1, out_path=tmp_path / "p1.pt", device="cpu",
                     **still)
    assert not torch.allclose(read_checkpoint(plain)["state_dict"]["seg.bias"], want, atol=1e-2)
    # the next Retrain starts from what the first one taught, prior or not
    sparse[3] = 0
    again = finetune(plain, image, sparse, steps=1, out_path=tmp_path / "v2.pt", device="cpu",
                     prior_init=True, **still)
    assert torch.allclose(read_checkpoint(again)["state_dict"]["seg.bias"],
                          read_checkpoint(plain)["state_dict"]["seg.bias"], atol=1e-4)


def test_a_pretrained_start_reads_the_mean_of_a_scans_channels(tmp_path):
    """A New model on a scan with three channels, started from a one-channel network, reads
    their mean at first: the pretrained first layer is spread over the channels in the layout
    pixel unshuffle gives them."""
    net = {"size": [32, 32], "base": 4, "depth": 2, "unshuffle": 2}
    pretrained = new_model(tmp_path / "pre.pt", ["background", "a"], seed=3, **net)
    one = load_checkpoint(new_model(tmp_path / "one.pt", ["background", "b"],
                                    pretrained=pretrained, **net))[0]
    three = load_checkpoint(new_model(tmp_path / "three.pt", ["background", "b"],
                                      pretrained=pretrained, in_channels=3, **net))[0]
    assert three.config["in_channels"] == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        got = three.down[0](torch.nn.functional.pixel_unshuffle(x, 2))
        want = one.down[0](torch.nn.functional.pixel_unshuffle(x.mean(1, keepdim=True), 2))
    assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(ValueError, match="at least one channel"):
        new_model(tmp_path / "none.pt", ["background", "b"], in_channels=0)


def test_a_new_model_that_reads_every_channel_finds_what_only_one_shows(tmp_path):
    """A structure bright in one channel and invisible in the grey one (an LGG abnormality can
    show in one sequence far more than in FLAIR): from two painted slices, a New model reading
    the three channels finds it on the other slices; one reading the grey channel cannot."""
    from training.engine.inference import predict_volume

    z, y, x = np.mgrid[0:8, 0:32, 0:32]  # a disc that moves from slice to slice, so that
    truth = (((y - 8 - 2 * z) ** 2 + (x - 24 + 2 * z) ** 2) < 25).astype(np.uint8)  # its place
    rng = np.random.default_rng(1)  # on the painted slices does not tell where it is between
    scan = rng.normal(100, 30, (*truth.shape, 3)).astype(np.float32)
    scan[..., 2] += 300.0 * truth  # only the third channel shows it; the grey is channel 1
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[1, 6]] = truth[[1, 6]]
    net = {"size": [32, 32], "base": 4, "depth": 2, "unshuffle": 1}
    dice = {}
    for reads, image in ((3, scan), (1, scan[..., 1])):
        start = new_model(tmp_path / f"n{reads}.pt", ["background", "kidney"], in_channels=reads,
                          **net)
        out = finetune(start, image, sparse, steps=60, out_path=tmp_path / f"v{reads}.pt",
                       device="cpu", **TINY)
        model, meta = load_checkpoint(out)
        pred = predict_volume(model, meta, image, device="cpu")["labels"][2:6] == 1
        dice[reads] = 2 * (pred & (truth[2:6] == 1)).sum() / (pred.sum() + truth[2:6].sum())
    assert dice[3] > 0.7 and dice[1] < 0.3, dice
