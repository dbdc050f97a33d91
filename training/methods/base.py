"""The shared interface every semi-supervised method implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from training.core import cpu_math
from training.engine.ema import unwrap
from training.engine.losses import supervised_loss
from training.engine.networks import build_network

Batch = dict[str, torch.Tensor]


def perturb(x: torch.Tensor, std: float = 0.1, clip: float = 0.2) -> torch.Tensor:
    """Clipped Gaussian noise, the input perturbation of mean-teacher style methods."""
    return x + torch.clamp(torch.randn_like(x) * std, -clip, clip)


HEAD_PREFIXES = ("sdf.", "edge.", "cls.")

# options every method takes (TrainConfig fields), with their one-line help
GENERAL_OPTIONS: dict[str, str] = {
    "warmup_fraction": "share of the steps trained supervised only, before the method's terms",
    "consistency": "weight of the unlabelled (consistency) term",
    "rampup_fraction": "share of the steps over which that weight ramps up (sigmoid)",
    "lr": "this method's peak learning rate, over --lr (a table's arm at the rate its val chose)",
}
PASSED_TO_ALL = {"seed", "refresh_every"}  # the trainer hands these to every method
PRECISIONS = ("fp32", "bf16")
# adamw: the default; sgd: momentum 0.9, the seed papers' (SSL4MIS) optimiser; adam: L2 in the
# gradient, the earlier default
OPTIMIZERS = ("adamw", "adam", "sgd")


def grown(model: nn.Module, state_dict: dict) -> dict:
    """``state_dict`` fitted to a ``model`` with more output classes: the old classes keep their
    weights (the first rows of each output layer), the new rows keep their fresh initialisation.

    This is how a structure is added to a trained model (e.g. a fourth class on the cardiac one).
    Anything else that differs in shape is left as it is, for ``load_state_dict`` to refuse.
    """
    own = model.state_dict()
    out = dict(state_dict)
    for k, old in state_dict.items():
        new = own.get(k)
        if new is None or new.shape == old.shape or new.ndim != old.ndim:
            continue
        if new.shape[0] > old.shape[0] and new.shape[1:] == old.shape[1:]:
            merged = new.detach().clone()
            merged[: old.shape[0]] = old
            out[k] = merged
    return out


def load_compatible(model: nn.Module, state_dict: dict) -> None:
    """Load weights, tolerating optional heads that one side has and the other lacks, and
    output layers grown for new classes (:func:`grown`)."""
    missing, unexpected = model.load_state_dict(grown(model, state_dict), strict=False)
    bad = [k for k in [*missing, *unexpected] if not k.startswith(HEAD_PREFIXES)]
    if bad:
        raise ValueError(f"checkpoint weights do not fit the network (e.g. {bad[0]})")


def poly_lr(base_lr: float, step: int, total: int, power: float = 0.9,
            warmup: float = 0.0) -> float:
    """Polynomial decay ``base * (1 - step / total) ** power``, after a linear warm-up over
    the first ``warmup`` share of the steps (Adam's first steps are its least reliable)."""
    if total <= 0:
        return base_lr
    rise = int(round(warmup * total))
    if step < rise:
        return base_lr * (step + 1) / (rise + 1)
    return base_lr * max(0.0, 1.0 - step / total) ** power


def _optimizer(kind: type, params: list, device: torch.device, **kw: Any) -> torch.optim.Optimizer:
    """``kind(params, **kw)``; on a GPU its fused form where this torch has one: the same
    arithmetic in one kernel for every tensor, instead of several per tensor."""
    if device.type == "cuda":
        try:
            return kind(params, fused=True, **kw)
        except (TypeError, RuntimeError):  # an older torch without it
            pass
    return kind(params, **kw)


class Method:
    """One training method.

    Lifecycle: ``setup(model_config, device)`` builds the networks and the optimiser, optionally
    ``wrap(fn)`` (DDP), then ``step(labeled, unlabeled, step, total_steps)`` per iteration and
    ``inference_model()`` for the network to save. ``labeled`` is ``{"image": (N,1,...),
    "label": (N,...)}`` with 255 = not annotated; ``unlabeled`` is ``{"image": (M,1,...)}``.

    Subclasses implement :meth:`build` and :meth:`losses`; the first ``warmup_fraction`` of the
    steps is plain supervised training of the main network.
    """

    name = "base"
    default_warmup = 0.0
    # share of the steps after the warm-up over which the unlabelled weight ramps up
    default_rampup = 0.4
    # the method's own options: name -> (default, one line for --help); a default's type is the
    # option's type. ``semiseg train --method NAME:opt=value`` and the benchmarks set them.
    options: dict[str, tuple[Any, str]] = {}

    def __init__(
        self,
        lr: float = 1e-3,
        warmup_fraction: float | None = None,
        rampup_fraction: float | None = None,
        consistency: float = 0.1,
        ema_alpha: float = 0.99,
        weight_decay: float = 1e-4,
        precision: str = "fp32",
        optimizer: str = "adamw",
        lr_warmup: float = 0.0,
        clip_grad: float = 0.0,
        weights_ema: float = 0.0,
        **opts: Any,
    ) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {optimizer!r}")
        self.optimizer_name = optimizer
        self.lr_warmup = float(lr_warmup)
        self.clip_grad = float(clip_grad)  # max gradient norm; 0 = no clipping
        # decay of the moving average of the weights kept as the model (0 = the last weights)
        self.weights_ema = float(weights_ema)
        self.averaged: nn.Module | None = None
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        self.precision = precision
        self.use_bf16 = False  # set by setup(), which knows the device
        self.lr = lr
        self.warmup_fraction = self.default_warmup if warmup_fraction is None else warmup_fraction
        self.rampup_fraction = self.default_rampup if rampup_fraction is None else rampup_fraction
        self.consistency = consistency
        self.ema_alpha = ema_alpha
        self.weight_decay = weight_decay
        self.check_options(opts)
        self.opts = opts
        self.nets: dict[str, nn.Module] = {}
        self.device = torch.device("cpu")
        self.optimizer: torch.optim.Optimizer | None = None

    @classmethod
    def check_options(cls, names: Any) -> None:
        """Refuse option names the method does not declare (a typo must not be ignored)."""
        unknown = sorted(set(names) - set(cls.options) - set(GENERAL_OPTIONS) - PASSED_TO_ALL)
        if unknown:
            raise ValueError(f"{cls.name} has no option {', '.join(map(repr, unknown))} (its "
                             f"options: {', '.join([*cls.options, *GENERAL_OPTIONS])})")

    def opt(self, name: str) -> Any:
        """The value of one of :attr:`options` (the given one, else its default)."""
        default = self.options[name][0]
        return type(default)(self.opts.get(name, default))

    # ----- construction -------------------------------------------------------------------
    def setup(self, model_config: dict, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.use_bf16 = self.precision == "bf16" and (
            self.device.type == "cuda"
            or (self.device.type == "cpu" and cpu_math.cpu_has_fast_bf16()))
        self.model_config = dict(model_config)
        self.num_classes = int(model_config["num_classes"])
        self.build(self.model_config)
        for net in self.nets.values():
            net.to(self.device)
        self._after_build()
        params = [p for net in self.nets.values() for p in net.parameters() if p.requires_grad]
        kind, extra = {"sgd": (torch.optim.SGD, {"momentum": 0.9}),
                       "adamw": (torch.optim.AdamW, {}),
                       "adam": (torch.optim.Adam, {})}[self.optimizer_name]
        self.optimizer = _optimizer(kind, params, self.device, lr=self.lr,
                                    weight_decay=self.weight_decay, **extra)
        self._restart_average()

    def _restart_average(self) -> None:
        """Start the averaged weights from the main network's current ones."""
        if self.weights_ema > 0:
            from training.engine.ema import make_teacher

            self.averaged = make_teacher(self.main()).to(self.device)

    def build(self, model_config: dict) -> None:
        self.nets["student"] = build_network(model_config)

    def _after_build(self) -> None:
        """Hook for teachers that must exist on the device after :meth:`build`."""

    def wrap(self, fn: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap every trainable network, e.g. with DistributedDataParallel."""
        self.nets = {k: fn(v) for k, v in self.nets.items()}

    def load_weights(self, state_dict: dict) -> None:
        """Initialise the main network (and its teachers) from a checkpoint's weights."""
        load_compatible(unwrap(self.main()), state_dict)
        self._after_build()
        self._restart_average()

    def start_outputs_at(self, shares: Sequence[float]) -> None:
        """Start every trained U-Net's output at the class ``shares`` (log-prior bias), and its
        teachers and weight average from there: for a network that has learnt nothing yet."""
        from training.engine.networks import set_output_prior

        for net in self.nets.values():
            set_output_prior(unwrap(net), shares)
        self._after_build()
        self._restart_average()

    def main(self) -> nn.Module:
        return self.nets["student"]

    # ----- resuming ---------------------------------------------------------------------------
    def _modules(self) -> dict[str, nn.Module]:
        """Every network the method holds (trained ones and teachers), by a stable name."""
        mods = {f"nets.{k}": unwrap(v) for k, v in self.nets.items()}
        for k, v in vars(self).items():
            if isinstance(v, nn.Module) and not any(v is m for m in mods.values()):
                mods[k] = v
        return mods

    def state(self) -> dict:
        """Weights of every network and the optimiser's state: plain tensors and numbers, so
        that it loads with ``weights_only``."""
        assert self.optimizer is not None
        return {"modules": {k: m.state_dict() for k, m in self._modules().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict) -> None:
        """Undo :meth:`state` on a method set up with the same configuration."""
        mods = self._modules()
        if set(mods) != set(state["modules"]):
            raise ValueError("the saved training state belongs to another method or network")
        for k, m in mods.items():
            m.load_state_dict(state["modules"][k])
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["optimizer"])

    def inference_model(self) -> nn.Module:
        """The network to save and predict with: the moving average of the main network's
        weights when ``weights_ema`` is set (smoother than the last step's), else the main
        network itself."""
        return self.averaged if self.averaged is not None else unwrap(self.main())

    def companions(self) -> dict[str, nn.Module]:
        """Other networks worth keeping next to the checkpoint (e.g. the teacher of ``act``)."""
        return {}

    # ----- training -----------------------------------------------------------------------
    def schedule_steps(self, total: int) -> int:
        """The steps the warm-up and ramp-up are shares of: all of them, unless a method ends
        with a phase of its own (``act``'s distillation)."""
        return total

    def warmup_steps(self, total: int) -> int:
        return int(round(self.warmup_fraction * self.schedule_steps(total)))

    def learning_rate(self, step: int, total: int) -> float:
        """Poly decay over :meth:`schedule_steps`; a method's own final phase starts the
        schedule again."""
        main = self.schedule_steps(total)
        if step < main:
            return poly_lr(self.lr, step, main, warmup=self.lr_warmup)
        return poly_lr(self.lr, step - main, total - main, warmup=self.lr_warmup)

    def ramp(self, step: int, total: int) -> float:
        from training.engine.losses import sigmoid_rampup

        warm = self.warmup_steps(total)
        main = self.schedule_steps(total)
        return sigmoid_rampup(step - warm, int(self.rampup_fraction * max(main - warm, 1)))

    def step(self, labeled: Batch, unlabeled: Batch | None, step: int, total_steps: int) -> dict:
        """One optimisation step; returns the losses as plain floats."""
        assert self.optimizer is not None, "call setup() first"
        for net in self.nets.values():
            net.train()
        lr = self.learning_rate(step, total_steps)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        labeled = {k: v.to(self.device) for k, v in labeled.items()}
        if unlabeled is not None:
            unlabeled = {k: v.to(self.device) for k, v in unlabeled.items()}
        in_warmup = step < self.warmup_steps(total_steps) or unlabeled is None
        with self.autocast():
            if in_warmup:
                terms = self.warmup_losses(labeled)
            else:
                terms = self.losses(labeled, unlabeled, step, total_steps)
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip_grad > 0:
            torch.nn.utils.clip_grad_norm_(
                [p for g in self.optimizer.param_groups for p in g["params"]], self.clip_grad)
        self.optimizer.step()
        self.after_step(step, total_steps, in_warmup)
        if self.averaged is not None:
            from training.engine.ema import ema_update

            origin = self.average_origin(step, total_steps)
            if 0 < origin == step:
                self._restart_average()
            # early on the average follows closely ((1 + t) / (10 + t)), so a short Retrain's
            # model is not dragged back towards its starting weights
            t = step - origin
            decay = min(self.weights_ema, (1.0 + t) / (10.0 + t))
            ema_update(self.averaged, self.main(), decay)
        out = {k: float(v.detach()) for k, v in terms.items()}
        out["loss"] = float(loss.detach())
        out["lr"] = lr
        return out

    def autocast(self) -> torch.autocast:
        """bfloat16 forward passes when asked for, on a GPU or on a CPU that computes bf16 in
        hardware (decided once, in :meth:`setup`); a no-op context otherwise. The weights,
        optimiser and EMA teachers stay float32; softmax and losses run in float32."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16)

    def average_origin(self, step: int, total: int) -> int:
        """The step from which the moving average of the weights counts: 0, or the start of a
        method's own final phase (:meth:`schedule_steps`), where it restarts from the main
        network's weights instead of holding mostly those learnt before."""
        main = self.schedule_steps(total)
        return main if step >= main else 0

    def warmup_losses(self, labeled: Batch) -> dict[str, torch.Tensor]:
        out = self.main()(labeled["image"])
        return {"sup": supervised_loss(out["logits"], labeled["label"])}

    def losses(
        self, labeled: Batch, unlabeled: Batch, step: int, total: int
    ) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def after_step(self, step: int, total: int, in_warmup: bool) -> None:
        """Hook run after the optimiser step (EMA updates, teacher refreshes)."""
