"""Datasets: folders of images/labels, in-memory arrays, and 2D-slice / 3D-patch samplers.

A dataset folder holds ``images/<case>.*`` and ``labels/<case>.*`` (or ``masks/``), and optionally
``index.csv`` with a split column (``ssl4mis_split``, ``ssl_benchmark_split`` or ``split``).
Label 255 means "not annotated". In 2D, slices that are entirely 255 count as unlabelled.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import IGNORE_INDEX, WEAK_BASE
from training.core.io import (
    IMAGE_SUFFIXES,
    SLICE_SUFFIXES,
    DataError,
    case_name,
    has_suffix,
    label_values,
    read_image,
    read_labels,
)
from training.engine.normalization import DEFAULT_NORMALIZATION, normalize_scan

SPLIT_COLUMNS = ("ssl4mis_split", "ssl_benchmark_split", "split")


@dataclass
class Case:
    """One image (and maybe label) file of a dataset folder."""

    name: str
    image: Path
    label: Path | None = None
    split: str | None = None
    patient: str | None = None


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {
        case_name(p): p for p in sorted(folder.iterdir())
        if p.name.lower().endswith(IMAGE_SUFFIXES)
    }


def scan_dataset(root: str | Path) -> list[Case]:
    """List the cases of a dataset folder, with splits and patients when ``index.csv`` has them."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset folder not found: {root}")
    index = root / "index.csv"
    cases: list[Case] = []
    if index.exists():
        with open(index, newline="") as fh:
            rows = list(csv.DictReader(fh))
        for row in rows:
            if "image" not in row:
                raise DataError(f"{index} has no 'image' column")
            image = root / row["image"]
            lab = row.get("label") or row.get("mask")
            split = next((row[c] for c in SPLIT_COLUMNS if row.get(c)), None)
            cases.append(Case(
                name=row.get("case") or case_name(image), image=image,
                label=root / lab if lab else None, split=split, patient=row.get("patient"),
            ))
    else:
        images = _image_files(root / "images")
        if not images:
            raise DataError(f"no images found in {root / 'images'}")
        labels = _image_files(root / "labels") or _image_files(root / "masks")
        for name, path in images.items():
            cases.append(Case(name=name, image=path, label=labels.get(name)))
        extra = set(labels) - set(images)
        if extra:
            raise DataError(f"label without image: {sorted(extra)[0]}")
    for c in cases:
        if not c.image.exists():
            raise DataError(f"image file missing: {c.image}")
        if c.label is not None and not c.label.exists():
            raise DataError(f"label file missing: {c.label}")
    return cases


def class_names_from_index(root: str | Path) -> list[str] | None:
    """Class names from ``voxels_<name>`` columns of ``index.csv`` (background first)."""
    index = Path(root) / "index.csv"
    if not index.exists():
        return None
    with open(index, newline="") as fh:
        header = next(csv.reader(fh), [])
    names = [h[len("voxels_"):] for h in header if h.startswith("voxels_")]
    return ["background", *names] if names else None


