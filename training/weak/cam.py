"""Class-activation maps: a slice classifier trained on tags (CAM) and Grad-CAM for any network.

The classifier is the shared U-Net with its classification head (``cls_head=True``), a linear
layer ``w_c . features + b_c`` on the last decoder features. Applied per pixel it is the CAM of
class c (Zhou et al. 2016), at full resolution. For training, the per-pixel scores are pooled
over the top 2 % of pixels inside the body (:func:`topk_pool`, :func:`body_mask`) rather than by
the head's global mean, which gave flat or off-target CAMs (see benchmarks/results/lgg_weak.md).
Grad-CAM (Selvaraju et al. 2017, in its segmentation form) weighs a layer's activations by the
pooled gradient of the class score, so it works for networks trained without a classification
head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from training.engine.data import resize_slices
from training.engine.ema import unwrap
from training.engine.networks import UNet
from training.engine.normalization import normalize_intensity
from training.weak.tags import UNTAGGED

Event = dict


def _peak_normalise(cam: torch.Tensor) -> torch.Tensor:
    peak = cam.flatten(1).max(dim=1).values.clamp_min(1e-8)
    return cam / peak.view(-1, *([1] * (cam.dim() - 1)))


def class_scores(out: dict, model: nn.Module, target_class: int = 1) -> torch.Tensor:
    """Per-pixel class score ``w_c . features + b_c`` (N, ...): the CAM before the ReLU."""
    if "cls" not in out:
        raise ValueError("the network has no classification head (use grad_cam)")
    head = unwrap(model).cls
    return torch.einsum("f,nf...->n...", head.weight[target_class], out["features"]) \
        + head.bias[target_class]


def cam_from_output(out: dict, model: nn.Module, target_class: int = 1) -> torch.Tensor:
    """CAM (N, ...) of ``target_class`` from a forward pass of a network with a cls head.

    Returned unnormalised (>= 0): callers decide whether to scale per slice.
    """
    return torch.relu(class_scores(out, model, target_class))


def topk_pool(scores: torch.Tensor, fraction: float = 0.02) -> torch.Tensor:
    """Mean of the top ``fraction`` of per-pixel scores (N, ...) -> (N,) (WILDCAT-style).

    The head's own mean pooling lets a GroupNorm network spread the evidence over the whole
    slice (flat CAMs); max pooling lets it sit on one pixel. The mean of the top 2 % asks for a
    region of evidence about the size of a small lesion.
    """
    flat = scores.flatten(1)
    k = max(1, int(round(fraction * flat.shape[1])))
    return flat.topk(k, dim=1).values.mean(dim=1)


OUTSIDE = -20.0  # score given to pixels outside the body: they never count as evidence


def body_mask(x: torch.Tensor, erode: float = 0.04) -> torch.Tensor:
    """Pixels inside the body (N, H, W): above the slice's background level, eroded by
    ``erode`` x the slice width (4 px at 96 px).

    Without this the LGG classifier learns the slice level from the head's outline (tumour
    slices are mid-brain) and puts its CAM on the skull base or the border of the head.
    """
    lo = x.flatten(1).min(dim=1).values.view(-1, *([1] * (x.dim() - 1)))
    inside = (x > lo + 0.3).float()  # normalised units: background sits at the minimum
    r = int(round(erode * x.shape[-1]))
    if r > 0:
        inside = -F.max_pool2d(-inside, 2 * r + 1, stride=1, padding=r)
    return inside[:, 0] > 0


def evidence(model: nn.Module, x: torch.Tensor, target_class: int = 1,
             erode: float = 0.04) -> tuple[torch.Tensor, torch.Tensor]:
    """(per-pixel scores with the outside of the body at :data:`OUTSIDE`, body mask)."""
    scores = class_scores(model(x), model, target_class)
    body = body_mask(x, erode)
    return torch.where(body, scores, torch.full_like(scores, OUTSIDE)), body


def grad_cam(
    model: nn.Module, x: torch.Tensor, target_class: int = 1, layer: nn.Module | None = None
) -> torch.Tensor:
    """Grad-CAM (N, H, W) in [0, 1] for a segmentation network, at the input's resolution.

    The class score is the sum of ``target_class`` logits over the pixels predicted as that class
    (all pixels when none is), as in Grad-CAM for segmentation (Vinogradova et al. 2020).
    ``layer`` defaults to the U-Net's last decoder block (full resolution): in a U-Net the
    skips carry the "where", and coarser layers localised poorly in our tests.
    """
    net = unwrap(model)
    layer = layer if layer is not None else net.up_blocks[-1]
    store: dict[str, torch.Tensor] = {}

    def hook(_m, _inp, output):
        output.retain_grad()
        store["act"] = output

    handle = layer.register_forward_hook(hook)
    was_training = net.training
    net.eval()
    try:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            logits = net(x)["logits"]
            region = (logits.argmax(1) == target_class).float()
            empty = region.flatten(1).sum(1) == 0
            region[empty] = 1.0
            score = (logits[:, target_class] * region).sum()
            net.zero_grad(set_to_none=True)
            score.backward()
        act, grad = store["act"], store["act"].grad
        weights = grad.mean(dim=tuple(range(2, grad.dim())), keepdim=True)
        cam = torch.relu((weights * act).sum(1, keepdim=True)).detach()
    finally:
        handle.remove()
        net.zero_grad(set_to_none=True)
        net.train(was_training)
    mode = "bilinear" if cam.dim() == 4 else "trilinear"
    cam = F.interpolate(cam, size=x.shape[2:], mode=mode, align_corners=False)[:, 0]
    return _peak_normalise(cam)


# ----- the tag classifier --------------------------------------------------------------------


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    k = int(torch.randint(0, 4, (1,), generator=gen))
    x = torch.rot90(x, k, dims=(-2, -1))
    return x.flip(-1) if bool(torch.randint(0, 2, (1,), generator=gen)) else x


def tagged_slices(
    images: Sequence[np.ndarray], tags: Sequence[np.ndarray], size: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the tagged slices of normalised (z, y, x) volumes, resized to ``size``."""
    xs, ys = [], []
    for im, tg in zip(images, tags, strict=True):
        tg = np.asarray(tg)
        keep = tg != UNTAGGED
        if keep.any():
            xs.append(resize_slices(np.asarray(im)[keep], size, nearest=False))
            ys.append(tg[keep].astype(np.float32))
    if not xs:
        raise ValueError("no tagged slice: tag at least one slice positive and one negative")
    y = np.concatenate(ys)
    if y.min() == y.max():
        raise ValueError("tags of both kinds are needed (some slices with, some without)")
    return torch.from_numpy(np.concatenate(xs)).float().unsqueeze(1), torch.from_numpy(y)


