"""Image-aware fills between painted slices, on volumes where the answer is known."""

from pathlib import Path

import numpy as np
import pytest

from training import IGNORE_INDEX
from training.interactive.image_priors import PRIORS, fill_between_slices
from training.interactive.interpolation import interpolate_between_slices

ROOT = Path(__file__).resolve().parent.parent


def _dice(a, b):
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _bulge(n=21, size=48, seed=0):
    """A disc whose radius swells from 6 to 13 pixels and back between slices 0 and n - 1, with
    a clear intensity step at its outline: two painted end slices tell interpolation nothing
    of the swelling, the scan shows it."""
    z, y, x = np.mgrid[0:n, 0:size, 0:size]
    radius = 6 + 7 * np.sin(np.pi * z / (n - 1)) ** 2
    truth = ((y - size // 2) ** 2 + (x - size // 2) ** 2 <= radius**2).astype(np.uint8)
    rng = np.random.default_rng(seed)
    image = (100 + 300 * truth.astype(np.int16) + rng.normal(0, 10, truth.shape)).astype(np.int16)
    return image, truth


def _sparse(truth, painted):
    out = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    out[painted] = truth[painted]
    return out


@pytest.mark.parametrize("prior", PRIORS)
def test_each_prior_follows_an_edge_interpolation_cannot_know(prior):
    image, truth = _bulge()
    sparse = _sparse(truth, [0, 20])
    filled = fill_between_slices(sparse, image, prior)
    shape = interpolate_between_slices(sparse)
    inner = slice(1, 20)
    ours, theirs = _dice(filled[inner] == 1, truth[inner] == 1), _dice(shape[inner], truth[inner])
    assert ours > theirs + 0.1, (ours, theirs)
    np.testing.assert_array_equal(filled[[0, 20]], truth[[0, 20]])  # painted slices as given


def test_registration_without_motion_in_the_image_is_shape_interpolation():
    _, truth = _bulge()
    sparse = _sparse(truth, [0, 10, 20])
    flat = np.zeros(truth.shape, np.int16)  # nothing to register: the flow is zero
    np.testing.assert_array_equal(fill_between_slices(sparse, flat, "register"),
                                  interpolate_between_slices(sparse))


@pytest.mark.parametrize("prior", PRIORS)
def test_not_annotated_is_never_background_and_never_left_behind(prior):
    image, truth = _bulge(n=11)
    sparse = _sparse(truth, [0, 5, 10])
    sparse[5, :3, :3] = IGNORE_INDEX  # a corner of a painted slice left unpainted
    filled = fill_between_slices(sparse, image, prior)
    assert IGNORE_INDEX not in filled
    assert (filled[1:5] == 1).any() and (filled[6:10] == 1).any()  # 255 read as unknown...
    assert filled[5, :3, :3].max() == 0  # ... and kept as background only on a painted slice
    # without painted slices the default is every slice with an annotated voxel:
    np.testing.assert_array_equal(filled, fill_between_slices(sparse, image, prior, [0, 5, 10]))


def test_outside_the_painted_range_is_background_and_axis_is_respected():
    image, truth = _bulge(n=11)
    sparse = _sparse(truth, [3, 8])
    filled = fill_between_slices(sparse, image, "register")
    assert filled[:3].max() == 0 and filled[9:].max() == 0 and filled[4:8].max() == 1
    moved = fill_between_slices(np.moveaxis(sparse, 0, 2), np.moveaxis(image, 0, 2), "register",
                                axis=2)
    np.testing.assert_array_equal(np.moveaxis(moved, 2, 0), filled)


@pytest.mark.parametrize("prior", PRIORS)
def test_several_classes_and_a_structure_that_ends(prior):
    image, truth = _bulge()
    truth[:, 22:26, 22:26] = 2  # a second structure inside the first...
    truth[15:] = np.where(truth[15:] == 2, 1, truth[15:])  # ... that ends at slice 15
    image = image + 200 * (truth == 2).astype(np.int16)
    sparse = _sparse(truth, [0, 10, 20])
    filled = fill_between_slices(sparse, image, prior)
    assert _dice(filled[1:10] == 2, truth[1:10] == 2) > 0.8
    assert (filled[16:20] == 2).sum() == 0  # shrinks to nothing before the slice without it
    assert _dice(filled > 0, truth > 0) > 0.9
    # with ends="unknown", the gap where structure 2 ends is left not annotated, as
    # training.interactive.interpolation.interpolation_prior leaves it
    unknown = fill_between_slices(sparse, image, prior, ends="unknown")
    assert (unknown[11:20] == IGNORE_INDEX).all()
    np.testing.assert_array_equal(unknown[:11], filled[:11])


def test_clear_errors():
    image, truth = _bulge(n=5)
    with pytest.raises(ValueError, match="no painted slice"):
        fill_between_slices(np.full(truth.shape, IGNORE_INDEX, np.uint8), image)
    with pytest.raises(ValueError, match="differ in shape"):
        fill_between_slices(_sparse(truth, [0, 4]), image[:, :-1])
    with pytest.raises(ValueError, match="prior must be one of"):
        fill_between_slices(_sparse(truth, [0, 4]), image, "magic")
    with pytest.raises(ValueError, match="ends must be"):
        fill_between_slices(_sparse(truth, [0, 4]), image, ends="grow")


def test_only_background_painted_fills_background():
    image, truth = _bulge(n=5)
    sparse = np.full(truth.shape, IGNORE_INDEX, np.uint8)
    sparse[[0, 4]] = 0
    np.testing.assert_array_equal(fill_between_slices(sparse, image), np.zeros_like(truth))


@pytest.mark.slow  # a spawned child loads ITK: about 20 s
def test_itk_contour_interpolation_fills_between_painted_slices():
    from training.bench.contour_interpolation import (
        ContourInterpolator,
        contour_interpolation_available,
    )

    if not contour_interpolation_available():
        pytest.skip("the bench extra (itk-morphologicalcontourinterpolation) is not installed")
    z, y, x = np.mgrid[0:11, 0:32, 0:32]
    truth = ((y - 16) ** 2 + (x - 16) ** 2 <= (4 + z) ** 2).astype(np.uint8)  # a cone
    sparse = _sparse(truth, [2, 6, 10])
    with ContourInterpolator(threads=1) as interpolate:  # ITK's heap bug stays in the child
        filled = interpolate(sparse)
        np.testing.assert_array_equal(
            np.moveaxis(interpolate(np.moveaxis(sparse, 0, 1), axis=1), 1, 0), filled)
    assert _dice(filled[3:10] == 1, truth[3:10] == 1) > 0.9
    assert filled[:2].max() == 0 and IGNORE_INDEX not in filled
    np.testing.assert_array_equal(filled[[2, 6, 10]], truth[[2, 6, 10]])


def test_itk_contour_interpolation_missing_says_how_to_install(monkeypatch):
    import training.bench.contour_interpolation as ci

    monkeypatch.setattr(ci, "contour_interpolation_available", lambda: False)
    with pytest.raises(ImportError, match=r"napari-semiseg\[bench\]"):
        ci.morphological_contour_interpolation(np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(ImportError, match=r"napari-semiseg\[bench\]"):
        ci.ContourInterpolator()


def test_prior_choice_benchmark_scores_the_unpainted_slices_and_counts_wins():
    import importlib.util

    from training.interactive.interpolation import even_slices

    path = ROOT / "benchmarks" / "prior_choice.py"
    spec = importlib.util.spec_from_file_location("prior_choice", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    image, truth = _bulge()
    # two painted ends tell interpolation nothing of the swelling between them
    rows = bench.score_scans([("bulge", image, truth, 2)], [2], ["register"], log=lambda s: None)
    (row,) = rows
    assert row["painted"] == even_slices(truth, 2) == [0, 20]
    assert row["dice"]["register"] > row["dice"]["interpolation"] + 2
    table = bench.summary_table(rows)
    assert "| 2 | register |" in table and "| 1 / 1 | 1 / 1 |" in table
    assert "| 2 | interpolation |" in table


def test_an_undecided_network_is_fused_with_the_registered_fill_when_given():
    from training.interactive.interpolation import fuse_with_interpolation

    image, truth = _bulge()
    sparse = _sparse(truth, [0, 20])
    filled = fill_between_slices(sparse, image, "register")
    unsure = np.full((2, *truth.shape), 0.5, np.float32)
    inner = slice(1, 20)
    by_shape = fuse_with_interpolation(unsure, sparse, weight=0.3)
    by_image = fuse_with_interpolation(unsure, sparse, weight=0.3, filled=filled)
    # where the network has no opinion, what is shown is the fill it was fused with
    assert _dice(by_image[inner] == 1, filled[inner] == 1) > 0.97
    assert _dice(by_image[inner] == 1, truth[inner] == 1) > _dice(by_shape[inner] == 1,
                                                                   truth[inner] == 1) + 0.1
