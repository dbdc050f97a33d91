import numpy as np
import torch
from test_training_synth import blob_volume

from training.engine.inference import (
    disagreement,
    entropy_map,
    labels_and_entropy,
    labels_and_entropy_of_probabilities,
    predict_volume,
)
from training.engine.networks import UNet

META2 = {"dims": 2, "size": [16, 16], "normalization": None, "num_classes": 3}


def test_2d_prediction_shapes_probabilities_and_entropy():
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 20, 24))
    res = predict_volume(UNet(2, 1, 3, base=4, depth=2), META2, img, device="cpu")
    assert res["labels"].shape == (3, 20, 24) and res["labels"].dtype == np.uint8
    assert res["probabilities"].shape == (3, 3, 20, 24)
    assert np.allclose(res["probabilities"].sum(0), 1, atol=1e-5)
    assert np.array_equal(res["labels"], res["probabilities"].argmax(0))
    p = res["probabilities"]
    assert np.allclose(res["uncertainty"], -(p * np.log(np.clip(p, 1e-8, None))).sum(0),
                       atol=1e-5)
    assert res["cam"] is None


def test_a_blank_scan_is_predicted_not_crashed():
    # a constant volume (blank or zero-filled export) normalises to zeros; it must stay float32
    for value in (0, 7):
        blank = np.full((2, 20, 24), value, dtype=np.uint8)
        res = predict_volume(UNet(2, 1, 3, base=4, depth=2), META2, blank, device="cpu")
        assert res["labels"].shape == blank.shape


def test_mc_dropout_changes_probabilities():
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(2, 16, 16))
    net = UNet(2, 1, 3, base=4, depth=2, dropout=0.5)
    plain = predict_volume(net, META2, img, device="cpu")
    torch.manual_seed(1)
    mc = predict_volume(net, META2, img, mc_samples=4, device="cpu")
    assert not np.allclose(plain["probabilities"], mc["probabilities"])
    assert not any(m.training for m in net.modules())  # dropout switched off again


def test_cam_from_classification_head():
    img, _ = blob_volume(0, shape=(2, 16, 16))
    net = UNet(2, 1, 3, base=4, depth=2, cls_head=True)
    cam = predict_volume(net, META2, img, device="cpu")["cam"]
    assert cam.shape == (2, 16, 16) and cam.min() >= 0 and cam.max() <= 1 + 1e-6


def test_3d_sliding_window_with_downsampling():
    img, _ = blob_volume(0, shape=(10, 20, 18))
    meta = {"dims": 3, "size": [8, 8, 8], "downsample": 2.0, "normalization": None}
    res = predict_volume(UNet(3, 1, 3, base=4, depth=2), meta, img, device="cpu")
    assert res["labels"].shape == img.shape and res["probabilities"].shape == (3, *img.shape)


def test_labels_and_entropy_from_logits_match_the_softmax_they_skip():
    # plane-by-plane argmax and entropy, as Predict takes them, against the softmax's own;
    # logits as large as an over-confident network's, ties, and a channels-last layout
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, 7, generator=g) * 30
    logits[0, :, 0, 0] = 2.0  # a four-way tie goes to class 0, as max gives it
    logits[1, 2, 1, 1] = logits[1, 3, 1, 1] = 500.0  # would overflow a plain exp
    logits = logits.contiguous(memory_format=torch.channels_last)
    labels, entropy = labels_and_entropy(logits)
    p = torch.softmax(logits.double(), 1)
    assert labels.dtype == torch.uint8
    assert torch.equal(labels.long(), p.max(1).indices)
    want = -(p * torch.log(p.clamp_min(1e-300))).sum(1)
    assert torch.allclose(entropy.double(), want, atol=1e-5)
    assert abs(float(entropy[0, 0, 0]) - np.log(4)) < 1e-6
    assert abs(float(entropy[1, 1, 1]) - np.log(2)) < 1e-6
    labels_p, entropy_p = labels_and_entropy_of_probabilities(p.float())
    assert torch.equal(labels_p, labels) and torch.allclose(entropy_p, entropy, atol=1e-5)
    ties = torch.randint(-2, 3, (2, 6, 8, 8), generator=g).float()  # six classes, many ties
    assert torch.equal(labels_and_entropy(ties)[0].long(), ties.max(1).indices)


def test_entropy_and_disagreement():
    uniform = np.full((4, 2, 2), 0.25)
    assert np.allclose(entropy_map(uniform), np.log(4))
    a = np.zeros((2, 3))
    a[0] = 1
    b = np.zeros((2, 3))
    b[1] = 1
    assert np.allclose(disagreement(a, a), 0) and np.allclose(disagreement(a, b), 1)


