import json
import os
import threading
import time

import pytest

from training.bench.benchmark import ALL_LABELED, LABELED_ONLY, render_table
from training.methods import parse_spec as parse_variant


def _r(d, seed):
    return {"dice": [d, d], "hd95": [1.0, 3.0], "seed": seed, "step_seconds": 0.5}


def test_gap_recovered_uses_baselines_of_the_same_budget():
    results = {
        LABELED_ONLY: [_r(0.4, 0), _r(0.6, 1)],  # mean 0.5
        "bcp": [_r(0.8, 0), _r(0.64, 1)],  # (0.8-0.5)/(0.9-0.5)=75 %, (0.64-0.5)/0.4=35 %
        ALL_LABELED: [_r(0.9, 0), _r(0.9, 1)],
    }
    table = render_table(results, ["bg", "a", "b"], "# header")
    row = next(line for line in table.splitlines() if line.startswith("| bcp |"))
    assert "55 ± 20 %" in row  # mean and spread over seeds of 75 and 35
    assert "+22.0, above every seed" in row  # 0.8 and 0.64 both above 0.4 and 0.6
    assert "72.0 ± 8.0" in row  # mean Dice in %
    baseline = next(line for line in table.splitlines() if line.startswith("| labelled-only |"))
    assert "—" in baseline and "50.0 ± 10.0" in baseline


def test_a_run_within_the_baselines_seed_spread_is_said_to_be():
    results = {LABELED_ONLY: [_r(0.4, 0), _r(0.6, 1)], "ua_mt": [_r(0.55, 0), _r(0.65, 1)],
               "dtml": [_r(0.3, 0), _r(0.35, 1)], ALL_LABELED: [_r(0.9, 0), _r(0.9, 1)]}
    rows = {line.split("|")[1].strip(): line for line in
            render_table(results, ["bg", "a", "b"], "#").splitlines() if line.startswith("| ")}
    assert "+10.0, within the spread" in rows["ua_mt"]
    assert "-17.5, below every seed" in rows["dtml"]
    one = render_table({LABELED_ONLY: [_r(0.4, 0)], "bcp": [_r(0.6, 0)],
                        ALL_LABELED: [_r(0.9, 0)]}, ["bg", "a", "b"], "#")
    assert "+20.0, one seed, no spread" in one


def test_gap_is_not_reported_when_baselines_do_not_separate():
    results = {LABELED_ONLY: [_r(0.5, 0)], "bcp": [_r(0.6, 0)], ALL_LABELED: [_r(0.505, 0)]}
    row = next(line for line in render_table(results, ["bg", "a", "b"], "#").splitlines()
               if line.startswith("| bcp |"))
    assert "n/a" in row


def test_method_variants_carry_options():
    assert parse_variant("bcp") == ("bcp", {})
    assert parse_variant("bcp:conf=0.9,sup=1") == ("bcp", {"conf": 0.9, "sup": 1.0})
    for bad in ("bcp:conf", "bcp:conf=high"):
        with pytest.raises(ValueError, match="bcp"):
            parse_variant(bad)


def test_a_run_held_by_another_invocation_is_waited_for_not_retrained(tmp_path, monkeypatch):
    """Two benchmark processes sharing a folder must not train the same baseline twice."""
    import training.bench.benchmark as bm

    real_sleep = time.sleep
    monkeypatch.setattr(bm.time, "sleep", lambda s: real_sleep(0.02))
    monkeypatch.setattr(bm, "_train_and_evaluate", lambda *a: pytest.fail("retrained"))
    (tmp_path / "labelled-only_seed0.lock").touch()  # the other process is training it
    other = threading.Timer(0.2, lambda: (tmp_path / "labelled-only_seed0.json").write_text(
        json.dumps({"name": LABELED_ONLY, "dice": [0.5]})))
    other.start()
    out = bm.run_one(LABELED_ONLY, 0, "unused", "3", None, tmp_path, lambda m: None)
    other.join()
    assert out["dice"] == [0.5]


