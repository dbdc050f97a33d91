"""Each method's own mechanism, on tiny tensors."""

import copy
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from test_training_synth import TINY

from training import IGNORE_INDEX
from training.engine.copy_paste import box_mask, dynamic_ratio, label_edges, mix
from training.engine.ema import ema_update
from training.engine.losses import supervised_loss
from training.engine.networks import UNet, count_parameters
from training.engine.sdf import batch_signed_distance, signed_distance
from training.methods import METHODS, get_method
from training.methods.act import distillation_loss
from training.methods.bcp import should_refresh
from training.methods.ua_mt import certainty_mask, entropy, uncertainty_threshold


def _batches(seed=0, n=2, size=16):
    g = torch.Generator().manual_seed(seed)
    xl = torch.randn(n, 1, size, size, generator=g)
    yl = torch.randint(0, 3, (n, size, size), generator=g)
    yl[:, : size // 4] = IGNORE_INDEX  # sparse annotation
    xu = torch.randn(n, 1, size, size, generator=g)
    return {"image": xl, "label": yl}, {"image": xu}


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("name", METHODS)
def test_every_method_steps_on_sparse_labels(name):
    torch.manual_seed(0)
    m = get_method(name, warmup_fraction=0.0)
    m.setup(TINY, "cpu")
    before = _flat(m.inference_model()).clone()
    lab, unl = _batches()
    losses = m.step(lab, unl, 1, 4)
    assert all(math.isfinite(v) for v in losses.values())
    assert not torch.equal(before, _flat(m.inference_model()))


def test_ema_update_equals_formula():
    t, s = UNet(2, 1, 2, base=4, depth=1), UNet(2, 1, 2, base=4, depth=1)
    t0 = [p.clone() for p in t.parameters()]
    ema_update(t, s, 0.9)
    for p, p0, ps in zip(t.parameters(), t0, s.parameters(), strict=True):
        assert torch.allclose(p, 0.9 * p0 + 0.1 * ps)


def test_mean_teacher_teacher_is_ema_of_student_after_step():
    torch.manual_seed(0)
    m = get_method("mean_teacher", warmup_fraction=0.0, ema_alpha=0.9)
    m.setup(TINY, "cpu")
    teacher_before = _flat(m.teacher).clone()
    lab, unl = _batches()
    step = 20  # min(0.9, 1 - 1/21) = 0.9
    m.step(lab, unl, step, 40)
    expected = 0.9 * teacher_before + 0.1 * _flat(m.main())
    assert torch.allclose(_flat(m.teacher), expected, atol=1e-6)


def test_ua_mt_threshold_ramps_and_mask_grows():
    c = 3
    thr = [uncertainty_threshold(s, 100, c) for s in range(0, 101, 10)]
    assert thr[0] == pytest.approx(0.75 * math.log(c), rel=0.01)
    assert thr[-1] == pytest.approx(math.log(c))
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, c, 32, 32, generator=g) * 2, 1)
    unc = entropy(probs)
    sizes = [certainty_mask(unc, t).sum().item() for t in thr]
    assert all(a <= b for a, b in zip(sizes, sizes[1:], strict=False))
    assert sizes[-1] > sizes[0]


def test_ua_mt_consistency_ignores_uncertain_voxels():
    unc = torch.tensor([0.1, 2.0])
    mask = certainty_mask(unc, 1.0)
    assert mask.tolist() == [1.0, 0.0]


def _brute_sdf(mask):
    """Reference: distances to the nearest voxel of the other set by brute force."""
    pts_in = np.argwhere(mask)
    pts_out = np.argwhere(~mask)
    d_out = np.zeros(mask.shape)
    d_in = np.zeros(mask.shape)
    for idx in np.ndindex(mask.shape):
        other = pts_out if mask[idx] else pts_in
        d = np.sqrt(((other - np.array(idx)) ** 2).sum(1)).min()
        (d_in if mask[idx] else d_out)[idx] = d
    # edt convention: an inside voxel's distance is to the nearest outside voxel
    ref = d_out / d_out.max() - d_in / d_in.max()
    boundary = mask & ~ndimage.binary_erosion(mask, border_value=1)
    ref[boundary] = 0
    return ref


