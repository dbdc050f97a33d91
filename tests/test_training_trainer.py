import pickle

import numpy as np
import pytest
import torch
from test_training_synth import blob_volume

from training.engine.checkpoint import companion_path, load_checkpoint, read_checkpoint
from training.engine.data import TrainData
from training.engine.networks import count_parameters
from training.fit.trainer import TrainConfig, train


def _data(n=2):
    vols = [blob_volume(i) for i in range(n)]
    return TrainData.from_arrays([v[0] for v in vols], [v[1] for v in vols],
                                 [blob_volume(9)[0]], class_names=["bg", "disc", "square"])


def _cfg(tmp_path, **kw):
    base = dict(method="supervised", steps=4, size=[16, 16], labeled_bs=2, unlabeled_bs=2,
                base=4, depth=2, device="cpu", checkpoint=str(tmp_path / "m.pt"), log_every=1)
    base.update(kw)
    return TrainConfig(**base)


def test_events_checkpoints_and_meta(tmp_path):
    events = []
    path = train(_cfg(tmp_path, checkpoint_every=2), _data(), on_event=events.append)
    kinds = [e["type"] for e in events]
    assert kinds == ["progress", "progress", "checkpoint", "progress", "progress", "done"]
    pickle.dumps(events)  # plain data, can cross process boundaries
    prog = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in prog] == [1, 2, 3, 4] and prog[-1]["eta"] == 0
    assert {"loss", "sup"} <= set(prog[0]["losses"])
    _, meta = load_checkpoint(path)
    assert meta["class_names"] == ["bg", "disc", "square"] and meta["num_classes"] == 3
    assert meta["normalization"]["kind"] == "percentile_zscore"
    assert meta["method"] == "supervised" and meta["size"] == [16, 16]
    assert meta["data"]["labeled_volumes"] == 2 and meta["steps_done"] == 4
    # the machine it ran on, read back through the safe loader
    assert meta["trained_on"]["device"] == "cpu"
    assert meta["trained_on"]["torch"] == torch.__version__
    assert meta["trained_on"]["threads"] == torch.get_num_threads()


def test_cancel_stops_with_a_valid_checkpoint(tmp_path):
    events = []
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3  # three steps, then cancel

    path = train(_cfg(tmp_path, steps=50, checkpoint_every=2), _data(), on_event=events.append,
                 should_stop=stop)
    assert events[-1]["type"] == "cancelled" and events[-1]["path"] == path
    assert read_checkpoint(path)["meta"]["steps_done"] == 3
    assert sum(e["type"] == "progress" for e in events) == 3


def test_cancel_before_first_step_writes_nothing(tmp_path):
    path = train(_cfg(tmp_path), _data(), should_stop=lambda: True)
    assert path is None and not (tmp_path / "m.pt").exists()


