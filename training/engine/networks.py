"""2D/3D U-Nets with optional signed-distance, edge and classification heads.

Built from MONAI's ``Convolution`` block (conv + norm + activation). Normalisation is GroupNorm or
BatchNorm only: InstanceNorm is several times slower on CPU (GUIDE section 6).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from monai.networks.blocks import Convolution
from torch import nn

from training.core.io import DataError

NORMS = ("group", "batch")


def _norm(norm: str, channels: int) -> tuple | str:
    if norm == "group":
        groups = 8 if channels % 8 == 0 else (4 if channels % 4 == 0 else 1)
        return ("group", {"num_groups": min(groups, channels)})
    if norm == "batch":
        return "batch"
    raise ValueError(f"unsupported norm {norm!r}; use one of {NORMS} (never instance norm)")


class _DoubleConv(nn.Sequential):
    def __init__(self, dims: int, cin: int, cout: int, norm: str, dropout: float) -> None:
        act = ("leakyrelu", {"negative_slope": 0.01, "inplace": True})
        layers: list[nn.Module] = [
            Convolution(dims, cin, cout, kernel_size=3, act=act, norm=_norm(norm, cout)),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(Convolution(dims, cout, cout, kernel_size=3, act=act, norm=_norm(norm, cout)))
        super().__init__(*layers)


class UNet(nn.Module):
    """A plain U-Net for ``dims`` = 2 or 3.

    ``forward(x)`` returns a dict: ``"logits"`` (N, C, ...); ``"sdf"`` (N, C-1, ...) in [-1, 1] when
    ``sdf_head``; ``"edge"`` (N, 1, ...) logits when ``edge_head``; ``"cls"`` (N, C) multi-label
    logits and ``"features"`` (the last decoder features, for CAMs) when ``cls_head``.
    Dropout (``dropout > 0``) sits in the deep blocks and can be switched on at inference with
    :func:`enable_mc_dropout`. ``unshuffle`` = r > 1 (2-D, no extra heads) runs the whole U-Net
    at 1/r resolution: the input's r x r blocks become channels (pixel unshuffle) and each
    feature vector predicts its r x r block of logits (pixel shuffle). A few-channel network
    uses the CPU poorly at full resolution; this is how ``act``'s tiny student gets fast, and how
    the recipe's 2-D models predict on the native grid at a quarter of the compute. The sdf and
    edge heads are pixel-shuffled the same way; a cls head (CAMs) needs ``unshuffle`` = 1.
    """

    def __init__(
        self,
        dims: int,
        in_channels: int,
        num_classes: int,
        base: int = 16,
        depth: int = 4,
        dropout: float = 0.0,
        norm: str = "group",
        sdf_head: bool = False,
        edge_head: bool = False,
        cls_head: bool = False,
        unshuffle: int = 1,
        context_slices: int = 0,
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError("dims must be 2 or 3")
        unshuffle = int(unshuffle)
        if unshuffle < 1 or (unshuffle > 1 and (dims != 2 or cls_head)):
            raise ValueError("unshuffle > 1 needs a 2-D network without a cls head")
        if num_classes < 2:
            raise ValueError("num_classes must be at least 2 (background + one structure)")
        self.config: dict[str, Any] = {
            "kind": "unet", "dims": dims, "in_channels": in_channels,
            "num_classes": num_classes, "base": base, "depth": depth, "dropout": dropout,
            "norm": norm, "sdf_head": bool(sdf_head), "edge_head": bool(edge_head),
            "cls_head": bool(cls_head),
        }
        if unshuffle > 1:  # older checkpoints have no such key; they rebuild with 1
            self.config["unshuffle"] = unshuffle
        if context_slices:  # how the input is laid out (training.engine.context), no layer
            if dims != 2 or in_channels % (2 * int(context_slices) + 1):
                raise ValueError("context slices need a 2-D network whose inputs hold them")
            self.config["context_slices"] = int(context_slices)
        self.unshuffle = unshuffle
        in_channels *= unshuffle**2
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        pool = nn.MaxPool2d if dims == 2 else nn.MaxPool3d
        widths = [base * 2**i for i in range(depth + 1)]
        self.pool = pool(2)
        self.down = nn.ModuleList()
        cin = in_channels
        for i, w in enumerate(widths):
            deep = i >= depth - 1
            self.down.append(_DoubleConv(dims, cin, w, norm, dropout if deep else 0.0))
            cin = w
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(depth, 0, -1):
            self.ups.append(up(widths[i], widths[i - 1], kernel_size=2, stride=2))
            deep = i >= depth - 1
            self.up_blocks.append(
                _DoubleConv(dims, 2 * widths[i - 1], widths[i - 1], norm, dropout if deep else 0.0)
            )
        self.seg = conv(base, num_classes * unshuffle**2, kernel_size=1)
        # at 1/r resolution every pixel-wise head predicts its r x r block (pixel shuffle)
        r2 = unshuffle**2
        self.sdf = conv(base, max(num_classes - 1, 1) * r2, kernel_size=1) if sdf_head else None
        self.edge = conv(base, r2, kernel_size=1) if edge_head else None
        self.cls = nn.Linear(base, num_classes) if cls_head else None
        self.dims = dims
        self.num_classes = num_classes
        self.depth = depth

    def _full_size(self, t: torch.Tensor) -> torch.Tensor:
        """A pixel-wise head's output at the input's resolution (pixel shuffle when the
        network runs at 1/r)."""
        return nn.functional.pixel_shuffle(t, self.unshuffle) if self.unshuffle > 1 else t

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.unshuffle > 1:
            x = nn.functional.pixel_unshuffle(x, self.unshuffle)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        for up, block in zip(self.ups, self.up_blocks, strict=True):
            x = up(x)
            x = block(torch.cat([skips.pop(), x], dim=1))
        out = {"logits": self._full_size(self.seg(x))}
        if self.sdf is not None:
            out["sdf"] = torch.tanh(self._full_size(self.sdf(x)))
        if self.edge is not None:
            out["edge"] = self._full_size(self.edge(x))
        if self.cls is not None:
            pooled = x.flatten(2).mean(dim=2)
            out["cls"] = self.cls(pooled)
            out["features"] = x
        return out


def set_output_prior(model: nn.Module, shares: Sequence[float]) -> bool:
    """Start a U-Net's segmentation output at the class shares: each class's bias becomes the
    log of its share, so the untrained network already predicts the background's frequency.

    From the usual zero-mean start, AdamW at 1e-3 spends hundreds of steps only raising the
    background's logit before any structure is learnt (benchmarks/results/acdc_lr_plateau.md);
    the classification literature starts rare-class outputs at their prior for the same reason.
    Returns False (and changes nothing) for a model without a U-Net segmentation head."""
    seg = getattr(model, "seg", None)
    if not isinstance(model, UNet) or seg is None or seg.bias is None:
        return False
    logp = torch.log(torch.as_tensor(list(shares), dtype=seg.bias.dtype))
    if logp.numel() != model.num_classes:
        raise ValueError(f"{logp.numel()} class shares for {model.num_classes} classes")
    with torch.no_grad():  # pixel shuffle: class c owns channels c*r*r ... (c+1)*r*r - 1
        seg.bias.copy_(logp.repeat_interleave(model.unshuffle**2).to(seg.bias.device))
    return True


def enable_mc_dropout(model: nn.Module, enabled: bool = True) -> int:
    """Put every dropout layer in train mode (MC-dropout) or back to eval mode.

    The rest of the model keeps its mode. Returns the number of dropout layers touched, so a caller
    can tell whether MC sampling will vary at all.
    """
    count = 0
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.train(enabled)
            count += 1
    return count


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())


def tiny_student(
    dims: int, in_channels: int, num_classes: int, base: int = 4, depth: int = 3, **kw: Any
) -> UNet:
    """The small, fast network that ``act`` distils into (>= 50x fewer parameters than default)."""
    return UNet(dims, in_channels, num_classes, base=base, depth=depth, **kw)


def check_size(size: Sequence[int], depth: int, what: str = "--size", unshuffle: int = 1
               ) -> None:
    """A U-Net of ``depth`` halves its input ``depth`` times (after an ``unshuffle`` by r):
    each size must be a positive multiple of r * 2**depth, or torch fails deep inside with a
    shape error."""
    step = max(int(unshuffle), 1) * 2 ** max(int(depth), 0)
    if any(int(v) < step or int(v) % step for v in size):
        raise DataError(f"{what} {' '.join(map(str, size))}: each size must be a positive "
                        f"multiple of {step} (r * 2**depth, depth {depth}), e.g. "
                        f"{' '.join(str(max(step, round(int(v) / step) * step)) for v in size)}")


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` normalises with BatchNorm anywhere."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with each BatchNorm folded into the convolution before it.

    In eval mode a BatchNorm is a fixed per-channel affine map, so folding it into the
    convolution's weights gives the same output with one pass over the features fewer: on a
    network as small as ``act``'s student, per-layer passes rather than arithmetic are what
    Predict spends its time on. ``model`` itself is left as it was."""
    folded = copy.deepcopy(model).eval()
    for m in folded.modules():
        adn = getattr(m, "adn", None) if isinstance(m, Convolution) else None
        norm = getattr(adn, "N", None)
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and isinstance(
                m.conv, (nn.Conv2d, nn.Conv3d)):
            m.conv = nn.utils.fusion.fuse_conv_bn_eval(m.conv, norm)
            adn.N = nn.Identity()
    return folded


def build_network(config: dict) -> nn.Module:
    """Rebuild a network from :func:`network_config` output (as stored in checkpoints)."""
    cfg = dict(config)
    kind = cfg.pop("kind", "unet")
    if kind != "unet":
        raise ValueError(f"unknown network kind {kind!r}")
    return UNet(**cfg)


def network_config(model: nn.Module) -> dict:
    """Plain-dict constructor arguments of ``model`` (unwrapping DDP)."""
    from training.engine.ema import unwrap

    model = unwrap(model)
    if not hasattr(model, "config"):
        raise ValueError("model has no network config")
    return copy.deepcopy(model.config)