def test_signed_distance_matches_exact_reference():
    y, x = np.mgrid[0:14, 0:14]
    mask = (y - 6) ** 2 + (x - 7) ** 2 < 16
    sdf = signed_distance(mask)
    assert np.allclose(sdf, _brute_sdf(mask), atol=1e-5)
    assert (sdf[mask & ~np.isclose(sdf, 0)] < 0).all() and (sdf[~mask] > 0).all()


def test_batch_sdf_per_class_and_empty():
    lab = torch.zeros(1, 8, 8, dtype=torch.long)
    lab[0, 2:5, 2:5] = 1
    sdf = batch_signed_distance(lab, 3)
    assert sdf.shape == (1, 2, 8, 8)
    assert sdf[0, 1].abs().max() == 0  # class 2 absent: no boundary, all zeros
    assert sdf[0, 0, 3, 3] < 0 and sdf[0, 0, 7, 7] > 0


def test_dtml_networks_teach_each_other_without_labels():
    torch.manual_seed(0)
    m = get_method("dtml", warmup_fraction=0.0, rampup_fraction=0.0)
    m.setup(TINY, "cpu")
    lab, unl = _batches()
    lab["label"][:] = IGNORE_INDEX  # no supervision at all: only the mutual term
    terms = m.losses(lab, unl, 5, 10)
    sum(terms.values()).backward()
    for name in ("student", "sdf_net"):
        grads = [p.grad for p in m.nets[name].parameters() if p.grad is not None]
        assert grads and max(g.abs().max() for g in grads) > 0


def test_ug_mcl_has_dual_task_student_and_ema_teacher():
    torch.manual_seed(0)
    m = get_method("ug_mcl", warmup_fraction=0.0, ema_alpha=0.5)
    m.setup(TINY, "cpu")
    assert "sdf" in m.main()(torch.randn(1, 1, 16, 16))
    before = _flat(m.teacher).clone()
    lab, unl = _batches()
    losses = m.step(lab, unl, 30, 40)
    assert {"intra", "cross", "sdf"} <= set(losses)
    assert torch.allclose(_flat(m.teacher), 0.5 * before + 0.5 * _flat(m.main()), atol=1e-6)


def test_copy_paste_mixes_labels_exactly_where_images_mix():
    g = torch.Generator().manual_seed(1)
    mask = box_mask((16, 16), 0.5, g)
    a_img, b_img = torch.full((2, 1, 16, 16), 1.0), torch.full((2, 1, 16, 16), -1.0)
    a_lab, b_lab = torch.full((2, 16, 16), 1), torch.full((2, 16, 16), 2)
    img, lab = mix(a_img, b_img, a_lab, b_lab, mask)
    from_a_img = img[:, 0] == 1.0
    assert torch.equal(from_a_img, lab == 1)
    assert torch.equal(from_a_img[0], mask.bool())
    assert mask.sum() == 64  # box side 0.5 * 16


def test_dynamic_mask_shrinks_over_training():
    ratios = [dynamic_ratio(s, 100) for s in (0, 50, 100)]
    assert ratios[0] > ratios[1] > ratios[2]
    g = torch.Generator().manual_seed(0)
    assert box_mask((30, 30), ratios[0], g).sum() > box_mask((30, 30), ratios[2], g).sum()


def test_label_edges_mark_boundaries_and_skip_unannotated():
    lab = torch.zeros(1, 10, 10, dtype=torch.long)
    lab[0, 3:7, 3:7] = 1
    lab[0, :, 9] = IGNORE_INDEX
    edges, valid = label_edges(lab)
    assert edges[0, 0, 5, 5] == 0 and edges[0, 0, 3, 5] == 1 and edges[0, 0, 2, 5] == 1
    assert edges[0, 0, 0, 0] == 0
    assert valid[0, 0, 5, 8] == 0 and valid[0, 0, 5, 5] == 1


