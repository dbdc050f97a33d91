"""pytest-qt: a structure no model knows, named in the dock, painted, learnt in the background."""

from __future__ import annotations

import numpy as np
import pytest
from test_widget import PLUGIN

from napari_semiseg._dock_layout import NEW
from napari_semiseg._widget import PREDICTION, AssistantWidget
from training.engine.checkpoint import read_checkpoint

pytestmark = pytest.mark.gui


def _two_structures(n=8, size=64, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[0:n, 0:size, 0:size]
    truth = np.zeros((n, size, size), np.uint8)
    truth[(y - 20) ** 2 + (x - 20) ** 2 < 100] = 1
    truth[(y - 44) ** 2 + (x - 44) ** 2 < 64] = 2
    image = (truth.astype(np.float32) * 400 + rng.normal(100, 30, truth.shape)).astype(np.float32)
    return image, truth


def _dock_on_two_structures(make_napari_viewer, tmp_path, monkeypatch):
    """The assistant docked on a two-structure scan, in a fresh home: (viewer, widget, truth)."""
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    image, truth = _two_structures()
    viewer.add_image(image, name="kidneys")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, widget, truth


def _wait_retrain(qtbot, widget, timeout=180000):
    qtbot.waitUntil(lambda: not widget.training, timeout=timeout)


def _saved_series_model(tmp_path, monkeypatch):
    """A New model taught on two painted slices of a two-structure scan and saved in a fresh
    home's models folder, as Save model does: (image, truth, its path)."""
    from napari_semiseg.model_library import user_models_dir
    from training.interactive.loop import finetune
    from training.interactive.new_model import new_model

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    image, truth = _two_structures()
    start = new_model(tmp_path / "new.pt", ["background", "left kidney", "right kidney"])
    labels = np.full(truth.shape, 255, np.uint8)
    labels[[1, 6]] = truth[[1, 6]]
    user_models_dir().mkdir(parents=True)
    taught = finetune(start, image, labels, steps=2, out_path=user_models_dir() / "kidneys.pt",
                      labeled_bs=2, unlabeled_bs=0, device="cpu")
    return image, truth, taught


def _pick(widget, model_path) -> None:
    """Choose a saved model from the dock's Model list by its path."""
    label = next(m.label for m in widget._library if str(m.path) == str(model_path))
    widget.model_combo.setCurrentText(label)
    widget._model_chosen()


def test_new_model_two_named_structures_paint_retrain(qtbot, make_napari_viewer, tmp_path,
                                                      monkeypatch):
    viewer, widget, truth = _dock_on_two_structures(make_napari_viewer, tmp_path, monkeypatch)
    try:
        widget.structures.rename(1, "left kidney")  # what typing in the list does
        widget.structures.add_structure()
        widget.structures.rename(2, "right kidney")
        assert widget.structures.names() == ["background", "left kidney", "right kidney"]
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        s = widget.session
        assert s is not None and s.settings.class_names[1:] == ["left kidney", "right kidney"]
        layer = viewer.layers[PREDICTION]
        assert (layer.data == 255).all()  # nothing is annotated yet
        assert not s.settings.judge_retrains  # taught from scratch: no slice held back
        spare = widget.bridge._spare  # readied while the user paints: torch loads meanwhile
        assert spare is not None and spare.poll() is None
        assert list(layer.features["name"]) == ["background", "left kidney", "right kidney"]
        for z in (1, 6):  # the user paints both structures on two slices
            widget.go_to_slice(z)
            layer.brush_size = 1
            for c in (1, 2):
                ys, xs = np.nonzero(truth[z] == c)
                layer.data_setitem((np.full(len(ys), z), ys, xs), c)
        assert s.labelled_slices(0) == [1, 6]
        assert set(np.unique(s.user_labels[1])) == {0, 1, 2}  # the rest of a painted slice is
        painted = s.user_labels[[1, 6]].copy()                # background, not "unannotated"
        widget.retrain_form.steps.value = 40
        widget.retrain_btn.click()
        assert widget.bridge.pid == spare.pid  # Retrain ran in the readied process
        _wait_retrain(qtbot, widget)
        assert s.current != "v0", widget.status.text()
        meta = read_checkpoint(s.current_model_path)["meta"]
        assert meta["class_names"] == ["background", "left kidney", "right kidney"]
        pred = s.prediction
        np.testing.assert_array_equal(pred[[1, 6]], painted)  # painted slices untouched
        for c in (1, 2):  # both structures found on the slices nobody painted
            inter = ((pred == c) & (truth == c))[2:6].sum()
            assert 2 * inter / ((pred == c)[2:6].sum() + (truth == c)[2:6].sum()) > 0.6
        assert list(viewer.layers[PREDICTION].features["name"])[2] == "right kidney"
        # painted between the ends on a New model's first scan: the gap's middle comes next
        qtbot.waitUntil(lambda: widget.uncertain_list.count() > 0, timeout=10000)
        top = widget.uncertain_list.item(0).text()
        assert top.startswith("slice 3 ") and "halfway between painted slices 1 and 6" in top
        assert widget.next_uncertain_slice() == 3
        widget.retrain_form.within_extent.value = False  # the outer slices are not the ends
        qtbot.waitUntil(lambda: "halfway" not in widget.uncertain_list.item(0).text(),
                        timeout=10000)
        widget.retrain_form.within_extent.value = True

        # the next scan starts from what this one taught, and a folder of unlabelled scans
        # feeds the next Retrain
        widget.between.steps = 5  # trained between scans: a few steps in a test
        image2, truth2 = _two_structures(seed=1)
        viewer.add_image(image2, name="next kidneys")
        widget.image_combo.setCurrentText("next kidneys")
        folder = tmp_path / "unlabelled"
        folder.mkdir()
        import SimpleITK as sitk

        sitk.WriteImage(sitk.GetImageFromArray(image2), str(folder / "u1.nii.gz"))
        (folder / "broken.nii.gz").write_bytes(b"not a scan")
        widget.choose_unlabelled_folder(str(folder))
        widget.predict_btn.click()
        qtbot.waitUntil(lambda: widget._worker is None and widget.session is not s
                        and widget.session.uncertainty is not None, timeout=60000)
        s2 = widget.session
        # the model trained on the scan just left meanwhile: its version is in use on this
        # one, whose prediction was refreshed with it
        qtbot.waitUntil(lambda: not widget.between.running and not widget.jobs.busy,
                        timeout=60000)
        assert "5 steps between scans on 1 finished scan(s)" in s2.current_version.note
        assert s2.settings.class_names == s.settings.class_names
        assert not s2.settings.judge_retrains  # still the model taught from scratch
        # the next scan is painted as the first: its ends, then suggestions between them
        assert widget.retrain_form.within_extent.value
        assert not read_checkpoint(s2.current_model_path)["meta"].get("untrained")
        pred2 = s2.prediction
        assert ((pred2 == 1) & (truth2 == 1)).sum() > 0.5 * (truth2 == 1).sum()
        nxt = widget.next_uncertain_slice()  # a slice where the structure is
        assert (pred2[nxt] > 0).any()
        # the scan left behind teaches the next Retrains: its whole segmentation, as finished
        [(img1, seg1)] = widget.finished.files()
        np.testing.assert_array_equal(np.load(img1), s.image)
        np.testing.assert_array_equal(np.load(seg1), s.prediction)
        started = []
        real_start = widget.bridge.start
        monkeypatch.setattr(widget.bridge, "start",
                            lambda job: started.append(job) or real_start(job))
        layer2 = viewer.layers[PREDICTION]
        widget.go_to_slice(nxt)
        shown = s2.prediction[nxt].copy()  # what the model showed there
        ys, xs = np.nonzero(np.ones_like(shown))
        layer2.data_setitem((np.full(len(ys), nxt), ys, xs), 0)  # "no structure here"
        assert s2.labelled_slices(0) == [nxt]
        widget.retrain_form.steps.value = 2
        widget.retrain_btn.click()
        # the model missed the one slice painted: the structure's ends are asked for first
        assert not started and not widget.training
        assert "first and last slices" in widget.status.text()
        assert widget.retrain_form.within_extent.value
        for c in np.unique(shown):  # painted as the model showed it: it had the slice right
            ys, xs = np.nonzero(shown == c)
            layer2.data_setitem((np.full(len(ys), nxt), ys, xs), int(c))
        widget.retrain_btn.click()
        assert not widget.retrain_form.within_extent.value  # no ends needed on this scan
        _wait_retrain(qtbot, widget)
        assert started and started[0].finished == [(img1, seg1)]
        assert started[0].extent is None
        from napari_semiseg.retrain_job import RetrainJob, unlabelled_scans

        # what the training process makes of the folder: the broken file is skipped, by name
        job = RetrainJob("", "", "", "", unlabelled_folder=widget.unlabelled_folder)
        scans, skipped = unlabelled_scans(job, 3)
        assert len(scans) == 1 and len(skipped) == 1 and "broken.nii.gz" in skipped[0]
    finally:
        widget.bridge.close()


def test_a_fourth_structure_on_the_shipped_cardiac_model(qtbot, make_napari_viewer, tmp_path,
                                                         monkeypatch):
    from conftest import SAMPLES

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "acdc/patient001_frame01.nii.gz"), plugin=PLUGIN)
    widget = AssistantWidget(viewer)  # Automatic: the shipped cardiac model
    viewer.window.add_dock_widget(widget)
    try:
        widget.predict_btn.click()
        qtbot.waitUntil(lambda: widget._worker is None and widget.session is not None
                        and widget.session.uncertainty is not None, timeout=60000)
        s = widget.session
        assert s.settings.class_names == ["background", "RV", "Myo", "LV"]
        layer = viewer.layers[PREDICTION]
        widget.go_to_slice(5)
        layer.brush_size = 8
        layer.paint((5, 120, 120), 4)  # a label the 4-class model does not know
        assert s.settings.class_names[4] == "structure 4"
        assert widget.structures.names()[4] == "structure 4"
        widget.structures.rename(4, "scar")
        assert s.settings.class_names[4] == "scar"
        widget.retrain_form.steps.value = 3
        widget.retrain_btn.click()
        _wait_retrain(qtbot, widget)
        newest = s.versions[-1]
        meta = read_checkpoint(s.model_file(newest))["meta"]
        assert meta["network"]["num_classes"] == 5 and meta["class_names"][4] == "scar"
        assert s.user_labels[5, 120, 120] == 4  # the stroke is kept
    finally:
        widget.bridge.close()


