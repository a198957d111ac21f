"""The ``mlkd`` command: list data sets, fit / predict / evaluate a model directory, run the demo.

Every command reports bad input as one line ``mlkd: error: <what was wrong; what was expected>`` on
stderr and exits with status 2; nothing below ``main`` prints or exits on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import errno
import json
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from . import __version__

if TYPE_CHECKING:
    from .estimator import MultiLabelClassifier

# numpy, torch and the modules that load them are imported inside the commands that need them, so that
# `mlkd --help`, `--version` and `datasets` answer without loading torch (~2 s)

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130
ARFF_SUFFIXES = (".arff", ".arff.gz", ".arff.bz2", ".arff.xz")
EMBEDDED = "digits-ml"

#: Demo defaults, chosen so that ``mlkd demo`` finishes in well under a minute on 2 CPU cores.
DEMO_DATASET = EMBEDDED
DEMO_METHODS = ("bce", "ls", "skdtea")
DEMO_MAX_EPOCHS = 40
DEMO_HIDDEN = 128


# ---------------------------------------------------------------------------------------------------
# argument parsing
# ---------------------------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are the same one line as every other mlkd error, and whose epilog may end
    in text computed only when the help is shown (``_Later``)."""

    def error(self, message):
        raise _UsageError(f"{message}; see '{self.prog} --help'")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown option is reported by the subcommand's parser: its help lists the options."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            commands = next((a for a in self._actions if isinstance(a, argparse._SubParsersAction)), None)
            command = None if commands is None else commands.choices.get(getattr(parsed, commands.dest, None))
            (command or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed

    def format_help(self) -> str:
        if isinstance(self.epilog, _Later):
            self.epilog = self.epilog.text()
        return super().format_help()


class _Later:
    """Help text ``head + fn(*args)``, the call made when the help is shown: the method tables need the method
    registry, i.e. torch, and building the parser must not."""

    def __init__(self, head: str, fn, *args) -> None:
        self.head, self.fn, self.args = head, fn, args

    def text(self) -> str:
        return self.head + self.fn(*self.args)


class _UsageError(ValueError):
    pass


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def _param(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"bad --param {text!r}; expected KEY=VALUE such as hidden=256")
    return key, value.strip()


def _threshold(text: str) -> str | float:
    if text in ("tuned", "tuned-per-label"):
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected 'tuned', 'tuned-per-label' or a number in (0, 1)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive integer")
    return value


def _device(text: str) -> str:
    """'auto', 'cpu', 'cuda' or 'cuda:N' (whether that GPU exists is checked when the fit starts)."""
    head, _, index = text.partition(":")
    if text in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r}; expected auto, cpu, cuda or cuda:N")


DEVICE_HELP = ("where to train: auto (default: the first CUDA GPU when there is one, else the CPU), cpu, cuda or "
               "cuda:N. A model trained on a GPU is saved device-free and loads and predicts on a CPU")


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}; expected an integer >= 0")
    return value


def _nonnegative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}; expected a number >= 0")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}; expected a positive number")
    return value


def _method_list(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r}; expected comma-separated method names such as bce,ls,skdtea")
    return names


DATA_HELP = ("a data set name (see 'mlkd datasets') or a path to a multi-label ARFF file (.arff, .arff.gz, .arff.bz2, "
             ".arff.xz)")


def _add_label_options(p: argparse.ArgumentParser, default_note: str, unlabelled: bool = False) -> None:
    g = p.add_argument_group("labels of an ARFF file (ignored for data set names)")
    x = g.add_mutually_exclusive_group()
    x.add_argument("--label-file", metavar="XML", help=f"MULAN label file naming the label attributes {default_note}")
    x.add_argument("--n-labels", type=_nonneg_int if unlabelled else _positive_int, metavar="N",
                   help="the last N attributes are the labels" + (" (0: none)" if unlabelled else ""))