def test_deterministic_under_seed(tmp_path):
    a = train(_cfg(tmp_path, method="mean_teacher", checkpoint=str(tmp_path / "a.pt"), seed=3),
              _data())
    b = train(_cfg(tmp_path, method="mean_teacher", checkpoint=str(tmp_path / "b.pt"), seed=3),
              _data())
    c = train(_cfg(tmp_path, method="mean_teacher", checkpoint=str(tmp_path / "c.pt"), seed=4),
              _data())
    sa, sb, sc = (read_checkpoint(p)["state_dict"] for p in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_fine_tune_keeps_network_config(tmp_path):
    first = train(_cfg(tmp_path, base=4, checkpoint=str(tmp_path / "first.pt")), _data())
    events = []
    second = train(_cfg(tmp_path, method="bcp", base=16, warmup_fraction=0.0,
                        checkpoint=str(tmp_path / "second.pt")), _data(),
                   on_event=events.append, init_checkpoint=first)
    model, meta = load_checkpoint(second)
    assert meta["network"]["base"] == 4  # from the checkpoint, not the config
    assert meta["init_checkpoint"] == first
    # it started from the first model's weights: the first loss is lower than from scratch
    scratch = []
    train(_cfg(tmp_path, method="bcp", base=4, warmup_fraction=0.0,
               checkpoint=str(tmp_path / "s.pt")), _data(), on_event=scratch.append)
    assert events[0]["losses"]["sup"] < scratch[0]["losses"]["sup"]


def test_a_fine_tuned_model_keeps_the_clean_up_its_card_names(tmp_path):
    from training.library.model_card import write_card

    first = train(_cfg(tmp_path, checkpoint=str(tmp_path / "first.pt")), _data())
    write_card(first, {"anatomy": "blobs", "postprocess": "per_class"})
    assert read_checkpoint(first)["meta"]["postprocess"] == "per_class"
    second = train(_cfg(tmp_path, checkpoint=str(tmp_path / "second.pt")), _data(),
                   init_checkpoint=first)
    assert read_checkpoint(second)["meta"]["postprocess"] == "per_class"
    scratch = train(_cfg(tmp_path, checkpoint=str(tmp_path / "scratch.pt")), _data())
    assert "postprocess" not in read_checkpoint(scratch)["meta"]


def test_fine_tune_on_more_classes_grows_the_head(tmp_path):
    """Issue 10: a label the checkpoint does not know adds a structure instead of failing."""
    from training.engine.checkpoint import read_checkpoint

    img, lab = blob_volume(0)
    two = TrainData.from_arrays([img], [np.minimum(lab, 1)])
    first = train(_cfg(tmp_path, checkpoint=str(tmp_path / "f.pt")), two)
    data = _data()
    grown_path = train(_cfg(tmp_path), data, init_checkpoint=first)
    meta = read_checkpoint(grown_path)["meta"]
    assert meta["network"]["num_classes"] == data.num_classes > 2
    assert len(meta["class_names"]) == data.num_classes


def test_training_learns_the_blobs(tmp_path):
    events = []
    train(_cfg(tmp_path, steps=80, lr=1e-2, log_every=1, base=8, labeled_bs=4), _data(3),
          on_event=events.append)
    losses = [e["losses"]["sup"] for e in events if e["type"] == "progress"]
    assert np.mean(losses[-5:]) < 0.6 * np.mean(losses[:5])


def test_3d_training_runs(tmp_path):
    vols = [blob_volume(i, shape=(8, 16, 16)) for i in range(2)]
    data = TrainData.from_arrays([v[0] for v in vols], [v[1] for v in vols])
    path = train(_cfg(tmp_path, dims=3, size=[8, 8, 8], method="ua_mt", steps=2), data)
    model, meta = load_checkpoint(path)
    assert meta["dims"] == 3 and model.config["dims"] == 3 and model.config["dropout"] > 0


def test_act_keeps_its_teacher_beside_the_student(tmp_path):
    path = train(_cfg(tmp_path, method="act", base=16, depth=3), _data())
    student, meta = load_checkpoint(path)
    teacher, tmeta = load_checkpoint(companion_path(path, "teacher"))
    assert companion_path(path, "teacher").name == "m.teacher.pt"
    assert tmeta["role"] == "teacher" and meta["method"] == tmeta["method"] == "act"
    assert count_parameters(teacher) > 5 * count_parameters(student)


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    """Stop after 3 of 6 steps, resume: the weights equal those of a run never stopped."""
    import pytest

    from training.engine.data import DataError

    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    for method in ("supervised", "mean_teacher"):
        whole = train(_cfg(tmp_path, method=method, steps=6, seed=1,
                           checkpoint=str(tmp_path / f"{method}_whole.pt")), _data())
        cfg = _cfg(tmp_path, method=method, steps=6, seed=1, checkpoint_every=2,
                   checkpoint=str(tmp_path / f"{method}_part.pt"))
        calls["n"] = 0
        part = train(cfg, _data(), should_stop=stop)
        resume_file = companion_path(part, "resume")
        assert resume_file.is_file()
        events = []
        done = train(cfg, _data(), resume=True, on_event=events.append)
        assert events[0] == {"type": "resumed", "step": 3, "path": str(resume_file)}
        assert [e["step"] for e in events if e["type"] == "progress"] == [4, 5, 6]
        a, b = read_checkpoint(whole)["state_dict"], read_checkpoint(done)["state_dict"]
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), method
        assert not resume_file.exists()  # finished: nothing left to resume
    with pytest.raises(DataError, match="nothing to resume"):
        train(cfg, _data(), resume=True)
    calls["n"] = 0
    train(cfg, _data(), should_stop=stop)  # stopped again; resumed with another step count:
    with pytest.raises(DataError, match="other settings.*steps: 6 -> 8"):
        train(_cfg(tmp_path, method="mean_teacher", steps=8, seed=1, checkpoint_every=2,
                   checkpoint=cfg.checkpoint), _data(), resume=True)


def test_an_early_checkpoint_comes_after_the_given_seconds_then_the_periodic_ones(tmp_path):
    """The first preview of a Retrain waits for seconds of training, not a third of the run."""
    events = []
    train(_cfg(tmp_path, steps=6, checkpoint_every=4, first_checkpoint_s=1e-9), _data(),
          on_event=events.append)
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [1, 4]
    events.clear()
    train(_cfg(tmp_path, steps=6, first_checkpoint_s=3600), _data(), on_event=events.append)
    assert not [e for e in events if e["type"] == "checkpoint"]  # not due within this run


