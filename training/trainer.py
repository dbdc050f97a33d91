"""The training loop: progress events, cancellation, periodic atomic checkpoints, DDP."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from training.checkpoint import companion_path, read_checkpoint, save_checkpoint
from training.data import DataError, PatchSampler, SliceSampler, TrainData
from training.device import pick_device
from training.distributed import any_rank, barrier, init_distributed
from training.methods import get_method

Event = dict


class TrainingDiverged(DataError):
    """The loss became NaN or Inf; no checkpoint is written from that point on."""


@dataclass
class TrainConfig:
    """Everything a training run needs besides the data (plain values only)."""

    method: str = "supervised"
    dims: int = 2
    steps: int = 1000
    labeled_bs: int = 8
    unlabeled_bs: int = 8
    lr: float = 1e-2
    size: list[int] = field(default_factory=lambda: [128, 128])
    downsample: float = 1.0
    seed: int = 0
    warmup_fraction: float | None = None
    rampup_fraction: float = 0.4
    consistency: float = 0.1
    num_classes: int | None = None
    base: int = 16
    depth: int = 4
    dropout: float = 0.0
    norm: str = "group"
    device: str = "auto"
    checkpoint: str = "model.pt"
    checkpoint_every: int = 0
    refresh_every: int = 100
    log_every: int = 10
    method_opts: dict = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; ask for deterministic kernels on CUDA."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _model_config(config: TrainConfig, data: TrainData, init: dict | None) -> dict:
    if init is not None:
        net = dict(init["meta"]["network"])
        if int(net["dims"]) != config.dims:
            raise DataError(f"checkpoint is {net['dims']}D but training is {config.dims}D")
        if data.num_classes > int(net["num_classes"]):
            # a structure added to a trained model: its head grows, old classes keep weights
            net = {**net, "num_classes": int(data.num_classes)}
        return net
    return {
        "kind": "unet", "dims": config.dims, "in_channels": 1,
        "num_classes": int(config.num_classes or data.num_classes), "base": config.base,
        "depth": config.depth, "dropout": config.dropout, "norm": config.norm,
    }


def train(
    config: TrainConfig,
    data: TrainData,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_checkpoint: str | None = None,
) -> str | None:
    """Train ``config.method`` on ``data``; returns the checkpoint path (``None`` if cancelled
    before any step). Events are plain dicts: progress, checkpoint, done, cancelled."""
    emit = on_event or (lambda e: None)
    device = pick_device(config.device)
    rank, world, device = init_distributed(device)
    seed_everything(config.seed)
    init = read_checkpoint(init_checkpoint) if init_checkpoint else None
    model_config = _model_config(config, data, init)
    num_classes = int(model_config["num_classes"])
    class_names = list(data.class_names)
    if init is not None:  # the checkpoint's names, then the data's for any added class
        old = list(init["meta"].get("class_names", []))
        class_names = old + class_names[len(old):] if len(old) < len(class_names) else old
    if len(class_names) != num_classes:
        class_names = ["background"] + [f"class{i}" for i in range(1, num_classes)]
    method = get_method(
        config.method, lr=config.lr, warmup_fraction=config.warmup_fraction,
        rampup_fraction=config.rampup_fraction, consistency=config.consistency,
        refresh_every=config.refresh_every, seed=config.seed, **config.method_opts,
    )
    method.setup(model_config, device)
    if init is not None:
        try:
            method.load_weights(init["state_dict"])
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        method.wrap(lambda m: DistributedDataParallel(m, device_ids=ids,
                                                      find_unused_parameters=True))
    if config.dims == 2:
        sampler = SliceSampler(data, config.size, config.labeled_bs, config.unlabeled_bs,
                               seed=config.seed + 1000 * rank)
    else:
        sampler = PatchSampler(data, config.size, config.labeled_bs, config.unlabeled_bs,
                               seed=config.seed + 1000 * rank, downsample=config.downsample)
    meta_base = {
        "num_classes": num_classes, "class_names": class_names,
        "normalization": dict(data.normalization), "dims": config.dims,
        "method": config.method, "data": data.summary(), "size": list(config.size),
        "downsample": float(config.downsample), "seed": config.seed,
        "total_steps": config.steps, "config": _plain(asdict(config)),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
    }

    def save(step_done: int) -> str:
        meta = {**meta_base, "steps_done": step_done}
        for name, net in method.companions().items():
            save_checkpoint(companion_path(config.checkpoint, name), net, {**meta, "role": name})
        return save_checkpoint(config.checkpoint, method.inference_model(), meta)

    start = time.perf_counter()
    last_saved: str | None = None
    for step in range(config.steps):
        if any_rank(bool(should_stop and should_stop())):
            if rank == 0 and step > 0:
                last_saved = save(step)
            barrier()
            emit({"type": "cancelled", "path": last_saved, "step": step, "rank": rank})
            return last_saved
        labeled, unlabeled = sampler.next()
        losses = method.step(labeled, unlabeled, step, config.steps)
        done = step + 1
        bad = [k for k, v in losses.items() if k != "lr" and not np.isfinite(v)]
        if any_rank(bool(bad)):
            # the weights are already poisoned by this step; the last checkpoint is not
            kept = f"; the last good checkpoint is kept: {last_saved}" if last_saved else ""
            raise TrainingDiverged(
                f"training stopped at step {done}: the loss became "
                f"{', '.join(f'{k}={losses[k]}' for k in bad) or 'non-finite on another rank'}"
                f" (try a lower learning rate, or check the data){kept}")
        elapsed = time.perf_counter() - start
        if done % max(config.log_every, 1) == 0 or done == config.steps or done == 1:
            emit({"type": "progress", "step": done, "total": config.steps, "losses": losses,
                  "elapsed": elapsed, "eta": elapsed / done * (config.steps - done),
                  "rank": rank})
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.steps:
            if rank == 0:
                last_saved = save(done)
                emit({"type": "checkpoint", "path": last_saved, "step": done})
    if rank == 0:
        last_saved = save(config.steps)
    barrier()
    if rank == 0:
        emit({"type": "done", "path": last_saved, "step": config.steps})
    return last_saved if rank == 0 else str(config.checkpoint)


def _plain(obj):
    """Recursively turn tuples into lists so the config survives ``weights_only`` loading."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