def test_labels_and_uncertainty_at_network_resolution_without_probabilities():
    torch.manual_seed(0)
    net = UNet(2, 1, 3, base=4, depth=2)
    img, _ = blob_volume(0, shape=(3, 16, 16))  # the network's own size: nothing is resized
    full = predict_volume(net, META2, img, device="cpu")
    fast = predict_volume(net, META2, img, device="cpu", probabilities=False)
    assert fast["probabilities"] is None
    assert np.array_equal(fast["labels"], full["labels"]) and fast["labels"].dtype == np.uint8
    assert np.allclose(fast["uncertainty"], full["uncertainty"], atol=1e-5)
    big, _ = blob_volume(0, shape=(3, 40, 48))  # resized: labels nearest, entropy bilinear
    smooth = _Linear()  # an untrained U-Net's labels are pixel noise; this one's follow the image
    full = predict_volume(smooth, META2, big, device="cpu")
    fast = predict_volume(smooth, META2, big, device="cpu", probabilities=False)
    assert fast["labels"].shape == fast["uncertainty"].shape == (3, 40, 48)
    assert (fast["labels"] == full["labels"]).mean() > 0.9
    # entropy of blended probabilities vs blended entropy: close, not equal
    gap = np.abs(fast["uncertainty"] - full["uncertainty"]).mean()
    assert gap < 0.15 * full["uncertainty"].mean()


class _Linear(torch.nn.Module):
    """Logits (x, -x, 0): classes follow the image's brightness."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0, 0.0]).view(3, 1, 1, 1) * 4)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.conv(x)}


PATCH_META = {"dims": 2, "size": [16, 16], "normalization": None, "num_classes": 3,
              "sampling": "patch"}


def test_windowed_predict_equals_one_pass_on_a_slice_the_size_of_the_window():
    from training.engine.normalization import normalize_intensity

    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 16, 16))
    net = UNet(2, 1, 3, base=4, depth=2).eval()
    res = predict_volume(net, PATCH_META, img, device="cpu")
    with torch.no_grad():
        x = torch.from_numpy(normalize_intensity(img, None))[:, None]
        direct = torch.softmax(net(x)["logits"], 1).movedim(1, 0).numpy()
    assert np.allclose(res["probabilities"], direct, atol=1e-5)


def test_one_window_per_slice_gives_monais_sliding_window_output():
    """A slice no larger than the window skips MONAI's sliding window (one call on the padded
    slice) and must give what MONAI gives, padding split the same way, odd margins included;
    a larger slice still goes through MONAI's overlapping windows."""
    from monai.inferers import sliding_window_inference

    from training.engine.inference import WINDOW_OVERLAP, _windows

    torch.manual_seed(0)
    net = UNet(2, 1, 3, base=4, depth=2).eval()

    def softmax(inp):
        return torch.softmax(net(inp)["logits"], 1)

    for shape, size in [((12, 16), (16, 16)), ((9, 13), (16, 16)), ((16, 16), (16, 16)),
                        ((24, 20), (16, 16))]:
        chunk = torch.randn(3, 1, *shape)
        with torch.no_grad():
            ours = _windows(softmax, chunk, size, 3)
            monai = sliding_window_inference(
                chunk, roi_size=size, sw_batch_size=3, predictor=softmax,
                overlap=WINDOW_OVERLAP, mode="gaussian", padding_mode="constant")
        assert ours.shape == (3, 3, *shape)
        assert torch.allclose(ours, monai, atol=1e-5), (shape, (ours - monai).abs().max())


def test_windowed_predict_combines_probabilities_on_the_native_grid():
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 21, 37))  # larger than the window, odd sizes
    net = UNet(2, 1, 3, base=4, depth=2)
    res = predict_volume(net, PATCH_META, img, device="cpu")
    p = res["probabilities"]
    assert p.shape == (3, 3, 21, 37) and np.allclose(p.sum(0), 1, atol=1e-5)
    assert np.array_equal(res["labels"], p.argmax(0))  # argmax taken at the scan's resolution
    assert np.allclose(res["uncertainty"], entropy_map(p), atol=1e-5)
    # Predict's fast path (no probability maps kept) gives the same labels and uncertainty
    fast = predict_volume(net, PATCH_META, img, device="cpu", probabilities=False)
    assert np.array_equal(fast["labels"], res["labels"])
    assert np.allclose(fast["uncertainty"], res["uncertainty"], atol=1e-5)
    # a slice smaller than the window is padded, and comes back at its own size
    small = predict_volume(net, PATCH_META, img[:, :9, :11], device="cpu")
    assert small["labels"].shape == (3, 9, 11)