def test_a_lock_left_by_a_killed_invocation_does_not_block_the_run(tmp_path, monkeypatch):
    """pkill (SIGTERM) skips the cleanup that removes the lock: the next invocation must not
    wait for a process that is gone, nor take over one that still runs."""
    import socket
    import subprocess
    import sys

    import training.bench.benchmark as bm

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    lock = tmp_path / "labelled-only_seed0.lock"
    lock.write_text(f"{socket.gethostname()} {gone.pid}")
    ran = []
    monkeypatch.setattr(bm, "_train_and_evaluate", lambda *a: ran.append(1) or {"dice": [0.7]})
    out = bm.run_one(LABELED_ONLY, 0, "unused", "3", None, tmp_path, lambda m: None,
                     wait=False)
    assert out == {"dice": [0.7]} and ran == [1] and not lock.exists()
    lock.write_text(f"{socket.gethostname()} {os.getpid()}")  # alive: this very process
    assert bm.run_one(LABELED_ONLY, 0, "unused", "3", None, tmp_path, lambda m: None,
                      wait=False) is None
    lock.write_text(f"another-machine {gone.pid}")  # cannot tell from here: still held
    assert bm.run_one(LABELED_ONLY, 0, "unused", "3", None, tmp_path, lambda m: None,
                      wait=False) is None


def test_runs_another_invocation_holds_are_done_last_so_both_keep_training(tmp_path,
                                                                          monkeypatch):
    """Two invocations on the same table split the runs instead of queueing behind a lock."""
    import training.bench.benchmark as bm

    order = []

    def fake_run(name, seed, data_dir, labeled, cfg, workdir, log, wait=True, step_every=0):
        held = name == "mean_teacher" and seed == 0 and not wait
        order.append((name, seed, "skipped" if held else "ran"))
        return None if held else {"name": name, "dice": [0.5], "hd95": [1.0],
                                  "step_seconds": 1.0, "val": None}

    monkeypatch.setattr(bm, "run_one", fake_run)
    monkeypatch.setattr(bm, "_write", lambda *a, **k: "table")
    bm.label_efficiency("d", "3", ["mean_teacher", "ua_mt"], 1, None,
                        str(tmp_path / "t.md"), "cmd", log=lambda m: None)
    assert order[0] == ("mean_teacher", 0, "skipped")
    assert order[1] == ("ua_mt", 0, "ran")  # the next run goes on at once
    assert order[-1] == ("mean_teacher", 0, "ran")  # the held one is waited for at the end


def test_variant_options_reach_the_config_or_the_method(tmp_path, monkeypatch):
    import training.bench.benchmark as bm
    from training.fit.trainer import TrainConfig

    seen = {}

    def fake_train(cfg, data, on_event=None):
        seen["cfg"] = cfg
        raise RuntimeError("stop here")

    monkeypatch.setattr(bm, "train", fake_train)
    monkeypatch.setattr(bm, "load_train_data", lambda *a, **k: None)
    with pytest.raises(RuntimeError, match="stop here"):
        bm.run_one("bcp:conf=0.9,warmup_fraction=0.3", 1, "d", "3", TrainConfig(), tmp_path,
                   lambda m: None)
    cfg = seen["cfg"]
    assert cfg.method == "bcp" and cfg.warmup_fraction == 0.3 and cfg.seed == 1
    assert cfg.method_opts == {"conf": 0.9}
    assert not list(tmp_path.glob("*.lock"))  # a crashed run frees its lock


def test_a_second_labelled_set_draws_other_patients_reproducibly(tmp_path):
    from test_training_synth import write_dataset

    from training.bench.benchmark import labelled_patients

    data = write_dataset(tmp_path / "d", n=8)
    assert labelled_patients(str(data), "2", 0) == "2"  # set 0: the first N, as before
    one = labelled_patients(str(data), "2", 1)
    assert one == labelled_patients(str(data), "2", 1)  # seeded: the same draw every time
    drawn = [set(labelled_patients(str(data), "2", k).split(",")) for k in range(1, 6)]
    assert all(len(d) == 2 for d in drawn) and len({frozenset(d) for d in drawn}) > 1
    train_pool = {"p0", "p1", "p2", "p3"}  # two cases per patient; case07 is test
    assert all(d <= train_pool for d in drawn)
    with pytest.raises(ValueError, match="number"):
        labelled_patients(str(data), "case00,case01", 1)


