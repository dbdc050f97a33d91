"""Prediction of whole volumes: labels, probabilities, uncertainty and (optionally) CAMs.

2-D models trained on native-grid patches (``meta["sampling"] == "patch"``, the default
recipe) run MONAI's sliding-window inference over each slice's own pixel grid, windows of the
training patch size blended with Gaussian weights; the probabilities are combined at the scan's
resolution before the argmax, and the uncertainty comes from the same pass. Models of the
earlier recipe (whole slices squashed to ``size``) run slice by slice at that size and are
resized back. 3-D models use sliding windows on the (possibly downsampled) volume.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.inferers import sliding_window_inference
from torch import nn

from training.core.cpu_math import flush_denormals
from training.core.device import pick_device
from training.engine.context import scan_channels, with_context_slices
from training.engine.networks import enable_mc_dropout, fold_batch_norm, has_batch_norm
from training.engine.normalization import normalize_scan
from training.engine.postprocess import keep_main_pieces, model_clean_up

# Slices per pass of a 2-D model. Larger passes were slower on a quiet 2-core machine (the
# shipped models and the act teacher by 20-40 % at 36-64 slices; benchmarks/results/
# predict_batch_speed.md), so the default stays at 16.
DEFAULT_BATCH = 16


def entropy_map(probs: np.ndarray | torch.Tensor, axis: int = 0) -> np.ndarray:
    """Per-voxel Shannon entropy (nats) of class probabilities along ``axis``."""
    p = torch.as_tensor(probs, dtype=torch.float32)
    return (-(p * torch.log(p.clamp_min(1e-8))).sum(dim=axis)).numpy().astype(np.float32)


def _argmax_planes(planes: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax (uint8; ties to the lower class, as ``max`` gives them) and the maximum of
    class planes, by running comparisons. Where class c beats those before it the label moves
    by c - label in uint8, whose wrap-around makes that exact: a masked fill or a ``where``
    cost ten times more on 2 CPU cores (benchmarks/results/act_speed_fused_post.md)."""
    top = planes[0].clone(memory_format=torch.contiguous_format)
    labels = torch.zeros(top.shape, dtype=torch.uint8, device=top.device)
    for c, plane in enumerate(planes[1:], start=1):
        labels.add_((plane > top).to(torch.uint8).mul_(c - labels))
        torch.maximum(top, plane, out=top)
    return labels, top


def labels_and_entropy(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax (uint8) and the softmax entropy (nats) of ``logits`` (n, C, ...) over C.

    Computed class plane by class plane, with the entropy as log Z - sum_c e_c d_c / Z
    (d_c = l_c - max_c l, e_c = exp(d_c), Z = sum_c e_c): a few passes over (n, ...) planes
    instead of a log-softmax, an exp, a max and a product over all C maps, which on a
    256x256x100 volume cost a small network more than its own layers."""
    planes = logits.float().contiguous().unbind(1)
    labels, top = _argmax_planes(planes)
    z = torch.zeros_like(top)
    s = torch.zeros_like(top)
    for plane in planes:
        d = plane - top
        e = d.exp()
        z += e
        s.addcmul_(e, d)
    s /= z
    return labels, z.log_().sub_(s)


def labels_and_entropy_of_probabilities(probs: torch.Tensor
                                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The argmax (uint8) and the entropy (nats) of class probabilities ``probs`` (n, C, ...),
    class plane by class plane as in :func:`labels_and_entropy`."""
    planes = probs.float().contiguous().unbind(1)
    labels, top = _argmax_planes(planes)
    entropy = torch.zeros_like(top)
    for plane in planes:
        entropy.addcmul_(plane, plane.clamp_min(1e-8).log_(), value=-1.0)
    return labels, entropy


def disagreement(probs_a: np.ndarray, probs_b: np.ndarray) -> np.ndarray:
    """Teacher/student disagreement: total-variation distance 0.5 * sum_c |a - b|, in [0, 1]."""
    a = np.asarray(probs_a, dtype=np.float32)
    b = np.asarray(probs_b, dtype=np.float32)
    if a.shape != b.shape:
        raise ValueError(f"probability shapes differ: {a.shape} vs {b.shape}")
    return (0.5 * np.abs(a - b).sum(axis=0)).astype(np.float32)


def _cam(out: dict, model: nn.Module) -> torch.Tensor | None:
    """Foreground class-activation map (N, ...) in [0, 1] from the classification head."""
    if "cls" not in out:
        return None
    weight = getattr(model, "module", model).cls.weight  # (C, F)
    feats = out["features"]
    cams = torch.relu(torch.einsum("cf,nf...->nc...", weight, feats))[:, 1:]
    cam = cams.max(dim=1).values
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-8)
    return cam / peak.view(-1, *([1] * (cam.dim() - 1)))


