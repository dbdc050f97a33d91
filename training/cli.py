"""The ``semiseg`` command line: the napari-semiseg engine without a window."""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.cli_checks import (
    card_classes,
    check_labeled,
    check_report_paths,
    check_size,
    check_train_paths,
)
from training.core.atomic import atomic_write
from training.core.io import (
    IMAGE_SUFFIXES,
    SEG_SUFFIX,
    DataError,
    Geometry,
    WriteError,
    case_name,
    one_value_note,
    read_image,
    read_labels,
    write_like,
)
from training.engine.augment import AUGMENTATIONS
from training.engine.checkpoint import (
    CheckpointError,
    check_init_fits,
    compact_checkpoint,
    load_checkpoint,
    update_meta,
)
from training.engine.normalization import DEFAULT_NORMALIZATION, OUTSIDE_MODES, outside_mode
from training.engine.postprocess import POSTPROCESS_MODES, SMALL_PIECE_SHARE
from training.interactive.loop import ENDS_UNLESS_RIGHT
from training.methods import METHODS, options_help, parse_spec
from training.methods.base import OPTIMIZERS, PRECISIONS
from training.weak.localise import DEFAULT_LOCALISER, LOCALISERS


def _dims(value: str) -> int:
    v = value.lower().rstrip("d")
    if v not in ("2", "3"):
        raise argparse.ArgumentTypeError("--dims must be 2d or 3d")
    return int(v)


