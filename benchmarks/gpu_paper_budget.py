"""ACDC at the seed papers' budget on a GPU: labelled-only, bcp and all-labelled (issue 12, item 5).

The BCP paper trains a 2-D U-Net for 30 k iterations on 256 x 256 slices, batch 12 labelled +
12 unlabelled. This script runs those arms side by side on one GPU inside a fixed wall-clock
budget, then the checkpoints come back and are scored here on the CPU with the same
``evaluate_split`` as ``semiseg benchmark label-efficiency``.

Four steps (commands in benchmarks/results/acdc_paper_budget_gpu.md):

1. ``pack``: the train split's raw volumes (uint16 images, uint8 labels) into one ``.npz``,
   with the names of each labelled set. The GPU machine gets no ``../shared`` folder.
2. ``run`` (on the GPU machine): starts one worker process per (arm, labelled set, seed). Each
   worker first times a few steps of its arm in fp32 and in bf16 (all workers at once, so the
   times include the sharing of the GPU); the coordinator then picks the precision and the
   largest step count (at most ``--max-steps``) that the slowest arm finishes before the
   deadline, and every arm trains that many steps: the same budget for all.
3. ``evaluate`` (here): test and val Dice / HD95 of each returned checkpoint, gap recovered,
   written as a markdown table next to the paper's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ARMS = ("labelled-only", "bcp", "all-labelled")
# ACDC figures as tabulated in the BCP paper (Bai et al., CVPR 2023, table 1, 5 % = 3 patients)
PAPER = {"labelled-only": 47.83, "bcp": 87.59, "all-labelled": 91.44}


def _engine_imports() -> None:
    """The GPU machine has torch and (carried) MONAI but no SimpleITK. This script reads no
    image file there (the volumes come from the pack), so an empty stand-in lets the engine's
    modules import; any use of it would fail loudly with AttributeError."""
    try:
        import SimpleITK  # noqa: F401
    except ImportError:
        import types

        sys.modules["SimpleITK"] = types.ModuleType("SimpleITK")


# ----- 1. pack ---------------------------------------------------------------------------

def cmd_pack(args: argparse.Namespace) -> int:
    import numpy as np

    from training.bench.benchmark import labelled_patients
    from training.core.io import read_image, read_labels
    from training.engine.data import class_names_from_index, scan_dataset, select_labeled

    cases = [c for c in scan_dataset(args.data) if c.split == "train"]
    arrays, names = {}, []
    for c in cases:
        img, _ = read_image(c.image)
        lab, _ = read_labels(c.label)
        if img.min() < 0 or img.max() > 65535:
            raise SystemExit(f"{c.name}: intensities outside uint16")
        arrays[f"img_{c.name}"] = img.astype(np.uint16)
        arrays[f"lab_{c.name}"] = lab.astype(np.uint8)
        names.append(c.name)
    sets = {}
    for k in range(args.sets):
        chosen = labelled_patients(args.data, str(args.labeled), k)
        lab_cases, _ = select_labeled(scan_dataset(args.data), chosen)
        sets[str(k)] = {"patients": chosen, "cases": [c.name for c in lab_cases]}
    info = {"names": names, "sets": sets, "class_names": class_names_from_index(args.data),
            "source": str(args.data)}
    arrays["info"] = np.frombuffer(json.dumps(info).encode(), dtype=np.uint8)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"{args.out}: {len(names)} train volumes, {Path(args.out).stat().st_size / 1e6:.1f} MB; "
          f"labelled sets {json.dumps(sets)}")
    return 0


def _load_pack(path: str):
    import numpy as np

    z = np.load(path)
    info = json.loads(bytes(z["info"]).decode())
    vols = {n: (z[f"img_{n}"], z[f"lab_{n}"]) for n in info["names"]}
    return info, vols


def _train_data(arm: str, info: dict, vols: dict, labelled_set: int):
    from training.engine.data import TrainData

    chosen = set(info["sets"][str(labelled_set)]["cases"])
    if arm == "all-labelled":
        lab, unl = list(vols), []
    else:
        lab = [n for n in vols if n in chosen]
        unl = [n for n in vols if n not in chosen] if arm == "bcp" else []
    return TrainData.from_arrays(
        [vols[n][0] for n in lab], [vols[n][1] for n in lab], [vols[n][0] for n in unl],
        class_names=info["class_names"], names=lab)


def _config(args, arm: str, seed: int, steps: int, precision: str, checkpoint: str,
            warmup: float | None = None):
    from training.fit.trainer import TrainConfig, method_settings

    settings = method_settings("bcp" if arm == "bcp" else "supervised")
    if warmup is not None:
        settings["warmup_fraction"] = warmup
    return TrainConfig(
        **settings, dims=2, steps=steps, size=[args.size, args.size],
        labeled_bs=args.labeled_bs, unlabeled_bs=args.unlabeled_bs if arm == "bcp" else 0,
        **({"lr": args.lr} if args.lr else {}), seed=seed, device="auto", precision=precision,
        deterministic=False,
        checkpoint=checkpoint, log_every=1)


# ----- 2. run (GPU machine) --------------------------------------------------------------

def _log(out: Path, msg: str) -> None:
    line = f"{time.strftime('%H:%M:%S')} {msg}\n"
    with open(out / "log.txt", "a", encoding="utf-8") as fh:
        fh.write(line)
    print(line, end="", flush=True)


def _run_id(arm: str, labelled_set: int, seed: int) -> str:
    return f"{arm}_set{labelled_set}_seed{seed}"


def cmd_worker(args: argparse.Namespace) -> int:
    """One arm: probe its step time, wait for the coordinator's decision, train, copy out."""
    _engine_imports()
    import torch

    from training.fit.trainer import train

    torch.set_num_threads(args.threads)
    out, work = Path(args.out), Path(args.work)
    rid = _run_id(args.arm, args.set, args.seed)
    info, vols = _load_pack(args.pack)
    data = _train_data(args.arm, info, vols, args.set)
    _log(out, f"{rid}: {len(data.images)} labelled, {len(data.unlabeled)} unlabelled volumes")
    (work / f"{rid}.ready").write_text("")
    while not (work / "probe.go").exists():  # probe together, so the times include the sharing
        time.sleep(0.2)
    probe = {}
    for precision in args.precisions.split(","):
        times: dict[int, float] = {}
        # warm-up 0 for bcp: time its (costlier) copy-paste steps, not the supervised warm-up
        cfg = _config(args, args.arm, args.seed, args.probe_steps, precision,
                      str(work / f"{rid}_probe.pt"), warmup=0.0 if args.arm == "bcp" else None)
        try:
            train(cfg, data, on_event=lambda e, t=times: e["type"] == "progress"
                  and t.__setitem__(e["step"], e["elapsed"]))
        except Exception as exc:  # a precision that fails here is simply not chosen
            _log(out, f"{rid}: {precision} probe failed: {type(exc).__name__}: {exc}")
            probe[precision] = None
            continue
        skip = args.probe_steps // 3  # the first steps include cuDNN's kernel search
        probe[precision] = (times[args.probe_steps] - times[skip]) / (args.probe_steps - skip)
    (work / f"{rid}.probe.json").write_text(json.dumps(probe))
    _log(out, f"{rid}: probe s/step {json.dumps(probe)}")
    decision_file = work / "decision.json"
    while True:  # the coordinator decides once every worker has probed
        if args.give_up_at and time.time() > args.give_up_at:
            _log(out, f"{rid}: no decision came; giving up")
            return 1
        if decision_file.exists():
            decision = json.loads(decision_file.read_text())
            if decision.get("round") is not None and decision["round"] >= 0:
                break
        time.sleep(0.2)
    if rid not in decision["runs"]:
        _log(out, f"{rid}: not kept for training ({decision['why']})")
        return 0
    steps, precision = int(decision["steps"]), decision["precision"]
    deadline = float(decision["deadline"])
    cfg = _config(args, args.arm, args.seed, steps, precision, str(work / f"{rid}.pt"))
    cfg.log_every = max(steps // 10, 1)
    t0 = time.time()
    path = train(cfg, data, should_stop=lambda: time.time() > deadline,
                 on_event=lambda e: e["type"] in ("progress", "cancelled", "done") and _log(
                     out, f"{rid}: {e['type']} step {e.get('step')}"
                     + (f" loss {e['losses']['loss']:.3f}" if e["type"] == "progress" else "")))
    wall = time.time() - t0
    if path:
        shutil.copy(path, out / f"{rid}.pt")
    from training.engine.checkpoint import read_checkpoint

    done = int(read_checkpoint(path)["meta"]["steps_done"]) if path else 0
    result = {"run": rid, "steps_planned": steps, "steps_done": done, "precision": precision,
              "train_seconds": wall, "gpu": torch.cuda.get_device_name(0)
              if torch.cuda.is_available() else "none"}
    (work / f"{rid}.result.json").write_text(json.dumps(result))
    _log(out, f"{rid}: finished {done}/{steps} steps in {wall:.0f} s")
    return 0


def _runs(runs: str, arms: str) -> list[tuple[str, int, int]]:
    """(arm, labelled set, seed) for each ``set:seed`` in ``runs`` and each arm; all-labelled
    once per seed, as the labelled set does not change it."""
    out, seen = [], set()
    for s in runs.split(","):
        labelled_set, seed = (int(x) for x in s.split(":"))
        for arm in arms.split(","):
            if arm == "all-labelled":
                if seed in seen:
                    continue
                seen.add(seed)
            out.append((arm, labelled_set, seed))
    return out


def _wait_for(paths: list[Path], until: float) -> bool:
    while time.time() < until:
        if all(p.exists() for p in paths):
            return True
        time.sleep(0.5)
    return False


def cmd_run(args: argparse.Namespace) -> int:
    t_start = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for stale in [*work.glob("*.json"), *work.glob("*.ready"), *work.glob("probe.go")]:
        stale.unlink()
    runs = _runs(args.runs, args.arms)
    rids = [_run_id(*r) for r in runs]
    _log(out, f"coordinator: {len(runs)} workers: {', '.join(rids)}; budget {args.budget_s} s")
    summary: dict = {"runs": rids, "args": vars(args), "probe": {}}
    procs = []
    for arm, labelled_set, seed in runs:
        cmd = [sys.executable, __file__, "worker", "--arm", arm, "--set", str(labelled_set),
               "--seed", str(seed), *_shared_flags(args)]
        procs.append(subprocess.Popen(cmd))
    _wait_for([work / f"{r}.ready" for r in rids], t_start + args.probe_timeout_s / 2)
    (work / "probe.go").write_text("")
    ok = _wait_for([work / f"{r}.probe.json" for r in rids], t_start + args.probe_timeout_s)
    probes = {r: json.loads((work / f"{r}.probe.json").read_text()) for r in rids
              if (work / f"{r}.probe.json").exists()}
    summary["probe"] = probes
    if not ok:
        _log(out, f"coordinator: only {len(probes)} of {len(rids)} workers probed in time")
    train_end = t_start + args.budget_s
    try:
        decision = _decide(args, probes, train_end)
    except Exception as exc:  # the workers must never wait for a decision that cannot come
        decision = {"round": 0, "runs": [], "why": f"no decision: {type(exc).__name__}: {exc}"}
    summary["decision"] = decision
    (work / "decision.json.tmp").write_text(json.dumps(decision))
    os.replace(work / "decision.json.tmp", work / "decision.json")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _log(out, f"coordinator: {json.dumps(decision)}")
    for p in procs:
        try:
            p.wait(timeout=max(train_end + 30 - time.time(), 1))
        except subprocess.TimeoutExpired:
            p.kill()
    summary["results"] = {r: json.loads((work / f"{r}.result.json").read_text())
                          for r in rids if (work / f"{r}.result.json").exists()}
    summary["wall_seconds"] = time.time() - t_start
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    _log(out, f"coordinator: done in {summary['wall_seconds']:.0f} s")
    return 0


def _decide(args, probes: dict, train_end: float) -> dict:
    """Which workers train, how many steps and in which precision: the slowest arm sets the
    pace, each precision's step count fits the time left."""
    keep = list(probes)
    if not keep:
        return {"round": 0, "runs": [], "why": "no worker probed in time"}
    precisions = args.precisions.split(",")
    left = train_end - time.time() - 10.0
    # a precision that failed in any worker is out
    precisions = [p for p in precisions if all(probes[r].get(p) for r in keep)]
    if not precisions:
        return {"round": 0, "runs": [], "why": "every precision failed in some worker"}
    slowest = {p: max(probes[r][p] for r in keep) for p in precisions}
    steps = {p: int(min(args.max_steps, left / (slowest[p] * args.safety))) for p in precisions}
    if args.fixed_steps:  # the budget of an earlier run, cut at the deadline if need be
        steps = {p: args.fixed_steps for p in precisions}
        precision = args.fixed_precision or min(precisions, key=lambda p: slowest[p])
    else:
        precision = max(precisions, key=lambda p: (steps[p], p == "fp32"))
    if not args.fixed_steps and steps.get("fp32", 0) >= args.max_steps:
        precision = "fp32"  # the paper's precision whenever it reaches the paper's budget
    if steps[precision] < 1:
        return {"round": 0, "runs": [], "why": f"no time left to train ({left:.0f} s)"}
    return {"round": 0, "runs": keep, "steps": steps[precision], "precision": precision,
            "deadline": train_end, "slowest_s_per_step": slowest,
            "steps_by_precision": steps, "why": "probe"}


def _shared_flags(args) -> list[str]:
    return ["--pack", args.pack, "--out", args.out, "--work", args.work,
            "--size", str(args.size), "--labeled-bs", str(args.labeled_bs),
            "--unlabeled-bs", str(args.unlabeled_bs), "--lr", str(args.lr or 0),
            "--probe-steps", str(args.probe_steps), "--precisions", args.precisions,
            "--threads", str(args.threads),
            "--give-up-at", str(time.time() + getattr(args, "budget_s", 0))]


# ----- 3. evaluate (here) ----------------------------------------------------------------

def cmd_evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from training.bench.benchmark import evaluate_split, machine_description

    folder = Path(args.results)
    summary = json.loads((folder / "summary.json").read_text())
    scores: dict[str, dict] = {}
    for rid in summary["runs"]:
        ckpt = folder / f"{rid}.pt"
        if not ckpt.exists():
            continue
        scores[rid] = {"test": evaluate_split(str(ckpt), args.data, "test"),
                       "val": evaluate_split(str(ckpt), args.data, "val")}
        print(rid, round(100 * float(np.mean(scores[rid]["test"]["dice"])), 2), flush=True)
    Path(args.json).write_text(json.dumps({"summary": summary, "scores": scores}, indent=1))
    Path(args.out).write_text(_table(summary, scores, args, machine_description()))
    print(Path(args.out).read_text())
    return 0


def _mean(d: dict, key: str = "dice") -> float:
    import numpy as np

    return 100 * float(np.mean(d[key]))


def _table(summary: dict, scores: dict, args, machine: str) -> str:
    dec = summary["decision"]
    res = summary.get("results", {})
    lines = [
        "# ACDC at the papers' budget on one GPU: labelled-only, bcp, all-labelled",
        "",
        f"- Budget: **{dec['steps']} steps** for every arm (the papers': 30 000), "
        f"{dec['precision']}, 2-D U-Net (base 16, depth 4), "
        f"{summary['args']['size']} px, batch {summary['args']['labeled_bs']} labelled"
        f" + {summary['args']['unlabeled_bs']} unlabelled (bcp), "
        + (f"Adam lr {summary['args']['lr']} with poly decay, the engine's defaults otherwise"
           if summary['args']['lr'] else "the recipe of `semiseg train` (native-grid patches,"
           " orientation-keeping augmentation, AdamW 1e-3, warm-up, poly decay, gradient "
           "clipping, weight average)")
        + "; bcp on its validated defaults.",
        f"- Trained on one NVIDIA H200, all arms at once; step count chosen by the script from "
        f"its probe (slowest arm s/step: {json.dumps(dec['slowest_s_per_step'])}; steps "
        f"reachable: {json.dumps(dec['steps_by_precision'])}).",
        f"- Scored here on the CPU ({machine}).",
        "- Data: the project's ACDC subset (50 patients): 31 train patients, 3 labelled "
        "(about 10 % of this pool, 5 % in the paper's 70), 7 val, 12 test patients (24 volumes)."
        " The paper's figures come from the full 100-patient ACDC with its own test split, so "
        "they are a reference, not a like-for-like comparison.",
        "",
        "| run | steps done | train s | test Dice (RV / Myo / LV) | test mean | HD95 | val mean |",
        "|---|---|---|---|---|---|---|",
    ]
    for rid in summary["runs"]:
        if rid not in scores:
            lines.append(f"| {rid} | not returned | | | | | |")
            continue
        t, v = scores[rid]["test"], scores[rid]["val"]
        r = res.get(rid, {})
        per = " / ".join(f"{100 * x:.1f}" for x in t["dice"])
        lines.append(f"| {rid} | {r.get('steps_done', '?')} | {r.get('train_seconds', 0):.0f} | "
                     f"{per} | {_mean(t):.2f} | {float(sum(t['hd95']) / len(t['hd95'])):.1f} | "
                     f"{_mean(v):.2f} |")
    lines += ["", "## Gap recovered, (bcp - labelled-only) / (all-labelled - labelled-only)", "",
              "| labelled set, seed | split | labelled-only | bcp | all-labelled | gap recovered |",
              "|---|---|---|---|---|---|"]
    for key in sorted({rid.split("_", 1)[1] for rid in scores}):
        seed = key.rsplit("_", 1)[1]
        # all-labelled is one run per seed: the labelled set does not change it
        full = next((r for r in (f"all-labelled_{key}", f"all-labelled_set0_{seed}")
                     if r in scores), "")
        trio = [f"labelled-only_{key}", f"bcp_{key}", full]
        if not all(t in scores for t in trio):
            continue
        for split in ("val", "test"):
            lo, b, al = (_mean(scores[t][split]) for t in trio)
            gap = (b - lo) / (al - lo) if al - lo > 1 else float("nan")
            lines.append(f"| {key} | {split} | {lo:.2f} | {b:.2f} | {al:.2f} | {100 * gap:.0f} % |")
    p = PAPER
    paper_gap = (p["bcp"] - p["labelled-only"]) / (p["all-labelled"] - p["labelled-only"])
    lines.append(f"| BCP paper (ACDC, 5 % labelled) | test | {p['labelled-only']} | {p['bcp']} | "
                 f"{p['all-labelled']} | {100 * paper_gap:.0f} % |")
    lines += ["", "## Commands", "", "```", *args.commands.split(";;"), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--data", required=True)
    pk.add_argument("--labeled", type=int, default=3)
    pk.add_argument("--sets", type=int, default=2)
    pk.add_argument("--out", required=True)
    for name in ("run", "worker"):
        r = sub.add_parser(name)
        r.add_argument("--pack", required=True)
        r.add_argument("--out", required=True)
        r.add_argument("--work", default="/tmp/paper_budget")
        r.add_argument("--size", type=int, default=256)
        r.add_argument("--labeled-bs", type=int, default=12)
        r.add_argument("--unlabeled-bs", type=int, default=12)
        r.add_argument("--lr", type=float, default=0.0,
                       help="0: the recipe's (TrainConfig), AdamW 1e-3")
        r.add_argument("--probe-steps", type=int, default=45)
        r.add_argument("--precisions", default="fp32,bf16")
        r.add_argument("--threads", type=int, default=2)
        r.add_argument("--give-up-at", type=float, default=0.0,
                       help="worker: epoch seconds after which it stops waiting for a decision")
        if name == "run":
            r.add_argument("--runs", default="0:0,1:0", help="labelled_set:seed,...")
            r.add_argument("--budget-s", type=float, default=480,
                           help="seconds from start until every arm has finished training")
            r.add_argument("--probe-timeout-s", type=float, default=150)
            r.add_argument("--max-steps", type=int, default=30000)
            r.add_argument("--arms", default=",".join(ARMS))
            r.add_argument("--fixed-steps", type=int, default=0,
                           help="train exactly this many steps (an earlier run's budget)")
            r.add_argument("--fixed-precision", default=None)
            r.add_argument("--safety", type=float, default=1.15,
                           help="margin on the probed step time")
        else:
            r.add_argument("--arm", choices=ARMS, required=True)
            r.add_argument("--set", type=int, default=0)
            r.add_argument("--seed", type=int, default=0)
    ev = sub.add_parser("evaluate")
    ev.add_argument("--results", required=True, help="folder with summary.json and the .pt files")
    ev.add_argument("--data", required=True)
    ev.add_argument("--out", required=True)
    ev.add_argument("--json", required=True)
    ev.add_argument("--commands", default="", help="the commands that made it, ';;'-separated")
    args = ap.parse_args(argv)
    return {"pack": cmd_pack, "run": cmd_run, "worker": cmd_worker,
            "evaluate": cmd_evaluate}[args.cmd](args)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    raise SystemExit(main())
