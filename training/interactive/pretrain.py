"""Label-free pretraining of the New model's network on unlabelled scans.

A structure no model knows starts from a network that has never seen an MRI slice. Here the
same 2-D U-Net first learns to restore scans from corrupted copies (the "Models Genesis" tasks:
a non-linear intensity change, local pixel shuffling, and painting over boxes inside or
outside), so its filters already know the modality's edges and textures before the user's
first slice. No label is read. :func:`training.interactive.new_model.new_model` copies every weight
but the
output layer from the checkpoint this writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training.core.io import read_image
from training.engine.data import resize_slices, scan_dataset
from training.engine.normalization import DEFAULT_NORMALIZATION, normalize_intensity


def unlabelled_slices(roots: Sequence[str | Path], size: Sequence[int], split: str = "train",
                      skip: int = 0, per_volume: int | None = None) -> np.ndarray:
    """Normalised 2-D slices (n, *size) of the ``split`` scans under each root, labels unread.

    ``skip`` leaves out each root's first scans of that split (kept unseen, to choose options
    on); ``per_volume`` evenly subsamples long stacks so no data set drowns the others."""
    out = []
    for root in roots:
        cases = [c for c in scan_dataset(root) if c.split in (split, None)][skip:]
        for c in cases:
            vol, _ = read_image(c.image)
            if vol.ndim != 3:
                continue  # colour slice stacks: the New model reads one channel
            vol = normalize_intensity(vol, DEFAULT_NORMALIZATION)
            z = np.arange(len(vol))
            if per_volume and len(z) > per_volume:
                z = np.linspace(0, len(vol) - 1, per_volume).round().astype(int)
            out.append(resize_slices(vol[z], size, nearest=False))
    if not out:
        raise ValueError("no single-channel scans found to pretrain on")
    return np.concatenate(out).astype(np.float32)


def corrupt(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """A corrupted copy of each (n, 1, h, w) slice; the network learns to undo it."""
    n, _, h, w = x.shape
    y = x.clone()
    for i in range(n):
        r = torch.rand(4, generator=gen)
        s = y[i, 0]
        if r[0] < 0.8:  # non-linear intensity: a random power curve, sometimes inverted
            lo, hi = s.min(), s.max()
            t = (s - lo) / (hi - lo + 1e-6)
            gamma = float(torch.empty(1).uniform_(0.4, 2.5, generator=gen))
            t = t.pow(gamma)
            if r[1] < 0.3:
                t = 1 - t
            s = t * (hi - lo) + lo
        if r[2] < 0.5:  # local pixel shuffling inside small windows
            for _ in range(int(torch.randint(20, 60, (1,), generator=gen))):
                bh, bw = (int(v) for v in torch.randint(2, 8, (2,), generator=gen))
                yy = int(torch.randint(0, h - bh, (1,), generator=gen))
                xx = int(torch.randint(0, w - bw, (1,), generator=gen))
                win = s[yy:yy + bh, xx:xx + bw].reshape(-1)
                perm = torch.randperm(win.numel(), generator=gen)
                s[yy:yy + bh, xx:xx + bw] = win[perm].reshape(bh, bw)
        if r[3] < 0.9:
            noise = torch.randn(h, w, generator=gen) * s.std() + s.mean()
            if torch.rand(1, generator=gen) < 0.5:  # in-painting: boxes of noise
                for _ in range(int(torch.randint(1, 5, (1,), generator=gen))):
                    bh = int(torch.randint(h // 8, h // 3, (1,), generator=gen))
                    bw = int(torch.randint(w // 8, w // 3, (1,), generator=gen))
                    yy = int(torch.randint(0, h - bh, (1,), generator=gen))
                    xx = int(torch.randint(0, w - bw, (1,), generator=gen))
                    s[yy:yy + bh, xx:xx + bw] = noise[yy:yy + bh, xx:xx + bw]
            else:  # out-painting: keep one box, noise around it
                bh = int(torch.randint(h // 3, h - h // 8, (1,), generator=gen))
                bw = int(torch.randint(w // 3, w - w // 8, (1,), generator=gen))
                yy = int(torch.randint(0, h - bh, (1,), generator=gen))
                xx = int(torch.randint(0, w - bw, (1,), generator=gen))
                keep = s[yy:yy + bh, xx:xx + bw].clone()
                s = noise.clone()
                s[yy:yy + bh, xx:xx + bw] = keep
        y[i, 0] = s
    return y


def pretrain(
    slices: np.ndarray,
    out_path: str | Path,
    steps: int = 2000,
    batch: int = 8,
    lr: float = 1e-3,
    seed: int = 0,
    device: str | None = None,
    sources: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
    **network: object,
) -> str:
    """Train the New model's U-Net to restore corrupted ``slices``; write its checkpoint."""
    from training.core.device import pick_device
    from training.engine.checkpoint import save_checkpoint
    from training.engine.networks import UNet
    from training.interactive.new_model import NEW_MODEL_NETWORK

    dev = pick_device(device or "auto")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = {**NEW_MODEL_NETWORK, **network}
    # two outputs because a U-Net needs a background and one class; channel 0 is the image
    net = UNet(dims=2, in_channels=1, num_classes=2, **cfg).to(dev)  # type: ignore[arg-type]
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - s / steps) ** 0.9)
    data = torch.from_numpy(slices)[:, None]
    t0 = time.perf_counter()
    net.train()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(data), (batch,), generator=gen)
        x = data[idx]
        k = int(torch.randint(0, 4, (1,), generator=gen))
        x = torch.rot90(x, k, dims=(-2, -1))
        y = corrupt(x, gen)
        loss = F.mse_loss(net(y.to(dev))["logits"][:, :1], x.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log and (step % 100 == 0 or step == steps):
            log(f"step {step}/{steps} restore MSE {loss.item():.4f} "
                f"({time.perf_counter() - t0:.0f} s)")
    meta = {"num_classes": 2, "class_names": ["image", "unused"], "dims": 2,
            "size": [int(s) for s in slices.shape[1:]],
            "normalization": dict(DEFAULT_NORMALIZATION), "method": "pretrain_restore",
            "pretrained_on": list(sources), "slices": int(len(slices)), "steps_done": steps,
            "untrained": True}
    return save_checkpoint(out_path, net.cpu(), meta)
