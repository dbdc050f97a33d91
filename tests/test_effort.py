"""semiseg benchmark effort: the simulated clinician over scans, beside interpolation."""

import inspect
from pathlib import Path

import numpy as np
import pytest
from test_training_synth import write_dataset

from training.bench.effort import interpolation_effort
from training.cli import main
from training.interactive.loop import FINISHED_SCANS_KEPT


def _cone(n=21, size=48):
    z, y, x = np.mgrid[0:n, 0:size, 0:size]
    return ((y - 24) ** 2 + (x - 24) ** 2 <= (4 + z) ** 2).astype(np.uint8)


def _cone_scan(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(image, truth): a noisy cone of ``n`` slices, 40 px, empty on its two first and last."""
    truth = _cone(n=n, size=40)
    truth[[0, 1, n - 2, n - 1]] = 0
    rng = np.random.default_rng(0)
    return (truth * 2.0 + rng.normal(0, 0.3, truth.shape)).astype(np.float32), truth


def test_interpolation_effort_on_a_known_shape():
    truth = _cone()
    truth[0] = 0  # the structure spans slices 1..20
    k, dice = interpolation_effort(truth, 0.95, 8)
    assert k == 2 and dice >= 0.95  # a cone needs only its two ends
    k, _ = interpolation_effort(truth, 1.01, 3)
    assert k is None


def test_a_baseline_fill_counts_the_slices_it_needs():
    """Any fill can be the baseline (ITK's contour interpolation in the benchmark): one that
    fills nothing needs every slice, this project's interpolation needs the cone's two ends."""
    truth = _cone()
    truth[0] = 0

    def nothing(labels, painted, axis=0):
        return np.where(labels == 255, 0, labels).astype(np.uint8)

    k, dice = interpolation_effort(truth, 0.95, 4, fill=nothing)
    assert k is None and dice < 0.95
    assert interpolation_effort(truth, 0.95, 4)[0] == 2


def test_the_effort_table_adds_itk_columns_and_shows_baselines_alone():
    from training.bench.effort import effort_table

    base = {"case": "a", "interp_painted": 6, "interp_dice": 0.91}
    learnt = [{**base, "painted": 4, "dice": 0.92, "reached": True, "retrain_s": [30.0],
               "trajectory": [0.8, 0.92], "itk_painted": 7, "itk_dice": 0.9},
              {**base, "case": "b", "painted": 2, "dice": 0.9, "reached": True,
               "start_dice": 0.61,
               "retrain_s": [20.0], "trajectory": [0.9], "itk_painted": None, "itk_dice": 0.8},
              {**base, "case": "c", "painted": 1, "dice": 0.95, "reached": True,
               "retrain_s": [20.0], "trajectory": [0.95], "itk_painted": 5, "itk_dice": 0.9}]
    text = effort_table(learnt, 0.9, 8, "# t")
    assert "ITK contour interpolation (Slicer): slices needed" in text
    assert "| 2 | b | 61.0 | 2 | 90.0 | 90 | 0 | 20 | 6 | 91.0 | >8 | 80.0 |" in text
    assert "| 1 | a | — | 4 |" in text  # no model yet on the first scan
    assert "learning **7**, interpolation **18** (39 %), ITK contour interpolation **20** " \
           "(35 %)" in text
    assert "from the third scan on: 1.0 slices per scan" in text
    alone = [{**base, "painted": None, "dice": float("nan"), "reached": False,
              "retrain_s": [], "trajectory": []}]
    text = effort_table(alone, 0.9, 8, "# t")
    assert "learning" not in text and "| 1 | a | 6 | 91.0 |" in text
    assert "interpolation **6**" in text


def test_effort_benchmark_runs_from_scratch_and_writes_its_table(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=4)
    out = tmp_path / "effort.md"
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "2", "--target", "99",
                 "--k-max", "2", "--steps", "3", "--split", "train", "--consolidate", "2",
                 "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    rows = [ln for ln in text.splitlines() if ln.startswith("| 1 |") or ln.startswith("| 2 |")]
    assert len(rows) == 2
    assert "between scans, 2 more steps on the finished segmentations" in text
    assert "total slices painted" in text and "case00" in text and "case01" in text
    err = capsys.readouterr().err
    assert "learning" in err and "interpolation" in err


def test_a_retrain_that_does_worse_on_held_back_slices_is_not_carried_on(tmp_path,
                                                                         monkeypatch):
    """As in the plugin: once the model has learnt, painted slices are held back to judge
    each Retrain, and a rejected one leaves the model (and its prediction) as they were."""
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    image, truth = blob_volume(0)
    judged = []

    def reject(old, new, tolerance=0.0):
        judged.append((dict(old), dict(new)))
        return retrain.Verdict(False, "rejected", old, new)

    monkeypatch.setattr(retrain, "judge", reject)
    row, model = effort.learning_effort(
        image, truth, None, ["bg", "disc", "square"], 1.01, 3, tmp_path, steps=2,
        labeled_bs=2, unlabeled_bs=0, hold_back_from=2)
    assert row["painted"] == 3
    # the first Retrain trains an untrained model on every slice: nothing to judge it by
    assert len(judged) == 2 and row["rejected"] == 2
    held = [{i for _, i in old} for old, _ in judged]
    assert all(len(h) == 1 and h <= set(row["slices"]) for h in held)  # painted, held back
    assert Path(model).name.startswith("v1-")  # the model of the one adopted Retrain
    judged.clear()
    row, _ = effort.learning_effort(
        image, truth, None, ["bg", "disc", "square"], 1.01, 3, tmp_path, steps=2,
        labeled_bs=2, unlabeled_bs=0, hold_back_from=4)
    assert not judged and row["rejected"] == 0  # fewer than 4 painted: every slice trains
    effort.learning_effort(image, truth, None, ["bg", "disc", "square"], 1.01, 3, tmp_path,
                           steps=2, labeled_bs=2, unlabeled_bs=0)
    assert not judged  # by default, as the plugin: a model taught from scratch is not judged


def test_a_first_scan_starts_from_its_painted_ends_and_middle(tmp_path):
    """As the dock's New model asks: the structure's first, middle and last slices are painted
    before the first Retrain, and nothing is predicted or suggested beyond the ends."""
    import training.bench.effort as effort

    image, truth = _cone_scan(12)  # the structure spans slices 2..9
    row, model = effort.learning_effort(
        image, truth, None, ["bg", "cone"], 1.01, 4, tmp_path, steps=2, labeled_bs=2,
        unlabeled_bs=0, ends_first=True, fuse_weight=0.3, network={"unshuffle": 1})
    first, middle, last = sorted(row["slices"][:3])
    assert (first, last) == (2, 9) and first < middle < last
    assert len(row["trajectory"]) == 2  # one Retrain on the three, one after a fourth slice
    assert 2 <= row["slices"][3] <= 9  # the suggestion stays between the painted ends
    # a later scan, with a model: the ends first only when asked for every scan
    later, _ = effort.learning_effort(
        image, truth, model, ["bg", "cone"], 1.01, 3, tmp_path, steps=2, labeled_bs=2,
        unlabeled_bs=0, ends_first=True, ends_every_scan=True, fuse_weight=0.3)
    first, middle, last = sorted(later["slices"])
    assert (first, last) == (2, 9) and first < middle < last
    assert len(later["trajectory"]) == 1
    plain, _ = effort.learning_effort(
        image, truth, None, ["bg", "cone"], 1.01, 2, tmp_path, steps=2, labeled_bs=2,
        unlabeled_bs=0, network={"unshuffle": 1})
    assert len(plain["trajectory"]) == 2  # without: one slice per Retrain from the middle


def test_spreading_paints_the_middles_of_the_longest_gaps_between_the_painted_ends(tmp_path):
    import training.bench.effort as effort

    image, truth = _cone_scan(16)  # the structure spans slices 2..13
    row, _ = effort.learning_effort(
        image, truth, None, ["bg", "cone"], 1.01, 5, tmp_path, steps=2, labeled_bs=2,
        unlabeled_bs=0, ends_first=True, fuse_weight=0.3, network={"unshuffle": 1},
        spread_until=5)
    first, middle, last = sorted(row["slices"][:3])
    gaps = sorted([(middle - first, (first + middle) // 2), (last - middle, (middle + last) // 2)],
                  reverse=True)
    if gaps[0][0] == gaps[1][0]:  # equal gaps: either middle may come first
        assert set(row["slices"][3:]) == {gaps[0][1], gaps[1][1]}
    else:
        assert row["slices"][3:] == [gaps[0][1], gaps[1][1]]


def test_baselines_only_trains_nothing(tmp_path, monkeypatch):
    import training.bench.effort as effort

    monkeypatch.setattr(effort, "learning_effort", None)  # would fail if called
    data = write_dataset(tmp_path / "data", n=3)
    out = tmp_path / "b.md"
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "2", "--target", "90",
                 "--split", "train", "--baselines-only", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "| 1 | case00 |" in text and "total slices needed: interpolation" in text


def test_effort_refuses_a_bad_target(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=2)
    assert main(["benchmark", "effort", "--data", str(data), "--target", "150",
                 "--out", str(tmp_path / "e.md")]) == 2
    assert "--target" in capsys.readouterr().err


def test_effort_refuses_a_bad_ends_unless_right_and_takes_the_plugins_by_default(tmp_path,
                                                                              capsys):
    from training.cli_benchmark import _ends_unless_right
    from training.interactive.loop import ENDS_UNLESS_RIGHT

    data = write_dataset(tmp_path / "data", n=2)
    for bad in ("banana", "150", "0"):
        assert main(["benchmark", "effort", "--data", str(data), "--target", "90",
                     "--ends-unless-right", bad,
                     "--out", str(tmp_path / "e.md")]) == 2
        assert "--ends-unless-right" in capsys.readouterr().err
    assert _ends_unless_right(None, None) == ENDS_UNLESS_RIGHT  # a New model's series
    assert _ends_unless_right(None, "library.pt") is None  # chosen for those series only
    assert _ends_unless_right("off", None) is None
    assert _ends_unless_right("85", "library.pt") == 0.85
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90",
                 "--replay", "none", "--consolidate", "10",
                 "--out", str(tmp_path / "e.md")]) == 2
    assert "--consolidate" in capsys.readouterr().err
    for bad in (["--replay", "none", "--finished-kept", "2"], ["--finished-kept", "0"]):
        assert main(["benchmark", "effort", "--data", str(data), "--target", "90", *bad,
                     "--out", str(tmp_path / "e.md")]) == 2
        assert "--finished-kept" in capsys.readouterr().err


def test_fixed_k_compares_one_retrain_with_interpolation_on_the_same_slices(tmp_path):
    data = write_dataset(tmp_path / "data", n=3)
    out = tmp_path / "k.md"
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "90",
                 "--fixed-k", "2", "--steps", "2", "--split", "train", "--prior",
                 "interpolation", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert "K = 2" in text and "interpolation" in text and "| case00 |" in text
    assert "fused, w = 0.3 (main piece)" in text and "fused w = 0.3, main piece:" in text
    assert "fused, w = 0.3 (main piece, within the painted extent)" in text


def test_a_new_network_for_the_new_model_is_used_and_named(tmp_path, monkeypatch, capsys):
    """--new-network builds the new model with those arguments (the A/B of its network)."""
    import training.interactive.new_model as nm

    built = []
    real = nm.new_model

    def spy(*args, **kw):
        built.append(kw)
        return real(*args, **kw)

    monkeypatch.setattr(nm, "new_model", spy)
    data = write_dataset(tmp_path / "data", n=3)
    out = tmp_path / "k.md"
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "90",
                 "--fixed-k", "2", "--steps", "2", "--split", "train", "--new-network",
                 "unshuffle=2", "base=4", "size=32", "whole_slice_up_to=1.0", "--out",
                 str(out)]) == 0
    assert built and built[0]["unshuffle"] == 2 and built[0]["base"] == 4
    assert built[0]["size"] == [32, 32] and built[0]["whole_slice_up_to"] == 1.0
    assert "network unshuffle=2 base=4 size=32 whole_slice_up_to=1.0" in out.read_text(
        encoding="utf-8")
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90", "--fixed-k",
                 "2", "--new-network", "width=3", "--out", str(out)]) != 0
    assert "--new-network takes KEY=VALUE" in capsys.readouterr().err


def test_replay_trains_each_retrain_on_the_slices_painted_on_earlier_scans(tmp_path,
                                                                          monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    seen = []
    real = retrain.finetune

    def spy(*args, other_labelled=(), **kw):
        seen.append([int((lab != 255).any(axis=(1, 2)).sum()) for _, lab in other_labelled])
        return real(*args, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(retrain, "finetune", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    rows = effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=2, steps=2,
                                   replay=True, labeled_bs=2, unlabeled_bs=0,
                                   work_dir=tmp_path)
    # scan 1 has no earlier scan; each Retrain on scan 2 also sees scan 1's 2 painted slices
    assert seen == [[], [], [2], [2]] and rows[0]["painted"] == 2
    seen.clear()
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            labeled_bs=2, unlabeled_bs=0, work_dir=tmp_path)
    assert seen == [[], []]  # without replay, only the scan's own slices


def test_replay_of_finished_scans_trains_on_their_whole_segmentation(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    seen = []
    real = retrain.finetune

    def spy(*args, other_labelled=(), **kw):
        seen.append([(lab.copy(), img.shape) for img, lab in other_labelled])
        return real(*args, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(retrain, "finetune", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    rows = effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=2, steps=2,
                                   replay="finished", labeled_bs=2, unlabeled_bs=0,
                                   work_dir=tmp_path)
    assert [len(s) for s in seen] == [0, 0, 1, 1]
    finished, shape = seen[2][0]
    assert shape == cases[0][1].shape and finished.shape == cases[0][2].shape
    # every slice of scan 1 teaches: what the user kept there, painted slices as painted
    assert (finished != 255).all()
    for z in rows[0]["slices"]:
        assert np.array_equal(finished[z], cases[0][2][z])
    assert "segmentation" not in rows[0]  # the table's rows stay small
    # as the dock, only the most recent finished scans teach; the benchmark's default is the
    # dock's number
    assert inspect.signature(effort.effort_benchmark).parameters["finished_kept"].default \
        == FINISHED_SCANS_KEPT
    images = []
    monkeypatch.setattr(retrain, "finetune", lambda *a, other_labelled=(), **kw: images.append(
        [img for img, _ in other_labelled]) or real(*a, other_labelled=other_labelled, **kw))
    three = [*cases, ("scan2", *blob_volume(2))]
    effort.effort_benchmark(three, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            replay="finished", finished_kept=1, labeled_bs=2,
                            unlabeled_bs=0, work_dir=tmp_path)
    assert [len(i) for i in images] == [0, 1, 1]
    assert images[2][0] is three[1][1]  # scan 3 learns from scan 2 only, not scan 1


class _Fixed:
    """Stands in for how the dock shows a model: each 'model' is a fixed prediction."""

    def __init__(self, predictions):
        self.predictions = predictions

    def predict(self, model, image, labels):
        return self.predictions[model], None


def test_a_scan_restarts_from_the_starting_model_where_it_does_better_on_fresh_slices():
    from training.bench.effort import _better_base

    truth = np.zeros((4, 8, 8), np.uint8)
    truth[:, 2:6, 2:6] = 1
    drifted = np.zeros_like(truth)
    drifted[:, 2:4, 2:4] = 1  # a quarter of the structure
    shown = _Fixed({"carried": drifted, "start": truth.copy()})
    assert _better_base("carried", "start", truth, truth, [1, 2], 0, shown) == ("start", True)
    # the carried model is kept when it is as good or better on the painted slices
    shown = _Fixed({"carried": truth.copy(), "start": drifted})
    assert _better_base("carried", "start", truth, truth, [1, 2], 0, shown) == ("carried", False)
    shown = _Fixed({"carried": truth.copy(), "start": truth.copy()})
    assert _better_base("carried", "start", truth, truth, [1], 0, shown) == ("carried", False)


def test_rebase_needs_a_starting_model(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=2)
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90", "--rebase",
                 "--out", str(tmp_path / "e.md")]) == 2
    assert "--rebase" in capsys.readouterr().err


def test_a_rejected_retrain_within_the_ends_keeps_nothing_beyond_them(tmp_path, monkeypatch):
    """As the dock: the user painted the ends, so whichever model is kept shows nothing beyond
    them, even when the Retrain that was asked to keep within them is rejected."""
    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    image, truth = _cone_scan(12)  # the structure spans slices 2..9
    _, model = effort.learning_effort(image, truth, None, ["bg", "cone"], 1.01, 2, tmp_path,
                                      steps=2, labeled_bs=2, unlabeled_bs=0,
                                      network={"unshuffle": 1})
    monkeypatch.setattr(retrain, "judge",
                        lambda old, new, tolerance=0.0: retrain.Verdict(False, "rejected"))
    seen = []
    monkeypatch.setattr(effort, "mean_dice", lambda p, t: seen.append(p.copy()) or 0.0)
    row, kept = effort.learning_effort(image, truth, model, ["bg", "cone"], 1.01, 3, tmp_path,
                                       steps=2, labeled_bs=2, unlabeled_bs=0,
                                       ends_every_scan=True)
    assert row["rejected"] == 1 and kept == model
    assert not seen[-1][[0, 1, 10, 11]].any()


def test_the_ends_are_painted_only_where_the_model_missed_the_middle_slice(tmp_path,
                                                                           monkeypatch):
    """--ends-unless-right: on a scan with a model, the middle slice is painted first; where
    the model already had it right the clinician goes on one slice at a time, without ends."""
    import training.bench.effort as effort
    import training.engine.inference as inference
    from training.interactive.new_model import new_model

    truth = _cone(n=12, size=40)
    truth[[0, 1, 10, 11]] = 0  # the structure spans slices 2..9
    image = truth.astype(np.float32)
    model = new_model(tmp_path / "m.pt", ["bg", "cone"], unshuffle=1)
    middle = effort.even_slices(truth, 3)[1]
    for right in (True, False):
        shown = np.zeros_like(truth)
        if right:
            shown[middle] = truth[middle]  # the model has the middle slice, nothing else
        monkeypatch.setattr(inference, "predict_volume", lambda *a, _s=shown, **k: {
            "labels": _s.copy(), "uncertainty": np.zeros(_s.shape, np.float32),
            "probabilities": np.stack([_s == 0, _s == 1]).astype(np.float32), "cam": None})
        row, _ = effort.learning_effort(
            image, truth, model, ["bg", "cone"], 1.01, 3, tmp_path, steps=1, labeled_bs=2,
            unlabeled_bs=0, ends_every_scan=True, ends_unless_right=0.9, hold_back_from=99)
        assert row["middle_right"] is right
        if right:  # one slice per Retrain from the middle
            assert row["slices"][0] == middle and len(row["trajectory"]) == 3
        else:  # the ends and the middle before the first Retrain
            assert sorted(row["slices"]) == [2, middle, 9] and len(row["trajectory"]) == 1


def test_between_scans_the_carried_model_consolidates_on_the_finished_ones(tmp_path,
                                                                         monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.between_scans as between

    calls = []
    real = between.finetune

    def spy(model, image, labels, *args, other_labelled=(), **kw):
        calls.append((labels.copy(), len(other_labelled), kw["steps"]))
        return real(model, image, labels, *args, other_labelled=other_labelled, **kw)

    # the dock's own step (training.interactive.between_scans), not a copy of it
    monkeypatch.setattr(between, "finetune", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(3)]
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            replay="finished", consolidate=3, labeled_bs=2, unlabeled_bs=0,
                            work_dir=tmp_path)
    # after scans 1 and 2, not after the last: on the scan just finished, the earlier ones
    # beside it
    assert [(n, steps) for _, n, steps in calls] == [(0, 3), (1, 3)]
    assert all((lab != 255).all() for lab, _, _ in calls)  # whole segmentations


def _calls(monkeypatch, owner, name: str, pick) -> list:
    """What ``pick(keyword arguments)`` reads off each call of ``owner.name`` from now on."""
    seen = []
    real = getattr(owner, name)

    def spy(*args, **kw):
        seen.append(pick(kw))
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, spy)
    return seen


def _blend_shares(monkeypatch) -> list:
    """The network's share in the blend of each Retrain the effort benchmark runs."""
    import training.bench.effort as effort

    return _calls(monkeypatch, effort, "retrain_once", lambda kw: kw["shown"].fuse_weight)


def test_a_scan_from_a_taught_model_blends_with_its_own_network_share(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    shares = _blend_shares(monkeypatch)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            fuse_weight=0.3, fuse_weight_taught=0.8, labeled_bs=2,
                            unlabeled_bs=0, work_dir=tmp_path)
    assert shares == [0.3, 0.8]  # scan 1 from scratch, scan 2 from the model scan 1 taught
    shares.clear()
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            fuse_weight=0.3, labeled_bs=2, unlabeled_bs=0, work_dir=tmp_path)
    assert shares == [0.3, 0.3]


def test_each_painted_slice_is_read_once_by_a_network_that_never_saw_it(tmp_path,
                                                                        monkeypatch):
    """--fuse-weight-from-painted: every Retrain gets the slices painted since the last one
    (the previous network's unseen ones) and what the earlier Retrains of the scan read."""
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    calls, real = [], effort.retrain_once

    def spy(*args, fresh=(), share_evidence=(), **kw):
        calls.append((list(fresh), len(share_evidence)))
        return real(*args, fresh=fresh, share_evidence=share_evidence, **kw)

    monkeypatch.setattr(effort, "retrain_once", spy)
    image, truth = blob_volume(0)
    rows = effort.effort_benchmark([("scan0", image, truth)], ["bg", "disc", "square"], 1.01,
                                   k_max=5, steps=2, fuse_weight=0.3, ends_first=True,
                                   share_from_painted=True, labeled_bs=2, unlabeled_bs=0,
                                   work_dir=tmp_path)
    painted = rows[0]["slices"]
    assert len(painted) > 3 and len(calls) == len(painted) - 2
    assert sorted(calls[0][0]) == sorted(painted[:3])  # the ends and the middle, at once
    assert [c[0] for c in calls[1:]] == [[z] for z in painted[3:]]  # then one at a time
    assert len(rows[0]["shares"]) == len(calls) and all(0 <= w <= 1 for w in rows[0]["shares"])
    assert calls[0][1] == 0 and calls[1][1] == 0  # nothing read off an untaught network


def test_fuse_weight_taught_needs_a_blend(tmp_path, capsys):
    data = write_dataset(tmp_path / "data", n=2)
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90",
                 "--fuse-weight-taught", "0.8", "--out", str(tmp_path / "e.md")]) == 2
    assert "--fuse-weight" in capsys.readouterr().err
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90",
                 "--fuse-weight-from-painted", "--out", str(tmp_path / "f.md")]) == 2
    assert "--fuse-weight" in capsys.readouterr().err
    assert main(["benchmark", "effort", "--data", str(data), "--target", "90",
                 "--fuse-by-gap", "all", "--out", str(tmp_path / "g.md")]) == 2
    assert "--fuse-weight" in capsys.readouterr().err


