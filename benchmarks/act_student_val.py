"""act: each run's student against its own teacher on the val split (where options are chosen).

For every ``*.pt`` act checkpoint in a label-efficiency runs folder that has its teacher beside
it (``*.teacher.pt``), the mean Dice of student and teacher on the val split, and the points the
student loses. The speed side is `semiseg benchmark speed`.

    PYTHONPATH=. .venv/bin/python benchmarks/act_student_val.py \
        --runs benchmarks/results/acdc_act_student_1000.runs --data ../shared/data/acdc \
        --out benchmarks/results/acdc_act_student_val.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="val")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    from training.bench.benchmark import evaluate_split
    from training.engine.checkpoint import read_meta

    rows = []
    for teacher in sorted(Path(a.runs).glob("*.teacher.pt")):
        student = teacher.with_name(teacher.name.replace(".teacher.pt", ".pt"))
        if not student.exists():
            continue
        s = 100 * float(np.mean(evaluate_split(str(student), a.data, a.split)["dice"]))
        t = 100 * float(np.mean(evaluate_split(str(teacher), a.data, a.split)["dice"]))
        net = read_meta(str(student))["network"]
        rows.append((student.stem, net, s, t))
        print(f"{student.stem}: student {s:.1f}, teacher {t:.1f}", flush=True)
    if not rows:
        print(f"no act checkpoint with its teacher in {a.runs}", file=sys.stderr)
        return 2
    lines = ["# act: student against its own teacher, " + a.split + " split", "",
             "- command: `PYTHONPATH=. .venv/bin/python benchmarks/act_student_val.py "
             + " ".join(sys.argv[1:] if argv is None else argv) + "`",
             "- mean Dice over classes, 3-D per volume, mean over volumes", "",
             "| run | student network | student Dice | teacher Dice | student − teacher |",
             "|---|---|---|---|---|"]
    for name, net, s, t in rows:
        arch = (f"base {net['base']}, depth {net['depth']}"
                + (f", at 1/{net['unshuffle']} resolution" if net.get("unshuffle", 1) > 1 else ""))
        lines.append(f"| {name} | {arch} | {s:.1f} | {t:.1f} | {s - t:+.1f} |")
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