def _train_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dims", type=_dims, default=2, help="2d (slices) or 3d (patches)")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--size", type=int, nargs="+", default=None,
                   help="2D: patch H W on the native pixel grid (default 160 160; with "
                        "--sampling resize, the square slices are squashed to); 3D: patch D H W")
    p.add_argument("--sampling", default="patch", choices=("patch", "resize"),
                   help="2D: patches of the native pixel grid (default), or whole slices "
                        "squashed to --size (the earlier recipe)")
    p.add_argument("--augment", default="anatomy", choices=AUGMENTATIONS,
                   help="2D patches: anatomy keeps orientation (small turns, scale, gamma, "
                        "contrast, noise); mirror-left-right adds left-right mirroring (anatomy "
                        "whose halves mirror each other: the brain); any-orientation adds "
                        "90-degree turns and mirroring")
    p.add_argument("--foreground-share", type=float, default=1 / 3,
                   help="2D patches: share centred on a labelled structure voxel")
    p.add_argument("--labeled-bs", type=int, default=None)
    p.add_argument("--unlabeled-bs", type=int, default=None)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", default="adamw", choices=OPTIMIZERS,
                   help="adamw (default); sgd: momentum 0.9, the seed papers' optimiser; adam: "
                        "L2 in the gradient (the earlier default, at --lr 0.01)")
    p.add_argument("--lr-warmup", type=float, default=0.02,
                   help="share of the steps over which the learning rate rises linearly")
    p.add_argument("--clip-grad", type=float, default=12.0, help="max gradient norm (0 = off)")
    p.add_argument("--weights-ema", type=float, default=0.999,
                   help="decay of the moving average of the weights kept as the model (0 = off)")
    p.add_argument("--prior-init", type=int, default=None, choices=(0, 1),
                   help="1: a network trained from scratch starts its output at the labelled "
                        "class shares (log-prior bias; the default, chosen on ACDC val); 0: at "
                        "equal odds, as models trained before 2026-12-05 (the shipped ones "
                        "among them) and weak labels from --tags (the default there: not "
                        "measured with the prior)")
    p.add_argument("--base", type=int, default=None,
                   help="channels of the first U-Net level (default 12: the shipped models' "
                        "network)")
    p.add_argument("--depth", type=int, default=None, help="U-Net levels (default 4)")
    p.add_argument("--unshuffle", type=int, default=None, metavar="R",
                   help="2D: run the U-Net at 1/R resolution (pixel unshuffle in, pixel shuffle "
                        "out): about R*R times less compute, output still on the native grid "
                        "(default 2 for 2D, as the shipped models; 1 for 3D)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--warmup", type=float, default=None, help="supervised warm-up fraction")
    p.add_argument("--downsample", type=float, default=1.0, help="3D: downsampling factor")
    p.add_argument("--rotate", type=float, default=None, metavar="DEG",
                   help="2D: largest random turn (patches: default 15; resize: half the slices "
                        "turn by up to DEG on top of 90-degree turns, default 0)")
    p.add_argument("--missing-channels", type=float, default=None, metavar="P",
                   help="--channels 3: share of training patches whose channels all become "
                        "FLAIR, as in scans whose missing sequences were filled with it")
    p.add_argument("--air-outside", default=None, choices=OUTSIDE_MODES,
                   help="--channels 3: the air around the body as read: keep it, or set it "
                        "darkest in a channel that shows it grey (darkest) or in every channel "
                        "(darkest_everywhere); default keep, or the --init network's")
    p.add_argument("--context-slices", type=int, default=None, metavar="K",
                   help="2D patches: each slice's K neighbouring slices on either side as "
                        "extra input channels (2.5-D; default 0); a fine-tune keeps its "
                        "checkpoint's")
    p.add_argument("--refresh-every", type=int, default=100, help="bcp static-teacher period")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="bf16: bfloat16 forward passes on a GPU, or on a CPU with AMX / "
                   "AVX-512 BF16 (elsewhere it changes nothing)")
    p.add_argument("--fast-kernels", action="store_true",
                   help="GPU: let cuDNN pick the fastest kernels (runs are no longer bit-exact)")
    p.add_argument("--compile", nargs="?", const="inductor", default=None, metavar="BACKEND",
                   help="compile the trained networks with torch.compile (default backend "
                        "inductor): for long GPU runs; compiling itself takes 20-80 s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="semiseg", description="The napari-semiseg engine without a window: train, "
        "predict, evaluate and card models, simulate the correction loop, benchmark.")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model on a dataset folder", epilog=options_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--data", required=True)
    t.add_argument("--method", default="supervised", type=_method_spec, metavar="NAME[:opt=v,...]",
                   help=f"one of {', '.join(METHODS)}, optionally with options (listed below), "
                        "e.g. bcp:conf=0.9,sup=1")
    t.add_argument("--labeled", default=None,
                   help="N patients or case,case,... (dense labels; optional with --tags)")
    t.add_argument("--unlabeled", default=None, metavar="CASE,CASE,...",
                   help="the unlabelled cases or patients (default: every other train case; "
                        "in a folder without splits that includes test patients). None are "
                        "read with --unlabeled-bs 0")
    t.add_argument("--tags", default=None, metavar="FILE.csv",
                   help="slice tags (case,slice,tag; LGG index.csv; ACDC slices.csv): "
                        "localisation maps -> weak masks -> --method (cam_weak)")
    t.add_argument("--localiser", default=DEFAULT_LOCALISER, choices=LOCALISERS,
                   help="with --tags: what seeds the weak masks: intensity anomaly against the "
                        "slices tagged absent (default), the tag classifier's CAM, or both")
    t.add_argument("--tag-column", default=None, help="tag column of an ACDC slices.csv")
    t.add_argument("--classifier-steps", type=int, default=None,
                   help="tag classifier steps (default: half of --steps)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", required=True)
    t.add_argument("--init", default=None, help="fine-tune from this checkpoint")
    t.add_argument("--new-model-network", action="store_true",
                   help="train the network a New model has in the dock (base 8, group norm, "
                        "half resolution), to start New models from (--pretrained, and the "
                        "dock's models/pretrained/new_model_unet2d.pt)")
    t.add_argument("--resume", action="store_true",
                   help="continue a stopped run from OUT's .resume.pt (same command otherwise)")
    t.add_argument("--num-classes", type=int, default=None)
    t.add_argument("--class-names", default=None,
                   help="comma-separated, background first, e.g. 'background,FLAIR abnormality'")
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--log-every", type=int, default=10)
    t.add_argument("--channels", type=int, default=1, metavar="C",
                   help="1: the grey scan (RGB slices: their FLAIR channel); 3: every channel of"
                        " RGB scans (LGG: pre-contrast, FLAIR, post-contrast), 2-D only")
    _train_options(t)
    # default: 1000 steps, or TAG_STEPS with --tags (see train_steps)
    t.set_defaults(steps=None)

    p = sub.add_parser("predict", help="segment image files with a model")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True,
                   help="FILE or DIR; FILE.dcm writes a DICOM-SEG onto the input's DICOM series")
    p.add_argument("--series", default=None, metavar="NUMBER|DESCRIPTION|UID",
                   help="which DICOM series of an input folder that holds several")
    p.add_argument("--time-point", type=int, default=None, metavar="N",
                   help="which time point (from 1) of a 4-D input (a cine MRI) to segment")
    p.add_argument("--uncertainty", default=None)
    p.add_argument("--mc", type=int, default=0, help="MC-dropout samples")
    p.add_argument("--cam", default=None, metavar="FILE_OR_DIR",
                   help="also write the class-activation map (the model's tag classifier "
                        "<model>.classifier.pt if present, its cls head, else Grad-CAM)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-clean-up", action="store_true",
                   help="write the network's labels as they are, without the clean-up its card "
                        "names (e.g. each structure's largest 3-D piece)")

    e = sub.add_parser("evaluate", help="Dice and HD95 of predictions against labels")
    e.add_argument("--pred", required=True)
    e.add_argument("--labels", required=True)
    e.add_argument("--json", default=None)
    e.add_argument("--num-classes", type=int, default=None,
                   help="score at least these classes (every class found is scored anyway)")
    e.add_argument("--model", default=None,
                   help="take the class count from this checkpoint's card")

    c = sub.add_parser("card", help="measure a model card and store it in the checkpoint")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--anatomy", required=True, help='e.g. "Left atrium"')
    c.add_argument("--modality", required=True, help='e.g. "LGE-MRI"')
    c.add_argument("--trained-with", required=True, help="the exact command that trained it")
    c.add_argument("--split-note", required=True, help="which scans trained / tested it")
    c.add_argument("--train-split", default="train")
    c.add_argument("--test-split", default="test")
    c.add_argument("--train-patients", default=None, help="comma-separated (no split column)")
    c.add_argument("--test-patients", default=None, help="comma-separated (no split column)")
    c.add_argument("--markdown", default=None, help="also write the card as Markdown here")
    c.add_argument("--postprocess", default=None, choices=(*POSTPROCESS_MODES, "val"),
                   help="clean-up of every prediction from now on: keep the largest 3-D piece "
                        "of all structures (foreground), or of each class (per_class), or drop "
                        f"pieces under {100 * SMALL_PIECE_SHARE:.0f} % of the largest "
                        "(small_pieces); val: "
                        "the one with the best mean Dice on the --val-split scans, said in the "
                        "card")
    c.add_argument("--val-split", default="val",
                   help="with --postprocess val: the scans the clean-up is chosen on")
    c.add_argument("--postprocess-note", default="", help="where and how the clean-up was chosen")
    c.add_argument("--air-outside", default=None, choices=OUTSIDE_MODES,
                   help="models that read a scan's channels: set the air around the body "
                        "darkest in a channel that shows it grey (darkest), in every channel "
                        "(darkest_everywhere), or read it as it is (keep), stored in the model "
                        "before the card is measured")
    c.add_argument("--store", default=None, choices=("float16",),
                   help="float16: store the weights at half precision (half the file, for a "
                        "shipped model under its size cap) before the card is measured, so the "
                        "card scores the weights that ship")
    c.add_argument("--whole-slice-up-to", type=float, default=None, metavar="F",
                   help="2-D models: predict a slice up to F times the patch (per side) as one "
                        "window, for speed, stored in the model before the card is measured "
                        "(default: patch windows, the more accurate; "
                        "benchmarks/results/window_rule_acdc_val.md)")

    pt = sub.add_parser("pretrain", help="pretrain the New model's network without labels: "
                                         "restore corrupted slices of unlabelled scans")
    pt.add_argument("--data", nargs="+", required=True, help="dataset folders (labels unread)")
    pt.add_argument("--split", default="train", help="which scans of each folder")
    pt.add_argument("--skip", type=int, default=0,
                    help="leave out each folder's first N scans of the split (kept unseen)")
    pt.add_argument("--per-volume", type=int, default=None, metavar="N",
                    help="at most N evenly spaced slices per scan")
    pt.add_argument("--steps", type=int, default=2000)
    pt.add_argument("--batch", type=int, default=8)
    pt.add_argument("--seed", type=int, default=0)
    pt.add_argument("--device", default="auto")
    pt.add_argument("--out", required=True)

    from training.bench.simulate import add_subcommand as add_simulate

    add_simulate(sub)

    b = sub.add_parser("benchmark", help="label efficiency, Predict speed, annotation "
                                          "effort and weak labels, as Markdown tables")
    bsub = b.add_subparsers(dest="benchmark", required=True)
    le = bsub.add_parser("label-efficiency")
    le.add_argument("--data", required=True)
    le.add_argument("--labeled", required=True)
    le.add_argument("--methods", nargs="+", required=True,
                    help="method names, each optionally with options: bcp:conf=0.9,sup=1")
    le.add_argument("--seeds", type=int, default=2)
    le.add_argument("--labeled-set", type=int, default=0, metavar="K",
                    help="0: the first N patients; K >= 1: N patients drawn with seed K")
    le.add_argument("--choose-step-on-val", type=int, default=0, metavar="N",
                    help="keep each run's weights every N steps and score the snapshot its val "
                         "scans choose, as the papers' code keeps its best checkpoint (0: the "
                         "last step)")
    le.add_argument("--out", required=True)
    _train_options(le)
    sp = bsub.add_parser("speed", help="predict + uncertainty time; act student vs teacher")
    sp.add_argument("--models", nargs="+", required=True,
                    help="checkpoints; an act checkpoint brings its teacher (NAME.teacher.pt)")
    sp.add_argument("--volume", required=True, help="a real scan, resampled to --shape")
    sp.add_argument("--shape", type=int, nargs=3, default=[100, 256, 256], help="z y x")
    sp.add_argument("--mc", type=int, nargs="+", default=[0, 8],
                    help="MC-dropout passes to time (0 = entropy of one softmax)")
    sp.add_argument("--repeats", type=int, default=5)
    sp.add_argument("--batch", type=int, nargs="+", default=[0], metavar="N",
                    help="slices per pass of a 2-D model to time side by side (0 = the "
                         "default, 16)")
    sp.add_argument("--data", default=None, help="dataset folder: also report test-split Dice")
    sp.add_argument("--out", required=True)
    ef = bsub.add_parser("effort", help="slices painted over N scans: assistant vs interpolation")
    ef.add_argument("--data", required=True)
    ef.add_argument("--cases", type=int, default=5, help="scans, in the folder's order")
    ef.add_argument("--target", type=float, required=True, help="Dice to reach, e.g. 90")
    ef.add_argument("--start", default="scratch", help="scratch, or a checkpoint to start from")
    ef.add_argument("--k-max", type=int, default=12, help="most slices painted on one scan")
    ef.add_argument("--steps", type=int, default=200, help="steps per Retrain")
    ef.add_argument("--seed", type=int, default=0,
                    help="scan i's Retrains train with seed 1000 * SEED + i; another seed "
                         "repeats the run to show how much one run varies (default 0)")
    ef.add_argument("--method", default="supervised", choices=METHODS)
    ef.add_argument("--split", default="test", help="split to draw the scans from ('' = all)")
    ef.add_argument("--offset", type=int, default=0, help="skip this many scans first")
    ef.add_argument("--patients", default="",
                    help="comma-separated scans (patients of slice stacks) to use, in order, "
                         "instead of the split's first ones")
    ef.add_argument("--prior", default=None, choices=["interpolation"],
                    help="also train on the interpolation between painted slices")
    ef.add_argument("--suggest-from", choices=["shown", "network", "disagreement"],
                    default=None,
                    help="with --fuse-weight: rank the suggestions by the uncertainty of the "
                         "blend shown, of the network alone, or of the network raised to the "
                         "blend's where it and the fill disagree (default: the plugin's)")
    ef.add_argument("--prior-taught", default=None, choices=["interpolation", "none"],
                    help="with --prior: the prior on a scan that starts from a model already "
                         "taught (default: --prior on every scan)")
    ef.add_argument("--fuse-weight", type=float, default=None, metavar="W",
                    help="blend predictions with the interpolation (network share W), as the "
                         "plugin's New model does with W = 0.3")
    ef.add_argument("--anchor-with-finished", choices=["on", "off"], default="on",
                    help="off: a Retrain that also learns from finished scans does without the "
                         "anchor (the model's own confident voxels as pseudo-labels)")
    ef.add_argument("--fuse-weight-taught", type=float, default=None, metavar="W",
                    help="with --fuse-weight: the network's share on a scan that starts from a "
                         "model already taught (default: --fuse-weight on every scan)")
    ef.add_argument("--fuse-by-gap", choices=["all", "taught", "off"], default=None,
                    help="with --fuse-weight: the network's share grows from 0 on a painted "
                         "slice to W x sqrt(t) (t = 1 midway between two), on every scan, on "
                         "a scan that starts from a taught model, or nowhere (default: off, as "
                         "the dock)")
    ef.add_argument("--fixed-k", type=int, default=None, metavar="K",
                    help="instead: paint the same K evenly spaced slices for both, one Retrain "
                         "of a new model, Dice on the other slices")
    ef.add_argument("--hold-back-from", type=int, default=None, metavar="N",
                    help="judge each Retrain on held-back painted slices once N slices are "
                         "painted (default as the plugin: never from scratch, 2 from --start; "
                         "above --k-max: never)")
    ef.add_argument("--fuse-weight-right", type=float, default=None, metavar="W",
                    help="with --fuse-weight: the network's share on a scan where the model had "
                         "the middle slice right (no ends painted)")
    ef.add_argument("--fuse-weight-from-painted", action="store_true",
                    help="with --fuse-weight: each Retrain reads the network's share off the "
                         "scan's painted slices that the network had not trained on (the "
                         "share that would have drawn them best); --fuse-weight until there "
                         "are some")
    ef.add_argument("--taught-lr", type=float, default=None, metavar="LR",
                    help="learning rate of a Retrain that starts from a model that has learnt "
                         "something (default: the plugin's fine-tune rate, "
                         "FINETUNE_DEFAULTS['lr'])")
    ef.add_argument("--judge-taught", action="store_true",
                    help="on a scan that starts from a taught model, judge each Retrain on "
                         "held-back painted slices from 2 painted slices")
    ef.add_argument("--pretrained", default=None, metavar="PATH",
                    help="a new model starts from this network of its shape (semiseg train "
                         "--new-model-network on another anatomy, or semiseg pretrain without "
                         "labels); default: from random weights")
    ef.add_argument("--new-model-channels", choices=["grey", "all"], default=None,
                    help="on scans with several channels (LGG): a New model reads the grey "
                         "(FLAIR) channel or all of them (default: the plugin's, "
                         "NEW_MODEL_CHANNELS)")
    ef.add_argument("--new-network", nargs="+", default=None, metavar="KEY=VALUE",
                    help="a new model's network instead of the plugin's, e.g. unshuffle=2 "
                         "base=12 (keys of NEW_MODEL_NETWORK), size=96 for its patch, and "
                         "whole_slice_up_to=1.0 for its prediction windows")
    ef.add_argument("--prior-init", type=int, choices=(0, 1), default=None,
                    help="1: a New model's first Retrain starts its output at the painted "
                         "slices' class shares; 0: at equal odds (default: the plugin's)")
    ef.add_argument("--prior-fill", choices=["register", "interpolation"], default=None,
                    help="--fixed-k: the prior's pseudo-labels from the registered fill or "
                         "from shape interpolation (default: as the plugin)")
    ef.add_argument("--ends-every-scan", action=argparse.BooleanOptionalAction, default=None,
                    help="on every scan, not only the first, paint the structure's first, "
                         "middle and last slices first and keep the prediction between the "
                         "ends (default: the plugin's)")
    ef.add_argument("--ends-unless-right", default=None, metavar="DICE|off",
                    help="with ends every scan, on a scan with a model: paint the structure's "
                         "middle slice first, and its first and last slices too only where the "
                         "model's prediction on the middle slice fell short of this Dice; off: "
                         "always the ends (default: the plugin's, for a New model's series "
                         f"only: {ENDS_UNLESS_RIGHT:g})")
    ef.add_argument("--consolidate", type=int, default=None, metavar="STEPS",
                    help="with --replay finished: between scans, the carried model trains "
                         "this many more steps on every finished segmentation, as the dock "
                         "does while the user opens the next scan (default: the dock's, "
                         "TRAIN_BETWEEN_SCANS_STEPS from scratch, 0 with --start; 0 = none)")
    ef.add_argument("--finished-kept", type=int, default=None, metavar="N",
                    help="with --replay finished: how many of the most recent finished scans "
                         "the Retrains train on (default: as many as the dock keeps)")
    ef.add_argument("--rebase", action="store_true",
                    help="with --start: each scan's first Retrain starts from whichever of the "
                         "carried model and the starting model scores better on the slices "
                         "painted so far (neither has trained on them)")
    ef.add_argument("--baselines-only", action="store_true",
                    help="no learning: slices the baselines need (this project's interpolation, "
                         "and ITK's contour interpolation when the bench extra is installed)")
    ef.add_argument("--first-scan", choices=["ends", "middle"], default="ends",
                    help="with no model yet, paint the structure's first, middle and last "
                         "slices and keep the prediction between the ends, as the dock's New "
                         "model asks (default), or start at its middle slice and follow the "
                         "suggestions")
    ef.add_argument("--replay", nargs="?", const="painted",
                    choices=["painted", "finished", "none"], default=None,
                    help="each Retrain also trains on the scans done before: the slices "
                         "painted there (painted, what a bare --replay means), the whole "
                         "segmentation finished there (finished: painted slices and the "
                         "prediction kept), or none (default: the plugin's, finished)")
    ef.add_argument("--slice-score", choices=["mean", "sum", "area"], default=None,
                    help="suggest by the mean or the summed uncertainty near the structure, "
                         "or the mean x the section's area share (default: the plugin's)")
    ef.add_argument("--coverage", type=float, default=None, metavar="P",
                    help="suggest by uncertainty x (distance to the nearest painted slice / its "
                         "largest value) ** P (default: the plugin's)")
    ef.add_argument("--suggest-within", choices=["main", "all"], default=None,
                    help="suggest only on the prediction's main 3-D piece (and pieces on "
                         "painted slices), or on every predicted voxel (default: the plugin's)")
    ef.add_argument("--fused-pieces", choices=["main", "all"], default=None,
                    help="a fused prediction keeps only its main 3-D piece (and pieces on "
                         "painted slices), or every piece (default: the plugin's)")
    ef.add_argument("--ends", choices=["shrink", "unknown"], default=None,
                    help="between a painted slice with a structure and one without it, the "
                         "prior shrinks it across the gap, or leaves the gap to the network "
                         "(default: the plugin's)")
    ef.add_argument("--spread-until", type=int, default=None, metavar="K",
                    help="between painted ends, suggest the middle of the longest unpainted run "
                         "until K slices are painted, on every scan; 0: never (default: the "
                         "plugin's, on a scan that starts with no model)")
    ef.add_argument("--first-suggestion", choices=["body", "uncertain"], default=None,
                    help="on a scan with nothing painted, suggest the largest predicted "
                         "section first, or the most uncertain slice (default: the plugin's)")
    ef.add_argument("--device", default="cpu")
    ef.add_argument("--out", required=True)
    wk = bsub.add_parser("weak", help="slice tags -> localisation -> weak masks -> cam_weak, "
                                              "patient folds")
    wk.add_argument("--data", required=True, help="2-D slices with patient and tags (LGG)")
    wk.add_argument("--tags", default=None, help="tag CSV (default: the data's index.csv)")
    wk.add_argument("--test-patients", type=int, default=4,
                    help="one split: hold out the last N patients (ignored with --folds)")
    wk.add_argument("--folds", type=int, default=0,
                    help="patient-level cross-validation: K folds, every patient tested once")
    wk.add_argument("--localiser", default=DEFAULT_LOCALISER, choices=LOCALISERS,
                    help="what seeds the weak masks of the network arms (default: anomaly)")
    wk.add_argument("--dense", type=int, default=8, help="dense masks for the baseline")
    wk.add_argument("--classifier-steps", type=int, default=300)
    wk.add_argument("--seed", type=int, default=0)
    wk.add_argument("--out", required=True, help="work folder (checkpoints, results.json)")
    wk.add_argument("--table", default=None, help="also write the Markdown table here")
    _train_options(wk)
    return parser