@torch.no_grad()
def _predict_2d(model, x, size, mc, batch_size, keep_probs=True):
    """(probabilities (C, z, y, x) or None, cam or None, labels or None, uncertainty or None).

    Without ``keep_probs`` the argmax and the entropy are taken at the network's resolution and
    only they are resized (labels nearest, entropy bilinear): resizing C probability maps to
    the scan and taking the entropy there cost more than a small network itself (issue 12)."""
    z, h, w = x.shape
    t = torch.from_numpy(x).unsqueeze(1)
    probs_out, cam_out, labels_out, unc_out = [], [], [], []
    for i in range(0, z, batch_size):
        chunk = F.interpolate(t[i:i + batch_size], size=tuple(size), mode="bilinear",
                              align_corners=False).to(next(model.parameters()).device)
        probs, cam = 0.0, None
        for _ in range(max(mc, 1)):
            out = model(chunk)
            probs = probs + torch.softmax(out["logits"], 1) / max(mc, 1)
            if cam is None:
                cam = _cam(out, model)
        if keep_probs:
            probs_out.append(F.interpolate(probs, size=(h, w), mode="bilinear",
                                           align_corners=False).cpu())
        else:
            lab = probs.max(1, keepdim=True).indices.float()  # 7x faster than argmax on CPU
            labels_out.append(F.interpolate(lab, size=(h, w), mode="nearest-exact")[:, 0]
                              .to(torch.uint8).cpu())
            ent = -(probs * torch.log(probs.clamp_min(1e-8))).sum(1, keepdim=True)
            unc_out.append(F.interpolate(ent, size=(h, w), mode="bilinear",
                                         align_corners=False)[:, 0].cpu())
        if cam is not None:
            cam_out.append(F.interpolate(cam.unsqueeze(1), size=(h, w), mode="bilinear",
                                         align_corners=False)[:, 0].cpu())
    cam = torch.cat(cam_out) if cam_out else None
    if not keep_probs:
        return None, cam, torch.cat(labels_out).numpy(), torch.cat(unc_out).numpy()
    return torch.cat(probs_out).movedim(1, 0), cam, None, None  # (C, z, y, x)


# Weights of a 2-D model are laid out channels-last for Predict: the convolutions, most of its
# time, ran faster so on 2 CPU cores, with the same output up to float rounding
# (benchmarks/predict_memory_format.py, benchmarks/results/predict_memory_format.md).
MEMORY_FORMAT = torch.channels_last