def test_new_model_starts_from_a_shipped_pretrained_network(make_napari_viewer, tmp_path,
                                                           monkeypatch):
    """When a starting network is shipped (here a label-free one), New model starts from its
    weights."""
    import napari_semiseg.default_model as dm
    from training.interactive.new_model import NEW_MODEL_SIZE
    from training.interactive.pretrain import pretrain

    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    slices = np.random.default_rng(0).normal(size=(4, *NEW_MODEL_SIZE)).astype(np.float32)
    shipped = pretrain(slices, tmp_path / "pretrained.pt", steps=1, batch=2, device="cpu")
    monkeypatch.setattr(dm, "NEW_MODEL_START", tmp_path / "pretrained.pt")
    viewer = make_napari_viewer()
    viewer.add_image(_two_structures()[0], name="kidneys")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        payload = read_checkpoint(widget.session.current_model_path)
        assert payload["meta"]["pretrained_from"] == "pretrained.pt"
        pre = read_checkpoint(shipped)["state_dict"]
        key = "down.0.0.conv.weight"
        assert key in pre and payload["state_dict"][key].equal(pre[key])
        monkeypatch.setattr(dm, "NEW_MODEL_START", tmp_path / "absent.pt")
        assert dm.new_model_start() is None  # none shipped: random weights, as today
    finally:
        widget.bridge.close()