def test_bcp_static_teacher_changes_only_at_its_period():
    torch.manual_seed(0)
    total, period = 12, 3
    m = get_method("bcp", warmup_fraction=0.25, refresh_every=period)
    m.setup(TINY, "cpu")
    warm = m.warmup_steps(total)
    lab, unl = _batches()
    changed = []
    for step in range(total):
        before = _flat(m.static_teacher).clone()
        m.step(lab, unl, step, total)
        changed.append(not torch.equal(before, _flat(m.static_teacher)))
    # during warm-up it tracks the student; the refresh at the end of warm-up copies identical
    # weights; afterwards it is frozen except every `period` steps
    expected = [s < warm or (s > warm and should_refresh(s, warm, period)) for s in range(total)]
    assert changed == expected
    assert sum(changed[warm:]) == len(range(warm + period, total, period)) > 0


def test_bcp_has_edge_head_and_loss():
    m = get_method("bcp", warmup_fraction=0.0, conf=0.0)  # the paper: every pseudo-label counts
    m.setup(TINY, "cpu")
    lab, unl = _batches()
    losses = m.step(lab, unl, 0, 4)
    assert losses["edge"] > 0
    assert m.inference_model().config["edge_head"]


def test_bcp_ignores_pseudo_labels_below_confidence():
    torch.manual_seed(0)
    _, unl = _batches()
    labels = {}
    for conf in (0.0, 0.5, 0.99):
        m = get_method("bcp", warmup_fraction=0.0, conf=conf, main_pieces=0)
        m.setup(TINY, "cpu")
        with torch.no_grad():
            p = 0.5 * (torch.softmax(m.ema_teacher(unl["image"])["logits"], 1)
                       + torch.softmax(m.static_teacher(unl["image"])["logits"], 1))
        labels[conf] = m.pseudo_labels(unl["image"])
        kept = labels[conf] != IGNORE_INDEX
        assert torch.equal(kept, p.max(1).values >= conf)
        assert torch.equal(labels[conf][kept], p.argmax(1)[kept])
    assert (labels[0.0] != IGNORE_INDEX).all()  # an untrained net is never 99 % sure
    assert (labels[0.99] == IGNORE_INDEX).all()


def test_bcp_box_shrinks_to_box_end_and_stays_at_two_thirds_as_in_the_paper(monkeypatch):
    import training.methods.bcp as bcp_module

    drawn = []
    real = bcp_module.box_mask
    monkeypatch.setattr(bcp_module, "box_mask",
                        lambda shape, ratio, gen=None: drawn.append(ratio) or real(shape, ratio,
                                                                                   gen))
    lab, unl = _batches()
    for box_end in (None, 2 / 3):
        opts = {} if box_end is None else {"box_end": box_end}
        m = get_method("bcp", warmup_fraction=0.0, edge=0, **opts)
        m.setup(TINY, "cpu")
        drawn.clear()
        for step in (0, 9):
            m.step(lab, unl, step, 10)
        if box_end is None:  # the default: 2/3 of the side at the start, near 1/3 at the end
            assert drawn[0] == pytest.approx(2 / 3) and drawn[1] == pytest.approx(2 / 3 - 0.9 / 3)
        else:  # the paper's fixed box
            assert drawn == pytest.approx([2 / 3, 2 / 3])