def _data_dir_arg(text: str) -> str | None:
    """A blank --data-dir (``--data-dir "$DIR"`` with DIR unset) is no directory: $MLKD_DATA, as a blank $MLKD_DATA
    is unset and as mlkd bench reads it; else ``mlkd datasets`` named $MLKD_DATA but checked the working directory."""
    return text if text.strip() else None


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", metavar="DIR", type=_data_dir_arg,
        help="directory holding the MULAN data set folders (default: $MLKD_DATA)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mlkd",
        description="Multi-label classification with (self-)knowledge distillation.",
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  mlkd demo                                  # three methods on the embedded digits-ml set\n"
            "  mlkd datasets                              # which benchmark sets are available\n"
            "  mlkd fit emotions --method skdtea          # train, save to runs/emotions-skdtea\n"
            "  mlkd evaluate runs/emotions-skdtea emotions  # metrics on the test split\n"
            "  mlkd predict runs/emotions-skdtea new.arff --out predictions.csv\n"
            "  mlkd bench results.db -d emotions,flags -m bce -m skdtea   # a resumable benchmark grid\n"
            "  mlkd report results.db --out report/       # tables, Friedman/Nemenyi, figures\n\n"
            "Run 'mlkd COMMAND --help' for each command's options."
        ),
    )
    parser.add_argument("--version", action="version", version=f"mlkd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # datasets ----------------------------------------------------------------------------------------
    p = sub.add_parser(
        "datasets",
        help="list the benchmark data sets and whether their files are found",
        description=("List the benchmark data sets (catalogue sizes) and whether their files are found; with a\n"
                     "NAME, one data set in detail: its files, features, labels and their frequencies."),
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  mlkd datasets\n"
            "  mlkd datasets yeast\n"
            "  mlkd datasets --data-dir ~/data/mulan\n"
            "  MLKD_DATA=~/data/mulan mlkd datasets\n\n"
            "The directory holds one folder per data set with <name>-train.arff, <name>-test.arff and\n"
            "<name>.xml, as in the MULAN repository. digits-ml is embedded and needs no files."
        ),
    )
    p.add_argument("name", nargs="?", metavar="NAME",
                   help="a data set to show in detail (its files are read when found)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_datasets)

    # fit ---------------------------------------------------------------------------------------------
    p = sub.add_parser(
        "fit",
        help="train a model and save it to a directory",
        description=(
            "Train a model on DATA and save it (model.safetensors + config.json) to a directory.\n"
            "A data set name trains on its official train split; an ARFF file trains on all its rows.\n"
            "A fixed 1/6 of the training rows is held out for early stopping and threshold tuning."
        ),
        formatter_class=_Formatter,
        epilog=_Later(
            "examples:\n"
            "  mlkd fit emotions --method skdtea\n"
            "  mlkd fit yeast -m ls --param epsilon=0.2 --param hidden=256 --seed 1 --out runs/yeast-ls\n"
            "  mlkd fit my-data.arff --label-file my-data.xml --method bce --threshold tuned-per-label\n"
            "  mlkd fit my-data.arff --n-labels 5 --method tea --max-epochs 50 --force\n"
            "  mlkd fit delicious --method bce --batch-size 512 --nproc 2   # DDP over 2 processes\n"
            "  mlkd fit yeast -m skdtea --checkpoint-dir ckpt/yeast --checkpoint-every 5\n"
            "  mlkd fit yeast -m skdtea --checkpoint-dir ckpt/yeast --checkpoint-every 5 --resume   # after a kill\n\n"
            "methods and their parameters (--param KEY=VALUE) with defaults:\n",
            _methods_help,
        ),
    )
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--method", "-m", required=True, metavar="M", help="training method (the methods are listed below)")
    p.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        type=_param,
        metavar="KEY=VALUE",
        help="a method parameter, or one of the training settings without a flag of their own (weight_decay, "
        "optimizer, momentum, lr_decay, monitor); repeatable (e.g. --param alpha=0.3 --param hidden=256 "
        "--param monitor=loss)",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="model directory (default: runs/<data>-<method>)")
    p.add_argument("--force", action="store_true", help="overwrite the model files in an existing non-empty --out")
    p.add_argument(
        "--seed",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="seed for initialisation and batch order (default: 0)",
    )
    p.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=200,
        metavar="N",
        help="training epochs at most (default: 200)",
    )
    p.add_argument(
        "--patience",
        type=_positive_int,
        default=20,
        metavar="N",
        help="stop after N epochs without validation improvement (default: 20)",
    )
    p.add_argument("--batch-size", type=_positive_int, default=64, metavar="N", help="mini-batch size (default: 64)")
    p.add_argument("--lr", type=_positive_float, default=1e-3, metavar="F", help="learning rate (default: 0.001)")
    p.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="CPU threads torch trains with (default: 1, the library's default: mlkd's small batches do not gain "
        "from more, and extra threads slow a fit several-fold when anything else runs). Results depend on it in "
        "float rounding for every method (torch splits its sums by thread count; mpvae, kdtea and distill were "
        "seen to give other predictions); a fit is reproducible bit for bit with the same --threads",
    )
    p.add_argument(
        "--threshold",
        type=_threshold,
        default="tuned",
        metavar="T",
        help="'tuned' (default: one threshold maximising validation example-F1), 'tuned-per-label', "
        "or a fixed number in (0, 1)",
    )
    p.add_argument("--nproc", type=_positive_int, default=1, metavar="N",
                   help="processes for this one fit (default: 1): DistributedDataParallel, each process taking a "
                        "disjoint shard of every batch (gloo on CPU, NCCL on GPU); under torchrun it must equal "
                        "WORLD_SIZE")
    p.add_argument("--device", type=_device, default="auto", metavar="DEV", help=DEVICE_HELP)
    p.add_argument("--reference-kernels", action="store_true",
                   help="train on the reference path (torch's per-parameter AdamW, nn.Dropout under autograd) "
                        "instead of the fused fast path: slower, the same metrics up to seed noise, and the "
                        "kernels the published benchmark cells used (reproduces them bit for bit)")
    _add_checkpoint_options(p)
    _add_label_options(p, "")
    _add_data_dir(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_fit)

    # predict -----------------------------------------------------------------------------------------
    p = sub.add_parser(
        "predict",
        help="write a model's predictions for DATA as CSV",
        description=(
            "Write predictions of a saved model for DATA as CSV: a header of label names, then one row per\n"
            "example with 0/1 at the model's fitted threshold (or probabilities with --proba).\n"
            "A data set name predicts its test split; an ARFF file predicts all its rows. A model fitted\n"
            "in Python on a 1-D y of two classes has one label: 1 (and --proba) stand for its second class."
        ),
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  mlkd predict runs/emotions-skdtea emotions > predictions.csv\n"
            "  mlkd predict runs/emotions-skdtea new.arff --proba --out probabilities.csv\n\n"
            "An ARFF file's columns are matched to the model's by name (a model saved by 'mlkd fit' records\n"
            "its feature names): its attributes may come in any order, label attributes may be absent or '?',\n"
            "and attributes the model has no feature of are ignored with a warning. --label-file/--n-labels\n"
            "only matter for models that recorded no feature names (those are matched by position)."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a directory written by 'mlkd fit'")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--out", "-o", metavar="FILE.csv", help="output file (default: standard output)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")
    p.add_argument("--proba", action="store_true", help="write probabilities instead of 0/1 predictions")
    _add_label_options(p, "(default: the model's label names)", unlabelled=True)
    _add_data_dir(p)
    p.set_defaults(func=cmd_predict)

    # evaluate ----------------------------------------------------------------------------------------
    p = sub.add_parser(
        "evaluate",
        help="every metric of a saved model on DATA, at threshold 0.5 and at the fitted threshold",
        description=(
            "Print every metric of a saved model on DATA, at threshold 0.5 and at the model's fitted\n"
            "(validation-tuned) threshold. A data set name evaluates on its test split; an ARFF file on all\n"
            "its rows."
        ),
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  mlkd evaluate runs/emotions-skdtea emotions\n"
            "  mlkd evaluate runs/emotions-skdtea emotions --json > metrics.json\n"
            "  mlkd evaluate runs/mine my-test.arff --label-file my-data.xml\n\n"
            "An ARFF file's labels and features are matched to the model's by name, in any order (a model\n"
            "saved by 'mlkd fit' records its feature names; older models are matched by position)."
        ),
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a directory written by 'mlkd fit'")
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_label_options(p, "(default: the model's label names)")
    _add_data_dir(p)
    p.set_defaults(func=cmd_evaluate)

    # demo --------------------------------------------------------------------------------------------
    p = sub.add_parser(
        "demo",
        help="compare methods on a small data set in under a minute",
        description=(
            "Fit several methods on a data set's train split (a fixed 1/6 held out for early stopping and\n"
            "threshold tuning), evaluate each once on the test split and print one table. The default data\n"
            f"set ({DEMO_DATASET}) is embedded: no files needed. The demo uses a smaller network than 'fit'\n"
            f"(hidden={DEMO_HIDDEN}) and at most {DEMO_MAX_EPOCHS} epochs by default, to finish quickly."
        ),
        formatter_class=_Formatter,
        epilog=(
            "examples:\n"
            "  mlkd demo\n"
            "  mlkd demo --dataset emotions --methods bce,skdtea --seed 1\n"
            "  mlkd demo --max-epochs 100 --hidden 512     # the 'fit' network size, slower"
        ),
    )
    p.add_argument(
        "--dataset",
        "-d",
        default=DEMO_DATASET,
        metavar="NAME",
        help=f"data set name (default: {DEMO_DATASET})",
    )
    p.add_argument(
        "--methods",
        type=_method_list,
        default=list(DEMO_METHODS),
        metavar="M1,M2,...",
        help="comma-separated methods (default: bce,ls,skdtea)",
    )
    p.add_argument(
        "--seed",
        type=_nonneg_int,
        default=0,
        metavar="N",
        help="seed for initialisation and batch order (default: 0)",
    )
    p.add_argument(
        "--max-epochs",
        type=_positive_int,
        default=DEMO_MAX_EPOCHS,
        metavar="N",
        help=f"training epochs at most (default: {DEMO_MAX_EPOCHS})",
    )
    p.add_argument(
        "--hidden",
        type=_positive_int,
        default=DEMO_HIDDEN,
        metavar="N",
        help=f"hidden width, for the methods that have a 'hidden' parameter (default: {DEMO_HIDDEN})",
    )
    p.add_argument("--device", type=_device, default="auto", metavar="DEV", help=DEVICE_HELP)
    _add_data_dir(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_demo)

    # distill (teacher → student KD, METHODS.md §3) -----------------------------------------------------
    p = sub.add_parser(
        "distill",
        help="train a teacher (or load one) and distill it into a small student; save the student",
        description=(
            "Distill a teacher into a small student with L2D (MLD + label-wise embedding distillation) or a\n"
            "KD baseline, and save the student (model.safetensors + config.json) to a directory.\n"
            "The teacher is trained first on the same rows (--teacher-spec), or loaded from a model directory\n"
            "(--teacher) saved by 'mlkd fit' / MultiLabelClassifier.save; it is frozen while the student trains.\n"
            "A fixed 1/6 of the training rows is held out for early stopping and threshold tuning."
        ),
        formatter_class=_Formatter,
        epilog=_Later(
            "examples:\n"
            "  mlkd distill emotions --out runs/emotions-l2d                      # wide MLP -> small MLP, L2D\n"
            "  mlkd fit emotions -m labelwise --param hidden=1024 --out runs/emotions-labelwise   # a large teacher\n"
            "  mlkd distill emotions --teacher runs/emotions-labelwise --student-spec hidden=64\n"
            "  mlkd distill yeast --teacher-spec hidden=2048 max_epochs=100 --student-spec logit_loss=kd\n"
            "  mlkd distill digits-ml --student-spec backbone=cnn feature_loss=none   # CNN teacher/student\n"
            "  mlkd distill digits-ml --student-spec backbone=cnn lambda_feature=0.01 # LED weight for small nets\n\n"
            "lambda_feature is L2D's LED weight (λ_le, official 1). With the official λ_cd = 100 and λ_id = 1000 it\n"
            "swamps the BCE of small students (BENCHMARKS.md, L2D); 0.01 won on validation on the image track.\n"
            "To choose it per data set: mlkd bench -m distill:lambda_feature=0.01 -m distill:lambda_feature=0.1 ...\n"
            "and mlkd report --tune-on-validation.\n\n"
            "--teacher-spec keys: backbone, hidden, depth, embed_dim (the teacher's network) and max_epochs,\n"
            "lr (its training). --student-spec keys: any 'distill' parameter below, and the training settings\n"
            f"{', '.join(DISTILL_TRAIN_KEYS)}.\n\n"
            "distill parameters with defaults:\n",
            _methods_help_for, "distill",
        ),
    )
    p.add_argument("data", metavar="DATA", help=DATA_HELP)
    t = p.add_mutually_exclusive_group()
    t.add_argument("--teacher", metavar="MODEL_DIR",
                   help="a saved model directory to use as the frozen teacher. One from 'mlkd fit -m labelwise' has "
                        "the student's default size (MLP hidden 128), so distilling it compresses nothing, unless "
                        "fitted larger with --param hidden=... (e.g. 1024)")
    t.add_argument(
        "--teacher-spec", nargs="+", action="extend", default=[], type=_param, metavar="KEY=VALUE",
        help="the teacher to train first (default: the backbone's teacher size)",
    )
    p.add_argument(
        "--student-spec", nargs="+", action="extend", default=[], type=_param, metavar="KEY=VALUE",
        help="the student's distill parameters and training settings",
    )
    p.add_argument("--out", "-o", metavar="DIR", help="student model directory (default: runs/<data>-distill)")
    p.add_argument("--force", action="store_true", help="overwrite the model files in an existing non-empty --out")
    p.add_argument("--seed", type=_nonneg_int, default=0, metavar="N", help="seed (default: 0)")
    p.add_argument("--threads", type=_positive_int, metavar="N",
                   help="CPU threads for torch (default: 1); the result can depend on it (float rounding): the same "
                   "--threads reproduces a fit bit for bit")
    p.add_argument("--device", type=_device, default="auto", metavar="DEV", help=DEVICE_HELP)
    p.add_argument("--threshold", type=_threshold, default="tuned", metavar="T",
                   help="'tuned' (default), 'tuned-per-label', or a fixed number in (0, 1)")
    _add_checkpoint_options(p, "the training state (the student's, and the teacher's when it trains one)")
    _add_label_options(p, "")
    _add_data_dir(p)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_distill)

    # bench, report (mlkd.bench) ----------------------------------------------------------------------
    from .bench.cli import add_commands as add_bench_commands

    add_bench_commands(sub, _Formatter)
    return parser