# Overlap of neighbouring windows, as a share of the window. A slice no larger than the window
# is one window, whatever this is; larger slices pay for each extra window.
WINDOW_OVERLAP = 0.25
# A slice at most this many times the trained patch (per side) may be predicted as one window,
# the slice itself padded to what the network's poolings need; a larger one goes in overlapping
# patch windows (a 256-px slice in 160-px windows costs 4 passes, 1.6x the pixels). The default
# is the patch: the networks normalise by groups, so a window larger than what they trained on
# shifts their statistics. On ACDC val that cost 1.1-4.1 Dice (mean 1.9) on six 3-patient and
# all-labelled models of the methods table (benchmarks/results/window_rule_acdc_val.md), and 0.6
# on the shipped cardiac model. A model whose card chose speed records its own factor
# (``meta["whole_slice_up_to"]``, ``semiseg card --whole-slice-up-to``): the shipped models take
# 1.6, which brings a 256x256x100 volume under the GUIDE's 2 s on 2 cores (ACDC 1.97 s against
# 3.01 s; benchmarks/window_choice.py, benchmarks/results/window_choice_*_1.6.md).
WHOLE_SLICE_UP_TO = 1.0
# A batch-norm network's statistics are fixed at Predict, so a larger window shifts nothing:
# whole slices are its default. On ACDC val act's batch-norm students scored 57.6 and 59.1
# whole against 56.4 and 58.5 in patch windows (2 seeds, better on 9 and 10 of 14 scans;
# benchmarks/results/window_choice_act_bn_student_seed*_val.md).
BATCH_NORM_WHOLE_SLICE_UP_TO = 1.6


def whole_slice_factor(meta: dict) -> float:
    """How many times its patch (per side) a model predicts a slice as one window: its card's
    choice, else :data:`BATCH_NORM_WHOLE_SLICE_UP_TO` for a batch-norm network, else
    :data:`WHOLE_SLICE_UP_TO`."""
    if meta.get("whole_slice_up_to"):
        return float(meta["whole_slice_up_to"])
    if (meta.get("network") or {}).get("norm") == "batch":
        return BATCH_NORM_WHOLE_SLICE_UP_TO
    return WHOLE_SLICE_UP_TO