def test_ticking_the_ends_box_keeps_the_retrain_between_the_painted_ends(
        qtbot, make_napari_viewer, tmp_path, monkeypatch):
    viewer, widget, truth = _dock_on_two_structures(make_napari_viewer, tmp_path, monkeypatch)
    try:
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        s = widget.session
        layer = viewer.layers[PREDICTION]
        for z in (2, 5):  # the user paints where the structure starts and ends
            widget.go_to_slice(z)
            ys, xs = np.nonzero(truth[z] == 1)
            layer.data_setitem((np.full(len(ys), z), ys, xs), 1)
        # on for a New model's first scan, as "fill between slices" is; the user may untick it
        assert widget.retrain_form.within_extent.value
        assert widget.retrain_form.method.value == "supervised"
        widget.retrain_form.steps.value = 10
        widget.retrain_btn.click()
        _wait_retrain(qtbot, widget)
        assert s.current != "v0", widget.status.text()
        pred = s.prediction
        assert not np.isin(pred[[0, 1, 6, 7]], (1, 2)).any()  # nothing beyond the ends
        assert (pred[3:5] == 1).any()  # between them, the structure
    finally:
        widget.bridge.close()


def test_a_saved_new_model_goes_on_as_its_series(qtbot, make_napari_viewer, tmp_path,
                                                 monkeypatch):
    """Taught from scratch, saved, picked again after a restart: the next scan goes on as the
    series did, not as a library model's would."""
    from napari_semiseg._series_dock import NEW_MODEL_METHOD, NEW_MODEL_STEPS
    from training.engine.checkpoint import read_meta

    image, truth, taught = _saved_series_model(tmp_path, monkeypatch)
    meta = read_meta(taught)
    assert meta["new_model"] and not meta.get("untrained")  # a fine-tune keeps what it is
    viewer = make_napari_viewer()
    viewer.add_image(image, name="kidneys")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        form = widget.retrain_form
        form.steps.value = 60
        form.shape_prior.value = False
        assert not form.between_scans.enabled  # only a New model's series learns between scans
        _pick(widget, taught)
        assert widget.new_model and widget.learned_model == str(taught)
        assert form.between_scans.enabled  # its series goes on, training between scans too
        assert "New model" in widget.model_label.text()
        assert form.steps.value >= NEW_MODEL_STEPS and form.shape_prior.value
        assert form.method.value == NEW_MODEL_METHOD
        s = widget.ensure_session()
        assert not s.settings.judge_retrains  # every painted slice teaches, as in its series
        assert widget._middle_first_scan(s)  # the middle slice first, the ends if it missed
        assert s.settings.class_names == ["background", "left kidney", "right kidney"]
    finally:
        widget.bridge.close()