def named_cases(cases: Sequence[Case], names: str | Sequence[str], what: str) -> list[Case]:
    """The cases named, by case or patient name (``a,b,...`` or a list); an unknown name is
    an error that says ``what`` it was meant to be."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    wanted = [n for n in wanted if n]
    known = {c.name for c in cases} | {c.patient for c in cases if c.patient}
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise DataError(f"unknown {what}case or patient: {unknown[0]}")
    return [c for c in cases if c.name in wanted or c.patient in wanted]


def select_labeled(
    cases: Sequence[Case], labeled: int | str | Sequence[str], split: str = "train"
) -> tuple[list[Case], list[Case]]:
    """Split the training pool into labelled and unlabelled cases.

    ``labeled`` is a number of patients (the first N in file order, all their cases; the SSL4MIS
    convention) or case / patient names. The pool is the ``split`` cases when splits exist.
    """
    pool = [c for c in cases if c.split is None or c.split == split]
    if not pool:
        raise DataError(f"no cases in split {split!r}")
    if isinstance(labeled, str) and labeled.strip().isdigit():
        labeled = int(labeled)
    if isinstance(labeled, int):
        if labeled <= 0:
            raise DataError("the labelled set is empty (--labeled must be at least 1)")
        patients: list[str] = []
        for c in pool:
            pid = c.patient or c.name
            if pid not in patients:
                patients.append(pid)
        chosen = set(patients[:labeled])
        lab = [c for c in pool if (c.patient or c.name) in chosen]
    else:
        lab = named_cases(cases, labeled, "")
        if not lab:
            raise DataError("the labelled set is empty")
    missing = [c.name for c in lab if c.label is None]
    if missing:
        raise DataError(f"labelled case has no label file: {missing[0]}")
    lab_names = {c.name for c in lab}
    return lab, [c for c in pool if c.name not in lab_names]


@dataclass
class TrainData:
    """Normalised training volumes held in memory.

    ``images[i]`` (z, y, x) float32 pairs with ``labels[i]`` uint8 (255 = not annotated);
    ``unlabeled`` are extra image volumes without labels. A multi-channel scan (``channels``
    > 1, e.g. the LGG pre-contrast / FLAIR / post-contrast stack) is held (z, c, y, x).
    """

    images: list[np.ndarray]
    labels: list[np.ndarray]
    unlabeled: list[np.ndarray] = field(default_factory=list)
    num_classes: int = 2
    class_names: list[str] = field(default_factory=list)
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    names: list[str] = field(default_factory=list)
    # Draw labelled 2D slices volume by volume (each labelled volume equally often) instead of
    # uniformly over slices: lets a few user slices weigh as much as a whole pseudo-labelled scan
    balance_volumes: bool = False
    # Share of each labelled 2-D batch drawn from slices holding a trusted (user-drawn) structure
    # voxel when weak labels (>= WEAK_BASE) fill the rest: a few dense masks among hundreds of
    # weak slices were otherwise drawn ~1 % of the time, and the teacher's relabelling of weak
    # voxels could then settle on "background everywhere" (issue 13: tags + 8 dense gave 0 Dice)
    trusted_share: float = 0.0
    channels: int = 1
    # neighbouring slices given on each side as channels (training.engine.context): ``channels``
    # then counts them all, ``scan_channels`` the scan's own
    context_slices: int = 0

    @classmethod
    def from_arrays(
        cls,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        unlabeled: Sequence[np.ndarray] = (),
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        normalization: dict | None = None,
        names: Sequence[str] | None = None,
    ) -> TrainData:
        """Validate and normalise raw-intensity arrays (what the plugin holds). Images are
        (z, y, x), or (z, y, x, c) for a multi-channel scan, channels last as readers give
        RGB; every image must have the same channels."""
        if len(images) != len(labels):
            raise DataError("need one label volume per image volume")
        norm = dict(normalization or DEFAULT_NORMALIZATION)
        imgs, labs = [], []
        channels = _channels(images) if len(images) else 1
        for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
            name = names[i] if names and i < len(names) else f"volume {i}"
            im, lab = _as_scan(im, channels, name), _as_volume(lab)
            grid = im.shape[:3]
            if grid != lab.shape:
                raise DataError(f"label shape {lab.shape} differs from image shape {grid}"
                                f" (volume {i})")
            imgs.append(normalize_scan(_finite(im, name), norm, channels))
            labs.append(label_values(lab, f"labels of {name}"))
        if not any((lab != IGNORE_INDEX).any() for lab in labs):
            raise DataError("the labelled set is empty: no annotated voxel (all 255)")
        max_label = max(int(lab[lab != IGNORE_INDEX].max(initial=0)) for lab in labs)
        if num_classes is None:
            num_classes = max(2, max_label + 1)
        elif max_label >= num_classes:
            raise DataError(f"unknown class {max_label} in labels ({num_classes} classes)")
        names_c = list(class_names) if class_names else (
            ["background"] + [f"class{i}" for i in range(1, num_classes)]
        )
        if len(names_c) != num_classes:
            raise DataError(f"{len(names_c)} class names for {num_classes} classes")
        unl = [normalize_scan(_finite(_as_scan(u, channels, f"unlabelled volume {k}"),
                                   f"unlabelled volume {k}"), norm, channels)
               for k, u in enumerate(unlabeled)]
        return cls(imgs, labs, unl, num_classes, names_c, norm, list(names or []),
                   channels=channels)

    @property
    def scan_channels(self) -> int:
        """The scan's own channels (1 grey, 3 for the LGG sequences), context slices aside."""
        from training.engine.context import scan_channels

        return scan_channels(self.channels, self.context_slices)

    def with_context(self, k: int) -> TrainData:
        """The same scans with ``k`` neighbouring slices on each side as channels (2-D only)."""
        from dataclasses import replace

        from training.engine.context import network_inputs, with_context_slices

        if k <= 0 or k == self.context_slices:
            return self
        if self.context_slices:
            raise DataError("these scans already carry context slices")
        return replace(self, images=[with_context_slices(v, k) for v in self.images],
                       unlabeled=[with_context_slices(v, k) for v in self.unlabeled],
                       channels=network_inputs(self.channels, k), context_slices=int(k))

    def class_shares(self) -> np.ndarray:
        """Share of each class among the annotated voxels (weak class c counts as c), each at
        least 1e-3: the prior a from-scratch network's output starts from."""
        counts = np.zeros(self.num_classes, dtype=np.float64)
        for lab in self.labels:
            values = lab[lab != IGNORE_INDEX].astype(np.int64)
            values = np.where(values >= WEAK_BASE, values - WEAK_BASE, values)
            counts += np.bincount(values[values < self.num_classes],
                                  minlength=self.num_classes)[: self.num_classes]
        shares = np.maximum(counts / max(counts.sum(), 1.0), 1e-3)
        return shares / shares.sum()

    def summary(self) -> dict:
        """Plain-dict description stored in checkpoints."""
        annotated = sum(int((lab != IGNORE_INDEX).sum()) for lab in self.labels)
        return {
            "labeled_volumes": len(self.images), "unlabeled_volumes": len(self.unlabeled),
            "annotated_voxels": annotated, "names": list(self.names),
        }