# ---------------------------------------------------------------------------------------------------
# shared helpers
# ---------------------------------------------------------------------------------------------------
def _add_checkpoint_options(p, state: str = "the training state") -> None:
    g = p.add_argument_group("interruption (checkpoints: safetensors + JSON, written atomically)")
    g.add_argument("--checkpoint-dir", metavar="DIR", help=f"save {state} to DIR during the fit")
    g.add_argument("--checkpoint-every", type=_positive_int, metavar="N",
                   help="epochs between checkpoints (default: 1; needs --checkpoint-dir)")
    g.add_argument("--checkpoint-seconds", type=_nonnegative_float, metavar="S",
                   help="also at least S seconds between checkpoints (default: 0; needs --checkpoint-dir)")
    g.add_argument("--resume", action="store_true",
                   help="continue the fit checkpointed in --checkpoint-dir (same final model as an uninterrupted "
                        "fit on the same --threads; another goes on with a warning); refused if DIR holds another "
                        "configuration's, teacher's, device's or data's checkpoint (a path to the same teacher "
                        "folder, or --device auto for the device it picks, is the same)")


def _check_checkpoint_options(args) -> dict:
    """The estimator's checkpoint settings from the command line; a flag that needs --checkpoint-dir without it,
    or a --checkpoint-dir that cannot be written, fails before any work."""
    from .checkpoint import check_directory

    if args.checkpoint_dir is None and (args.resume or args.checkpoint_every is not None
                                        or args.checkpoint_seconds is not None):
        flag = ("--resume" if args.resume else "--checkpoint-every" if args.checkpoint_every is not None
                else "--checkpoint-seconds")
        raise ValueError(f"{flag} needs --checkpoint-dir; expected the directory of the (interrupted) fit")
    if args.checkpoint_dir is not None:
        check_directory(args.checkpoint_dir)
    return dict(checkpoint_dir=args.checkpoint_dir, checkpoint_every=args.checkpoint_every or 1,
                checkpoint_seconds=args.checkpoint_seconds or 0.0, resume=args.resume)


def _show_progress(quiet: bool) -> bool:
    return not quiet and sys.stderr.isatty()


def _info(info, key, default=None):
    """A catalogue entry's field, whether the entry is a mapping or an object."""
    if isinstance(info, dict):
        return info.get(key, default)
    return getattr(info, key, default)


def _dataset_name(spec: str) -> str | None:
    """The catalogue name ``spec`` stands for (names are case-insensitive), else None."""
    from . import data as mlkd_data

    key = spec.strip().lower()
    return key if key in mlkd_data.DATASET_NAMES else None


def _is_arff_path(spec: str) -> bool:
    """A data set name wins over a file of the same name; anything else that looks like a file is one."""
    if _dataset_name(spec):
        return False
    low = spec.lower()
    return low.endswith(ARFF_SUFFIXES) or os.sep in spec or "/" in spec or Path(spec).expanduser().is_file()


def _check_dataset_name(spec: str, allow_path: bool = True) -> str:
    from . import data as mlkd_data
    from .methods.base import did_you_mean

    name = _dataset_name(spec)
    if name is None:
        also = " or a path to an .arff file" if allow_path else ""
        raise ValueError(f"unknown data set {spec!r}; expected one of {', '.join(mlkd_data.DATASET_NAMES)}{also}"
                         + did_you_mean([spec.strip().lower()], mlkd_data.DATASET_NAMES))
    return name


