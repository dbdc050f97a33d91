"""The training loop: progress events, cancellation, periodic atomic checkpoints, DDP."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from training.core.atomic import atomic_write
from training.core.device import machine_words, pick_device
from training.core.distributed import any_rank, barrier, init_distributed
from training.engine.augment import Augmentation
from training.engine.checkpoint import companion_path, read_checkpoint, save_checkpoint
from training.engine.context import network_inputs, scan_channels
from training.engine.data import DataError, ResizedSliceSampler, TrainData
from training.engine.networks import check_size
from training.engine.patches import SliceSampler, fitted_patch
from training.engine.patches3d import VolumePatchSampler
from training.fit.collapse import CollapseWatch
from training.methods import get_method, parse_spec

Event = dict


def _check_output_network_fits(net: dict, config: TrainConfig) -> None:
    """The model a method outputs (``act``'s student may halve more often than its teacher)
    must take the training size, or torch fails deep inside with a shape error."""
    try:
        check_size(config.size, int(net.get("depth", 0)),
                   unshuffle=int(net.get("unshuffle", 1) or 1))
    except DataError as exc:
        raise DataError(f"{exc}, for the model {config.method} outputs: choose another size, "
                        "or a smaller student_unshuffle or student_depth") from None


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
    # the recipe (issue 23, chosen on ACDC val): AdamW 1e-3, a short linear warm-up, poly
    # decay, gradient clipping, and a moving average of the weights kept as the model
    lr: float = 1e-3
    optimizer: str = "adamw"
    lr_warmup: float = 0.02
    clip_grad: float = 12.0
    weights_ema: float = 0.999
    # a network trained from scratch (or a New model's untrained one) starts its output at the
    # labelled class shares (training.engine.networks.set_output_prior); a fine-tuned one
    # keeps its checkpoint's. Chosen on ACDC val (benchmarks/results/acdc_prior_init.md): over
    # labelled-only, bcp and all-labelled, 2 labelled sets x 2 seeds, +1.7 mean val Dice
    prior_init: bool = True
    # 2-D: "patch" takes patches of `size` from the native pixel grid (training.engine.patches);
    # "resize" squashes whole slices to `size` (the earlier recipe, kept for comparison)
    sampling: str = "patch"
    size: list[int] = field(default_factory=lambda: [160, 160])
    # 2-D patches: "anatomy" keeps orientation (small turns, scale, intensity); "any-orientation"
    # adds 90-degree turns and mirroring; "none"
    augment: str = "anatomy"
    # share of labelled patches centred on a structure voxel
    foreground_share: float = 1 / 3
    downsample: float = 1.0
    # largest random turn in degrees (None: the augmentation's own, 15 for patches; "resize"
    # sampling turns half its slices by up to this much on top of its 90-degree turns)
    rotate: float | None = None
    # scans with channels: share of patches whose channels all become the grey (FLAIR) one
    # (None: the augmentation's own, 0)
    missing_channels: float | None = None
    # 2-D patches: neighbouring slices given on each side as extra input channels ("2.5-D",
    # training.engine.context); a fine-tune keeps its checkpoint's
    context_slices: int = 0
    seed: int = 0
    warmup_fraction: float | None = None
    rampup_fraction: float | None = None  # None: the method's own
    consistency: float = 0.1
    num_classes: int | None = None
    base: int = 16
    depth: int = 4
    # 2-D: run the U-Net at 1/unshuffle resolution (pixel unshuffle / shuffle at its ends)
    unshuffle: int = 1
    dropout: float = 0.0
    norm: str = "group"
    device: str = "auto"
    # "bf16" runs the forward passes under bfloat16 autocast on a GPU, or on a CPU that has
    # bf16 in hardware (AMX, AVX-512 BF16); anywhere else it changes nothing
    precision: str = "fp32"
    # reproducible CUDA kernels; False lets cuDNN pick the fastest ones (long GPU runs)
    deterministic: bool = True
    # a torch.compile backend for the trained networks ("inductor"), or None for eager. The
    # bare step of the 1.9 M U-Net took 11.6 ms compiled against 17.6 ms eager on one H200
    # (benchmarks/results/step_floor_gpu_compiled.md); compiling takes 20-80 s, so it is for
    # long GPU runs, and off unless asked for.
    compile: str | None = None
    checkpoint: str = "model.pt"
    checkpoint_every: int = 0
    # seconds of training before one early checkpoint (a first preview comes sooner); 0 = none
    first_checkpoint_s: float = 0.0
    refresh_every: int = 100
    log_every: int = 10
    method_opts: dict = field(default_factory=dict)


def method_settings(spec: str) -> dict:
    """TrainConfig fields from ``NAME:opt=value,...``: options naming a TrainConfig field
    (warmup_fraction, consistency, rampup_fraction) set it, the rest go to ``method_opts``."""
    name, opts = parse_spec(spec)
    fields = {k: v for k, v in opts.items() if k in TrainConfig.__dataclass_fields__}
    return {"method": name, **fields,
            "method_opts": {k: v for k, v in opts.items() if k not in fields}}


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed Python, NumPy and torch; on CUDA ask for deterministic kernels, or else for the
    fastest ones cuDNN finds for the (fixed) batch shape."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


def make_sampler(config: TrainConfig, data: TrainData, seed: int,
                 device: torch.device | str = "cpu", model_config: dict | None = None):
    """The batch source the config asks for: native-grid 2-D patches (the default; no larger
    than the largest slice needs, given the network in ``model_config``), squashed 2-D slices
    (the earlier recipe), or 3-D patches."""
    if data.channels > 1 and (config.dims == 3 or config.sampling != "patch"):
        what = ("context slices" if data.context_slices
                else f"scans with {data.channels} channels")
        raise DataError(f"{what} train as 2-D native-grid patches only (--dims 2d"
                        " --sampling patch)")
    try:
        aug = Augmentation.named(config.augment, config.rotate, config.missing_channels)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    if config.dims == 3:  # always patches of the voxel grid
        return VolumePatchSampler(data, config.size, config.labeled_bs, config.unlabeled_bs,
                                  seed=seed, downsample=config.downsample, augmentation=aug,
                                  foreground_share=config.foreground_share)
    if config.sampling == "resize":
        return ResizedSliceSampler(data, config.size, config.labeled_bs, config.unlabeled_bs,
                                   seed=seed, rotate=config.rotate or 0.0)
    if config.sampling != "patch":
        raise DataError(f"sampling must be 'patch' or 'resize', not {config.sampling!r}")
    size = config.size
    if model_config is not None:
        divisor = 2 ** int(model_config.get("depth", config.depth)) * int(
            model_config.get("unshuffle", 1))
        size = fitted_patch(config.size, data, divisor)
    return SliceSampler(data, size, config.labeled_bs, config.unlabeled_bs, seed=seed,
                        augmentation=aug, foreground_share=config.foreground_share,
                        device=device)


def _model_config(config: TrainConfig, data: TrainData, init: dict | None) -> dict:
    if init is not None:
        net = dict(init["meta"]["network"])
        if int(net["dims"]) != config.dims:
            raise DataError(f"checkpoint is {net['dims']}D but training is {config.dims}D")
        k, inputs = int(net.get("context_slices", 0)), int(net.get("in_channels", 1))
        if inputs != network_inputs(data.channels, k):
            raise DataError(f"the checkpoint reads {scan_channels(inputs, k)} channel(s) but"
                            f" the scans have {data.channels}")
        if data.num_classes > int(net["num_classes"]):
            # a structure added to a trained model: its head grows, old classes keep weights
            net = {**net, "num_classes": int(data.num_classes)}
        return net
    return {
        "kind": "unet", "dims": config.dims,
        "in_channels": network_inputs(data.channels, config.context_slices),
        **({"context_slices": int(config.context_slices)} if config.context_slices > 0 else {}),
        "num_classes": int(config.num_classes or data.num_classes), "base": config.base,
        "depth": config.depth, "dropout": config.dropout, "norm": config.norm,
        **({"unshuffle": config.unshuffle} if config.unshuffle > 1 else {}),
    }


def train(
    config: TrainConfig,
    data: TrainData,
    on_event: Callable[[Event], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    init_checkpoint: str | None = None,
    resume: bool = False,
) -> str | None:
    """Train ``config.method`` on ``data``; returns the checkpoint path (``None`` if cancelled
    before any step). Events are plain dicts: progress, checkpoint, done, cancelled.

    Every periodic checkpoint also writes the whole training state (all networks, optimiser,
    random generators) to ``<checkpoint>.resume.pt``; ``resume=True`` continues from there, so
    a long CPU training that was stopped loses at most ``checkpoint_every`` steps."""
    emit = on_event or (lambda e: None)
    device = pick_device(config.device)
    rank, world, device = init_distributed(device)
    seed_everything(config.seed, config.deterministic)
    from training.core.cpu_math import flush_denormals

    flush_denormals()  # denormal weights and gradients make CPU steps far slower
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
        refresh_every=config.refresh_every, seed=config.seed, precision=config.precision,
        optimizer=config.optimizer, lr_warmup=config.lr_warmup, clip_grad=config.clip_grad,
        weights_ema=config.weights_ema, **config.method_opts,
    )
    method.setup(model_config, device)
    _check_output_network_fits(method.model_config, config)
    if init is not None:
        try:
            method.load_weights(init["state_dict"])
        except ValueError as exc:
            raise DataError(str(exc)) from None
    if config.prior_init and (init is None or init["meta"].get("untrained")):
        method.start_outputs_at(data.class_shares())  # a New model has learnt nothing yet
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        method.wrap(lambda m: DistributedDataParallel(m, device_ids=ids,
                                                      find_unused_parameters=True))
    if config.compile:
        method.wrap(lambda m: torch.compile(m, backend=config.compile))
    # the network's neighbouring slices, as its checkpoint says (a fine-tune keeps them)
    data = data.with_context(int(model_config.get("context_slices", 0)))
    sampler = make_sampler(config, data, seed=config.seed + 1000 * rank, device=device,
                           model_config=model_config)
    meta_base = {
        "num_classes": num_classes, "class_names": class_names,
        "normalization": dict(data.normalization), "dims": config.dims,
        "method": config.method, "data": data.summary(),
        # the patch trained on: predict's sliding window
        "size": list(getattr(sampler, "size", config.size)),
        "downsample": float(config.downsample), "seed": config.seed,
        # how predict must read the scan: native-grid sliding windows of `size` ("patch") or
        # whole slices squashed to `size` ("resize")
        # "patch3d": 3-D patches on the recipe (foreground-centred, augmented); earlier 3-D
        # models say "patch"
        "sampling": config.sampling if config.dims == 2 else "patch3d",
        "total_steps": config.steps, "config": _plain(asdict(config)),
        "init_checkpoint": str(init_checkpoint) if init_checkpoint else None,
        "trained_on": machine_words(device),
    }
    if init is not None and init["meta"].get("postprocess"):
        # A fine-tuned model is still that anatomy's model: it keeps the clean-up chosen for it.
        meta_base["postprocess"] = init["meta"]["postprocess"]
    if init is not None and init["meta"].get("whole_slice_up_to"):
        # ... and predicts in the windows its figures were measured with
        meta_base["whole_slice_up_to"] = init["meta"]["whole_slice_up_to"]
    if init is not None and init["meta"].get("new_model"):
        # ... and a model a user taught from scratch stays one (the dock's series rules)
        meta_base["new_model"] = True

    resume_path = companion_path(config.checkpoint, "resume")
    first_step = 0
    if resume:
        first_step = _restore(resume_path, method, sampler, meta_base["config"],
                              meta_base["data"])
        emit({"type": "resumed", "step": first_step, "path": str(resume_path)})

    def save(step_done: int) -> str:
        meta = {**meta_base, "steps_done": step_done}
        for name, net in method.companions().items():
            save_checkpoint(companion_path(config.checkpoint, name), net, {**meta, "role": name})
        path = save_checkpoint(config.checkpoint, method.inference_model(), meta)
        if rank == 0 and step_done < config.steps:
            state = {"step": step_done, "config": meta_base["config"], "data": meta_base["data"],
                     "method": method.state(),
                     "sampler_rng": sampler.gen.get_state(), "torch_rng": torch.get_rng_state()}
            atomic_write(resume_path, lambda fh: torch.save(state, fh))
        return path

    watch = CollapseWatch()
    warnings: list[str] = []
    meta_base["warnings"] = warnings  # what the collapse watch saw, kept with the model
    start = time.perf_counter()
    last_saved: str | None = None
    early_due = config.first_checkpoint_s > 0
    for step in range(first_step, config.steps):
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
        for msg in (watch.loss(done, losses["loss"]),
                    _one_class(watch, method, labeled, done) if done % COLLAPSE_CHECK_EVERY == 0
                    else None):
            if msg and rank == 0:
                warnings.append(msg)
                emit({"type": "warning", "message": msg, "step": done})
        elapsed = time.perf_counter() - start
        if done % max(config.log_every, 1) == 0 or done == config.steps or done == 1:
            emit({"type": "progress", "step": done, "total": config.steps, "losses": losses,
                  "elapsed": elapsed,
                  "eta": elapsed / (done - first_step) * (config.steps - done),
                  "rank": rank})
        periodic = bool(config.checkpoint_every) and done % config.checkpoint_every == 0
        early = early_due and elapsed >= config.first_checkpoint_s
        if early or periodic:
            early_due = False  # one early checkpoint, and none once a periodic one came
        if (early or periodic) and done < config.steps:
            if rank == 0:
                last_saved = save(done)
                emit({"type": "checkpoint", "path": last_saved, "step": done})
    if rank == 0:
        last_saved = save(config.steps)
        resume_path.unlink(missing_ok=True)  # finished: nothing left to resume
    barrier()
    if rank == 0:
        emit({"type": "done", "path": last_saved, "step": config.steps})
    return last_saved if rank == 0 else str(config.checkpoint)


COLLAPSE_CHECK_EVERY = 50  # steps between checks that the network still predicts several classes


@torch.no_grad()
def _one_class(watch: CollapseWatch, method, labeled: dict, step: int) -> str | None:
    """One look at the main network's prediction on the batch it just trained on."""
    net = method.main()
    net.eval()
    try:
        with method.autocast():
            logits = net(labeled["image"].to(method.device))["logits"]
    finally:
        net.train()
    return watch.prediction(step, logits.float(), labeled["label"].to(method.device))


# settings that may differ between a run and its resumption
RESUME_MAY_CHANGE = {"checkpoint_every", "first_checkpoint_s", "log_every", "device",
                     "deterministic"}


def _restore(path: Path, method, sampler, config: dict, data: dict) -> int:
    """Load a ``.resume.pt`` state into ``method`` and ``sampler``; returns the next step."""
    if not path.is_file():
        raise DataError(f"nothing to resume: {path} does not exist (it is written with each "
                        "periodic checkpoint, see --checkpoint-every)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"cannot read the training state {path}: {exc}") from None
    old = state.get("config", {})
    changed = sorted(k for k in set(old) | set(config)
                     if k not in RESUME_MAY_CHANGE and old.get(k) != config.get(k))
    if changed:
        raise DataError(f"cannot resume {path}: the run was started with other settings "
                        f"({', '.join(f'{k}: {old.get(k)} -> {config.get(k)}' for k in changed)})")
    if state.get("data") != data:
        raise DataError(f"cannot resume {path}: it was trained on other data")
    try:
        method.load_state(state["method"])
    except (ValueError, RuntimeError, KeyError) as exc:
        raise DataError(f"cannot resume {path}: {exc}") from None
    sampler.gen.set_state(state["sampler_rng"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _plain(obj):
    """Recursively turn tuples into lists so the config survives ``weights_only`` loading."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    return obj