class _FixedTeacher(torch.nn.Module):
    """A teacher whose logits are given: two blobs of class 1 and 2, and specks of both."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return {"logits": self.logits}


def test_bcp_main_pieces_keeps_one_piece_of_each_class_per_pseudo_label():
    truth = torch.zeros(2, 16, 16, dtype=torch.long)
    truth[:, 2:8, 2:8] = 1
    truth[:, 9:14, 9:15] = 2
    truth[0, 0, 15] = 1  # far-off specks, as a weak teacher paints them
    truth[0, 15, 0] = 2
    truth[1, 12, 2] = 1
    logits = 5.0 * torch.nn.functional.one_hot(truth, 3).movedim(-1, 1).float()
    _, unl = _batches()
    labels = {}
    for pieces in (0, 1, None):  # None: the default, chosen on ACDC val
        opts = {} if pieces is None else {"main_pieces": pieces}
        m = get_method("bcp", warmup_fraction=0.0, conf=0.0, **opts)
        m.setup(TINY, "cpu")
        m.ema_teacher = m.static_teacher = _FixedTeacher(logits)
        labels[pieces] = m.pseudo_labels(unl["image"])
    assert torch.equal(labels[0], truth)  # off: the specks are taught
    expected = truth.clone()
    expected[0, 0, 15] = expected[0, 15, 0] = expected[1, 12, 2] = 0
    assert torch.equal(labels[1], expected)  # on: they are taught as background
    assert torch.equal(labels[None], expected)  # on by default


def test_bcp_plain_supervised_term_is_the_loss_on_the_unmixed_batch():
    torch.manual_seed(0)
    lab, unl = _batches()
    m = get_method("bcp", warmup_fraction=0.0, sup=2.0)
    m.setup(TINY, "cpu")
    net = copy.deepcopy(m.inference_model())
    losses = m.step(lab, unl, 0, 4)
    with torch.no_grad():  # GroupNorm: a sample's output does not depend on its batch mates
        expected = 2.0 * supervised_loss(net.train()(lab["image"])["logits"], lab["label"])
    assert math.isclose(losses["plain"], float(expected), rel_tol=1e-4)
    plain = get_method("bcp", warmup_fraction=0.0, sup=0.0)
    plain.setup(TINY, "cpu")
    assert "plain" not in plain.step(lab, unl, 0, 4)  # off with sup=0, as in the paper


def test_bcp_warm_paste_warms_up_on_labelled_images_pasted_into_each_other():
    torch.manual_seed(0)
    lab, unl = _batches()
    m = get_method("bcp", warmup_fraction=1.0, warm_paste=1, edge=0)
    m.setup(TINY, "cpu")
    net = copy.deepcopy(m.inference_model())
    gen = torch.Generator()
    gen.set_state(m.generator.get_state())  # the box the step will draw
    losses = m.step(lab, unl, 0, 4)
    mask = box_mask(tuple(lab["image"].shape[2:]), 2 / 3, gen)
    x, y = mix(lab["image"].roll(1, 0), lab["image"], lab["label"].roll(1, 0), lab["label"],
               mask)
    assert not torch.equal(y, lab["label"])  # the neighbour's labels came with its box
    with torch.no_grad():
        expected = supervised_loss(net.train()(x)["logits"], y)
        unmixed = supervised_loss(net.train()(lab["image"])["logits"], lab["label"])
    assert math.isclose(losses["sup"], float(expected), rel_tol=1e-4)
    assert not math.isclose(float(expected), float(unmixed), rel_tol=1e-3)
    plain = get_method("bcp", warmup_fraction=1.0, edge=0)  # the default: plain warm-up
    plain.setup(TINY, "cpu")
    plain.main().load_state_dict(net.state_dict())
    assert math.isclose(plain.step(lab, unl, 0, 4)["sup"], float(unmixed), rel_tol=1e-4)


def test_act_student_is_small_and_is_the_output():
    m = get_method("act")
    m.setup({**TINY, "base": 16, "depth": 4, "num_classes": 4}, "cpu")
    ratio = count_parameters(m.teacher_model()) / count_parameters(m.inference_model())
    assert ratio >= 20  # the default student: 68,692 weights against ACDC teachers' 1.1 M
    assert m.inference_model() is m.nets["student"]


def test_distillation_is_zero_when_student_matches_target():
    logits = torch.randn(2, 3, 4, 4)
    target = torch.softmax(logits / 2.0, 1)
    assert distillation_loss(logits, target, 2.0).item() == pytest.approx(0, abs=1e-6)
    assert distillation_loss(-logits, target, 2.0).item() > 0.01


def test_warmup_is_supervised_only():
    m = get_method("mean_teacher", warmup_fraction=0.5)
    m.setup(TINY, "cpu")
    lab, unl = _batches()
    assert set(m.step(lab, unl, 0, 10)) == {"sup", "loss", "lr"}
    assert "cons" in m.step(lab, unl, 6, 10)
    assert copy.deepcopy(m.teacher) is not None


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method"):
        get_method("nope")


def test_method_options_are_declared_typed_and_checked():
    from training.methods import get_method, options_help, parse_spec

    assert parse_spec("bcp:conf=0.5,edge=0,warmup_fraction=0.2") == (
        "bcp", {"conf": 0.5, "edge": False, "warmup_fraction": 0.2})
    assert parse_spec("ua_mt:mc_passes=8") == ("ua_mt", {"mc_passes": 8})
    assert isinstance(parse_spec("ua_mt:mc_passes=8")[1]["mc_passes"], int)
    for bad, why in (("bcp:cnf=1", "no option 'cnf'"), ("nope", "unknown method"),
                     ("dtml:heaviside_k=big", "needs a number"), ("act:kd", "key=value")):
        with pytest.raises(ValueError, match=why):
            parse_spec(bad)
    with pytest.raises(ValueError, match="no option"):  # nor when built directly
        get_method("mean_teacher", mc_passes=4)
    m = get_method("bcp")  # defaults: the variant validation chose
    assert (m.opt("conf"), m.opt("sup"), m.warmup_fraction) == (0.8, 1.0, 0.3)
    assert (m.opt("u_weight"), m.opt("main_pieces")) == (1.0, True)
    text = options_help()
    for name in ("bcp:conf=0.8", "ua_mt:mc_passes=4", "dtml:heaviside_k", "act:student_base",
                 "cam_weak:confidence", "any:warmup_fraction"):
        assert name in text


def test_train_cli_takes_method_options(tmp_path, capsys):
    from test_training_synth import write_dataset

    from training.cli import main
    from training.engine.checkpoint import load_checkpoint

    data = write_dataset(tmp_path / "data", n=3)
    out = tmp_path / "m.pt"
    assert main(["train", "--data", str(data), "--labeled", "1", "--method",
                 "bcp:conf=0.5,sup=0,warmup_fraction=0.5", "--steps", "2", "--size", "16", "16",
                 "--base", "4", "--depth", "2", "--labeled-bs", "2", "--device", "cpu",
                 "--out", str(out)]) == 0
    cfg = load_checkpoint(out)[1]["config"]
    assert cfg["method"] == "bcp" and cfg["warmup_fraction"] == 0.5
    assert cfg["method_opts"] == {"conf": 0.5, "sup": 0.0}
    with pytest.raises(SystemExit):
        main(["train", "--data", str(data), "--labeled", "1", "--method", "bcp:cnf=1",
              "--out", str(out)])
    assert "no option 'cnf'" in capsys.readouterr().err


def test_act_can_distil_into_a_student_at_half_resolution():
    torch.manual_seed(0)
    m = get_method("act", warmup_fraction=0.0, student_unshuffle=2, student_base=8,
                   student_depth=2)
    m.setup(TINY, "cpu")
    student = m.inference_model()
    assert student.config["unshuffle"] == 2 and m.model_config["unshuffle"] == 2
    lab, unl = _batches()
    before = _flat(student).clone()
    losses = m.step(lab, unl, 1, 4)
    assert all(math.isfinite(v) for v in losses.values())
    assert not torch.equal(before, _flat(student))
    assert student(lab["image"])["logits"].shape[2:] == lab["image"].shape[2:]


def test_act_can_give_its_student_batch_norm_while_the_teacher_keeps_group_norm():
    from training.engine.networks import has_batch_norm

    m = get_method("act", student_norm="batch", student_base=8, student_depth=2)
    m.setup(TINY, "cpu")
    assert m.model_config["norm"] == "batch" and has_batch_norm(m.inference_model())
    assert not has_batch_norm(m.teacher_model())
    lab, unl = _batches()
    assert all(math.isfinite(v) for v in m.step(lab, unl, 1, 4).values())
    m = get_method("act")  # the 2-D default, chosen on ACDC val
    m.setup(TINY, "cpu")
    assert m.model_config["norm"] == "batch" and m.model_config["unshuffle"] == 4
    m = get_method("act", student_norm="group")
    m.setup(TINY, "cpu")
    assert not has_batch_norm(m.inference_model())


def test_act_keeps_a_3d_student_at_full_resolution():
    m = get_method("act")  # the 2-D default runs the student at 1/4 resolution; 3-D cannot
    m.setup({"kind": "unet", "dims": 3, "in_channels": 1, "num_classes": 2, "base": 4,
             "depth": 2}, "cpu")
    assert m.inference_model().config.get("unshuffle", 1) == 1
    assert m.model_config["norm"] == "group"  # the teacher's: 3-D batches are a few patches


def test_mean_teacher_family_keeps_the_papers_schedule_unless_told_otherwise():
    """mean_teacher and ua_mt: no consistency for the first 3.3 %, then a ramp over the whole
    rest of the run (SSL4MIS); cam_weak and ug_mcl keep their own; an option still wins."""
    total = 1500
    for name in ("mean_teacher", "ua_mt"):
        m = get_method(name)
        assert m.warmup_steps(total) == 50
        assert m.ramp(total // 2, total) < 0.5 < m.ramp(total - 100, total)
        assert m.ramp(total, total) == pytest.approx(1.0)
    assert get_method("cam_weak").rampup_fraction == 0.4
    assert get_method("cam_weak").warmup_fraction == 0.3
    assert (get_method("ug_mcl").rampup_fraction, get_method("ug_mcl").warmup_fraction) == (0.4, 0)
    m = get_method("mean_teacher", rampup_fraction=0.4, warmup_fraction=0.0)
    assert m.warmup_steps(total) == 0 and m.ramp(600, total) == pytest.approx(1.0)


def test_act_distillation_phase_freezes_the_teachers_and_restarts_the_students_average():
    torch.manual_seed(0)
    m = get_method("act", warmup_fraction=0.0, distil_fraction=0.5, weights_ema=0.99,
                   student_base=8, student_depth=2)
    m.setup(TINY, "cpu")
    lab, unl = _batches()
    first = m.step(lab, unl, 0, 4)  # before the phase: the teacher learns
    assert "teacher_sup" in first
    teacher_before = _flat(m.teacher_model()).clone()
    student_before = _flat(m.nets["student"]).clone()
    second = m.step(lab, unl, 2, 4)  # the phase's first step
    assert set(second) == {"student_sup", "distil", "loss", "lr"}
    assert torch.equal(teacher_before, _flat(m.teacher_model()))
    assert not torch.equal(student_before, _flat(m.nets["student"]))
    # the average restarted from this phase: it holds the student's weights, not a blend
    # with those learnt from the moving teachers
    assert torch.allclose(_flat(m.inference_model()), _flat(m.nets["student"]))
    m.step(lab, unl, 3, 4)
    assert torch.equal(teacher_before, _flat(m.teacher_model()))
    assert not torch.allclose(_flat(m.inference_model()), _flat(m.nets["student"]))
    # with every image labelled (no unlabelled batch) the phase still distils
    assert set(m.step(lab, None, 3, 4)) == {"student_sup", "distil", "loss", "lr"}
    assert torch.equal(teacher_before, _flat(m.teacher_model()))


def test_act_distillation_phase_keeps_the_teachers_schedule_and_restarts_the_students():
    plain = get_method("act", lr_warmup=0.02, distil_fraction=0.0)
    phased = get_method("act", lr_warmup=0.02, distil_fraction=0.5)
    for step in (0, 10, 700, 1499):  # the teacher of 3000 steps = a 1500-step run's
        assert phased.learning_rate(step, 3000) == plain.learning_rate(step, 1500)
        assert phased.ramp(step, 3000) == plain.ramp(step, 1500)
    assert phased.warmup_steps(3000) == plain.warmup_steps(1500)
    assert not phased.in_distillation(1499, 3000) and phased.in_distillation(1500, 3000)
    # the student's rate rises again in the phase and decays to its end
    assert phased.learning_rate(1500 + 40, 3000) == plain.learning_rate(40, 1500)
    assert phased.learning_rate(2999, 3000) < 1e-5


def test_bcp_weighs_the_mixed_unlabelled_term_as_the_labelled_one_by_default():
    lab, unl = _batches()
    unsup = {}
    for opts in ({}, {"u_weight": 0.5}):  # the default (chosen on ACDC val), then the paper's
        torch.manual_seed(0)
        m = get_method("bcp", warmup_fraction=0.0, conf=0.0, **opts)  # every pseudo-label
        m.setup(TINY, "cpu")
        unsup[opts.get("u_weight", 1.0)] = float(m.step(lab, unl, 0, 4)["unsup"])
    assert unsup[1.0] > 0
    assert math.isclose(unsup[1.0], 2 * unsup[0.5], rel_tol=1e-5)