def _data_stem(spec: str) -> str:
    name = Path(spec).name
    for suffix in sorted(ARFF_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(spec).stem


def _load(spec: str, split: str, *, data_dir=None, label_file=None, n_labels=None):
    """(dataset, description) for a data set name (its ``split``) or an ARFF file (all rows)."""
    from . import data as mlkd_data

    if not _is_arff_path(spec):
        name = _check_dataset_name(spec)
        ds = getattr(mlkd_data.load_dataset(name, data_dir=data_dir), split)
        return ds, f"{name} {split} split ({ds.n_samples} rows)"
    from .data.arff import NoLabelInfoError

    try:
        ds = mlkd_data.read_arff(Path(spec).expanduser(), label_file=label_file, n_labels=n_labels)
    except NoLabelInfoError as exc:  # the library names its keywords; here they are options
        raise NoLabelInfoError(exc.path, "--label-file XML (the MULAN label file) or --n-labels N (the last N "
                                         "attributes)") from None
    _check_rows(ds, spec)
    return ds, f"{spec} ({ds.n_samples} rows)"


def _check_rows(ds, spec) -> None:
    if ds.n_samples == 0:
        raise ValueError(f"{spec} has no data rows (nothing after @data); expected at least one row")


def _load_for_model(args, model, split: str, unlabelled: bool = False):
    """Load DATA for predict/evaluate with the model's columns: an ARFF file's labels and features are matched
    to the model's by name (models saved by ``mlkd fit`` record their feature names), and labels are put in the
    model's order. With ``unlabelled`` (predict), the file's label attributes may be absent or ``?``."""
    names = [str(f) for f in (getattr(model, "column_names_", None) or getattr(model, "feature_names_in_", []))]
    from .data.dataset import first_repeated

    # an earlier mlkd saved models with a repeated name: a file's columns cannot be matched to them by name
    # (evaluate reads the labels too; predict skips them)
    matched = [("feature columns", names), *([] if unlabelled else [("labels", list(map(str, model.label_names_)))])]
    for what, listed_names in matched:
        if (twice := first_repeated(listed_names)) is not None:
            raise ValueError(f"model {args.model_dir} names two of its {what} {twice!r}, so a file's columns cannot "
                             f"be matched to them by name; expected a model with distinct names (use the Python "
                             "API, MultiLabelClassifier.load, with arrays)")
    if _is_arff_path(args.data) and names and (unlabelled or (args.label_file is None and args.n_labels is None)):
        from .data.arff import read_arff_for_model

        ds = read_arff_for_model(Path(args.data).expanduser(), names, model.label_names_,
                                 labels_required=not unlabelled)
        _check_rows(ds, args.data)
        rows = f"{ds.n_samples} rows" if ds.n_labels else f"{ds.n_samples} unlabelled rows"
        return ds, f"{args.data} ({rows})"
    if _is_arff_path(args.data) and args.label_file is None and args.n_labels is None:
        with tempfile.TemporaryDirectory(prefix="mlkd-") as tmp:
            xml = Path(tmp) / "labels.xml"
            xml.write_text(_label_xml(model.label_names_), encoding="utf-8")
            try:
                ds, what = _load(args.data, split, label_file=xml)
            except ValueError as exc:
                features_only = _features_only(args.data, model) if unlabelled else None
                if features_only is not None:
                    return features_only
                msg = str(exc).replace(str(xml), f"the labels of model {args.model_dir}")
                raise ValueError(f"{msg} (or pass --label-file / --n-labels)") from None
    else:
        ds, what = _load(args.data, split, data_dir=args.data_dir, label_file=args.label_file, n_labels=args.n_labels)
    if names and ds.feature_names and sorted(ds.feature_names) == sorted(names):
        at = {n: i for i, n in enumerate(ds.feature_names)}
        ds = ds.columns(features=[at[n] for n in names])  # the model's column order
    elif names and ds.feature_names:
        lacks = [n for n in names if n not in set(ds.feature_names)]
        shown = ", ".join(repr(n) for n in (lacks or [n for n in ds.feature_names if n not in set(names)])[:5])
        raise ValueError(
            f"{args.data}: its features are not the {len(names)} model {args.model_dir} was trained on "
            f"({'missing' if lacks else 'unknown'}: {shown}); expected data with the training data's attributes"
        )
    if ds.n_features != model.n_features_in_:
        raise ValueError(
            f"{args.data} has {ds.n_features} features but model {args.model_dir} was trained on "
            f"{model.n_features_in_}; expected data with the training data's attributes"
        )
    if ds.n_labels and sorted(ds.label_names) == sorted(model.label_names_) and ds.label_names != model.label_names_:
        at = {n: i for i, n in enumerate(ds.label_names)}
        ds = ds.columns(labels=[at[n] for n in model.label_names_])  # the model's label order
    _check_rows(ds, args.data)
    return ds, what


def _by_name(predict, X):
    """``predict(X)`` for X whose columns ``_load_for_model`` matched to the model's by name: scikit-learn's
    warning that a plain array carries no feature names does not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
        return predict(X)


def _features_only(path: str, model):
    """(data set, description) of an ARFF file whose attributes are exactly the model's features and none of
    its labels; None otherwise."""
    from .data.arff import read_arff

    try:
        ds = read_arff(Path(path).expanduser(), n_labels=0)
    except (ValueError, OSError):
        return None
    declared = set(ds.feature_names) & set(model.label_names_)
    if declared or ds.n_features != model.n_features_in_:
        return None
    return ds, f"{path} ({ds.n_samples} unlabelled rows)"


def _label_xml(names) -> str:
    rows = "".join(f"<label name={quoteattr(n)}></label>\n" for n in names)
    return f'<?xml version="1.0" encoding="utf-8"?>\n<labels xmlns="http://mulan.sourceforge.net/labels">\n{rows}</labels>\n'


def _load_model(model_dir: str) -> MultiLabelClassifier:
    from .estimator import MultiLabelClassifier

    path = Path(model_dir).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model directory {model_dir} does not exist; expected a directory written by 'mlkd fit'"
        )
    return MultiLabelClassifier.load(path)


def _check_writable_target(path: Path, what: str, replace_file: bool = False) -> None:
    """Fail before any work when ``path`` could not be created: its nearest existing ancestor must be a
    writable directory (with ``replace_file``, ``path`` itself may be an existing file to be replaced)."""
    parent = path.parent if replace_file else path
    while not parent.exists():
        if parent.parent == parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise ValueError(f"cannot write {what} {path}: {parent} is a file; expected a directory path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"cannot write {what} {path}: {parent} is not writable; expected a writable location")


def _check_model_out(out: Path, force: bool) -> None:
    """Refuse a model ``--out`` that is a file, or a directory holding anything without ``--force``, naming what
    it holds (hidden temporary files of a killed save do not count). Not on a torchrun rank > 0, which never saves:
    what its node holds there (another run's model, on a node without rank 0) is not where the model goes."""
    from .distributed import is_primary
    from .io import listed, model_dir_entries

    if out.is_dir() and not force and is_primary():
        held = model_dir_entries(out)
        if held:
            raise ValueError(f"model directory {out} exists and is not empty (holds {listed(held)}); pass --force to "
                             "overwrite its model files or choose another --out")


class _ModelOut:
    """The model ``--out`` directory of one ``mlkd fit``/``distill``: made before the fit (``_model_out``), and
    where the fitted model is saved, whatever happened meanwhile (``save``)."""

    def __init__(self, out: Path) -> None:
        self.out, self.saved = out, False

    def save(self, clf, force: bool) -> str:
        """Save ``clf`` and return where, as the user is told. With ``force`` the model files in ``--out`` are
        replaced; without it a model another run saved there meanwhile is kept, and this one goes to a fresh
        sibling (``DIR-2``, ``DIR-3``, …). A save that fails (a full disk) puts the model in a new temporary
        directory and the one-line error names it: a fitted model is never lost."""
        from .io import ModelDirectoryNotEmptyError, save_model

        target, base = self.out, self.out if self.out.name else self.out.absolute()
        try:
            for n in range(2, 10_000):
                try:
                    # --out was checked before the fit: now only another run's model files there are kept; a
                    # fallback DIR-n was never checked, so anything in it sends the model further
                    save_model(clf, target, overwrite=bool(force), beside_other_files=target == self.out)
                    self.saved = True
                    if target == self.out:
                        return str(target)
                    return (f"{target} (--out {self.out} got another run's model meanwhile, which is kept; expected "
                            "one run per --out)")
                except ModelDirectoryNotEmptyError:
                    target = base.with_name(f"{base.name}-{n}")
            raise ValueError(f"no free directory {self.out}-N to save the model in")
        except (OSError, ValueError) as exc:
            reason = _one_line(_error_text(exc))
            rescue = None
            try:
                rescue = Path(tempfile.mkdtemp(prefix=f"mlkd-{self.out.name or 'model'}-"))
                clf.save(rescue)
            except (OSError, ValueError) as again:
                if rescue is not None:
                    shutil.rmtree(rescue, ignore_errors=True)
                raise ValueError(f"cannot save the fitted model to {target}: {reason}; nor to a temporary directory "
                                 f"({_one_line(_error_text(again))}); expected a writable --out") from None
            self.saved = True
            raise ValueError(f"cannot save the fitted model to {target}: {reason}; it was saved to {rescue} instead "
                             "(move it where you want it); expected a writable --out") from None


@contextlib.contextmanager
def _model_out(out: Path):
    """Make the model directory ``out`` before any training, so that a place the model could not go fails now
    with the real reason (a dangling symlink, a symlink loop, a file on the way, /proc, no permission); a
    directory made here is removed again if the command ends without saving into it. A torchrun rank > 0 never
    saves (rank 0 does), so it makes nothing: on a node without rank 0 it would leave an empty folder."""
    from .checkpoint import temporary_file
    from .distributed import is_primary

    if not is_primary():
        yield _ModelOut(out)
        return
    try:
        os.stat(out)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(f"--out {out} is a symlink loop; expected a directory or a new path") from None
        if out.is_symlink():
            raise ValueError(f"--out {out} is a symlink to {os.readlink(out)}, which does not exist; expected a "
                             "directory or a new path (create the symlink's target, or remove the symlink)") from None
        if exc.errno == errno.ENOTDIR:
            blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), out.parent)
            raise ValueError(f"cannot write model directory {out}: {blocker} is a file; expected a directory "
                             "path") from None
        if exc.errno not in (errno.ENOENT,):
            raise ValueError(f"--out {out}: {exc.strerror or exc}; expected a writable directory path") from None
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; expected a directory for the model")
    made = []  # the directories made here, deepest first
    for folder in [out, *out.parents]:
        if folder.exists() or folder.is_symlink():
            break
        made.append(folder)
    try:
        out.mkdir(parents=True, exist_ok=True)
        os.unlink(temporary_file(out / "model.safetensors"))  # a file can be made there, as the save will
    except OSError as exc:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()
        where = f" ({exc.filename})" if exc.filename and Path(exc.filename) != out else ""
        raise ValueError(f"cannot create the model directory --out {out}{where}: {exc.strerror or exc}; expected a "
                         "writable directory path") from None
    claim = _ModelOut(out)
    try:
        yield claim
    finally:
        if not claim.saved:
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only if still empty