@pytest.mark.parametrize("reads", ["grey", "all"])
def test_a_new_model_on_the_lgg_sample_reads_what_new_model_channels_says(
        qtbot, make_napari_viewer, tmp_path, monkeypatch, reads):
    """The LGG sample opens as an RGB stack (pre-contrast, FLAIR, post-contrast): a New model
    started on it reads its three channels or its FLAIR, as NEW_MODEL_CHANNELS says, and its
    first Retrain gets the scan as that network reads it."""
    from conftest import SAMPLES

    import training.interactive.new_model as nm

    monkeypatch.setattr(nm, "NEW_MODEL_CHANNELS", reads)
    monkeypatch.setenv("NAPARI_SEMISEG_HOME", str(tmp_path / "home"))
    viewer = make_napari_viewer()
    viewer.open(str(SAMPLES / "lgg/TCGA_CS_4941_19960909/images"), plugin=PLUGIN)
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        widget.structures.rename(1, "FLAIR abnormality")
        widget.model_combo.setCurrentText(NEW)
        widget._model_chosen()
        s = widget.session
        assert s is not None and s.channels is not None
        network = read_checkpoint(s.current_model_path)["meta"]["network"]
        want = 3 if reads == "all" else 1
        assert network["in_channels"] == want
        assert s.model_input(want).shape == ((*s.image.shape, 3) if want == 3 else s.image.shape)
        if reads == "all":  # a Retrain in the background trains and predicts on the channels
            layer = viewer.layers[PREDICTION]
            z = s.image.shape[0] // 2
            widget.go_to_slice(z)
            ys, xs = np.nonzero(s.channels[z, ..., 1] > np.percentile(s.channels[z, ..., 1], 99))
            layer.data_setitem((np.full(len(ys), z), ys, xs), 1)
            widget.retrain_form.steps.value = 3
            widget.retrain_btn.click()
            _wait_retrain(qtbot, widget)
            assert s.current != "v0", widget.status.text()
            assert read_checkpoint(s.current_model_path)["meta"]["network"]["in_channels"] == 3
    finally:
        widget.bridge.close()