def test_precision_is_checked_and_bf16_runs_where_the_cpu_has_it(tmp_path, monkeypatch):
    import pytest

    import training.core.cpu_math
    from training.methods import get_method

    with pytest.raises(ValueError, match="precision"):
        get_method("supervised", precision="fp16")
    a = train(_cfg(tmp_path, checkpoint=str(tmp_path / "a.pt"), seed=1), _data())
    sa = read_checkpoint(a)["state_dict"]
    # a CPU without bf16 in hardware would emulate it, slower than fp32: then bf16 is a no-op
    monkeypatch.setattr(training.core.cpu_math, "cpu_has_fast_bf16", lambda: False)
    b = train(_cfg(tmp_path, checkpoint=str(tmp_path / "b.pt"), seed=1, precision="bf16",
                   deterministic=False), _data())
    sb = read_checkpoint(b)
    assert all(torch.equal(sa[k], sb["state_dict"][k]) for k in sa)
    assert sb["meta"]["config"]["precision"] == "bf16"
    assert sb["meta"]["config"]["deterministic"] is False
    # with it, the forward passes run in bf16: the same seed lands on nearby, other weights
    monkeypatch.setattr(training.core.cpu_math, "cpu_has_fast_bf16", lambda: True)
    c = train(_cfg(tmp_path, checkpoint=str(tmp_path / "c.pt"), seed=1, precision="bf16"),
              _data())
    sc = read_checkpoint(c)["state_dict"]
    floats = [k for k in sa if sa[k].is_floating_point()]
    assert not all(torch.equal(sa[k], sc[k]) for k in floats)
    assert all(torch.isfinite(sc[k]).all() for k in floats)
    assert all(torch.allclose(sa[k], sc[k], atol=0.05) for k in floats)


def test_3d_training_takes_the_recipes_patches_and_augmentation(tmp_path):
    from training.engine.patches3d import VolumePatchSampler
    from training.fit.trainer import make_sampler

    cfg = _cfg(tmp_path, dims=3, size=[8, 16, 16], rotate=20.0)
    sampler = make_sampler(cfg, _data(), seed=0)
    assert isinstance(sampler, VolumePatchSampler)
    assert sampler.aug is not None and sampler.aug.rotate == 20.0 and not sampler.aug.flips
    assert sampler.foreground_share == cfg.foreground_share
    events = []
    train(cfg, _data(), on_event=events.append)
    assert events[-1]["type"] == "done"


def test_a_compiled_training_saves_a_plain_network_and_learns_as_eager(tmp_path, monkeypatch):
    """--compile wraps the trained networks in torch.compile; what is saved is the bare
    network, with the same keys and the same weights as an eager run. The "eager" backend
    runs the same wrapping without a C++ compiler."""
    from training.engine.ema import unwrap

    compiled_nets = []
    real = torch.compile

    def spy(model, **kw):
        compiled_nets.append((type(model).__name__, kw.get("backend")))
        return real(model, **kw)

    monkeypatch.setattr(torch, "compile", spy)
    eager = train(_cfg(tmp_path, method="mean_teacher", checkpoint=str(tmp_path / "e.pt")),
                  _data())
    assert compiled_nets == []
    compiled = train(_cfg(tmp_path, method="mean_teacher", checkpoint=str(tmp_path / "c.pt"),
                          compile="eager"), _data())
    assert compiled_nets == [("UNet", "eager")]  # the student; its EMA teacher stays eager
    a, b = read_checkpoint(eager), read_checkpoint(compiled)
    assert set(a["state_dict"]) == set(b["state_dict"])
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v)
    model, _ = load_checkpoint(compiled)
    assert type(model).__name__ == "UNet"
    inner = torch.nn.Linear(2, 2)
    assert unwrap(real(inner, backend="eager")) is inner


def test_a_size_acts_student_cannot_take_is_refused_before_training(tmp_path):
    """The teacher takes 24 px (depth 2: multiples of 4); the default student halves twice
    after a 1/4 unshuffle (multiples of 16): a clear error, not a shape error mid-run."""
    from training.engine.data import DataError

    with pytest.raises(DataError, match="multiple of 16.*student_unshuffle"):
        train(_cfg(tmp_path, method="act", size=[24, 24]), _data())
    assert not (tmp_path / "m.pt").exists()
    path = train(_cfg(tmp_path, method="act", size=[24, 24],
                      method_opts={"student_unshuffle": 2, "student_depth": 1}), _data())
    assert load_checkpoint(path)[1]["network"]["unshuffle"] == 2