def _threshold_text(threshold) -> str:
    import numpy as np

    t = np.asarray(threshold, dtype=float)
    if t.ndim == 0:  # a tuned one is on the 0.01 grid; a fixed --threshold 0.001 is not "0.00", nor 0.999999 "1.00"
        text = f"{float(t):.2f}"
        return text if float(text) == float(t) else repr(float(t))
    return f"per-label (mean {t.mean():.2f}, range {t.min():.2f}-{t.max():.2f})"


def _fmt(value: float, width: int = 0) -> str:
    text = "nan" if value is None or not math.isfinite(value) else f"{value:.4f}"
    return text.rjust(width)


def _table(header: list[str], rows: list[list[str]], right: set[int] | None = None) -> str:
    right = set(range(1, len(header))) if right is None else right
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if i in right else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _jsonable(value):
    import numpy as np

    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------------------------------------
# commands
# ---------------------------------------------------------------------------------------------------
def cmd_datasets(args) -> int:
    from . import data as mlkd_data

    directory = Path(args.data_dir).expanduser() if args.data_dir else mlkd_data.data_dir()
    if args.name is not None:
        return _show_dataset(args.name, args.data_dir, directory)
    infos = {name: mlkd_data.DATASETS.get(name) or _embedded_info(name) for name in mlkd_data.DATASET_NAMES}
    with_cardinality = any(_info(info, "cardinality") is not None for info in mlkd_data.DATASETS.values())
    header = ["name", "domain", "train", "test", "features", "labels"]
    header += ["cardinality"] * with_cardinality + ["status"]
    rows = []
    for name, info in infos.items():
        if name == EMBEDDED:
            status = "embedded"
        else:
            status = mlkd_data.dataset_status(name, data_dir=args.data_dir)
        row = [name, _info(info, "domain", "") or ""]
        row += [_info(info, k, "") for k in ("n_train", "n_test", "n_features", "n_labels")]
        if with_cardinality:
            card = _info(info, "cardinality")
            row.append("" if card is None else f"{card:.2f}")
        rows.append([*row, status])
    print(_table(header, rows, right=set(range(2, len(header) - 1))))
    print()
    print(f"data directory: {directory}")
    print("  set it with the environment variable MLKD_DATA=DIR or with --data-dir DIR; it holds one folder per")
    print("  data set (<name>-train.arff, <name>-test.arff, <name>.xml) as in the MULAN repository.")
    return EXIT_OK