def test_the_next_scan_is_refreshed_by_training_between_scans(qtbot, make_napari_viewer,
                                                              tmp_path, monkeypatch):
    """Leaving a finished scan of a New model's series, the model trains on it in the
    training process while the next scan shows the model as it is. A Retrain clicked meanwhile
    waits; Cancel stops the run, keeping its steps: they become the next scan's version, its
    prediction is refreshed with them (the painted slice kept bit for bit), and the Retrain
    then starts from that version."""
    import napari_semiseg._widget as dock

    image, truth, taught = _saved_series_model(tmp_path, monkeypatch)
    image_b, truth_b = _two_structures(seed=1)
    predicted_with = []
    real_predict = dock._predict
    monkeypatch.setattr(dock, "_predict",
                        lambda model, *a: predicted_with.append(model) or real_predict(model, *a))
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scan A")
    viewer.add_image(image_b, name="scan B")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    started = []
    real_start = widget.bridge.start
    monkeypatch.setattr(widget.bridge, "start",
                        lambda job, target=None: started.append(job) or real_start(job, target))
    try:
        widget.between.steps = 5000  # stopped below long before its end
        _pick(widget, taught)
        widget.image_combo.setCurrentText("scan A")
        widget.predict()
        qtbot.waitUntil(lambda: not widget.jobs.busy, timeout=60000)
        assert not widget.between.running  # nothing finished yet
        layer = viewer.layers[PREDICTION]
        for z in (1, 6):
            ys, xs = np.nonzero(np.ones_like(truth[z]))
            layer.data_setitem((np.full(len(ys), z), ys, xs), truth[z][ys, xs])

        widget.image_combo.setCurrentText("scan B")  # the user moves on
        widget.predict()
        s_b = widget.session
        assert widget.between.running and widget.cancel_btn.isEnabled()
        [job] = started
        assert job.model_path == str(taught) and len(job.finished) == 1
        # the next scan shows the model as it is at once
        qtbot.waitUntil(lambda: s_b.uncertainty is not None and not widget.jobs.busy,
                        timeout=60000)
        assert predicted_with[-1] == s_b.model_file(s_b.versions[0])
        layer = viewer.layers[PREDICTION]
        ys, xs = np.nonzero(np.ones_like(truth_b[4]))
        layer.data_setitem((np.full(len(ys), 4), ys, xs), truth_b[4][ys, xs])
        painted = s_b.prediction[4].copy()
        # the series' effort, scan by scan, where the user counts this scan's slices
        assert widget.labelled_label.text() == ("Labelled slices: 1 (z: 4). Painted on the "
                                                "series' earlier scans: 2")
        widget.retrain_form.within_extent.value = False
        widget.retrain_form.steps.value = 2
        widget.retrain_btn.click()
        assert len(started) == 1 and not widget.jobs.busy  # the Retrain waits its turn
        assert "Retrain waits for the learning from finished scans" in widget.status.text()
        assert "learns more from them in the background" in widget.model_label.text()
        qtbot.waitUntil(lambda: widget.between.progress is not None, timeout=60000)
        widget.cancel_btn.click()
        qtbot.waitUntil(lambda: len(s_b.versions) >= 3 and not widget.training
                        and not widget.jobs.busy, timeout=120000)
        v1 = s_b.versions[1]
        assert "steps between scans on 1 finished scan(s)" in v1.note
        assert 0 < v1.steps < 5000  # stopped early, its steps kept
        assert predicted_with[-1] == s_b.model_file(v1)  # the prediction refreshed with it
        assert started[-1].model_path == s_b.model_file(v1)  # the Retrain went on from it
        assert s_b.versions[2].parent == v1.id
        np.testing.assert_array_equal(s_b.prediction[4], painted)
        assert widget.learned_model != str(taught)  # the next scan starts from what it learnt
    finally:
        widget.bridge.close()