def test_windowed_cam_covers_the_scan():
    img, _ = blob_volume(0, shape=(2, 20, 30))
    net = UNet(2, 1, 3, base=4, depth=2, cls_head=True)
    cam = predict_volume(net, PATCH_META, img, device="cpu")["cam"]
    assert cam.shape == (2, 20, 30) and cam.min() >= 0 and cam.max() <= 1 + 1e-6


def test_prediction_window_is_the_patch_unless_a_whole_slice_is_allowed(monkeypatch):
    import training.engine.inference as inf

    meta = {"size": [160, 160], "network": {"depth": 4, "unshuffle": 2}}  # divisor 32
    assert inf.WHOLE_SLICE_UP_TO == 1.0  # the default: patch windows, the more accurate
    assert inf.prediction_window(meta, (256, 232)) == [160, 160]
    assert inf.prediction_window(meta, (120, 90)) == [160, 160]  # smaller: padded to the patch
    # a model whose card chose speed predicts slices up to its factor whole
    fast = {**meta, "whole_slice_up_to": 2.0}
    assert inf.prediction_window(fast, (256, 232)) == [256, 256]  # rounded up to 32
    assert inf.prediction_window(fast, (400, 200)) == [160, 160]  # too large: windows again
    # a batch-norm network's statistics do not shift with the window: whole slices by default
    batch = {**meta, "network": {"depth": 4, "unshuffle": 2, "norm": "batch"}}
    assert inf.prediction_window(batch, (256, 232)) == [256, 256]
    assert inf.prediction_window({**batch, "whole_slice_up_to": 1.0}, (256, 232)) == [160, 160]
    monkeypatch.setattr(inf, "WHOLE_SLICE_UP_TO", 2.0)
    assert inf.prediction_window(meta, (256, 232)) == [256, 256]
    # a whole-slice window predicts the slice in one pass, as the network sees it
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(2, 21, 37))
    net = UNet(2, 1, 3, base=4, depth=2).eval()
    meta = {**PATCH_META, "network": {"depth": 2}}
    res = predict_volume(net, meta, img, device="cpu")
    assert res["labels"].shape == (2, 21, 37) and np.allclose(res["probabilities"].sum(0), 1,
                                                                 atol=1e-5)


def test_channels_last_predict_matches_the_default_layout(monkeypatch):
    """Predict lays a 2-D model's weights out channels-last for speed; the labels and the
    uncertainty are those of the default layout, up to float rounding."""
    import training.engine.inference as inf

    assert inf.MEMORY_FORMAT == torch.channels_last
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 40, 52))
    net = UNet(2, 1, 3, base=4, depth=2).eval()
    fast = predict_volume(net, PATCH_META, img, device="cpu", probabilities=False)
    monkeypatch.setattr(inf, "MEMORY_FORMAT", torch.contiguous_format)
    plain = predict_volume(net, PATCH_META, img, device="cpu", probabilities=False)
    assert np.array_equal(fast["labels"], plain["labels"])
    np.testing.assert_allclose(fast["uncertainty"], plain["uncertainty"], atol=1e-4)
    assert next(net.parameters()).is_contiguous()  # the caller's model is left as it was


def test_predict_folds_batch_norm_and_gives_the_unfolded_networks_labels():
    """A batch-norm model (act's student can be one) is folded into its convolutions for
    Predict; the labels and uncertainty are the network's own, and the caller's model keeps
    its BatchNorm layers."""
    from training.engine.networks import has_batch_norm
    from training.engine.normalization import normalize_intensity

    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 16, 16))
    net = UNet(2, 1, 3, base=4, depth=2, norm="batch")
    with torch.no_grad():
        net(torch.randn(4, 1, 16, 16) * 2 + 1)  # running statistics away from the identity
    res = predict_volume(net, PATCH_META, img, device="cpu")
    assert has_batch_norm(net) and not net.training
    with torch.no_grad():
        x = torch.from_numpy(normalize_intensity(img, None))[:, None]
        direct = torch.softmax(net(x)["logits"], 1).movedim(1, 0).numpy()
    assert np.allclose(res["probabilities"], direct, atol=1e-5)
    assert np.array_equal(res["labels"], direct.argmax(0))