def _show_dataset(spec: str, data_dir, directory: Path) -> int:
    """``mlkd datasets NAME``: one data set's catalogue entry and, when its files are found, what they hold."""
    import numpy as np

    from . import data as mlkd_data

    name = _dataset_name(spec)
    if name is None:
        raise ValueError(f"unknown data set {spec!r}; expected one of: {', '.join(mlkd_data.DATASET_NAMES)}")
    info = mlkd_data.DATASETS.get(name)
    status = "embedded" if info is None else mlkd_data.dataset_status(name, data_dir=data_dir)
    lines = [(name, ", ".join(x for x in ("embedded" if info is None else info.domain,
                                            "" if info is None else info.notes) if x))]
    if info is not None:
        folder = info.folder_path(directory)
        lines += [("folder", f"{folder} ({status})"), ("files", ", ".join(info.files)),
                  ("catalogue", f"{info.n_train} train / {info.n_test} test rows (official split), "
                                f"{info.n_features} features, {info.n_labels} labels")]
    if status in ("found", "embedded"):
        bench = mlkd_data.load_dataset(name, data_dir=data_dir)
        train, test = bench.train, bench.test
        # what a fit of this set leaves unscaled (PROTOCOL §3): every column holding only 0 and 1 in the rows it
        # trains on (the validation hold-out excluded), binary attributes and numeric ones alike (flags: 3 counts)
        from .data import validation_split
        from .estimator import SPLIT_SEED
        from .preprocessing import binary_columns

        fitted_rows, _ = validation_split(train.Y, seed=SPLIT_SEED)
        binary = int(np.count_nonzero(binary_columns(train.X[fitted_rows])))
        lines += [
            ("rows", f"{train.n_samples} train, {test.n_samples} test"),
            ("features", f"{train.n_features} ({binary} hold only 0/1 in the rows a fit trains on: left as they are; "
                         "the others standardised with training statistics)"),
            ("labels", f"{train.n_labels}; labels per row {train.cardinality:.2f} in train, {test.cardinality:.2f} "
                       f"in test (density {train.cardinality / max(train.n_labels, 1):.3f})"),
        ]
        positives = train.Y.sum(axis=0, dtype=np.int64)
        rare = [("label rows in train", f"min {positives.min()}, median {int(np.median(positives))}, max "
                                          f"{positives.max()} of {train.n_samples}")]
        none_train = int(np.count_nonzero(positives == 0))
        none_test = int(np.count_nonzero(test.Y.sum(axis=0, dtype=np.int64) == 0))
        if none_train or none_test:
            rare.append(("no positive", f"{none_train} label(s) in train, {none_test} in test (on test, mAP skips them "
                                        "and macro-F1 counts them as 0)"))
        distinct = len({row.tobytes() for row in np.packbits(train.Y.astype(bool), axis=1)})
        rare.append(("label sets", f"{distinct} distinct in train"))
        lines += rare
        order = np.argsort(-positives, kind="stable")
        shown = ", ".join(f"{train.label_names[i]} ({positives[i]})" for i in order[:10])
        more = f", … {train.n_labels - 10} more" if train.n_labels > 10 else ""
        lines.append(("most frequent", shown + more))
    else:
        what = "missing" if status == "missing" else "altered: its SHA256 differs from the catalogue's"
        lines.append(("", f"a file is {what}; put the MULAN folder {info.folder}/ in {directory} (set "
                          "MLKD_DATA=DIR or --data-dir DIR)"))
    width = max(len(k) for k, _ in lines[1:])
    print(lines[0][0] + (f" — {lines[0][1]}" if lines[0][1] else ""))
    for key, value in lines[1:]:
        print(f"  {key.ljust(width)}  {value}")
    return EXIT_OK


def _embedded_info(name: str) -> dict:
    """Shapes of a data set the catalogue does not list (the embedded one), read from the data itself."""
    from . import data as mlkd_data

    bench = mlkd_data.load_dataset(name)
    train, test = bench.train, bench.test
    return {
        "domain": "image (embedded)" if train.images is not None else "embedded",
        "n_train": train.n_samples,
        "n_test": test.n_samples,
        "n_features": train.n_features,
        "n_labels": train.n_labels,
        "cardinality": train.cardinality,
    }


def _parse_params(method: str, pairs: list[tuple[str, str]]) -> dict:
    from . import methods as mlkd_methods

    mlkd_methods.method_class(method)  # unknown method → ValueError listing the known ones
    raw: dict[str, str] = {}
    for key, value in pairs:
        if key in raw:
            raise ValueError(f"parameter {key!r} given twice with --param; expected each parameter once")
        raw[key] = value
    config = mlkd_methods.make_config(method, raw)
    return {k: getattr(config, k) for k in raw}


#: Training settings ``mlkd fit --param`` takes: those without a flag of their own.
FIT_PARAM_SETTINGS = ("weight_decay", "optimizer", "momentum", "lr_decay", "monitor")
#: The flag of each training setting that has one (``--param`` names it instead of taking it).
SETTING_FLAGS = {
    "max_epochs": "--max-epochs N", "batch_size": "--batch-size N", "lr": "--lr F", "patience": "--patience N",
    "seed": "--seed N", "random_state": "--seed N", "num_threads": "--threads N", "device": "--device DEV",
    "threshold": "--threshold T", "nproc": "--nproc N", "fused_optimizer": "--reference-kernels",
    "fused_mlp": "--reference-kernels",
}


def _fit_params(method: str, pairs: list[tuple[str, str]]) -> tuple[dict, dict]:
    """``mlkd fit --param`` pairs as (method parameters, training settings): a method's own parameter wins a
    name it shares with a setting; a setting with a flag of its own is an error naming the flag."""
    import typing

    from . import methods as mlkd_methods
    from .methods.base import _coerce, did_you_mean
    from .trainer import TrainConfig

    mlkd_methods.method_class(method)  # unknown method → ValueError listing the known ones
    fields = mlkd_methods.config_fields(method)
    hints = typing.get_type_hints(TrainConfig)
    method_pairs, train = [], {}
    for key, value in pairs:
        if key in fields:
            method_pairs.append((key, value))
        elif key in SETTING_FLAGS:
            raise ValueError(f"--param {key}={value}: {key!r} is a training setting with a flag of its own; "
                             f"expected {SETTING_FLAGS[key]}")
        elif key in FIT_PARAM_SETTINGS:
            if key in train:
                raise ValueError(f"parameter {key!r} given twice with --param; expected each parameter once")
            train[key] = _coerce(key, value, hints[key])
        else:
            method_pairs.append((key, value))  # unknown: make_config's error names the method's parameters
    try:
        return _parse_params(method, method_pairs), train
    except ValueError as error:
        if "unknown parameter" not in str(error):
            raise
        unknown = [k for k, _ in method_pairs if k not in fields]
        raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {method!r}; expected "
                         f"some of: {', '.join(sorted(fields))} or the training settings "
                         f"{', '.join(FIT_PARAM_SETTINGS)}"
                         + did_you_mean(unknown, [*fields, *FIT_PARAM_SETTINGS, *SETTING_FLAGS],
                                        shown={k: f"the flag {flag}" for k, flag in SETTING_FLAGS.items()})) from None


def _methods_help() -> str:
    import textwrap

    from . import methods as mlkd_methods

    lines = []
    for name in sorted(mlkd_methods.REGISTRY):
        fields = ", ".join(f"{k}={v}" for k, v in mlkd_methods.config_fields(name).items())
        lines.append(textwrap.fill(fields, width=100, initial_indent=f"  {name}: ", subsequent_indent="    "))
    return "\n".join(lines)


def cmd_fit(args) -> int:
    params, train = _fit_params(args.method, args.param)
    out = Path(args.out or Path("runs") / f"{_data_stem(args.data)}-{args.method}").expanduser()
    _check_model_out(out, args.force)
    checkpoints = _check_checkpoint_options(args)
    with _model_out(out) as claim:
        return _fit_into(args, out, claim, params, train, checkpoints)