def _method_spec(value: str) -> str:
    try:
        parse_spec(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _prior_init(args: argparse.Namespace, default: int = 1) -> bool:
    """``--prior-init`` as given, else ``default``."""
    given = getattr(args, "prior_init", None)
    return bool(default if given is None else given)


def _context_slices(args: argparse.Namespace) -> int:
    k = int(getattr(args, "context_slices", 0) or 0)
    if k < 0:
        raise DataError("--context-slices must be 0 or more")
    if k and args.dims != 2:
        raise DataError("--context-slices is for 2-D networks (--dims 2d)")
    return k


def _config(args: argparse.Namespace, **extra):
    from training.fit.trainer import TrainConfig

    size = args.size or ([160, 160] if args.dims == 2 else [32, 64, 64])
    if len(size) != args.dims:
        raise DataError(f"--size needs {args.dims} numbers for {args.dims}D")
    unshuffle = getattr(args, "unshuffle", None) or (2 if args.dims == 2 else 1)
    depth = _INIT_NETWORK["depth"] if args.depth is None else args.depth
    check_size(size, depth, unshuffle=unshuffle)
    lbs = args.labeled_bs or (8 if args.dims == 2 else 2)
    ubs = args.unlabeled_bs if args.unlabeled_bs is not None else lbs
    kw = dict(
        dims=args.dims, steps=args.steps, size=list(size), labeled_bs=lbs, unlabeled_bs=ubs,
        lr=args.lr, base=_INIT_NETWORK["base"] if args.base is None else args.base, depth=depth,
        dropout=args.dropout,
        warmup_fraction=args.warmup, downsample=args.downsample,
        refresh_every=args.refresh_every, device=args.device,
        precision=getattr(args, "precision", "fp32"), optimizer=args.optimizer,
        rotate=args.rotate, sampling=args.sampling, augment=args.augment,
        missing_channels=getattr(args, "missing_channels", None),
        context_slices=_context_slices(args),
        foreground_share=args.foreground_share, lr_warmup=args.lr_warmup,
        clip_grad=args.clip_grad, weights_ema=args.weights_ema, unshuffle=unshuffle,
        prior_init=_prior_init(args),
        deterministic=not getattr(args, "fast_kernels", False),
        compile=getattr(args, "compile", None),
    )
    return TrainConfig(**{**kw, **extra})  # a method option (e.g. warmup_fraction) wins


# Weak labels from tags learn more slowly than dense labels: on the 5 LGG val patients 1000
# steps gave 47.8 Dice on tumour slices with 34.9 % false-positive slices, 2000 gave 56.4 and
# 27.1 % (benchmarks/results/lgg_weak_gate_val.md, lgg_weak_gate_2000_val.md).
TAG_STEPS = 2000


def train_steps(args: argparse.Namespace) -> int:
    """``--steps`` as given, else the default of the kind of training: 1000, or
    :data:`TAG_STEPS` for weak labels from ``--tags``."""
    if args.steps is not None:
        return int(args.steps)
    return TAG_STEPS if getattr(args, "tags", None) else 1000


def _cmd_train(args: argparse.Namespace) -> int:
    if not args.new_model_network:
        return _train_command(args, None)
    if args.tags:
        raise DataError("--new-model-network learns from dense labels (--labeled), not --tags")
    work = tempfile.mkdtemp(prefix="semiseg_new_model_")  # its untrained start, read once
    try:
        return _train_command(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _train_command(args: argparse.Namespace, work: str | None) -> int:
    from training.core.distributed import cleanup
    from training.engine.data import load_train_data
    from training.fit.trainer import method_settings, train

    args.steps = train_steps(args)
    if args.steps < 1:
        raise DataError("--steps must be at least 1")
    check_train_paths(args)
    init_meta = load_checkpoint(args.init)[1] if args.init else None  # checked before reading
    if init_meta is not None:  # fine-tuning keeps the --init network: check sizes against it
        _keep_init_network(args, init_meta)
        check_init_fits(args.init, init_meta, [], args.num_classes)
    if args.tags:
        if args.unlabeled is not None:
            raise DataError("--unlabeled goes with --labeled; --tags picks its own slices")
        if getattr(args, "context_slices", 0):
            raise DataError("--context-slices goes with --labeled; weak labels from --tags "
                            "train on single slices")
        if getattr(args, "air_outside", None) is not None:
            raise DataError("--air-outside goes with --labeled and --channels 3; weak labels "
                            "from --tags read the grey channel")
        return _train_from_tags(args)
    if args.labeled is None:
        raise DataError("--labeled is required (or give --tags FILE.csv)")
    from training.core.dicom import series_dataset

    with series_dataset(args.data) as root:  # images/<case>/ may be a DICOM series folder
        check_labeled(root, args.labeled)
        data = load_train_data(root, args.labeled, num_classes=args.num_classes,
                               channels=args.channels, unlabeled=args.unlabeled,
                               use_unlabeled=args.unlabeled_bs != 0,
                               normalization=_training_normalization(args, init_meta))
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
        if len(names) != data.num_classes or any(not n for n in names):
            raise DataError(f"--class-names needs {data.num_classes} names (background first)")
        data.class_names = names
    if work is not None:
        if args.init:
            raise DataError("--new-model-network starts a new network: leave out --init")
        args.init = _new_model_network(work, data.class_names, args.seed)
        init_meta = load_checkpoint(args.init)[1]
        _keep_init_network(args, init_meta, "the New model network's")
    if init_meta is not None:
        check_init_fits(args.init, init_meta, data.class_names)
    cfg = _config(args, **method_settings(args.method), seed=args.seed, checkpoint=args.out,
                  checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                  num_classes=args.num_classes)

    def on_event(e: dict) -> None:
        if e["type"] == "progress":
            losses = " ".join(f"{k}={v:.4f}" for k, v in e["losses"].items() if k != "lr")
            print(f"[rank {e.get('rank', 0)}] step {e['step']}/{e['total']} {losses} "
                  f"elapsed={e['elapsed']:.1f}s eta={e['eta']:.1f}s", file=sys.stderr, flush=True)
        elif e["type"] in ("checkpoint", "done"):
            print(f"[rank 0] {e['type']}: {e['path']}", file=sys.stderr, flush=True)
        elif e["type"] == "warning":
            print(f"WARNING: {e['message']}", file=sys.stderr, flush=True)

    try:
        train(cfg, data, on_event=on_event, init_checkpoint=args.init, resume=args.resume)
    finally:
        # under torchrun: leave the process group before exit, so no rank tears down gloo
        # while another still talks to it (a rank died of SIGABRT at exit once in CI)
        cleanup()
    return 0


# network options a fine-tune takes from its --init checkpoint, and their defaults (a new
# network's too, for base and depth)
_INIT_NETWORK = {"base": 12, "depth": 4, "unshuffle": 1, "context_slices": 0}


def _keep_init_network(args: argparse.Namespace, init_meta: dict,
                       whose: str = "the --init network's") -> None:
    """Training from a checkpoint keeps its network, so the size checks and the recorded
    config read its settings; one given otherwise on the command line is refused, not
    silently dropped."""
    network = init_meta.get("network", {})
    for name, default in _INIT_NETWORK.items():
        kept = int(network.get(name, default))
        given = getattr(args, name, None)
        if given is not None and int(given) != kept:
            flag = "--" + name.replace("_", "-")
            raise DataError(f"{flag} {given} differs from {whose} {kept}: training from a "
                            f"network keeps its settings; leave {flag} out")
        setattr(args, name, kept)


def _pretrained_on(path: str) -> str:
    """How a New model's starting network learnt: with labels (and which), or without."""
    from training.engine.checkpoint import read_meta

    meta = read_meta(path)
    if meta.get("method") == "pretrain_restore":
        return "pretrained without labels"
    names = list(meta.get("class_names", [])[1:])
    return f"trained with labels of {', '.join(names) or 'another data set'}"


def _new_model_network(folder: str, class_names: Sequence[str], seed: int) -> str:
    """An untrained checkpoint of the New model's network for ``class_names``, to train."""
    from training.interactive.new_model import new_model

    return new_model(Path(folder) / "untrained_new_model_network.pt", class_names, seed=seed)


def _print_event(e: dict) -> None:
    if e["type"] == "progress":
        losses = " ".join(f"{k}={v:.4f}" for k, v in e["losses"].items() if k != "lr")
        phase = f" {e['phase']}" if e.get("phase") else ""
        print(f"step {e['step']}/{e['total']}{phase} {losses}", file=sys.stderr, flush=True)
    elif e["type"] in ("checkpoint", "done"):
        print(f"{e['type']}: {e['path']}", file=sys.stderr, flush=True)
    elif e["type"] == "warning":
        print(f"WARNING: {e['message']}", file=sys.stderr, flush=True)


def _train_from_tags(args: argparse.Namespace) -> int:
    """Tags (and optional dense labels) of a dataset folder -> cam_weak checkpoint."""
    from training.engine.data import scan_dataset, select_labeled
    from training.fit.trainer import method_settings
    from training.weak.from_tags import train_from_tags
    from training.weak.tags import read_tags, tag_counts, volume_tags

    tags = read_tags(args.tags, args.tag_column)
    cases = [c for c in scan_dataset(args.data) if c.split in (None, "train")]
    dense = set()
    if args.labeled is not None:
        dense = {c.name for c in select_labeled(cases, args.labeled)[0]}
    read = [(c, read_image(c.image)[0]) for c in cases]
    images, vol_tags, user = [], [], []
    for group in _stacks(read):  # a patient's 2-D slices become one volume (as in the dock)
        ims, tgs, labs = [], [], []
        for c, im in group:
            ims.append(im)
            tgs.append(volume_tags(tags, c.name, len(im)))
            lab = None
            if c.name in dense and c.label is not None:
                lab, _ = read_labels(c.label)
            labs.append(lab if lab is not None else np.full(im.shape, 255, np.uint8))
        images.append(np.concatenate(ims))
        vol_tags.append(np.concatenate(tgs))
        user.append(np.concatenate(labs))
    counts = tag_counts(np.concatenate(vol_tags))
    print(f"{len(cases)} cases; tags: {counts['positive']} positive, {counts['negative']} "
          f"negative; {len(dense)} cases with dense labels", file=sys.stderr)
    spec = args.method if parse_spec(args.method)[0] != "supervised" else "cam_weak"
    # equal odds unless asked: the weak path's targets were met from equal odds, and a start at
    # the class shares was not measured on it (in toys it can hold a faint structure back)
    cfg = _config(args, **method_settings(spec),
                  seed=args.seed, checkpoint=args.out, checkpoint_every=args.checkpoint_every,
                  log_every=args.log_every, prior_init=_prior_init(args, default=0))
    res = train_from_tags(images, vol_tags, cfg, user_labels=user,
                          classifier_steps=args.classifier_steps, on_event=_print_event,
                          init_checkpoint=args.init,
                          localiser=args.localiser)
    if res.classifier:
        print(f"classifier: {res.classifier}", file=sys.stderr)
    return 0


def _stacks(read: list) -> list[list]:
    """(case, image) pairs grouped into volumes: one-slice images of one patient and one
    in-plane shape are stacked in their listed order; anything else is a volume of its own."""
    groups: dict[tuple, list] = {}
    for i, (c, im) in enumerate(read):
        key: tuple = (i,)
        if c.patient is not None and len(im) == 1:
            key = ("patient", c.patient, im.shape[1:])
        groups.setdefault(key, []).append((c, im))
    return list(groups.values())


def _inputs(path: Path) -> list[Path]:
    """The scans (or label maps) a path names: a file, a folder that is one DICOM series or
    one patient's PNG slices, or a folder of them (image files, DICOM-SEG files, DICOM series
    or PNG-slice sub-folders)."""
    from training.core.dicom import is_series_folder, looks_dicom

    if path.is_dir():
        if is_series_folder(path) or _slice_stack(path):
            return [path]
        folder = path / "images" if (path / "images").is_dir() else path
        files = [p for p in sorted(folder.iterdir())
                 if p.name.lower().endswith(IMAGE_SUFFIXES)
                 or (p.is_file() and p.name.lower().endswith(SEG_SUFFIX) and looks_dicom(p))
                 or (p.is_dir() and (is_series_folder(p) or _slice_stack(p)))]
        if not files:
            raise DataError(f"no image files or DICOM series in {folder}")
        return files
    if not path.exists():
        raise DataError(f"input not found: {path}")
    return [path]


def _slice_stack(folder: Path) -> bool:
    """A folder of 2-D PNG slices and nothing else is one scan (a patient's LGG stack), read
    and normalised as one, as the plugin opens it."""
    from training.core.io import png_slices

    files = [p for p in folder.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)]
    return bool(files) and len(png_slices(folder)) == len(files) and len(files) > 1


def _target(out_arg: str, src: Path, many: bool, float_data: bool) -> Path:
    out = Path(out_arg)
    as_dir = many or out.is_dir() or out_arg.endswith(("/", "\\"))
    if not as_dir:
        if not out.name.lower().endswith(IMAGE_SUFFIXES + (SEG_SUFFIX,)):
            raise DataError(f"output {out} has no image file extension (e.g. .nii.gz)")
        if float_data and out.name.lower().endswith(SEG_SUFFIX):
            raise DataError(f"output {out}: a DICOM-SEG holds labels only; write this map as "
                            f".nii.gz")
        return out
    name = src.name
    if src.is_dir():  # a DICOM series folder: its maps are written as NIfTI
        name = src.name + ".nii.gz"
    if float_data and name.lower().endswith((".png", ".jpg", ".tif", ".tiff")):
        name = case_name(src) + ".nii.gz"
    return out / name


def _predict_plan(args: argparse.Namespace, files: list[Path], many: bool
                  ) -> list[tuple[Path, list[tuple[str, Path]]]]:
    """Each input with its outputs (option, target path), all resolved before any work."""
    plan = []
    for f in files:
        outs = [("--output", _target(args.output, f, many, float_data=False))]
        if args.uncertainty:
            outs.append(("--uncertainty", _target(args.uncertainty, f, many, float_data=True)))
        if args.cam:
            outs.append(("--cam", _target(args.cam, f, many, float_data=True)))
        plan.append((f, outs))
    return plan


def _cmd_predict(args: argparse.Namespace) -> int:
    from training.core.device import pick_device
    from training.core.output_paths import check_outputs
    from training.core.staged_writes import StagedWrites
    from training.engine.inference import model_channels, predict_volume
    from training.weak.from_tags import classifier_path

    if args.mc < 0:
        raise DataError(f"--mc {args.mc}: the number of MC-dropout samples is 0 (one softmax) "
                        f"or more")
    source = Path(args.input)
    files = _inputs(source)
    one_scan = files == [source]  # a file, or a folder that is one scan (DICOM series, slices)
    many = not one_scan
    plan = _predict_plan(args, files, many)
    check_outputs([o for _, outs in plan for o in outs],
                  [*files, args.model, classifier_path(args.model)],
                  [source if one_scan else files[0].parent] if source.is_dir() else [])
    device = pick_device(args.device)
    model, meta = load_checkpoint(args.model, device=device)
    if "size" not in meta:
        raise CheckpointError(f"{args.model}: checkpoint metadata has no 'size' (the input size "
                              f"its network was trained at); it cannot predict")
    channels = model_channels(meta)
    for f, outs in plan:  # refuse a bad input before hours of predicting, with nothing written
        arr, ref = read_image(f, series=args.series, channels=channels,
                              time_point=args.time_point)
        if outs[0][1].name.lower().endswith(SEG_SUFFIX):
            from training.core.dicom_seg import check_writable

            check_writable(arr.shape[:3], ref)
    # every output is staged and moved into place only when all are written: a full disk or a
    # bad file midway leaves every earlier output as it was (no half old, half new folder)
    with StagedWrites() as staged:
        for f, outs in plan:
            arr, ref = read_image(f, series=args.series, channels=channels,
                                  time_point=args.time_point)
            res = predict_volume(model, meta, arr, mc_samples=args.mc, device=device,
                                 probabilities=False, clean_up=not args.no_clean_up)
            for what, path in outs:
                data = (res["labels"] if what == "--output" else res["uncertainty"]
                        if what == "--uncertainty"
                        else cam_model_map(args.model, model, meta, arr, device))
                segments = None  # a DICOM-SEG's segments are named after the model's classes
                if what == "--output" and path.name.lower().endswith(SEG_SUFFIX):
                    from training.core.dicom_seg import segments_for

                    segments = segments_for(res["labels"], meta.get("class_names"))
                target = staged.path_for(path)
                try:
                    write_like(data, ref, target, segments)
                except WriteError as e:  # name the output the user asked for, not the stage
                    raise WriteError(f"{str(e).replace(str(target), str(path))}; no output was "
                                     f"changed") from e
            note = one_value_note(arr)
            print(f"{f.name}: predicted" + (f" (warning: {note})" if note else ""),
                  file=sys.stderr)
        for path in staged.commit():
            print(f"wrote {path}", file=sys.stderr)
    return 0


def cam_model_map(model_path: str, model, meta: dict, volume: np.ndarray, device) -> np.ndarray:
    """Localisation map (z, y, x) in [0, 1] as training made it (:mod:`training.weak.from_tags`'s
    own
    function, without tags), or else Grad-CAM / the cls head of the model itself."""
    from training.engine.normalization import normalize_intensity
    from training.weak.cam import volume_cam
    from training.weak.from_tags import classifier_path, localisation_maps

    localiser = meta.get("config", {}).get("method_opts", {}).get("localiser")
    clf_path = classifier_path(model_path)
    clf, clf_meta = load_checkpoint(clf_path, device=device) if clf_path.is_file() else (None,
                                                                                        meta)
    if localiser == "anomaly" or (localiser in LOCALISERS and clf is not None):
        x = normalize_intensity(volume, meta.get("normalization"))
        return localisation_maps(localiser, x, None, clf, clf_meta["size"])
    cam, _ = volume_cam(clf or model, volume, clf_meta["size"],
                        normalization=clf_meta.get("normalization"))
    return cam


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from training.core.output_paths import check_outputs
    from training.engine.metrics import classes_to_score, dice_hd95, mean_over_cases

    pred_files, ref_files = _inputs(Path(args.pred)), _inputs(Path(args.labels))
    if args.json:
        folders = [fs[0].parent for fs, arg in ((pred_files, args.pred), (ref_files, args.labels))
                   if Path(arg).is_dir()]
        check_outputs([("--json", args.json)], [*pred_files, *ref_files], folders)
    given = card_classes(args.model, args.num_classes)
    preds = {case_name(p): p for p in pred_files}
    refs = {case_name(p): p for p in ref_files}
    common = sorted(set(preds) & set(refs))
    if not common:
        raise DataError("no prediction matches a label file by case name")
    missing = sorted(set(refs) - set(preds))
    loaded = []
    for name in common:
        p, r, ref_geom = _read_pair(preds[name], refs[name])
        if p.shape != r.shape:
            raise DataError(f"shape mismatch for {name}: prediction {p.shape}, label {r.shape}")
        loaded.append((name, p, r, list(ref_geom.spacing)[::-1][: r.ndim]))
    blank = [str(refs[name]) for name, _, r, _ in loaded if (r == 255).all()]
    if len(blank) == len(loaded):
        raise DataError(f"nothing to score: every voxel of {', '.join(blank)} is 255 (not "
                        f"annotated)")
    for path in blank:
        print(f"{path}: every voxel is 255 (not annotated): this case is not scored",
              file=sys.stderr)
    # every class in a prediction or a reference is scored
    # (training.engine.metrics.classes_to_score)
    n_cls = classes_to_score(((p, r) for _, p, r, _ in loaded), given)
    if given is not None and n_cls > given:
        print(f"classes {list(range(given, n_cls))} appear beyond the {given} classes given: "
              f"scored too", file=sys.stderr)
    # a class in neither prediction nor reference is not scored (n/a), never a free Dice of 1
    per_case = {name: dice_hd95(p, r, n_cls, sp)
                for name, p, r, sp in loaded}
    mean = mean_over_cases(list(per_case.values()))
    summary = {"cases": per_case, "mean": mean, "missing_predictions": missing,
               "num_classes": n_cls, "unannotated_labels": blank,
               "not_scored": [c for c in range(1, n_cls) if np.isnan(mean["dice"][c - 1])]}

    def fmt(values: list[float], spec: str) -> str:
        return " ".join("n/a" if np.isnan(v) else format(v, spec) for v in values)

    for name, res in per_case.items():
        print(name, "dice", fmt(res["dice"], ".4f"), "hd95", fmt(res["hd95"], ".2f"))
    print("mean", "dice", fmt(mean["dice"], ".4f"), "hd95", fmt(mean["hd95"], ".2f"))
    if summary["not_scored"]:
        print(f"classes {summary['not_scored']} appear on no annotated voxel of any label file "
              f"or prediction: not scored", file=sys.stderr)
    if args.json:
        text = json.dumps(_nan_to_none(summary), indent=1)
        atomic_write(args.json, lambda fh: fh.write(text.encode()))
    return 0


def _read_pair(pred: Path, ref: Path) -> tuple[np.ndarray, np.ndarray, Geometry]:
    """Prediction and reference label maps; a DICOM-SEG is placed onto the other's grid (its
    empty frames may be left out, so alone it need not span the whole scan)."""
    from training.core.dicom import is_seg_file

    if is_seg_file(ref) and not is_seg_file(pred):
        p, pred_geom = read_labels(pred)
        r, ref_geom = read_labels(ref, like=(p.shape, pred_geom))
    else:
        r, ref_geom = read_labels(ref)
        p, _ = read_labels(pred, like=(r.shape, ref_geom))
    return p, r, ref_geom


def _clean_up_on_val(model: str, data: str, split: str) -> tuple[str, str]:
    """The clean-up with the best mean Dice on a split's labelled scans, and a note that says
    how each one scored there."""
    from training.bench.benchmark import clean_up_chosen_on_val, evaluate_clean_ups

    try:
        scored = evaluate_clean_ups(model, data, split)
    except ValueError as e:
        raise DataError(f"--postprocess val: {e} in {data} (name another with --val-split)") \
            from None
    chosen = clean_up_chosen_on_val(scored)
    means = ", ".join(f"{m} {100 * np.mean(r['dice']):.2f}" for m, r in scored.items())
    cases = next(iter(scored.values()))["cases"]
    return chosen, f"chosen on the {cases} {split!r} scans by mean Dice ({means})"


def _training_normalization(args: argparse.Namespace, init_meta: dict | None) -> dict:
    """The normalisation a training reads its scans with: the --init network's (a fine-tune
    keeps it), else the default, with ``--air-outside`` where given."""
    base = dict((init_meta or {}).get("normalization") or DEFAULT_NORMALIZATION)
    given = getattr(args, "air_outside", None)
    if given is None:
        return base
    if int(getattr(args, "channels", 1) or 1) == 1:
        raise DataError("--air-outside is for scans read with their channels (--channels 3); "
                        "a grey scan's air is read as it is")
    if init_meta is not None and outside_mode(base) != given:
        raise DataError(f"--air-outside {given} differs from the --init network's "
                        f"{outside_mode(base)}: a fine-tune keeps its normalisation; leave "
                        "--air-outside out")
    return {**base, "outside": given}


def _cmd_card(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.library.model_card import build_card, render_markdown, write_card

    def names(v: str | None) -> list[str] | None:
        return [x.strip() for x in v.split(",") if x.strip()] if v else None

    meta = load_checkpoint(args.model)[1]
    if args.air_outside is not None:
        from training.engine.inference import model_channels

        if model_channels(meta) == 1:
            raise DataError("--air-outside is for models that read a scan's channels; this one "
                            "reads one")
        update_meta(args.model, normalization={**(meta.get("normalization")
                                                  or DEFAULT_NORMALIZATION),
                                               "outside": args.air_outside})
    if args.whole_slice_up_to is not None:
        if args.whole_slice_up_to < 1:
            raise DataError(f"--whole-slice-up-to must be at least 1, not {args.whole_slice_up_to}")
        update_meta(args.model, whole_slice_up_to=args.whole_slice_up_to)
    if args.store == "float16":
        compact_checkpoint(args.model)
    if args.postprocess == "val":
        args.postprocess, chosen_note = _clean_up_on_val(args.model, args.data, args.val_split)
        args.postprocess_note = "; ".join(n for n in (args.postprocess_note, chosen_note) if n)
    card = build_card(args.model, args.data, args.anatomy, args.modality, args.trained_with,
                      args.split_note, args.train_split or None, args.test_split or None,
                      names(args.train_patients), names(args.test_patients),
                      eval_command="semiseg " + " ".join(shlex.quote(a) for a in argv),
                      postprocess=args.postprocess, postprocess_note=args.postprocess_note)
    write_card(args.model, card)
    text = render_markdown(card, Path(args.model).name)
    if args.markdown:
        atomic_write(args.markdown, lambda fh: fh.write(text.encode()))
    print(text)
    return 0


def _nan_to_none(obj):
    """JSON has no NaN: not-scored values are written as null."""
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return None if isinstance(obj, float) and np.isnan(obj) else obj


def _cmd_pretrain(args: argparse.Namespace, argv: Sequence[str]) -> int:
    from training.interactive.new_model import NEW_MODEL_SIZE
    from training.interactive.pretrain import pretrain, unlabelled_slices

    slices = unlabelled_slices(args.data, NEW_MODEL_SIZE, args.split, args.skip, args.per_volume)
    print(f"{len(slices)} slices from {', '.join(args.data)}", file=sys.stderr, flush=True)
    path = pretrain(slices, args.out, steps=args.steps, batch=args.batch, seed=args.seed,
                    device=args.device, sources=args.data,
                    log=lambda m: print(m, file=sys.stderr, flush=True))
    print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``semiseg``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        check_report_paths(args)
        if args.command == "train":
            return _cmd_train(args)
        if args.command == "predict":
            return _cmd_predict(args)
        if args.command == "evaluate":
            return _cmd_evaluate(args)
        if args.command == "simulate":
            return args.func(args)
        if args.command == "card":
            return _cmd_card(args, argv)
        if args.command == "pretrain":
            return _cmd_pretrain(args, argv)
        from training.cli_benchmark import run_benchmark

        return run_benchmark(args, argv)
    except (DataError, CheckpointError, ValueError, OSError) as exc:
        print(f"semiseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("semiseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