def test_the_share_by_gap_can_start_once_a_model_is_taught(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    shown = _calls(monkeypatch, effort, "retrain_once", lambda kw: (kw["seed"], kw["shown"]))
    scans = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    effort.effort_benchmark(scans, ["bg", "disc", "square"], 1.01, k_max=4, steps=2,
                            fuse_weight=0.3, fuse_weight_taught=0.7, fuse_by_gap="taught",
                            suggest_from="disagreement", ends_first=True, labeled_bs=2,
                            unlabeled_bs=0, work_dir=tmp_path)
    first = {(s.share_by_gap, s.fuse_weight) for seed, s in shown if seed == 0}
    later = {(s.share_by_gap, s.fuse_weight) for seed, s in shown if seed != 0}
    assert first == {(False, 0.3)} and later == {(True, 0.7)}
    assert {s.suggest_from for _, s in shown} == {"disagreement"}


def test_without_the_anchor_where_finished_scans_teach(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    from training.interactive.retrain import ANCHOR_CONFIDENCE

    anchors = []
    real = effort.retrain_once

    def spy(*args, anchor=ANCHOR_CONFIDENCE, other_labelled=(), **kw):
        anchors.append((anchor, len(other_labelled)))
        return real(*args, anchor=anchor, other_labelled=other_labelled, **kw)

    monkeypatch.setattr(effort, "retrain_once", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    for with_finished, expected in ((True, ANCHOR_CONFIDENCE), (False, None)):
        anchors.clear()
        effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                                replay="finished", anchor_with_finished=with_finished,
                                labeled_bs=2, unlabeled_bs=0, work_dir=tmp_path)
        assert anchors == [(ANCHOR_CONFIDENCE, 0), (expected, 1)]


def test_judge_taught_judges_retrains_on_scans_from_a_taught_model(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    seen = []
    real = effort.learning_effort

    def spy(*args, hold_back_from=None, **kw):
        seen.append(hold_back_from)
        return real(*args, hold_back_from=hold_back_from, **kw)

    monkeypatch.setattr(effort, "learning_effort", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    for judge, expected in ((False, [4, 4]), (True, [4, 2])):
        seen.clear()  # k_max 3: from scratch never judged (hold back from 4 slices)
        effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=3, steps=2,
                                judge_taught=judge, labeled_bs=2, unlabeled_bs=0,
                                work_dir=tmp_path)
        assert seen == expected  # scan 2 starts from the model scan 1 taught


def test_where_the_model_had_the_middle_slice_right_the_network_weighs_as_asked(tmp_path,
                                                                             monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    shares = _blend_shares(monkeypatch)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                            fuse_weight=0.3, fuse_weight_right=0.8, ends_every_scan=True,
                            ends_unless_right=0.0, labeled_bs=2, unlabeled_bs=0,
                            work_dir=tmp_path)  # 0.0: any middle slice counts as right
    assert shares == [0.3, 0.8]


def test_taught_lr_sets_the_rate_of_retrains_from_a_taught_model_only(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort

    rates = []
    real = effort.retrain_once

    def spy(*args, **kw):
        rates.append(kw.get("lr"))
        return real(*args, **kw)

    monkeypatch.setattr(effort, "retrain_once", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=2, steps=2,
                            taught_lr=5e-4, labeled_bs=2, unlabeled_bs=0, work_dir=tmp_path)
    # a new model's first Retrain keeps the from-scratch rate; every later one starts taught
    assert rates == [None, 5e-4, 5e-4, 5e-4]


def test_the_effort_header_says_never_when_judgement_starts_beyond_the_slices_painted():
    from training.cli_benchmark import _judging_note

    assert _judging_note(None, 8) == "as the plugin"
    assert _judging_note(2, 8) == "from 2 painted slices on"
    assert _judging_note(8, 8) == "from 8 painted slices on"  # the last slice can still judge
    assert _judging_note(99, 8).startswith("never")


def test_the_effort_benchmark_trains_between_scans_as_the_dock_does(tmp_path, monkeypatch):
    """By default a New model's series trains between scans as many steps as the dock; from a
    shipped model (--start) it does not, as in the dock; --consolidate 0 turns it off."""
    import training.bench.effort as effort
    from training.interactive.between_scans import TRAIN_BETWEEN_SCANS_STEPS

    asked = []
    monkeypatch.setattr(effort, "effort_benchmark",
                        lambda *a, consolidate=0, **kw: asked.append(consolidate) or [])
    monkeypatch.setattr(effort, "effort_table", lambda *a, **kw: "")
    data = write_dataset(tmp_path / "data", n=2)
    common = ["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "90",
              "--split", "train", "--out", str(tmp_path / "e.md")]
    assert main(common) == 0
    assert main([*common, "--consolidate", "0"]) == 0
    model = tmp_path / "m.pt"
    from training.interactive.new_model import new_model

    new_model(model, ["background", "disc"])
    assert main([*common, "--start", str(model)]) == 0
    assert asked == [TRAIN_BETWEEN_SCANS_STEPS, 0, 0]
    assert main([*common, "--consolidate", "-1"]) != 0


def test_another_seed_repeats_the_run_with_other_training_seeds(tmp_path, monkeypatch,
                                                                 capsys):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    seeds = []
    real = retrain.finetune

    def spy(*args, seed=0, **kw):
        seeds.append(seed)
        return real(*args, seed=seed, **kw)

    monkeypatch.setattr(retrain, "finetune", spy)
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    for seed in (0, 1):
        effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                                labeled_bs=2, unlabeled_bs=0, work_dir=tmp_path, seed=seed)
    assert seeds == [0, 1, 1000, 1001]  # seed 0 is the runs of before; one seed per scan
    with pytest.raises(SystemExit):
        main(["benchmark", "effort", "--help"])
    assert "--seed" in capsys.readouterr().out


def test_a_scan_from_a_taught_model_can_retrain_without_the_shape_prior(tmp_path, monkeypatch):
    from test_training_synth import blob_volume

    import training.bench.effort as effort
    import training.interactive.retrain as retrain

    priors = _calls(monkeypatch, retrain, "finetune", lambda kw: kw.get("prior"))
    cases = [(f"scan{i}", *blob_volume(i)) for i in range(2)]
    for taught, expected in ((None, ["interpolation"] * 2), ("none", ["interpolation", None])):
        priors.clear()
        effort.effort_benchmark(cases, ["bg", "disc", "square"], 1.01, k_max=1, steps=2,
                                prior="interpolation", prior_taught=taught, labeled_bs=2,
                                unlabeled_bs=0, work_dir=tmp_path)
        assert priors == expected  # scan 1 from scratch, scan 2 from the model scan 1 taught


def test_prior_taught_needs_a_prior(tmp_path, capsys):
    data = write_dataset(tmp_path / "d", n=2)
    assert main(["benchmark", "effort", "--data", str(data), "--cases", "1", "--target", "0.9",
                 "--prior-taught", "none", "--out", str(tmp_path / "e.md")]) == 2
    assert "give --prior" in capsys.readouterr().err
