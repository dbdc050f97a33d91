"""Batched training augmentation on tensors: crop, rotation, scale, flips, intensity.

One ``grid_sample`` call crops, turns and scales a whole batch of 2-D slices at once (no
per-slice Python loop), so a GPU step is not bound by the CPU and a CPU step spends its time in
the network. Orientation is kept by default: anatomy with a fixed orientation (the heart in
cine-MRI: the RV always on the -x side of the LV) loses a cue under 90-degree turns and flips,
so those are opt-in (``flips``), for data without an orientation. Anatomy that is its own
mirror image left to right (the brain) may be mirrored left-right alone (``mirror_x``).

Labels follow the image by nearest-neighbour sampling; whatever comes from outside the slice is
"not annotated" (255), never background: nothing is known there.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from training import IGNORE_INDEX

AUGMENTATIONS = ("anatomy", "mirror-left-right", "any-orientation", "none")


@dataclass(frozen=True)
class Augmentation:
    """Probabilities and ranges of each random change (nnU-Net's kinds, orientation kept)."""

    p_spatial: float = 0.5
    rotate: float = 15.0  # degrees, either way
    scale: tuple[float, float] = (0.85, 1.2)
    flips: bool = False  # random 90-degree turns and mirroring (only for orientation-free data)
    # left-right mirroring alone, half the samples: up stays up (a brain's two halves)
    mirror_x: bool = False
    p_gamma: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    p_contrast: float = 0.15
    contrast: tuple[float, float] = (0.75, 1.25)
    p_brightness: float = 0.15
    brightness: tuple[float, float] = (0.75, 1.25)
    p_noise: float = 0.15
    noise_std: float = 0.1
    # Scans with channels: the share of samples whose every channel is replaced by the grey
    # one (an RGB scan's FLAIR), as in LGG patients whose missing sequences were filled with
    # FLAIR (2 of 30 train and val patients); a model never shown that reads them as noise
    p_missing_channels: float = 0.0

    @classmethod
    def named(cls, name: str, rotate: float | None = None,
              missing_channels: float | None = None) -> Augmentation | None:
        """The preset ``name`` (:data:`AUGMENTATIONS`); ``rotate`` overrides its angle and
        ``missing_channels`` its :attr:`p_missing_channels`."""
        if name == "none":
            return None
        if name not in AUGMENTATIONS:
            raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, "
                             f"not {name!r}")
        extra: dict = {} if rotate is None else {"rotate": float(rotate)}
        if missing_channels is not None:
            extra["p_missing_channels"] = float(missing_channels)
        return cls(flips=name == "any-orientation", mirror_x=name == "mirror-left-right",
                   **extra)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _coin(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def patch_grid(
    centres: torch.Tensor,
    source_hw: tuple[int, int],
    patch: tuple[int, int],
    aug: Augmentation | None,
    gen: torch.Generator,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """``grid_sample`` grid (N, ph, pw, 2) taking a ``patch`` around each (y, x) centre of a
    source of ``source_hw`` pixels, turned and scaled at random (about the centre) when
    ``aug`` asks. Scale 1 keeps the native pixel grid: one patch pixel is one scan pixel.
    Random numbers come from ``gen`` (on the CPU: a few per sample); the grid is built on
    ``device``."""
    n = len(centres)
    h, w = source_hw
    ph, pw = patch
    angle = torch.zeros(n)
    scale = torch.ones(n)
    flip_x = torch.ones(n)
    turns = torch.zeros(n, dtype=torch.long)
    if aug is not None:
        spatial = _coin(n, aug.p_spatial, gen)
        angle = torch.where(spatial, _uniform(n, -aug.rotate, aug.rotate, gen), angle)
        scale = torch.where(spatial, _uniform(n, *aug.scale, gen), scale)
        if aug.flips:
            turns = torch.randint(0, 4, (n,), generator=gen)
        if aug.flips or aug.mirror_x:
            flip_x = torch.where(_coin(n, 0.5, gen), -1.0, 1.0)
    theta = torch.deg2rad(angle) + turns.float() * (math.pi / 2)
    cos, sin = torch.cos(theta) * scale, torch.sin(theta) * scale
    # Source pixel = centre + M @ (patch pixel - patch centre), with M turning, scaling and
    # mirroring; written as one affine map of normalised coordinates (align_corners=False:
    # pixel i of n sits at (2i + 1) / n - 1) so that affine_grid builds the grid in one call.
    mat = torch.zeros(n, 2, 3)
    mat[:, 0, 0] = cos * flip_x * pw / w
    mat[:, 0, 1] = -sin * ph / w
    mat[:, 1, 0] = sin * flip_x * pw / h
    mat[:, 1, 1] = cos * ph / h
    mat[:, 0, 2] = (2 * centres[:, 1] + 1) / w - 1
    mat[:, 1, 2] = (2 * centres[:, 0] + 1) / h - 1
    return F.affine_grid(mat.to(device), [n, 1, ph, pw], align_corners=False)


def sample_patches(
    images: torch.Tensor, labels: torch.Tensor | None, grid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (N, 1, H, W) bilinear and labels (N, H, W) nearest at ``grid``; outside the
    source the image is 0 (the normalised mean) and the label 255."""
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    if labels is None:
        return out, None
    # shifted by one so that zero padding reads as "outside"
    moved = F.grid_sample((labels.float() + 1)[:, None], grid, mode="nearest",  # uint8 ok
                          padding_mode="zeros", align_corners=False)[:, 0].long()
    lab = torch.where(moved == 0, torch.full_like(moved, IGNORE_INDEX), moved - 1)
    return out, lab


def intensity(x: torch.Tensor, aug: Augmentation | None, gen: torch.Generator) -> torch.Tensor:
    """Gamma, contrast, brightness and Gaussian noise, each per sample with its probability,
    on normalised (z-scored) images (N, 1, ...)."""
    if aug is None:
        return x
    n = x.shape[0]
    shape = (n,) + (1,) * (x.dim() - 1)
    flat = x.flatten(1)
    lo = flat.min(1).values.view(shape)
    hi = flat.max(1).values.view(shape)
    rng = (hi - lo).clamp_min(1e-6)
    gamma = _coin(n, aug.p_gamma, gen)
    g = _uniform(n, *aug.gamma, gen)
    if bool(gamma.any()):  # only where drawn: a power of every pixel is not cheap
        k = torch.nonzero(gamma).flatten().to(x.device)
        gk = g[gamma].view(-1, *shape[1:]).to(x.device)
        x = x.clone()
        x[k] = ((x[k] - lo[k]) / rng[k]).clamp(0, 1) ** gk * rng[k] + lo[k]
    mean = x.flatten(1).mean(1).view(shape)
    c = torch.where(_coin(n, aug.p_contrast, gen), _uniform(n, *aug.contrast, gen), 1.0)
    x = (x - mean) * c.view(shape).to(x.device) + mean
    b = torch.where(_coin(n, aug.p_brightness, gen), _uniform(n, *aug.brightness, gen), 1.0)
    x = x * b.view(shape).to(x.device)
    noisy = _coin(n, aug.p_noise, gen)
    std = _uniform(n, 0.0, aug.noise_std, gen)
    if bool(noisy.any()):  # noise drawn only for the samples that get it
        k = torch.nonzero(noisy).flatten()
        if x.device.type == "cpu":
            noise = torch.randn((len(k), *x.shape[1:]), generator=gen)
        else:  # drawn where the batch is: a full-size draw on the CPU and its copy outlast a step
            there = torch.Generator(device=x.device)
            there.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            noise = torch.randn((len(k), *x.shape[1:]), generator=there, device=x.device)
        x = x.clone()
        x[k.to(x.device)] += noise.to(x.device) * std[k].view(-1, *shape[1:]).to(x.device)
    return x


def missing_channels(x: torch.Tensor, aug: Augmentation | None,
                     gen: torch.Generator, scan_channels: int | None = None) -> torch.Tensor:
    """Samples of a (N, C, ...) batch with C > 1 whose every channel becomes the grey one
    (:data:`training.core.io.RGB_CHANNEL`), each with probability ``aug.p_missing_channels``.
    With context slices (C = slices x ``scan_channels``) each slice's own channels become its
    grey one."""
    from training.core.io import RGB_CHANNEL

    group = int(scan_channels or x.shape[1])
    if aug is None or aug.p_missing_channels <= 0 or group < 2:
        return x
    pick = _coin(x.shape[0], aug.p_missing_channels, gen).to(x.device)
    if not bool(pick.any()):
        return x
    g = x.reshape(x.shape[0], -1, group, *x.shape[2:])
    grey = g[:, :, RGB_CHANNEL:RGB_CHANNEL + 1].expand_as(g).reshape(x.shape)
    return torch.where(pick.view(-1, *([1] * (x.dim() - 1))), grey, x)