def prediction_window(meta: dict, slice_shape: Sequence[int]) -> list[int]:
    """The sliding window for a native-grid 2-D model on slices of ``slice_shape``: the patch it
    trained on, or the whole slice (rounded up to the network's divisor) when that is no larger
    than :func:`whole_slice_factor` times the patch on each side."""
    size = [int(v) for v in meta["size"]]
    net = meta.get("network", {})
    divisor = 2 ** int(net.get("depth", 4)) * int(net.get("unshuffle", 1) or 1)
    whole = [-(-int(n) // divisor) * divisor for n in slice_shape]
    factor = whole_slice_factor(meta)
    if all(w <= factor * p for w, p in zip(whole, size, strict=True)):
        return [max(w, p) for w, p in zip(whole, size, strict=True)]
    return size


def mirrors_at_predict(meta: dict) -> bool:
    """Whether a model's card chose to average each window with its left-right mirror image
    (``meta["test_time_mirror"]``; off unless chosen on validation scans: it doubles Predict)."""
    return bool(meta.get("test_time_mirror", False))


def test_time_scales(meta: dict) -> list[float]:
    """The scales a model's card chose to predict each slice at, averaged on the scan's grid
    (``meta["test_time_scales"]``; 1 alone unless chosen on validation scans: each other
    scale adds its share of the pixels to Predict). A scale under 1 shows the network a
    shrunk slice, so a structure larger than most it trained on looks as large as those."""
    scales = [float(s) for s in meta.get("test_time_scales") or [1.0]]
    if any(not 0.25 <= s <= 4.0 for s in scales):
        raise ValueError(f"test-time scales must lie in [0.25, 4], not {scales}")
    return scales


def rescale_slices(x: np.ndarray, scale: float) -> np.ndarray:
    """Slices (z, y, x) or (z, c, y, x) resized by ``scale`` in-plane (bilinear, antialiased
    when shrinking, so that a shrunk slice is not aliased)."""
    t = torch.from_numpy(np.ascontiguousarray(x))
    grey = t.dim() == 3
    t = t.unsqueeze(1) if grey else t
    shape = [max(1, int(round(n * scale))) for n in t.shape[-2:]]
    out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False,
                        antialias=scale < 1)
    return (out[:, 0] if grey else out).numpy()


@torch.no_grad()
def _predict_2d_scales(model, x, meta, scales, mc, batch_size, mirror=False):
    """(probabilities (C, z, y, x), cam) of a native-grid model, each slice predicted at every
    scale in ``scales`` and the probabilities averaged on the scan's own grid; the CAM is the
    native pass's."""
    h, w = x.shape[-2:]
    total, cam = 0.0, None
    for s in scales:
        xs = x if s == 1.0 else rescale_slices(x, s)
        probs, c, _, _ = _predict_2d_windows(
            model, xs, prediction_window(meta, xs.shape[-2:]), mc, batch_size,
            keep_probs=True, mirror=mirror)
        if s != 1.0:
            probs = F.interpolate(probs.movedim(0, 1), size=(h, w), mode="bilinear",
                                  align_corners=False).movedim(1, 0)
        elif c is not None:
            cam = c
        total = total + probs
    return total / len(scales), cam


@torch.no_grad()
def _predict_2d_windows(model, x, size, mc, batch_size, keep_probs=True, mirror=False):
    """Like :func:`_predict_2d` for a native-grid model: Gaussian-weighted sliding windows of
    ``size`` over each slice, probabilities averaged at the scan's own resolution. With
    ``mirror`` each window's probabilities are the mean of the window's and of its left-right
    mirror image's, mirrored back."""
    dev = next(model.parameters()).device
    t = torch.from_numpy(x)
    t = t.unsqueeze(1) if t.dim() == 3 else t  # (z, c, y, x) already for a scan with channels
    n = max(mc, 1)
    probs_out, cam_out, labels_out, unc_out = [], [], [], []

    def softmax(inp: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(model(inp)["logits"], 1)
        if mirror:
            p = 0.5 * (p + torch.softmax(model(inp.flip(-1))["logits"], 1).flip(-1))
        return p

    # one window per slice, one sample, no mirror: labels and entropy come straight from the
    # logits, with no softmax map (benchmarks/results/act_speed_one_window.md,
    # act_speed_fused_post.md)
    one_pass = n == 1 and not mirror and fits_one_window(x.shape[-2:], size)
    for i in range(0, t.shape[0], batch_size):
        chunk = t[i:i + batch_size].to(dev)
        if one_pass:
            logits = one_window(lambda inp: model(inp)["logits"], chunk, size)
            probs = torch.softmax(logits, 1) if keep_probs else None
        else:
            probs = _windows(softmax, chunk, size, batch_size)
            if n > 1:  # MC-dropout: the mean of n samples
                probs = (probs + sum(_windows(softmax, chunk, size, batch_size)
                                     for _ in range(n - 1))) / n
        cam = _window_cam(model, chunk, size)
        if cam is not None:
            cam_out.append(cam.cpu())
        if keep_probs:
            probs_out.append(probs.cpu())
        elif one_pass:
            labels, unc = labels_and_entropy(logits)
            labels_out.append(labels.cpu())
            unc_out.append(unc.cpu())
        else:
            labels, unc = labels_and_entropy_of_probabilities(probs)
            labels_out.append(labels.cpu())
            unc_out.append(unc.cpu())
    cam = torch.cat(cam_out) if cam_out else None
    if not keep_probs:
        return None, cam, torch.cat(labels_out).numpy(), torch.cat(unc_out).numpy()
    return torch.cat(probs_out).movedim(1, 0), cam, None, None


def _window_cam(model, chunk, size):
    """The CAM of a model with a classification head, by sliding windows; None without one."""
    if getattr(getattr(model, "module", model), "cls", None) is None:
        return None

    def cam_of(inp: torch.Tensor) -> torch.Tensor:
        out = model(inp)
        return _cam(out, model).unsqueeze(1)

    # MONAI's windows here: the CAM comes at the network's inner resolution, which they rescale
    return sliding_window_inference(chunk, roi_size=tuple(size), sw_batch_size=len(chunk),
                                    predictor=cam_of, overlap=WINDOW_OVERLAP,
                                    mode="gaussian")[:, 0]


def fits_one_window(slice_shape: Sequence[int], size: Sequence[int]) -> bool:
    """Whether one window of ``size`` covers a whole slice of ``slice_shape``."""
    return all(int(n) <= int(w) for n, w in zip(slice_shape, size, strict=True))


def one_window(predictor, chunk: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """``predictor`` (output at its input's resolution) on slices ``chunk`` (n, c, y, x) that
    one window of ``size`` covers: one call on the slices zero-padded to the window, split as
    MONAI's sliding window splits it, whose single window's Gaussian weight would divide out
    again. Skipping MONAI's weighting, sums and division is what makes a whole-slice student's
    Predict cheaper (benchmarks/results/act_speed_one_window.md)."""
    h, w = chunk.shape[-2:]
    dy, dx = int(size[0]) - h, int(size[1]) - w
    pad = (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2)
    out = predictor(F.pad(chunk, pad) if any(pad) else chunk)
    return out[..., pad[2]:pad[2] + h, pad[0]:pad[0] + w]


def _windows(predictor, chunk: torch.Tensor, size: Sequence[int], batch_size: int
             ) -> torch.Tensor:
    """``predictor`` over Gaussian-weighted sliding windows of ``size`` on each slice of
    ``chunk``: :func:`one_window` where one covers the slice, else MONAI's overlapping ones."""
    if fits_one_window(chunk.shape[-2:], size):
        return one_window(predictor, chunk, size)
    return sliding_window_inference(
        chunk, roi_size=tuple(size), sw_batch_size=batch_size, predictor=predictor,
        overlap=WINDOW_OVERLAP, mode="gaussian", padding_mode="constant")


@torch.no_grad()
def _predict_3d(model, x, roi, factor, mc):
    dev = next(model.parameters()).device
    t = torch.from_numpy(x)[None, None].to(dev)
    shape = x.shape
    if factor != 1:
        small = [max(1, int(round(s / factor))) for s in shape]
        t = F.interpolate(t, size=small, mode="trilinear", align_corners=False)

    def predictor(inp: torch.Tensor) -> torch.Tensor:
        return torch.softmax(model(inp)["logits"], 1)

    probs = 0.0
    for _ in range(max(mc, 1)):
        probs = probs + sliding_window_inference(
            t, roi_size=tuple(roi), sw_batch_size=2, predictor=predictor, overlap=0.25,
            mode="gaussian") / max(mc, 1)
    if tuple(probs.shape[2:]) != tuple(shape):
        probs = F.interpolate(probs, size=shape, mode="trilinear", align_corners=False)
    return probs[0].cpu(), None


def model_channels(meta: dict) -> int:
    """How many channels of a scan a model reads: 1 (grey), or 3 for an RGB-slice model (its
    network may take each slice's neighbours too: :func:`context_slices`)."""
    net = meta.get("network") or {}
    return scan_channels(int(net.get("in_channels", 1) or 1), context_slices(meta))


def context_slices(meta: dict) -> int:
    """Neighbouring slices a 2-D model reads on each side of a slice (0: the slice alone)."""
    return int((meta.get("network") or {}).get("context_slices", 0) or 0)


def predict_volume(
    model: nn.Module,
    meta: dict,
    volume: np.ndarray,
    mc_samples: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = DEFAULT_BATCH,
    probabilities: bool = True,
    clean_up: bool = True,
) -> dict:
    """Segment a raw-intensity (z, y, x) volume, or a (z, y, x, c) one for a model that reads
    c channels (``meta["network"]["in_channels"]``; RGB slices are (z, y, x, 3)).

    Returns ``labels`` uint8 (z, y, x), ``probabilities`` float32 (C, z, y, x), ``uncertainty``
    float32 (z, y, x) = entropy of the mean (MC-dropout) softmax, and ``cam`` float32 (z, y, x) or
    ``None``. With ``mc_samples > 0`` dropout stays active for that many passes (no effect on a
    model without dropout). ``probabilities=False`` (what Predict needs) skips the full-size
    probability maps of a 2-D model: labels and uncertainty are computed at the network's
    resolution and resized, and ``probabilities`` is ``None``. ``batch_size`` is slices per
    pass of a 2-D model. With ``clean_up``, ``labels`` get the clean-up the model's metadata
    names (``meta["postprocess"]``, chosen on validation scans; :mod:`training.engine.postprocess`);
    probabilities and uncertainty stay the network's own.
    """
    flush_denormals()  # this thread (Predict runs in a worker thread): see training.core.cpu_math
    mode = model_clean_up(meta) if clean_up else "none"
    vol = np.asarray(volume)
    channels = model_channels(meta)
    if vol.ndim == (2 if channels == 1 else 3):
        vol = vol[None]
    if channels > 1 and (vol.ndim != 4 or vol.shape[-1] != channels):
        raise ValueError(f"this model reads {channels} channels: expected a (z, y, x,"
                         f" {channels}) scan, got shape {vol.shape}")
    if channels > 1 and not (int(meta.get("dims", 2)) == 2 and meta.get("sampling") == "patch"):
        raise ValueError("scans with channels are predicted by 2-D native-grid models only")
    if channels == 1 and vol.ndim != 3:
        raise ValueError(f"expected a (z, y, x) volume, got shape {vol.shape}")
    dev = torch.device(device) if device is not None else pick_device()
    model = model.to(dev).eval()
    if has_batch_norm(model):  # a copy: the caller's model keeps its BatchNorm layers
        model = fold_batch_norm(model)
    if int(meta.get("dims", 2)) == 2:
        model = model.to(memory_format=MEMORY_FORMAT)
    mc = int(mc_samples)
    if mc > 0 and enable_mc_dropout(model, True) == 0:
        mc = 0
    try:
        x = with_context_slices(normalize_scan(vol, meta.get("normalization"), channels),
                                context_slices(meta))
        if int(meta.get("dims", 2)) == 2:
            scales = test_time_scales(meta)
            if meta.get("sampling") == "patch" and scales != [1.0]:
                probs, cam = _predict_2d_scales(model, x, meta, scales, mc, batch_size,
                                                mirror=mirrors_at_predict(meta))
                labels = unc = None
                if not probabilities:
                    labels, unc = (v.numpy() for v in
                                   labels_and_entropy_of_probabilities(probs.movedim(0, 1)))
                    probs = None
            elif meta.get("sampling") == "patch":
                probs, cam, labels, unc = _predict_2d_windows(
                    model, x, prediction_window(meta, x.shape[-2:]), mc, batch_size,
                    keep_probs=probabilities, mirror=mirrors_at_predict(meta))
            else:
                probs, cam, labels, unc = _predict_2d(model, x, meta["size"], mc, batch_size,
                                                      keep_probs=probabilities)
        else:
            probs, cam = _predict_3d(model, x, meta["size"], float(meta.get("downsample", 1)), mc)
            labels = unc = None
    finally:
        enable_mc_dropout(model, False)
        model.to(memory_format=torch.contiguous_format)  # the caller's model as it came
    cam_np = cam.numpy().astype(np.float32) if cam is not None else None
    if probs is None:
        return {"labels": keep_main_pieces(labels, mode), "probabilities": None,
                "uncertainty": unc.astype(np.float32, copy=False), "cam": cam_np}
    probs_np = probs.numpy().astype(np.float32)
    return {
        "labels": keep_main_pieces(probs_np.argmax(0).astype(np.uint8), mode),
        "probabilities": probs_np,
        "uncertainty": entropy_map(probs),
        "cam": cam_np,
    }
