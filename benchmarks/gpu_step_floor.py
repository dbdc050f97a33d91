"""How fast can one training step of the 1.9 M-parameter U-Net be on this GPU? (issue 23, item 3)

The engine's step (benchmarks/step_times.py) took 0.024 s on one H200 for batch 24 at 256 px,
in fp32 and in bf16 alike: the GPU was not the limit. This times the bare step (forward, the
engine's loss, backward, fused AdamW) on a fixed random batch already on the GPU, so that no
sampler, logging or per-step synchronisation is counted, in a few forms:

- eager fp32 and eager bf16 autocast (what the engine runs);
- bf16 with channels-last tensors;
- the whole step captured once as a CUDA graph and replayed (no Python, no kernel launches
  from the CPU), fp32 and bf16, and bf16 with channels-last;
- the network and loss compiled by ``torch.compile`` (fused kernels), with and without
  channels-last, and with inductor's own CUDA graphs (``mode="reduce-overhead"``).

``--forms`` picks some; ``--budget-s`` skips the forms left once the time is spent. The table
is rewritten after every form, so a lease that ends early still returns what was measured.

Then a profile of the engine's own step (``train`` with the recipe's sampler), the ten largest
CPU-side and GPU-side costs, to show where the rest of its 0.024 s goes.

    python benchmarks/gpu_step_floor.py --pack .gpu/acdc_train.npz --out $OUT/step_floor.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_paper_budget import _engine_imports  # noqa: E402

_engine_imports()

from training.engine.losses import supervised_loss  # noqa: E402
from training.engine.networks import build_network, count_parameters  # noqa: E402
from training.methods.base import _optimizer  # noqa: E402

NET = {"kind": "unet", "dims": 2, "in_channels": 1, "num_classes": 4, "base": 16, "depth": 4,
       "dropout": 0.0, "norm": "group"}


def _timed(fn, steps: int, device: torch.device, with_warmup: bool = False):
    t0 = time.perf_counter()
    for _ in range(5):  # compiling, cuDNN's kernel search and the allocator settle
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    per_step = (time.perf_counter() - t) / steps
    return (per_step, warm) if with_warmup else per_step


def _batch(device, batch, size, channels_last: bool):
    """The network on ``device`` and one fixed random batch (image, labels) for it."""
    net = build_network(NET).to(device)
    x = torch.randn(batch, 1, size, size, device=device)
    y = torch.randint(0, 4, (batch, size, size), device=device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    return net, x, y


def _engine_optimiser(net, device):
    # the engine's own choice of optimiser form (fused on a GPU)
    return _optimizer(torch.optim.AdamW, list(net.parameters()), device, lr=1e-3,
                      weight_decay=1e-4)


def _eager(device, batch, size, bf16: bool, channels_last: bool):
    net, x, y = _batch(device, batch, size, channels_last)
    opt = _engine_optimiser(net, device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = supervised_loss(net(x)["logits"], y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _compiled(device, batch, size, channels_last: bool, mode: str | None = None):
    """bf16 step with the network and loss compiled; the fused optimiser stays eager."""
    net, x, y = _batch(device, batch, size, channels_last)
    opt = _engine_optimiser(net, device)

    def forward(inp, lab):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return supervised_loss(net(inp)["logits"], lab)

    fwd = torch.compile(forward, mode=mode)

    def step():
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        loss = fwd(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _graphed(device, batch, size, bf16: bool, channels_last: bool = False):
    """The whole step captured as one CUDA graph (static batch; the optimiser capturable)."""
    net, x, y = _batch(device, batch, size, channels_last)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4, capturable=True,
                            foreach=True)

    def body():
        # autocast's cache of cast weights does not survive capture (PyTorch's CUDA-graph notes)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16, cache_enabled=False):
            loss = supervised_loss(net(x)["logits"], y)
        loss.backward()
        opt.step()
        return loss

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
        for _ in range(3):
            opt.zero_grad(set_to_none=False)
            body()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=False)
    with torch.cuda.graph(graph):
        body()
    return graph.replay


def _profile_engine(pack: str, steps: int, size: int, batch: int, device: str = "cuda") -> str:
    from step_times import _pack_data

    from training.fit.trainer import TrainConfig, train

    data = _pack_data(pack)
    cfg = TrainConfig(method="supervised", steps=steps, size=[size, size], base=16, depth=4,
                      labeled_bs=batch, unlabeled_bs=0, log_every=1, device=device,
                      precision="bf16", deterministic=False, checkpoint="/tmp/floor_prof.pt")
    acts = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    # steps only: the first `wait + warmup` steps (and the data's upload) are left out
    plan = torch.profiler.schedule(wait=max(steps // 4, 1), warmup=2, active=steps // 2)
    with torch.profiler.profile(activities=acts, schedule=plan) as prof:
        train(cfg, data, on_event=lambda e: e["type"] == "progress" and prof.step())
    table = prof.key_averages().table
    return ("### by CPU time\n\n```\n" + table(sort_by="self_cpu_time_total", row_limit=12)
            + "\n```\n\n### by GPU time\n\n```\n"
            + table(sort_by="self_cuda_time_total" if device == "cuda" else "cpu_time_total",
                    row_limit=12) + "\n```\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pack", default=None, help="ACDC pack for the engine profile")
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--forms", nargs="+", default=None, help="which forms (default: all)")
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="skip the forms left once this many seconds are spent")
    a = ap.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    b, z = a.batch, a.size
    forms = {
        "eager fp32": lambda: _eager(dev, b, z, False, False),
        "eager bf16": lambda: _eager(dev, b, z, True, False),
        "eager bf16, channels-last": lambda: _eager(dev, b, z, True, True),
        "compiled bf16": lambda: _compiled(dev, b, z, False),
        "compiled bf16, channels-last": lambda: _compiled(dev, b, z, True),
    }
    if dev.type == "cuda":
        forms.update({
            "CUDA graph fp32": lambda: _graphed(dev, b, z, False),
            "CUDA graph bf16": lambda: _graphed(dev, b, z, True),
            "CUDA graph bf16, channels-last": lambda: _graphed(dev, b, z, True, True),
            "compiled bf16, reduce-overhead": lambda: _compiled(dev, b, z, False,
                                                                "reduce-overhead"),
        })
    chosen = a.forms or list(forms)
    unknown = [f for f in chosen if f not in forms]
    if unknown:
        ap.error(f"unknown forms {unknown}; known on {dev.type}: {list(forms)}")
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    head = [
        "# The bare training step of the 1.9 M-parameter U-Net",
        "",
        f"- command: `python benchmarks/gpu_step_floor.py {' '.join(sys.argv[1:])}`",
        f"- device: {where}, torch {torch.__version__}; network: 2-D U-Net base 16, depth 4 "
        f"({count_parameters(build_network(NET)):,} parameters), GroupNorm; batch {a.batch} "
        f"at {a.size}x{a.size}; a fixed random batch on the device; the engine's loss "
        "(0.5 CE + 0.5 Dice); fused AdamW",
        f"- mean over {a.steps} steps after 5 warm-up steps (which include any compiling)",
        "",
        "| form | ms/step | 0.054 s / this | set-up and warm-up s |",
        "|---|---|---|---|",
    ]
    rows: list[str] = []
    start = time.perf_counter()
    for name in chosen:
        if time.perf_counter() - start > a.budget_s:
            rows.append(f"| {name} | skipped: the {a.budget_s:.0f} s budget was spent | | |")
        else:
            t0 = time.perf_counter()
            try:
                fn = forms[name]()
                s, _ = _timed(fn, a.steps, dev, with_warmup=True)
                rows.append(f"| {name} | {1000 * s:.2f} | {0.054 / s:.1f}x | "
                            f"{time.perf_counter() - t0 - s * a.steps:.0f} |")
            except Exception as exc:  # one form failing must not lose the others
                msg = " ".join(str(exc).split())[:160].replace("|", "/")
                rows.append(f"| {name} | failed: {type(exc).__name__}: {msg} | | |")
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        print(rows[-1], flush=True)
        Path(a.out).write_text("\n".join(head + rows) + "\n", encoding="utf-8")
    lines = head + rows + [""]
    if a.pack:
        try:
            lines += ["## Profile of the engine's step (`train`, supervised, bf16, the recipe's "
                      "sampler)", "",
                      _profile_engine(a.pack, 60 if dev.type == "cuda" else 8, a.size,
                                      a.batch, dev.type)]
        except Exception as exc:
            lines += [f"profile failed: {type(exc).__name__}: {exc}"]
    Path(a.out).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