def test_a_cached_run_scored_under_another_rule_is_scored_again_from_its_checkpoint(tmp_path,
                                                                                  monkeypatch):
    """A table must not mix prediction rules: a cached run scored otherwise is re-scored from
    its checkpoint (its training kept), and one whose checkpoint is gone is kept as it was."""
    import training.bench.benchmark as bm

    monkeypatch.setattr(bm, "_train_and_evaluate", lambda *a: pytest.fail("retrained"))
    scored = []
    from training.engine.checkpoint import read_meta, save_checkpoint
    from training.engine.networks import UNet

    monkeypatch.setattr(bm, "_score", lambda path, data, step_every=0: scored.append(path) or {
        "dice": [0.9], "val": {"dice": [0.8]}, "scored_with": bm.scoring_rule(read_meta(path))})
    old = {"name": LABELED_ONLY, "dice": [0.5], "train_seconds": 7.0,
           "scored_with": "whole_slice_up_to=1.6"}
    (tmp_path / "labelled-only_seed0.json").write_text(json.dumps(old))
    save_checkpoint(tmp_path / "labelled-only_seed0.pt", UNet(2, 1, 2, base=4, depth=2), {})
    out = bm.run_one(LABELED_ONLY, 0, "d", "3", None, tmp_path, lambda m: None)
    assert out["dice"] == [0.9] and out["train_seconds"] == 7.0 and len(scored) == 1
    again = bm.run_one(LABELED_ONLY, 0, "d", "3", None, tmp_path, lambda m: None)
    assert again["dice"] == [0.9] and len(scored) == 1  # now under today's rule: not re-scored
    (tmp_path / "bcp_seed0.json").write_text(json.dumps({**old, "name": "bcp"}))
    kept = bm.run_one("bcp", 0, "d", "3", None, tmp_path, lambda m: None)
    assert kept["dice"] == [0.5] and len(scored) == 1  # no checkpoint: kept, and the log says
    # a batch-norm network is scored in whole slices (its default): a run scored in patch
    # windows is scored again
    (tmp_path / "act_seed0.json").write_text(json.dumps(
        {**old, "name": "act", "scored_with": bm.scoring_rule()}))
    save_checkpoint(tmp_path / "act_seed0.pt", UNet(2, 1, 2, base=4, depth=2, norm="batch"), {})
    bn = bm.run_one("act", 0, "d", "3", None, tmp_path, lambda m: None)
    assert bn["dice"] == [0.9] and len(scored) == 2
    assert bn["scored_with"].startswith("whole_slice_up_to=1.6;") and bn["scored_with"] != \
        bm.scoring_rule()


def test_a_run_is_scored_with_the_clean_up_its_val_scans_choose_and_its_raw_dice_beside(
        tmp_path, monkeypatch):
    """A prediction with a speck far from the structure: the val split chooses a clean-up
    that removes it, the test row is scored with that clean-up, and the raw Dice stays."""
    import numpy as np
    from test_training_synth import set_split, write_dataset

    import training.bench.benchmark as bm
    from training.core.io import read_labels
    from training.engine.checkpoint import save_checkpoint
    from training.engine.networks import UNet

    data = write_dataset(tmp_path / "d", n=4)
    set_split(data, 2, "val")
    ckpt = tmp_path / "bcp_seed0.pt"
    save_checkpoint(ckpt, UNet(2, 1, 3, base=4, depth=2), {"num_classes": 3})

    def speckled(model, meta, volume, *a, clean_up=True, **k):  # reference + a corner speck
        assert clean_up is False  # scored from the network's own labels
        labels = volume.astype(np.uint8).copy()
        labels[0, :2, :2] = 1
        return {"labels": labels}

    # the "scan" is its label map, so the fake network returns the reference plus the speck
    monkeypatch.setattr(bm, "read_image", lambda path, channels=1: read_labels(
        str(path).replace("images", "labels")))
    monkeypatch.setattr(bm, "predict_volume", speckled)
    ref = read_labels(data / "labels" / "case03.nii.gz")[0]
    assert ref[0, :2, :2].max() == 0 and (ref == 1).any() and (ref == 2).any()

    got = bm._score(str(ckpt), str(data))
    assert got["clean_up"] == "per_class"  # the two blobs apart: foreground would drop one
    assert got["dice"] == pytest.approx([1.0, 1.0])
    assert got["raw"]["dice"][0] < 0.999 and got["raw"]["dice"][1] == pytest.approx(1.0)
    assert got["val_by_clean_up"]["none"]["dice"][0] < got["val"]["dice"][0]
    assert got["scored_with"].endswith("clean-up chosen on val")
    tie = {m: {"dice": [0.7, 0.9]} for m in ("none", "foreground", "per_class")}
    assert bm.clean_up_chosen_on_val(tie) == "none"  # a tie keeps the simpler one
    assert bm.clean_up_chosen_on_val(None) == "none"  # no val split: nothing is chosen

    table = render_table({LABELED_ONLY: [{**_r(0.5, 0), "clean_up": "none", "raw": _r(0.5, 0)}],
                          "bcp": [{**_r(0.8, 0), "clean_up": "per_class", "raw": _r(0.7, 0)}],
                          ALL_LABELED: [{**_r(0.9, 0)}]}, ["bg", "a", "b"], "# t")
    bcp_row = next(line for line in table.splitlines() if line.startswith("| bcp"))
    assert "| per_class | 70.0 |" in bcp_row
    old_row = next(line for line in table.splitlines() if line.startswith("| all-labelled"))
    assert "| — | — |" in old_row  # scored before the rule: said so, not guessed