def test_prior_init_starts_the_student_and_its_teacher_at_the_class_shares(tmp_path):
    data = _data()
    labels = np.concatenate([lab.ravel() for lab in data.labels])
    shares = data.class_shares()
    assert np.allclose(shares, np.bincount(labels, minlength=3) / labels.size, atol=1e-3)
    want = torch.log(torch.as_tensor(shares, dtype=torch.float32)).repeat_interleave(4)

    def seg_biases(prior_init, init=None, name="m"):
        """The seg biases of every network after one step at a rate too small to move them."""
        cfg = _cfg(tmp_path, method="mean_teacher", steps=3, lr=1e-12, checkpoint_every=1,
                   unshuffle=2, prior_init=prior_init, checkpoint=str(tmp_path / f"{name}.pt"))
        calls = []
        path = train(cfg, data, should_stop=lambda: bool(calls.append(1)) or len(calls) > 1,
                     init_checkpoint=init)
        state = torch.load(companion_path(path, "resume"), weights_only=True)
        mods = state["method"]["modules"]
        return {k: m["seg.bias"] for k, m in mods.items() if "seg.bias" in m}, path

    biases, path = seg_biases(True)
    assert set(biases) >= {"nets.student", "teacher"}
    assert all(torch.allclose(b, want, atol=1e-4) for b in biases.values())
    plain, _ = seg_biases(False, name="plain")
    assert not any(torch.allclose(b, want, atol=1e-2) for b in plain.values())
    # fine-tuning keeps what the checkpoint learnt: no prior over it
    trained = read_checkpoint(path)["state_dict"]["seg.bias"]
    trained = trained + torch.arange(trained.numel())
    ckpt = read_checkpoint(path)
    ckpt["state_dict"]["seg.bias"] = trained
    torch.save(ckpt, tmp_path / "init.pt")
    tuned, _ = seg_biases(True, init=str(tmp_path / "init.pt"), name="tuned")
    assert torch.allclose(tuned["nets.student"], trained, atol=1e-4)


def test_class_shares_count_weak_voxels_as_their_class_and_skip_unannotated_ones():
    image = np.zeros((2, 8, 8), np.float32)
    labels = np.full((2, 8, 8), 255, np.uint8)
    labels[0, :4] = 0  # 32 background
    labels[0, 4:6] = 1  # 16 class 1
    labels[1, :2] = 128 + 1  # 16 weak class 1
    # weak labels come from the tags path, which builds its TrainData directly
    shares = TrainData([image], [labels], num_classes=3).class_shares()
    assert np.allclose(shares, [0.5, 0.5 - 1e-3, 1e-3], atol=2e-3)
    assert shares.min() >= 1e-3 * 0.99 and np.isclose(shares.sum(), 1.0)


def test_a_methods_lr_option_sets_its_runs_rate_over_the_commands(tmp_path):
    from training.fit.trainer import method_settings

    events = []
    settings = method_settings("mean_teacher:lr=0.05")
    assert settings["lr"] == 0.05 and "lr" not in settings["method_opts"]
    # the command's --lr is 1e-3; the method's option wins, as the trainer's config takes it
    cfg = _cfg(tmp_path, lr_warmup=0.0, **{"lr": 1e-3, **settings})
    train(cfg, _data(), on_event=events.append)
    rates = [e["losses"]["lr"] for e in events if e["type"] == "progress"]
    assert rates[0] == pytest.approx(0.05) and max(rates) == pytest.approx(0.05)


def test_a_models_card_says_whether_its_output_started_at_the_class_shares(tmp_path):
    from training.library.model_card import recipe_summary

    said = {}
    for prior in (True, False):
        path = train(_cfg(tmp_path, steps=1, prior_init=prior,
                          checkpoint=str(tmp_path / f"{prior}.pt")), _data())
        said[prior] = recipe_summary(read_checkpoint(path)["meta"])
    assert "output started at the class shares" in said[True]
    assert "class shares" not in said[False]


def test_a_models_card_says_it_was_mirrored_left_right(tmp_path):
    from training.library.model_card import recipe_summary

    path = train(_cfg(tmp_path, steps=1, augment="mirror-left-right"), _data())
    meta = read_checkpoint(path)["meta"]
    assert meta["config"]["augment"] == "mirror-left-right"
    assert "mirrored left-right" in recipe_summary(meta)
    assert "mirror" not in recipe_summary({**meta, "config": {**meta["config"],
                                                              "augment": "anatomy"}})