def train_classifier(
    images: Sequence[np.ndarray],
    tags: Sequence[np.ndarray],
    size: Sequence[int] = (128, 128),
    steps: int = 300,
    batch_size: int = 16,
    lr: float = 3e-3,
    base: int = 16,
    depth: int = 4,
    num_classes: int = 2,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> UNet | None:
    """Train a U-Net's classification head (and body) on slice tags; ``None`` if cancelled.

    ``images`` are normalised (z, y, x) volumes, ``tags`` per-slice 1/0/-1 arrays. Batches are
    balanced between positive and negative slices (LGG is 40 / 60) and augmented by rot90/flip.
    The loss is binary cross-entropy on the top-2 % pooled per-pixel score of class 1 inside
    the body (:func:`topk_pool`, :func:`body_mask`), i.e. on the pooled CAM itself.
    """
    emit = on_event or (lambda e: None)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x, y = tagged_slices(images, tags, size)
    pos, neg = torch.nonzero(y == 1)[:, 0], torch.nonzero(y == 0)[:, 0]
    model = UNet(2, 1, num_classes, base=base, depth=depth, cls_head=True).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    half = max(batch_size // 2, 1)
    for step in range(steps):
        if should_stop is not None and should_stop():
            return None
        for g in opt.param_groups:
            g["lr"] = lr * (1 - step / steps) ** 0.9
        idx = torch.cat([pos[torch.randint(0, len(pos), (half,), generator=gen)],
                         neg[torch.randint(0, len(neg), (half,), generator=gen)]])
        xb = torch.stack([_augment(x[i], gen) for i in idx.tolist()]).to(device)
        yb = y[idx].to(device)
        model.train()
        logit = topk_pool(evidence(model, xb, 1)[0])
        loss = F.binary_cross_entropy_with_logits(logit, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if (step + 1) % 10 == 0 or step + 1 == steps:
            acc = float(((logit > 0).float() == yb).float().mean())
            emit({"type": "progress", "phase": "classifier", "step": step + 1, "total": steps,
                  "losses": {"loss": float(loss.detach()), "acc": acc}})
    return model.eval()


@torch.no_grad()
def _classifier_pass(model: nn.Module, x: torch.Tensor, target_class: int):
    scores, body = evidence(model, x, target_class)
    return torch.relu(scores) * body, torch.sigmoid(topk_pool(scores))


def volume_cam(
    model: nn.Module,
    volume: np.ndarray,
    size: Sequence[int],
    normalization: dict | None = None,
    normalised: bool = False,
    target_class: int = 1,
    batch_size: int = 16,
    smooth: float = 0.015,
) -> tuple[np.ndarray, np.ndarray | None]:
    """CAM of every slice of a (z, y, x) volume at its own size, plus per-slice class probability.

    With a classification head: the CAM (zero outside the body) and the class probability
    ``sigmoid(topk_pool(score))``; without one:
    Grad-CAM and ``None``.
    Each slice's CAM is smoothed (Gaussian, sigma = ``smooth`` x the slice width: the top-k head
    makes peaky maps, and a few hot pixels are no region to seed a mask from) and scaled to a
    peak of 1 (a map of where, not of how sure).
    """
    vol = np.asarray(volume, dtype=np.float32)
    if vol.ndim == 2:
        vol = vol[None]
    x = vol if normalised else normalize_intensity(vol, normalization)
    net = unwrap(model)
    dev = next(net.parameters()).device
    net.eval()
    has_cls = getattr(net, "cls", None) is not None
    cams, probs = [], []
    h, w = vol.shape[1:]
    for i in range(0, len(x), batch_size):
        chunk = torch.from_numpy(resize_slices(x[i:i + batch_size], size, nearest=False))
        chunk = chunk.unsqueeze(1).to(dev)
        if has_cls:
            cam, prob = _classifier_pass(net, chunk, target_class)
            cam = _peak_normalise(cam)
            probs.append(prob.cpu())
        else:
            cam = grad_cam(net, chunk, target_class)
        cam = F.interpolate(cam.unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)
        cams.append(cam[:, 0].clamp(0, 1).cpu())
    prob_np = torch.cat(probs).numpy().astype(np.float32) if probs else None
    cam_np = torch.cat(cams).numpy().astype(np.float32)
    sigma = smooth * w
    if sigma >= 0.5:
        cam_np = ndimage.gaussian_filter(cam_np, sigma=(0, sigma, sigma))
        peak = cam_np.reshape(len(cam_np), -1).max(axis=1).clip(min=1e-8)
        cam_np = (cam_np / peak[:, None, None]).astype(np.float32)
    return cam_np, prob_np