def _fit_into(args, out: Path, claim, params: dict, train: dict, checkpoints: dict) -> int:
    from .distributed import is_primary
    from .estimator import MultiLabelClassifier
    from .io import check_saved_model_columns
    from .trainer import REFERENCE_KERNELS

    ds, what = _load(args.data, "train", data_dir=args.data_dir, label_file=args.label_file, n_labels=args.n_labels)
    clf = MultiLabelClassifier(
        args.method,
        max_epochs=args.max_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        threshold=args.threshold,
        random_state=args.seed,
        verbose=_show_progress(args.quiet),
        **checkpoints,
        nproc=args.nproc,
        num_threads=args.threads or 1,
        device=args.device,
        **(REFERENCE_KERNELS if args.reference_kernels else {}),
        **train,
        **params,
    )
    # a teacher_dir / model_dir fitted on this file's labels or columns in another order is refused, not misread
    check_saved_model_columns(clf.method, clf.method_params(), ds.label_names, ds.feature_names)
    start = time.perf_counter()
    clf.fit(ds.X, ds.Y, label_names=ds.label_names)
    seconds = time.perf_counter() - start
    clf.column_names_ = list(ds.feature_names)  # predict/evaluate match a file's columns by these names
    if not is_primary():  # a torchrun rank > 0 holds the same model as rank 0, which saves it
        return EXIT_OK
    saved = claim.save(clf, args.force)

    best = clf.history_[clf.best_epoch_] if 0 <= clf.best_epoch_ < len(clf.history_) else {}
    val = best.get("val_score")
    val_text = (
        "no validation hold-out"
        if val is None
        else (f"validation {clf.monitor} {val:.4f}" if clf.monitor == "mAP" else f"validation BCE {-val:.4f}")
    )
    kind = clf.threshold if isinstance(clf.threshold, str) else "fixed"
    print(
        f"fit {args.method} on {what}, {ds.n_features} features, {ds.n_labels} labels: "
        f"{len(clf.history_)} epochs, best epoch {clf.best_epoch_ + 1}, {val_text}, "
        f"threshold {_threshold_text(clf.threshold_)} ({kind}), {seconds:.1f} s; saved to {saved}"
    )
    return EXIT_OK


def cmd_predict(args) -> int:
    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        if out.is_dir():
            raise ValueError(f"--out {out} is a directory; expected a file name such as predictions.csv")
        if out.exists() and not args.force:
            raise ValueError(f"--out {out} exists; pass --force to overwrite it or choose another file")
        _check_writable_target(out, "predictions", replace_file=True)
    model = _load_model(args.model_dir)
    ds, _ = _load_for_model(args, model, "test", unlabelled=True)
    # one column per label name, a model fitted on a 1-D binary y too (its predict_proba has one per class)
    proba = _by_name(model._label_proba, ds.X)
    if args.proba:
        values, cell = proba, "{:.6g}".format
    else:
        values, cell = (proba >= model.threshold_).astype(int), str

    def write(f):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(model.label_names_)
        writer.writerows([cell(v) for v in row] for row in values.tolist())

    if out is None:
        write(sys.stdout)
        return EXIT_OK
    from .checkpoint import temporary_file

    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)  # like fit --out
        tmp = temporary_file(out)
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            write(f)
        os.replace(tmp, out)
    except OSError as exc:
        raise ValueError(
            f"cannot write predictions to {out}: {exc.strerror or exc}; expected a writable file"
        ) from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    print(
        f"wrote {values.shape[0]} rows x {values.shape[1]} labels "
        f"({'probabilities' if args.proba else '0/1'}) to {out}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_evaluate(args) -> int:
    from . import metrics as mlkd_metrics

    model = _load_model(args.model_dir)
    ds, what = _load_for_model(args, model, "test")
    if ds.n_labels != model.n_labels_:
        raise ValueError(
            f"{args.data} has {ds.n_labels} labels but model {args.model_dir} predicts {model.n_labels_}; "
            "expected the training data's labels"
        )
    proba = _by_name(model._label_proba, ds.X)  # per label, as ds.Y (a 1-D binary y's model: one label)
    at_half = mlkd_metrics.evaluate(ds.Y, proba, 0.5)
    at_tuned = mlkd_metrics.evaluate(ds.Y, proba, model.threshold_)
    if args.json:
        print(
            json.dumps(
                _jsonable(
                    {
                        "model": str(args.model_dir),
                        "method": model.method,
                        "data": args.data,
                        "split": None if _is_arff_path(args.data) else "test",
                        "n_samples": ds.n_samples,
                        "thresholds": {"@0.5": 0.5, "@tuned": model.threshold_},
                        "metrics": {"@0.5": at_half, "@tuned": at_tuned},
                    }
                ),
                indent=2,
            )
        )
        return EXIT_OK
    tuned = f"@tuned ({_threshold_text(model.threshold_)})"
    rows = []
    for key, info in mlkd_metrics.METRICS.items():
        if key not in at_tuned:
            continue
        rows.append(
            [
                info.display_name,
                "higher" if info.higher_is_better else "lower",
                _fmt(at_half[key]),
                _fmt(at_tuned[key]),
            ]
        )
    print(f"model {args.model_dir} ({model.method}) on {what}")
    print(_table(["metric", "better", "@0.5", tuned], rows))
    how = ("tuned on validation data at fit time" if isinstance(model.threshold, str)
           else "fixed at fit time (--threshold)")
    print(f"@0.5: threshold 0.5; @tuned: the model's fitted threshold {_threshold_text(model.threshold_)}, {how}.")
    ranking = [i.display_name for k, i in mlkd_metrics.METRICS.items() if not i.needs_threshold]
    print(f"{', '.join(ranking)} use the scores only: the same at both thresholds.")
    return EXIT_OK


def cmd_demo(args) -> int:
    import torch

    from . import data as mlkd_data
    from . import methods as mlkd_methods
    from . import metrics as mlkd_metrics
    from .estimator import MultiLabelClassifier, check_device
    from .trainer import resolve_device

    for method in args.methods:
        mlkd_methods.method_class(method)
    name = _check_dataset_name(args.dataset, allow_path=False)
    bench = mlkd_data.load_dataset(name, data_dir=args.data_dir)
    train, test = bench.train, bench.test
    for method in args.methods:  # a method that needs parameters the demo cannot give fails before any work
        try:
            mlkd_methods.method_class(method).Config().validate(train.n_features, train.n_labels)
        except ValueError as exc:
            raise ValueError(f"the demo cannot run method {method!r}: {exc}") from None
    # Small networks train fastest on one thread; several threads stall badly when the cores are shared.
    torch.set_num_threads(1)
    device = resolve_device(check_device(args.device))
    where = "1 CPU thread" if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})"
    settings = f"seed {args.seed}, max_epochs {args.max_epochs}, hidden {args.hidden}, {where}"
    print(
        f"demo: {name} ({train.n_samples} train / {test.n_samples} test rows, {train.n_features} "
        f"features, {train.n_labels} labels); {settings}",
        flush=True,
    )
    keys = ["example_f1", "micro_f1", "macro_f1", "mAP", "ranking_loss", "hamming_loss"]
    header = ["method", *(mlkd_metrics.METRICS[k].display_name for k in keys), "threshold", "seconds"]
    rows = []
    for method in args.methods:
        params = {"hidden": args.hidden} if "hidden" in mlkd_methods.config_fields(method) else {}
        clf = MultiLabelClassifier(
            method,
            max_epochs=args.max_epochs,
            random_state=args.seed,
            verbose=_show_progress(args.quiet),
            device=args.device,
            **params,
        )
        start = time.perf_counter()
        clf.fit(train.X, train.Y, label_names=train.label_names)
        seconds = time.perf_counter() - start
        scores = clf.evaluate(test.X, test.Y)  # the test split, touched once per method
        rows.append([method, *(_fmt(scores[k]) for k in keys), _threshold_text(clf.threshold_), f"{seconds:.1f}"])
    print(_table(header, rows))
    print("F1s and Hamming loss at each method's tuned threshold (one global threshold maximising example-F1 on")
    print("a fixed 1/6 validation hold-out of train, which also drove early stopping); mAP and ranking loss")
    print("use the scores. The test split was touched once per method, after training.")
    return EXIT_OK