def _finite(a: np.ndarray, name: str) -> np.ndarray:
    """Refuse NaN/Inf voxels: one of them turns every loss and weight into NaN."""
    if np.issubdtype(a.dtype, np.floating):
        bad = int(a.size - np.count_nonzero(np.isfinite(a)))
        if bad:
            raise DataError(f"{name}: {bad:,} voxels are NaN or Inf")
    return a


def _channels(images: Sequence[np.ndarray]) -> int:
    """1 for grey (z, y, x) scans, c for (z, y, x, c) ones; mixed sets are refused."""
    kinds = {int(np.shape(im)[-1]) if np.ndim(im) == 4 else 1 for im in images}
    if len(kinds) > 1:
        raise DataError(f"scans differ in channels ({sorted(kinds)}): train on one kind")
    return kinds.pop()


def _as_scan(a: np.ndarray, channels: int, name: str) -> np.ndarray:
    """(z, y, x) for a grey scan, (z, y, x, c) for a multi-channel one."""
    if channels == 1:
        return _as_volume(a)
    a = np.asarray(a)
    if a.ndim != 4 or a.shape[-1] != channels:
        raise DataError(f"{name}: expected a (z, y, x, {channels}) scan, got shape {a.shape}")
    return a


def _as_volume(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise DataError(f"expected a (z, y, x) volume, got shape {a.shape}")
    return a


def patient_stacks(cases: Sequence[Case]) -> list[list[Case]]:
    """Cases grouped into scans: 2-D slice files (LGG PNGs) of one patient form one stack, in
    file order, as the plugin opens a folder of slices; every volume file is a scan alone.

    Intensity normalisation is per scan, so a stack must be normalised as one: a slice
    normalised alone has another grey scale than the same slice in its patient's stack."""
    groups: dict[str, list[Case]] = {}
    for c in cases:
        key = (c.patient or c.name) if has_suffix(c.image, SLICE_SUFFIXES) else f"\0{c.name}"
        groups.setdefault(key, []).append(c)
    return list(groups.values())


def read_stack(group: Sequence[Case], with_labels: bool = True, channels: int = 1
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """The grey image (z, y, x) (or (z, y, x, c) with ``channels``) and labels of one scan
    from :func:`patient_stacks`."""
    images, labels = [], []
    for c in group:
        im, _ = read_image(c.image, channels=channels)
        images.append(im)
        if with_labels:
            if c.label is None:
                raise DataError(f"labelled case has no label file: {c.name}")
            lab, _ = read_labels(c.label)
            if im.shape[:3] != lab.shape:
                raise DataError(f"label shape {lab.shape} differs from image shape "
                                f"{im.shape[:3]} for case {c.name}")
            labels.append(lab)
    if len({im.shape[1:] for im in images}) > 1:
        raise DataError(f"slices of {group[0].patient or group[0].name} differ in size")
    return np.concatenate(images), (np.concatenate(labels) if with_labels else None)


def load_train_data(
    root: str | Path,
    labeled: int | str | Sequence[str],
    num_classes: int | None = None,
    use_unlabeled: bool = True,
    normalization: dict | None = None,
    channels: int = 1,
    unlabeled: str | Sequence[str] | None = None,
) -> TrainData:
    """Read a dataset folder into :class:`TrainData` (labelled + unlabelled train cases).

    A patient's 2-D slices (LGG) become one scan, normalised together (:func:`patient_stacks`).
    ``channels`` > 1 keeps every channel of RGB scans (the LGG sequences) instead of FLAIR.
    ``unlabeled`` names the unlabelled cases or patients; by default every other case of the
    train pool, which in a folder without splits includes patients kept for testing.
    """
    cases = scan_dataset(root)
    lab_cases, unl_cases = select_labeled(cases, labeled)
    if unlabeled is not None and use_unlabeled:
        unl_cases = select_unlabeled(cases, lab_cases, unlabeled)
    lab_groups = patient_stacks(lab_cases)
    images, labels = [], []
    for group in lab_groups:
        im, lab = read_stack(group, channels=channels)
        images.append(im)
        labels.append(lab)
    unl = ([read_stack(g, with_labels=False, channels=channels)[0]
            for g in patient_stacks(unl_cases)] if use_unlabeled else [])
    return TrainData.from_arrays(
        images, labels, unl, num_classes=num_classes, class_names=class_names_from_index(root)
        if num_classes is None else None, normalization=normalization,
        names=[g[0].patient or g[0].name if len(g) > 1 else g[0].name for g in lab_groups],
    )


def select_unlabeled(
    cases: Sequence[Case], lab_cases: Sequence[Case], unlabeled: str | Sequence[str]
) -> list[Case]:
    """The named cases or patients (their images only), which must not be labelled ones."""
    lab_names = {c.name for c in lab_cases}
    chosen = named_cases(cases, unlabeled, "unlabelled ")
    both = [c.name for c in chosen if c.name in lab_names]
    if both:
        raise DataError(f"case {both[0]} is named both labelled and unlabelled")
    return chosen


# ----- sampling ----------------------------------------------------------------------------

def resize_slices(x: np.ndarray, size: Sequence[int], nearest: bool) -> np.ndarray:
    """Resize (z, y, x) slice-wise to (z, *size): bilinear for images, nearest for labels."""
    t = torch.from_numpy(np.ascontiguousarray(x)).float().unsqueeze(1)
    if tuple(t.shape[2:]) != tuple(size):
        mode = "nearest-exact" if nearest else "bilinear"
        kw = {} if nearest else {"align_corners": False}
        t = F.interpolate(t, size=tuple(size), mode=mode, **kw)
    return t[:, 0].numpy()


def rescale_volume(x: np.ndarray, factor: float, nearest: bool) -> np.ndarray:
    """Scale a (z, y, x) volume by ``1 / factor`` on every axis (``factor`` > 1 downsamples)."""
    if factor == 1:
        return x
    size = [max(1, int(round(s / factor))) for s in x.shape]
    t = torch.from_numpy(np.ascontiguousarray(x)).float()[None, None]
    mode = "nearest-exact" if nearest else "trilinear"
    kw = {} if nearest else {"align_corners": False}
    return F.interpolate(t, size=size, mode=mode, **kw)[0, 0].numpy()


def _augment(img: torch.Tensor, lab: torch.Tensor | None, gen: torch.Generator):
    """Random rot90 in-plane and flips, applied identically to image and label."""
    k = int(torch.randint(0, 4, (1,), generator=gen))
    img = torch.rot90(img, k, dims=(-2, -1))
    lab = torch.rot90(lab, k, dims=(-2, -1)) if lab is not None else None
    if bool(torch.randint(0, 2, (1,), generator=gen)):
        img = img.flip(-1)
        lab = lab.flip(-1) if lab is not None else None
    return img, lab


def _rotate(img: torch.Tensor, lab: torch.Tensor | None, degrees: float):
    """Rotate a (1, H, W) slice and its (H, W) labels by ``degrees`` about the centre:
    bilinear for the image (zeros come in at the corners), nearest for the labels. Corners that
    come from outside the slice are "not annotated" (255): nothing is known there."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    mat = torch.tensor([[[c, -s, 0.0], [s, c, 0.0]]], dtype=torch.float32)
    grid = F.affine_grid(mat, [1, 1, *img.shape[-2:]], align_corners=False)
    img = F.grid_sample(img[None].float(), grid, mode="bilinear", align_corners=False)[0]
    if lab is not None:  # shifted by one so that zero padding reads as "outside"
        moved = F.grid_sample((lab + 1)[None, None].float(), grid, mode="nearest",
                              align_corners=False)[0, 0].long()
        lab = torch.where(moved == 0, torch.full_like(moved, IGNORE_INDEX), moved - 1)
    return img, lab


class SlicePicker:
    """Which labelled slices a 2-D batch takes: uniformly, volume by volume
    (``balance_volumes``), and with a share of slices holding trusted voxels when weak labels
    fill the rest (``trusted_share``). Subclasses call :meth:`_start_picking` once their
    labelled slices are stacked."""

    gen: torch.Generator
    volume_of: torch.Tensor
    balance: bool
    trusted: torch.Tensor
    trusted_share: float
    n_labelled: int

    def _start_picking(self, data: TrainData, counts: Sequence[int], labels: torch.Tensor,
                       labeled_bs: int, unlabeled_bs: int, seed: int) -> None:
        """``counts``: labelled slices per volume, in the order of ``labels`` (all of them)."""
        self.n_labelled = len(labels)
        self.volume_of = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        self.balance = bool(data.balance_volumes) and sum(c > 0 for c in counts) > 1
        self.trusted = trusted_slices(labels)
        self.trusted_share = float(data.trusted_share)
        self.labeled_bs, self.unlabeled_bs = labeled_bs, unlabeled_bs
        self.gen = torch.Generator().manual_seed(seed)

    def _labelled_indices(self, n: int) -> torch.Tensor:
        n_trusted = int(round(self.trusted_share * n)) if len(self.trusted) else 0
        if 0 < n_trusted:
            pick = self.trusted[torch.randint(0, len(self.trusted), (n_trusted,),
                                              generator=self.gen)]
            rest = self._other_indices(n - n_trusted) if n > n_trusted else pick[:0]
            return torch.cat([pick, rest])
        return self._other_indices(n)

    def _other_indices(self, n: int) -> torch.Tensor:
        if not self.balance:
            return torch.randint(0, self.n_labelled, (n,), generator=self.gen)
        vols = torch.unique(self.volume_of)
        picks = vols[torch.randint(0, len(vols), (n,), generator=self.gen)]
        out = []
        for v in picks.tolist():
            members = torch.nonzero(self.volume_of == v).flatten()
            out.append(members[torch.randint(0, len(members), (1,), generator=self.gen)])
        return torch.cat(out)


class ResizedSliceSampler(SlicePicker):
    """The earlier 2-D sampling (``sampling="resize"``): whole slices squashed to ``size``, random
    90-degree turns and flips. Kept to compare recipes side by side; the default is
    :class:`training.engine.patches.SliceSampler` (native-grid patches)."""

    def __init__(
        self,
        data: TrainData,
        size: Sequence[int],
        labeled_bs: int = 8,
        unlabeled_bs: int = 8,
        seed: int = 0,
        augment: bool = True,
        rotate: float = 0.0,
    ) -> None:
        self.size = tuple(size)
        # besides rot90 and flips, half the slices turn by up to this many degrees (SSL4MIS: 20)
        self.rotate = float(rotate)
        lab_img, lab_lab, unl = [], [], []
        for im, lab in zip(data.images, data.labels, strict=True):
            im_r = resize_slices(im, self.size, nearest=False)
            lab_r = resize_slices(lab, self.size, nearest=True).astype(np.int64)
            annotated = (lab_r != IGNORE_INDEX).reshape(len(lab_r), -1).any(1)
            lab_img.append(im_r[annotated])
            lab_lab.append(lab_r[annotated])
            unl.append(im_r[~annotated])
        unl += [resize_slices(u, self.size, nearest=False) for u in data.unlabeled]
        self.lab_img = torch.from_numpy(np.concatenate(lab_img)).float()
        self.lab_lab = torch.from_numpy(np.concatenate(lab_lab))
        self.unl_img = torch.from_numpy(np.concatenate(unl)).float() if unl else torch.empty(0)
        if len(self.lab_img) == 0:
            raise DataError("the labelled set is empty: no annotated slice")
        self._start_picking(data, [len(x) for x in lab_img], self.lab_lab, labeled_bs,
                            unlabeled_bs, seed)
        self.augment = augment

    def _take(self, images, labels, n, idx=None):
        if idx is None:
            idx = torch.randint(0, len(images), (n,), generator=self.gen)
        imgs, labs = [], []
        for i in idx.tolist():
            im = images[i][None]
            lab = labels[i] if labels is not None else None
            if self.augment:
                im, lab = _augment(im, lab, self.gen)
                if self.rotate > 0 and bool(torch.randint(0, 2, (1,), generator=self.gen)):
                    deg = (2 * float(torch.rand(1, generator=self.gen)) - 1) * self.rotate
                    im, lab = _rotate(im, lab, deg)
            imgs.append(im)
            labs.append(lab)
        batch = {"image": torch.stack(imgs)}
        if labels is not None:
            batch["label"] = torch.stack(labs)
        return batch

    def next(self) -> tuple[dict, dict | None]:
        """One labelled batch and one unlabelled batch (``None`` when there is no unlabelled)."""
        lab = self._take(self.lab_img, self.lab_lab, self.labeled_bs,
                         self._labelled_indices(self.labeled_bs))
        unl = None
        if len(self.unl_img) and self.unlabeled_bs > 0:
            unl = self._take(self.unl_img, None, self.unlabeled_bs)
        return lab, unl


def trusted_slices(labels: torch.Tensor) -> torch.Tensor:
    """Indices of (N, H, W) label slices holding a trusted structure voxel (1 .. WEAK_BASE-1)
    in a set that also holds weak labels; empty when there are no weak labels."""
    if len(labels) == 0:
        return torch.empty(0, dtype=torch.long)
    weak = ((labels >= WEAK_BASE) & (labels != IGNORE_INDEX)).flatten(1).any(1)
    if not bool(weak.any()):
        return torch.empty(0, dtype=torch.long)
    fg = ((labels > 0) & (labels < WEAK_BASE)).flatten(1).any(1)
    return torch.nonzero(fg).flatten()