def test_choose_step_on_val_keeps_snapshots_and_scores_the_one_val_prefers(tmp_path,
                                                                            monkeypatch, capsys):
    """A run whose weights were right at step 2 and wrong at its last step: with
    --choose-step-on-val 2 its row is step 2's, and the last step's Dice stays beside it."""
    import json

    import numpy as np
    from test_training_synth import set_split, write_dataset

    import training.bench.benchmark as bm
    from training.cli import main
    from training.core.io import read_labels

    data = write_dataset(tmp_path / "d", n=8)
    set_split(data, 2, "val")
    steps_seen = set()

    def right_at_step_2(model, meta, volume, *a, clean_up=True, **k):
        steps_seen.add(int(meta["steps_done"]))
        labels = volume.astype(np.uint8)  # the "scan" is its label map
        return {"labels": labels if int(meta["steps_done"]) == 2 else np.zeros_like(labels)}

    monkeypatch.setattr(bm, "read_image", lambda path, channels=1: read_labels(
        str(path).replace("images", "labels")))
    monkeypatch.setattr(bm, "predict_volume", right_at_step_2)
    out = tmp_path / "t.md"
    argv = ["benchmark", "label-efficiency", "--data", str(data), "--labeled", "2",
            "--methods", "mean_teacher", "--seeds", "1", "--steps", "4",
            "--choose-step-on-val", "2", "--size", "16", "16", "--base", "4", "--depth", "2",
            "--labeled-bs", "2", "--unlabeled-bs", "2", "--out", str(out)]
    assert main(argv) == 0
    assert steps_seen == {2, 4}
    runs = out.with_suffix(".runs")
    for name in ("labelled-only", "mean_teacher", "all-labelled"):
        assert (runs / f"{name}_seed0.step2.pt").exists()
        result = json.loads((runs / f"{name}_seed0.json").read_text(encoding="utf-8"))
        assert result["step_chosen"] == 2
        assert np.mean(result["dice"]) == pytest.approx(1.0)
        assert np.mean(result["last_step"]["dice"]) == pytest.approx(0.0)
        assert set(result["val_by_step"]) == {"2", "4"}
        assert "snapshot (every 2 steps)" in result["scored_with"]
    table = out.read_text(encoding="utf-8")
    assert "| step chosen on val | mean Dice, last step |" in table
    row = next(line for line in table.splitlines() if line.startswith("| mean_teacher"))
    assert "| 2 | 0.0 |" in row
    # the same command again: cached, not trained or scored again
    steps_seen.clear()
    assert main(argv) == 0 and not steps_seen
    negative = [("-1" if a == "2" and argv[i - 1] == "--choose-step-on-val" else a)
                for i, a in enumerate(argv)]
    capsys.readouterr()
    assert main(negative) != 0 and not steps_seen
    assert "--choose-step-on-val must be 0" in capsys.readouterr().err