DISTILL_TRAIN_KEYS = ("max_epochs", "batch_size", "lr", "weight_decay", "patience", "optimizer")
DISTILL_TEACHER_KEYS = ("backbone", "hidden", "depth", "embed_dim", "max_epochs", "lr")


def _methods_help_for(method: str) -> str:
    import textwrap

    from . import methods as mlkd_methods

    fields = ", ".join(f"{k}={v}" for k, v in mlkd_methods.config_fields(method).items())
    return textwrap.fill(fields, width=100, initial_indent="  ", subsequent_indent="  ")


def _spec(pairs: list[tuple[str, str]], flag: str) -> dict[str, str]:
    spec: dict[str, str] = {}
    for key, value in pairs:
        if key in spec:
            raise ValueError(f"{flag} key {key!r} given twice; expected each key once")
        spec[key] = value
    return spec


def cmd_distill(args) -> int:
    from . import methods as mlkd_methods
    from .io import saved_model_id
    from .methods.base import did_you_mean

    teacher = _spec(args.teacher_spec, "--teacher-spec")
    unknown = sorted(set(teacher) - set(DISTILL_TEACHER_KEYS))
    if unknown:
        raise ValueError(f"unknown --teacher-spec key(s) {', '.join(map(repr, unknown))}; "
                         f"expected some of: {', '.join(DISTILL_TEACHER_KEYS)}")
    student = _spec(args.student_spec, "--student-spec")
    if "teacher_dir" in student or any(f"teacher_{k}" in student for k in DISTILL_TEACHER_KEYS):
        raise ValueError("--student-spec sets a teacher parameter; expected the teacher in --teacher / --teacher-spec")
    # the keys it takes: not the teacher's (an unknown key is suggested one of these, not teacher_max_epochs)
    keys = [k for k in mlkd_methods.config_fields("distill") if not k.startswith("teacher_")] + list(DISTILL_TRAIN_KEYS)
    unknown = sorted(set(student) - set(keys))
    if unknown:
        raise ValueError(f"unknown --student-spec key(s) {', '.join(map(repr, unknown))}; expected some of: "
                         f"{', '.join(sorted(keys))}{did_you_mean(unknown, keys)}")
    train = {k: student.pop(k) for k in DISTILL_TRAIN_KEYS if k in student}
    raw = {**student, **{f"teacher_{k}": v for k, v in teacher.items()}}
    if args.teacher is not None:
        saved_model_id(Path(args.teacher).expanduser())  # a bad teacher directory fails before any work (a save
        # killed between its two renames is finished, as load_model does)
        raw["teacher_dir"] = str(Path(args.teacher).expanduser())
    params = _parse_params("distill", list(raw.items()))
    train_cfg = {}
    for key, text in train.items():  # ranges are checked by the estimator before any training
        kind = str if key == "optimizer" else float if key in ("lr", "weight_decay") else int
        try:
            train_cfg[key] = kind(text)
        except ValueError:
            expected = "an integer" if kind is int else "a number"
            raise ValueError(f"--student-spec {key}={text!r} is not a valid {kind.__name__}; expected {expected}") \
                from None
    out = Path(args.out or Path("runs") / f"{_data_stem(args.data)}-distill").expanduser()
    _check_model_out(out, args.force)
    checkpoints = _check_checkpoint_options(args)
    with _model_out(out) as claim:
        return _distill_into(args, out, claim, params, train_cfg, checkpoints)


def _distill_into(args, out: Path, claim, params: dict, train_cfg: dict, checkpoints: dict) -> int:
    from .estimator import MultiLabelClassifier
    from .io import check_saved_model_columns

    ds, what = _load(args.data, "train", data_dir=args.data_dir, label_file=args.label_file, n_labels=args.n_labels)
    clf = MultiLabelClassifier(
        "distill", threshold=args.threshold, random_state=args.seed, verbose=_show_progress(args.quiet),
        num_threads=args.threads or 1, device=args.device, **checkpoints, **train_cfg, **params,
    )
    # a teacher_dir / model_dir fitted on this file's labels or columns in another order is refused, not misread
    check_saved_model_columns(clf.method, clf.method_params(), ds.label_names, ds.feature_names)
    start = time.perf_counter()
    clf.fit(ds.X, ds.Y, label_names=ds.label_names)
    seconds = time.perf_counter() - start
    clf.column_names_ = list(ds.feature_names)  # predict/evaluate match a file's columns by these names
    saved = claim.save(clf, args.force)

    from .backbones import count_parameters

    teacher_model = getattr(clf, "stage_models_", {}).get("teacher")
    t_result = clf.stage_results_.get("teacher")
    n_teacher = f"{count_parameters(teacher_model):,}" if teacher_model is not None else "?"
    if args.teacher is not None:
        t_text = f"teacher loaded from {args.teacher} ({n_teacher} parameters)"
    else:
        t_text = (f"teacher trained {t_result.epochs_run} epochs, validation mAP {_fmt(t_result.best_score)} "
                  f"({n_teacher} parameters)")
    best = clf.history_[clf.best_epoch_] if 0 <= clf.best_epoch_ < len(clf.history_) else {}
    val = best.get("val_score")
    val_text = "no validation hold-out" if val is None else f"validation mAP {val:.4f}"
    print(
        f"distill on {what}, {ds.n_features} features, {ds.n_labels} labels: {t_text}; student "
        f"({params.get('logit_loss', 'mld')} + {params.get('feature_loss', 'led')}) {len(clf.history_)} epochs, "
        f"{val_text} ({count_parameters(clf.model_):,} parameters), threshold {_threshold_text(clf.threshold_)}, "
        f"{seconds:.1f} s; saved to {saved}"
    )
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------------
def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, UnicodeError):
        return f"cannot decode or encode text ({exc})"
    return str(exc) or type(exc).__name__


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"mlkd: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the ``mlkd`` command line; returns the exit status (0 ok, 2 bad input, 130 interrupted)."""
    parser = build_parser()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("default")
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help / --version
                return int(exc.code or 0)
            return args.func(args)
    except (ValueError, OSError, FloatingPointError) as exc:  # FileNotFoundError is an OSError
        if isinstance(exc, BrokenPipeError):
            return _broken_pipe()
        text = _one_line(_error_text(exc)).replace("was passed as data_dir", "was given with --data-dir")
        print(f"mlkd: error: {text}", file=sys.stderr)
        return EXIT_USAGE
    except (MemoryError, RuntimeError) as exc:  # a model too large is a ValueError when built; this is training's
        from .methods.base import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        print(f"mlkd: error: out of memory ({_one_line(_error_text(exc))[:200]}); expected a smaller model, batch "
              "or data set", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("mlkd: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _broken_pipe() -> int:
    """stdout was closed by a reader (``mlkd predict ... | head``): stop quietly."""
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    return 141


if __name__ == "__main__":
    sys.exit(main())