def test_predict_of_a_batch_norm_model_follows_its_weights_when_they_change_in_place():
    """A batch-norm model is folded for Predict from its weights as they are: after an
    in-place reload (a Retrain's), Predict gives the new network's output."""
    from training.engine.normalization import normalize_intensity

    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 16, 16))
    net = UNet(2, 1, 3, base=4, depth=2, norm="batch").eval()
    before = predict_volume(net, PATCH_META, img, device="cpu")["probabilities"]
    other = UNet(2, 1, 3, base=4, depth=2, norm="batch")
    with torch.no_grad():
        other(torch.randn(4, 1, 16, 16) * 3 + 2)  # other weights and running statistics
    net.load_state_dict(other.state_dict())  # in place, as a Retrain's reload does
    after = predict_volume(net, PATCH_META, img, device="cpu")["probabilities"]
    with torch.no_grad():
        x = torch.from_numpy(normalize_intensity(img, None))[:, None]
        direct = torch.softmax(net.eval()(x)["logits"], 1).movedim(1, 0).numpy()
    assert np.allclose(after, direct, atol=1e-5) and not np.allclose(after, before, atol=1e-3)


def test_test_time_mirroring_makes_predict_mirror_symmetric():
    # averaged with its left-right mirror, the prediction of a mirrored scan is the mirror of
    # the scan's prediction; a random network alone is not, so the option really ran
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(2, 16, 24))
    img = img[..., ::-1].copy() + np.linspace(0, 50, 24, dtype=np.float32)  # not symmetric
    net = UNet(2, 1, 3, base=4, depth=2)
    meta = {**META2, "sampling": "patch", "size": [16, 24]}

    def probs(scan, mirror):
        return predict_volume(net, {**meta, "test_time_mirror": mirror}, scan,
                              device="cpu")["probabilities"]

    flipped = img[..., ::-1].copy()
    assert np.allclose(probs(flipped, True), probs(img, True)[..., ::-1], atol=1e-5)
    assert not np.allclose(probs(flipped, False), probs(img, False)[..., ::-1], atol=1e-3)


class _Pointwise(torch.nn.Module):
    """Logits from each pixel's own intensity (a 1x1 convolution): what it predicts does not
    depend on the slice's scale, so any shift a resampling round trip adds shows."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[-4.0]]], [[[4.0]]]]))
            self.conv.bias.zero_()

    def forward(self, x):
        return {"logits": self.conv(x)}


SCALE_META = {**META2, "num_classes": 2, "sampling": "patch", "size": [48, 64],
              "network": {"depth": 2}}


def _blob(shape=(2, 48, 64), centre=(20.3, 37.6), sigma=6.0):
    y, x = np.mgrid[: shape[1], : shape[2]].astype(np.float32)
    g = np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * sigma**2))
    return np.repeat(g[None], shape[0], 0).astype(np.float32)


def test_a_slice_predicted_shrunk_comes_back_on_the_scans_grid_unshifted():
    img = _blob()
    native = predict_volume(_Pointwise(), SCALE_META, img, device="cpu")["probabilities"][1]
    for scale in (0.5, 0.75):
        shrunk = predict_volume(_Pointwise(), {**SCALE_META, "test_time_scales": [scale]}, img,
                                device="cpu")["probabilities"][1]
        assert shrunk.shape == native.shape

        def centre(p):
            w = p - p.min()
            ys, xs = np.mgrid[: p.shape[-2], : p.shape[-1]]
            return (w * ys).sum() / w.sum(), (w * xs).sum() / w.sum()

        for a, b in zip(centre(shrunk[0]), centre(native[0]), strict=True):
            assert abs(a - b) < 0.1, (scale, a, b)
        assert np.abs(shrunk - native).max() < 0.1  # the shrunk pass smooths the peak


def test_test_time_scales_average_the_passes_and_agree_with_the_fast_path():
    torch.manual_seed(0)
    img, _ = blob_volume(0, shape=(3, 48, 64))
    net = UNet(2, 1, 2, base=4, depth=2)
    meta = {**SCALE_META, "test_time_scales": [1.0, 0.6]}
    both = predict_volume(net, meta, img, device="cpu")
    one = {s: predict_volume(net, {**SCALE_META, "test_time_scales": [s]}, img,
                             device="cpu")["probabilities"] for s in (1.0, 0.6)}
    assert np.allclose(both["probabilities"], (one[1.0] + one[0.6]) / 2, atol=1e-5)
    assert not np.allclose(one[1.0], one[0.6], atol=1e-3)  # the shrunk pass really differs
    assert np.array_equal(both["labels"], both["probabilities"].argmax(0))
    fast = predict_volume(net, meta, img, device="cpu", probabilities=False)
    assert fast["probabilities"] is None
    assert np.array_equal(fast["labels"], both["labels"])
    assert np.allclose(fast["uncertainty"], both["uncertainty"], atol=1e-5)


def test_test_time_scales_out_of_range_are_refused():
    import pytest

    img, _ = blob_volume(0, shape=(1, 48, 64))
    with pytest.raises(ValueError, match="test-time scales"):
        predict_volume(_Pointwise(), {**SCALE_META, "test_time_scales": [1.0, 0.0]}, img,
                       device="cpu")