def test_a_failed_run_between_scans_is_said_and_the_waiting_retrain_goes_on(
        make_napari_viewer, tmp_path, monkeypatch):
    from napari.utils.notifications import notification_manager

    from napari_semiseg.between_scans import Landed

    viewer, widget, _ = _dock_on_two_structures(make_napari_viewer, tmp_path, monkeypatch)
    try:
        retrains = []
        monkeypatch.setattr(widget, "retrain", lambda: retrains.append(1))
        widget.learned_model = "carried.pt"
        widget._retrain_waits = True
        seen = len(notification_manager.records)
        widget._between_landed(Landed(None, 0, 1, "carried.pt",
                                      error="the training process was killed (SIGKILL)"))
        assert any("Learning from the finished scans failed" in str(n.message)
                   and "SIGKILL" in str(n.message)
                   for n in notification_manager.records[seen:])
        assert widget.learned_model == "carried.pt"  # nothing carried from it
        assert retrains == [1] and not widget._retrain_waits
    finally:
        widget.bridge.close()


def test_a_run_between_scans_lands_on_the_scan_the_user_moved_on_to(make_napari_viewer, tmp_path,
                                                                   monkeypatch):
    """Leaving the next scan unpainted for a third while the run goes: the run's model is
    meant for the third scan, which started from the same carried model."""

    image, truth, taught = _saved_series_model(tmp_path, monkeypatch)
    viewer = make_napari_viewer()
    for name, seed in (("scan A", 0), ("scan B", 1), ("scan C", 2)):
        viewer.add_image(_two_structures(seed=seed)[0], name=name)
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        widget.between.steps = 5000
        _pick(widget, taught)
        widget.image_combo.setCurrentText("scan A")
        s_a = widget.ensure_session()
        s_a.mark_labelled(0, 1, truth[1])
        widget.image_combo.setCurrentText("scan B")
        s_b = widget.ensure_session()
        assert widget.between.running and widget.between.target[0] is s_b
        widget.image_combo.setCurrentText("scan C")  # B left unpainted
        s_c = widget.ensure_session()
        assert s_c is not s_b and widget.between.target == (s_c, s_c.current)
        assert widget.retrain_form.between_scans.value  # on unless the user unticks it
        assert len(widget.finished) == 1  # B taught nothing: not kept, no second run
        # one training at a time: Train from tags waits for the run, and says so
        from napari.utils.notifications import notification_manager

        seen = len(notification_manager.records)
        widget.tags_panel.train_from_tags()
        assert not widget.jobs.busy and not widget.tags_panel.bridge.running
        assert any("Learning from the finished scans is running" in str(n.message)
                   for n in notification_manager.records[seen:])
    finally:
        widget.bridge.close()


def test_unticking_learn_between_scans_keeps_the_cores_free(make_napari_viewer, tmp_path,
                                                            monkeypatch):

    image, truth, taught = _saved_series_model(tmp_path, monkeypatch)
    viewer = make_napari_viewer()
    viewer.add_image(image, name="scan A")
    viewer.add_image(_two_structures(seed=1)[0], name="scan B")
    widget = AssistantWidget(viewer)
    viewer.window.add_dock_widget(widget)
    try:
        _pick(widget, taught)
        widget.retrain_form.between_scans.value = False
        widget.image_combo.setCurrentText("scan A")
        widget.ensure_session().mark_labelled(0, 1, truth[1])
        widget.image_combo.setCurrentText("scan B")
        s_b = widget.ensure_session()
        assert len(widget.finished) == 1  # the finished scan still teaches the Retrains
        assert not widget.between.running and not widget.bridge.running
        assert s_b.current_model_path is not None and len(s_b.versions) == 1
    finally:
        widget.bridge.close()
