"""scikit-learn estimators over every registered method.

>>> from mlkd import SKDTEAClassifier
>>> clf = SKDTEAClassifier().fit(X, Y)        # X (n, d) floats, Y (n, L) 0/1
>>> clf.predict(X_new)                          # (m, L) 0/1 at the validation-tuned threshold
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import warnings
from numbers import Real
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import metrics
from .checkpoint import (
    Checkpointer,
    check_directory,
    check_seconds,
    checkpointing,
    device_identity,
    fingerprint,
    train_identity,
)
from .data.dataset import first_repeated
from .data.splits import validation_split
from .distributed import check_distributable, check_nproc, check_world, fit_ddp
from .io import MODEL_DIR_PARAMS, absolute_model_dirs, check_saved_model_columns, saved_model_ids, unnamed
from .methods import build_method, config_fields, method_class
from .methods.base import ADDED_PARAMS, config_identity, did_you_mean, make_config, shown
from .preprocessing import FeatureScaler
from .stages import run_stages
from .trainer import REFERENCE_KERNELS, SEED_RANGE, TrainConfig, Trainer, check_device, fit_threads, predict_logits

#: Validation hold-outs are drawn with this fixed seed: seeds change initialisation and batch order, never
#: the split (PROTOCOL.md §6).
SPLIT_SEED = 0
#: Below this many training rows no validation hold-out is made: no early stopping, threshold 0.5.
MIN_ROWS_FOR_VALIDATION = 12
#: Names from other libraries that mean one of ours (scikit-learn's n_jobs is mlkd's num_threads).
_D = TrainConfig  # defaults live in one place: the trainer's config


def multilabel_classes(n_labels: int) -> list:
    """``classes_`` of a multi-label model: one array([0, 1]) per label, scikit-learn's convention for a
    multi-output classifier (as MultiOutputClassifier's). Scorers read the target type from it: with
    ``arange(n_labels)`` a 2-label model looked binary to them (average_precision kept one column and failed, so
    GridSearchCV scored NaN) and a 1-label matrix looked like one class."""
    return [np.array([0, 1]) for _ in range(n_labels)]


class MultiLabelClassifier(ClassifierMixin, BaseEstimator):
    """A multi-label classifier trained with any mlkd method.

    Parameters
    ----------
    method : str, default="skdtea"
        A registered method name (``mlkd.methods.REGISTRY``): "bce", "ls", "tea", "skdtea", "c2ae", "mpvae",
        "kdtea", …
    max_epochs, batch_size, lr, weight_decay, optimizer, patience, monitor, device, momentum, lr_decay,
    num_threads :
        Training settings (see ``mlkd.trainer.TrainConfig``). A method's official optimiser is a dict of
        these, e.g. ``MultiLabelClassifier("c2ae", **c2ae_official_train_config())``.
    fused_optimizer, fused_mlp : bool, default=True
        The fast path: one fused AdamW/Adam kernel for all parameters, and MLP layers trained as one
        hand-written forward/backward with a cheap dropout mask (``mlkd.nn``). Both change a fit's numbers by
        float rounding and random streams only (same metrics up to seed noise, BENCHMARKS.md "Performance");
        ``**mlkd.trainer.REFERENCE_KERNELS`` (both False) is the reference path the published benchmark
        cells were fitted with, reproducing them bit for bit.
    validation_fraction : float, default=1/6
        Share of the training rows held out (iterative-stratified, fixed split) for early stopping and
        threshold tuning when ``fit`` is not given ``X_val``/``Y_val``; a float in (0, 0.5]. The share is
        approximate: iterative stratification places rows by their labels (0.155–0.177 of the MULAN training
        sets at 1/6). Below ``MIN_ROWS_FOR_VALIDATION`` (12) training rows nothing is held out: a warning, no
        early stopping, and a tuned ``threshold`` gives ``threshold_`` 0.5 (one float, also "tuned-per-label").
    threshold : "tuned", "tuned-per-label" or float, default="tuned"
        Decision threshold on probabilities: one global threshold maximising validation example-F1,
        per-label thresholds maximising each label's validation F1, or a fixed value in (0, 1).
    random_state : int, default=0
        Seeds initialisation, dropout and batch order (not the validation split).
    verbose : bool, default=False
        Show a progress bar over epochs (an integer verbosity level ≥ 0, as scikit-learn's, shows it above 0).
    label_noise_kind : None, "symmetric", "missing" or "correlated", default=None
        Corrupt the training labels with ``mlkd.noise.add_label_noise`` (label-noise experiments). The
        validation labels (split off internally — on the clean labels, so the split stays fixed — or passed
        as ``Y_val``) that drive early stopping and the threshold are corrupted too: a user with noisy labels
        has no clean ones. Labels given to ``evaluate``/``score`` are never touched. Seeded by ``random_state``.
    label_noise_rate : float in [0, 1], default=0.0
        The noise rate η (see ``mlkd.noise``); 0 leaves the labels clean.
    checkpoint_dir : path or None, default=None
        Save the training state there every ``checkpoint_every`` epochs (``mlkd.checkpoint``: safetensors +
        JSON, atomic writes). A directory that already holds a checkpoint is refused unless ``resume``.
    checkpoint_every : int ≥ 1, default=1
        Epochs between checkpoints.
    checkpoint_seconds : float ≥ 0, default=0.0
        Also wait at least this many seconds between checkpoints (e.g. 60: a long fit loses at most a
        minute to a kill and a short one only writes its final weights); the final model does not depend on it.
    resume : bool, default=False
        Continue the fit checkpointed in ``checkpoint_dir`` (finished stages are not retrained): the final
        model is bit-identical on CPU to an uninterrupted fit's on the same ``num_threads`` (another goes on
        with a warning). A checkpoint of another configuration or other data is refused; an empty directory
        starts a fresh fit.
    nproc : int ≥ 1, default=1
        Processes for one fit: above 1, DistributedDataParallel over ``nproc`` spawned processes (gloo on
        CPU, NCCL on GPU), each taking a disjoint shard of every batch of ``batch_size`` rows
        (``mlkd.distributed``; under torchrun, WORLD_SIZE). Single-stage methods only; no checkpointing.
    **method_params :
        The method's own parameters (``mlkd.methods.config_fields(method)`` lists them with defaults).

    Attributes
    ----------
    model_ : torch.nn.Module — the trained method; threshold_ : float or ndarray of shape (n_labels,);
    n_features_in_, n_labels_, label_names_, history_ (one dict per epoch), best_epoch_;
    classes_ : one ``array([0, 1])`` per label (scikit-learn's multi-output convention), or for a 1-D binary y
    its two classes, as is ``binary_classes_`` (None for a label matrix); feature_names_in_ : ndarray of str —
    X's column names, only when fit was given a DataFrame whose column names are all strings (scikit-learn's
    rule); scaler_ : ``mlkd.preprocessing.FeatureScaler`` — the feature standardisation fitted on the training
    rows, applied by predict; column_names_ : the data file's columns, set by ``mlkd fit`` only;
    stage_results_ : dict of stage name → TrainResult (a multi-stage method such as "kdtea" trains its
    teacher first; history_ is the last stage's); stage_models_ : dict of stage name → trained model (every
    round of "multiround", every generation of "ban"). Only the last stage's model (``model_``) is saved.
    source_models_ : dict of parameter → {"path", "save_id"} — the saved model a ``teacher_dir``/``model_dir``
    named at fit time (absolute folder, and the save id of the model it held then); empty without one.
    resumed_seconds_ : float — training seconds a resumed fit found already spent in its checkpoint (0.0
    for a fit from scratch): its whole training time is this plus the resumed run's.
    """

    def __init__(
        self,
        method="skdtea",
        *,
        max_epochs=_D.max_epochs,
        batch_size=_D.batch_size,
        lr=_D.lr,
        weight_decay=_D.weight_decay,
        optimizer=_D.optimizer,
        patience=_D.patience,
        monitor=_D.monitor,
        validation_fraction=1 / 6,
        threshold="tuned",
        random_state=0,
        device=_D.device,
        verbose=False,
        momentum=_D.momentum,
        lr_decay=_D.lr_decay,
        num_threads=_D.num_threads,
        fused_optimizer=_D.fused_optimizer,
        fused_mlp=_D.fused_mlp,
        label_noise_kind=None,
        label_noise_rate=0.0,
        checkpoint_dir=None,
        checkpoint_every=1,
        checkpoint_seconds=0.0,
        resume=False,
        nproc=1,
        **method_params,
    ):
        self.method = method
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.patience = patience
        self.monitor = monitor
        self.validation_fraction = validation_fraction
        self.threshold = threshold
        self.random_state = random_state
        self.device = device
        self.verbose = verbose
        self.momentum = momentum
        self.lr_decay = lr_decay
        self.num_threads = num_threads
        self.fused_optimizer = fused_optimizer
        self.fused_mlp = fused_mlp
        self.label_noise_kind = label_noise_kind
        self.label_noise_rate = label_noise_rate
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.checkpoint_seconds = checkpoint_seconds
        self.resume = resume
        self.nproc = nproc
        self._method_param_names = sorted(method_params)
        for key, value in method_params.items():
            setattr(self, key, value)

    # -- parameters -------------------------------------------------------------------------------------
    def get_params(self, deep=True):
        params = super().get_params(deep=deep)
        params.update({k: getattr(self, k) for k in self._method_param_names})
        return params

    def set_params(self, **params):
        method = params.get("method", getattr(self, "method", None))
        known = set(config_fields(method)) if isinstance(method, str) and method in _registry() else set()
        extra = {k: v for k, v in params.items() if k in known and k not in self._get_param_names()}
        for key, value in extra.items():
            setattr(self, key, value)
            if key not in self._method_param_names:
                self._method_param_names = sorted([*self._method_param_names, key])
        rest = {k: v for k, v in params.items() if k not in extra}
        return super().set_params(**rest) if rest else self

    def method_params(self) -> dict:
        return {k: getattr(self, k) for k in self._method_param_names}

    def _train_config(self) -> TrainConfig:
        seed = self.random_state
        if (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)
                or not SEED_RANGE[0] <= seed < SEED_RANGE[1]):
            raise ValueError(f"random_state={shown(seed)} is invalid; expected an integer seed in [0, 2**63 - 1) "
                             "(None, fresh randomness, is not offered: a fit is reproducible from its seed)")
        ints = {k: _setting(k, getattr(self, k), int) for k in ("max_epochs", "batch_size", "patience")}
        floats = {k: _setting(k, getattr(self, k), float) for k in ("lr", "weight_decay", "momentum", "lr_decay")}
        threads = None if self.num_threads is None else _setting("num_threads", self.num_threads, int)
        flags = {k: _flag(k, getattr(self, k)) for k in ("fused_optimizer", "fused_mlp")}
        cfg = TrainConfig(**ints, **floats, optimizer=self.optimizer, monitor=self.monitor, seed=int(self.random_state),
                          device=check_device(self.device), progress=_verbosity(self.verbose), num_threads=threads,
                          **flags)
        cfg.validate()
        return cfg

    def _check_param_names(self) -> None:
        """Every extra keyword is a parameter of the method; otherwise one error that lists both kinds of name."""
        fields = config_fields(self.method)
        unknown = sorted(set(self._method_param_names) - set(fields))
        if not unknown:
            return
        settings = [k for k in MultiLabelClassifier._get_param_names() if k != "method"]
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for {type(self).__name__}: neither a parameter "
            f"of method {self.method!r} (expected some of: {', '.join(sorted(fields))}) nor a training setting "
            f"({', '.join(settings)}){did_you_mean(unknown, [*fields, *settings])}"
        )

    def _check_checkpoint_options(self) -> None:
        every = self.checkpoint_every
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"checkpoint_every={shown(every)} is invalid; expected an integer ≥ 1")
        check_seconds(self.checkpoint_seconds)
        if not isinstance(self.resume, (bool, np.bool_)):
            raise ValueError(f"resume={self.resume!r} is invalid; expected True or False")
        if self.checkpoint_dir is None:
            if self.resume:
                raise ValueError("resume=True needs checkpoint_dir; expected the directory of the interrupted fit")
            return
        check_directory(self.checkpoint_dir)

    def _fit_settings(self) -> dict:
        """The estimator's own settings that change a fit (its split, labels or threshold), as resolved values."""
        t = self.threshold
        return {"validation_fraction": float(self.validation_fraction), "threshold": t if isinstance(t, str) else
                float(t), "label_noise_kind": self.label_noise_kind, "label_noise_rate": float(self.label_noise_rate)}

    def _checkpointer(self, cfg: TrainConfig, method_config, *arrays) -> Checkpointer | None:
        """The fit's checkpointer (None without checkpoint_dir); refuses a checkpoint of another fit: one whose
        resolved method config, training settings, saved teacher or data differ (no difference: a parameter typed
        at its default, another path to the same teacher folder, ``DistillClassifier`` for
        ``MultiLabelClassifier("distill")``, ``device="auto"`` for the device it picks)."""
        if self.checkpoint_dir is None:
            return None
        config = _fingerprint_config(type(self), self.method, method_config, cfg, self._fit_settings())
        return Checkpointer(self.checkpoint_dir, self.checkpoint_every, bool(self.resume), fingerprint(config, *arrays),
                            min_seconds=self.checkpoint_seconds,
                            upgrade=lambda saved: _upgrade_fingerprint(saved, method_config))

    def _check_threshold(self):
        t = self.threshold
        if isinstance(t, str):
            if t not in ("tuned", "tuned-per-label"):
                raise ValueError(
                    f"threshold={t!r} is invalid; expected 'tuned', 'tuned-per-label' or a float in (0, 1)"
                )
        elif not isinstance(t, Real) or isinstance(t, bool) or not 0 < t < 1:
            raise ValueError(f"threshold={shown(t)} is invalid; expected 'tuned', 'tuned-per-label' or a float in "
                             "(0, 1)")
        vf = self.validation_fraction
        if not isinstance(vf, Real) or not 0 < vf <= 0.5:
            raise ValueError(f"validation_fraction={shown(vf)} is invalid; expected a float in (0, 0.5]")

    # -- input validation -------------------------------------------------------------------------------
    def _validate_X(self, X, reset: bool, name: str = "X") -> np.ndarray:
        if reset and hasattr(X, "columns"):
            _check_unique([str(c) for c in X.columns], f"{name}'s column names")
        # a model fitted by 'mlkd fit' knows its data file's columns (column_names_) rather than scikit-learn's
        # feature_names_in_: a DataFrame's columns are checked against them as Y's are against the labels
        recorded = None if reset or getattr(self, "feature_names_in_", None) is not None else \
            getattr(self, "column_names_", None)
        if recorded and hasattr(X, "columns"):
            _check_label_order(X, recorded, name, kind="column")
        try:
            with warnings.catch_warnings():
                if recorded and hasattr(X, "columns") and _column_names(X.columns) == list(recorded):
                    # the model has names, only not scikit-learn's: its "fitted without feature names" is untrue
                    warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
                X = validate_data(self, X, reset=reset, accept_sparse=True, dtype=(np.float64, np.float32),
                                  ensure_min_features=1)
        except NotFittedError:
            raise
        except (TypeError, ValueError) as exc:  # scikit-learn's messages span lines and dump the array
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            text = lines[0] if lines else type(exc).__name__
            if "feature names should match" in text:  # keep why: another order, or which are unseen / missing
                raise ValueError(f"{name}'s column names do not match those seen at fit ({_name_mismatch(lines[1:])})"
                                 f"; expected {name} with the columns fit saw ({_short_names(self.feature_names_in_)})"
                                 ", in that order") from None
            non_numeric = "could not convert" in text or "argument must be" in text  # strings, objects
            text = re.sub(r"\bX\b", name, text.rstrip(":. "))  # scikit-learn calls every array X
            text = re.sub(r"np\.str_\(('[^']*'|\"[^\"]*\")\)", r"\1", text)  # numpy 2's repr of a string
            text = f"{name} holds non-numeric values ({text})" if non_numeric else text
            text = text if name in text else f"{name}: {text}"
            if "Reshape your data" in str(exc):  # 1-D X: keep scikit-learn's advice, not the array dump
                text += (f"; Reshape your data with {name}.reshape(-1, 1) for one feature or {name}.reshape(1, -1) "
                         "for one sample")
            error = _InputTypeError if non_numeric or isinstance(exc, TypeError) else ValueError
            images = ""
            if re.search(r"Found array with dim [3-9]", text):  # e.g. digits-ml's images (n, 1, H, W) as they come
                images = (f": images as flattened rows, {name}.reshape(len({name}), -1), which backbone='cnn' reads "
                          "back with its image_shape")
            raise error(f"{text}; expected {name} as a finite numeric array of shape (n_samples, n_features)"
                        f"{images}") from None
        # float32 stays float32; anything else is float64 until standardised (FeatureScaler), then float32
        return np.asarray(X.toarray() if sp.issparse(X) else X)

    def _validate_Y(self, Y, n_rows: int, fitting: bool = False, names=("X", "Y")) -> np.ndarray:
        """Y as a uint8 (n_samples, n_labels) indicator matrix; a 1-D binary target becomes one column."""
        what = names[1]
        if Y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None; expected a 0/1 "
                "indicator matrix of shape (n_samples, n_labels)"
            )
        if sp.issparse(Y):
            Y = Y.toarray()
        try:
            Y = np.asarray(Y)
        except ValueError:  # numpy: "inhomogeneous shape" for rows of different lengths
            raise ValueError(f"{what} has rows of different lengths; expected a 0/1 indicator matrix of shape "
                             "(n_samples, n_labels) (MultiLabelBinarizer turns lists of labels into one)") from None
        if Y.dtype.kind == "O":  # pandas' nullable Int64/boolean columns arrive as objects, pd.NA for a missing value
            missing = np.argwhere(np.frompyfunc(_is_missing, 1, 1)(Y).astype(bool))
            if len(missing):
                where = ", ".join(f"{k} {i}" for k, i in zip(("row", "column"), missing[0], strict=False))
                raise ValueError(f"{what} has missing values (None or pandas NA, first at {where}); expected a 0/1 "
                                 "indicator matrix with every label given")
        if Y.ndim == 2 and Y.dtype.kind == "O":
            try:
                Y = Y.astype(np.float64)
            except (TypeError, ValueError):
                pass
        if Y.ndim == 0 or Y.ndim > 2:
            raise ValueError(f"{what} must be a 2-D 0/1 indicator matrix (n_samples, n_labels); got shape {Y.shape}")
        if Y.shape[0] != n_rows:
            raise ValueError(f"{names[0]} and {names[1]} have different numbers of rows ({n_rows} and {Y.shape[0]}); "
                             "expected equal")
        if Y.ndim == 1:
            return self._binary_target(Y, fitting, "y" if what == "Y" else what)[:, None]
        if Y.shape[1] == 0:
            raise ValueError(f"{what} has no label columns; expected at least one label (shape (n_samples, n_labels))")
        if Y.dtype.kind not in "biuf":
            raise ValueError(f"Unknown label type: {what} has dtype {Y.dtype}; expected a numeric 0/1 indicator matrix")
        bad = ~np.isin(Y, (0, 1))
        if bad.any():
            values = np.unique(Y[bad])[:5]
            raise ValueError(f"{what} must contain only 0 and 1; found other values such as {values.tolist()}; "
                             "expected a 0/1 indicator matrix of shape (n_samples, n_labels)")
        return Y.astype(np.uint8)

    def _binary_target(self, y: np.ndarray, fitting: bool, what: str = "y") -> np.ndarray:
        """A 1-D target with two classes is a single label; ``classes_`` maps 0/1 back to the user's values.
        ``what`` names the argument: "y", or "Y_val" for a validation target (checked against fit's y)."""
        try:
            kind = type_of_target(y, input_name="y", raise_unknown=True)
        except ValueError:  # scikit-learn's message dumps the whole array over many lines
            sample = ", ".join(repr(v) for v in y[:3].tolist())
            raise ValueError(f"Unknown label type for {what} (values such as {sample}); expected a 2-D 0/1 indicator "
                             "matrix or a 1-D y of two classes (numbers or strings)") from None
        if kind == "continuous":
            raise ValueError("Unknown label type: continuous target; expected classes (2-D 0/1 indicator matrix)")
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Unknown label type: {kind}; expected a 2-D 0/1 indicator matrix or a binary 1-D y")
        classes = np.unique(y)
        if classes.dtype.kind == "O":  # strings or numbers held as objects (pandas): keep them as a typed array
            typed = np.asarray(classes.tolist())
            classes = typed if typed.dtype.kind in "biufU" and typed.shape == classes.shape else classes
        if len(classes) > 2:
            raise ValueError(
                f"Only binary classification is supported for a 1-D y (got {len(classes)} classes); for "
                "multi-label data pass a 2-D 0/1 indicator matrix of shape (n_samples, n_labels)"
            )
        if fitting:
            if len(classes) < 2:
                raise ValueError(f"y has a single class ({classes.tolist()[0]!r}); expected 2 classes for a binary "
                                 "target (or a 2-D 0/1 label matrix, where a constant label is allowed)")
            self.binary_classes_ = classes
        known = getattr(self, "binary_classes_", None)
        if known is None and what != "y":  # a 1-D Y_val beside a 2-D Y, during fit
            raise ValueError(f"{what} is 1-D but Y is a 2-D label matrix; expected {what} of shape (n_samples, "
                             "n_labels) like Y")
        if known is None:
            raise ValueError("this model was fitted on a 2-D label matrix; expected Y of shape (n_samples, n_labels)")
        if not np.isin(classes, known).all():
            seen = "in y" if what != "y" else "in fit"
            raise ValueError(f"{what} has classes {classes.tolist()} not seen {seen} ({known.tolist()}); expected "
                             "only those classes")
        return (y == known[1]).astype(np.uint8)

    def _validate_pair(self, X, Y, fitting: bool, names=("X", "Y")):
        X = self._validate_X(X, reset=fitting, name=names[0])
        if X.shape[0] < 2 and fitting:
            raise ValueError(f"got {X.shape[0]} sample(s); expected at least 2 to train")
        return X, self._validate_Y(Y, X.shape[0], fitting, names)

    # -- training -------------------------------------------------------------------------------------
    def fit(self, X, Y=None, X_val=None, Y_val=None, label_names=None, *, y=None):
        """Train on X (n_samples, n_features) and Y (n_samples, n_labels) 0/1 (``y=`` as scikit-learn names it
        works too).

        With ``X_val``/``Y_val`` given they are the validation set; otherwise ``validation_fraction`` of
        the rows is held out (iterative-stratified). Validation drives early stopping and the threshold.
        ``label_names``: one name per label (default: Y's column names, else ``label_0`` …). A fit that
        fails or is interrupted leaves an already fitted estimator as it was.
        """
        if y is not None:
            if Y is not None:
                raise ValueError("the target was given twice (Y and y); expected it once")
            Y = y
        fitted = _fitted_state(self)
        try:
            return self._fit(X, Y, X_val, Y_val, label_names)
        except BaseException:
            for key in _fitted_state(self):
                delattr(self, key)
            self.__dict__.update(fitted)
            raise

    def _fit(self, X, Y, X_val, Y_val, label_names):
        method_class(self.method)  # unknown method → ValueError before any work
        self._check_param_names()
        cfg = self._train_config()
        self._check_threshold()
        self._check_label_noise()
        self._check_checkpoint_options()
        columns = list(Y.columns) if hasattr(Y, "columns") else None
        if columns is None and getattr(Y, "ndim", None) == 1 and getattr(Y, "name", None) is not None:
            columns = [Y.name]  # a pandas Series: its name is the label's
        self.binary_classes_ = None
        vars(self).pop("column_names_", None)  # a data file's column names, set by ``mlkd fit`` after a fit
        X, Y = self._validate_pair(X, Y, fitting=True)
        names = _label_names(label_names, columns, Y.shape[1])
        check_saved_model_columns(self.method, self.method_params(), names, getattr(self, "feature_names_in_", None))
        dirs = absolute_model_dirs(self.method_params())  # the teacher / starting model, by folder and contents
        source = {k: {"path": dirs[k], "save_id": v} for k, v in saved_model_ids(self.method, dirs).items()}
        model = build_method(self.method, X.shape[1], Y.shape[1], self.method_params(), seed=cfg.seed)
        self._check_nproc(model)
        if X_val is not None or Y_val is not None:
            if X_val is None or Y_val is None:
                given, missing = ("X_val", "Y_val") if Y_val is None else ("Y_val", "X_val")
                raise ValueError(f"got {given} without {missing}; expected both (a validation set) or neither")
            _check_label_order(Y_val, names, "Y_val")
            X_val, Y_val = self._validate_pair(X_val, Y_val, fitting=False, names=("X_val", "Y_val"))
            val_name = "X_val"
            if Y_val.shape[1] != Y.shape[1]:
                raise ValueError(f"Y_val has {Y_val.shape[1]} labels; expected {Y.shape[1]} like Y")
            X_tr, Y_tr = X, Y
        elif X.shape[0] >= MIN_ROWS_FOR_VALIDATION:
            val_name = "X"  # rows of X
            tr, va = validation_split(Y, fraction=self.validation_fraction, seed=SPLIT_SEED)
            X_tr, Y_tr, X_val, Y_val = X[tr], Y[tr], X[va], Y[va]
        else:
            warnings.warn(
                f"only {X.shape[0]} training rows: no validation hold-out, so no early stopping and threshold 0.5",
                stacklevel=3,  # the caller of fit
            )
            X_tr, Y_tr, X_val, Y_val, val_name = X, Y, None, None, "X"
        Y_tr, Y_val = self._corrupt_labels(Y_tr, Y_val, cfg.seed)
        _warn_constant_labels(Y_tr)
        self.scaler_ = FeatureScaler().fit(X_tr)
        X_tr = self.scaler_.transform(X_tr)
        X_val = self.scaler_.transform(X_val, name=val_name) if X_val is not None else None
        # the method's own stages, from its config checked above: their derived parameters skip validate_new
        stages = [dataclasses.replace(s, derived=True) for s in type(model).stages(model.config) or []]
        checkpointer = self._checkpointer(cfg, model.config, X, Y, X_val, Y_val)  # raw data: every stage checkpoints
        if stages:  # a multi-stage method (teacher first): every stage trains on the same scaled data
            if stages[-1].method != self.method:
                raise ValueError(f"method {self.method!r} declares stages whose last one trains "
                                 f"{stages[-1].method!r}; expected it to train {self.method!r} itself")
            with checkpointing(checkpointer):
                outcomes = run_stages(stages, X_tr, Y_tr, X_val, Y_val, cfg, input_scaler=self.scaler_)
            model, result = outcomes[stages[-1].name]
            self.stage_results_ = {name: outcome.result for name, outcome in outcomes.items()}
            self.stage_models_ = {name: outcome.model for name, outcome in outcomes.items()}
        else:
            model.bind_input_scaler(self.scaler_)
            if self.nproc > 1:
                result = fit_ddp(model, X_tr, Y_tr, X_val, Y_val, cfg, nproc=int(self.nproc))
            else:
                result = Trainer(cfg).fit(model, X_tr, Y_tr, X_val, Y_val, checkpoint=checkpointer)
            self.stage_results_ = {self.method: result}
            self.stage_models_ = {self.method: model}
        self.model_ = model
        self.history_ = result.history
        self.best_epoch_ = result.best_epoch
        self.n_labels_ = Y.shape[1]
        self.classes_ = self.binary_classes_ if self._is_binary() else multilabel_classes(self.n_labels_)
        self.label_names_ = names
        self.source_models_ = source
        with fit_threads(cfg):  # the fit's thread count: predictions' float rounding depends on it
            self.threshold_ = self._fit_threshold(X_val, Y_val)
        self.resumed_seconds_ = 0.0 if checkpointer is None else checkpointer.restored_seconds
        return self

    def _check_nproc(self, model) -> None:
        nproc = check_nproc(self.nproc)
        check_world(nproc)
        if nproc > 1:
            check_distributable(model)
            if self.checkpoint_dir is not None:
                raise ValueError("nproc > 1 does not checkpoint; expected checkpoint_dir=None or nproc=1")

    def _check_label_noise(self):
        from .noise import KINDS

        kind, rate = self.label_noise_kind, self.label_noise_rate
        if kind is not None and kind not in KINDS:
            raise ValueError(f"label_noise_kind={kind!r} is invalid; expected None or one of {list(KINDS)}")
        if not isinstance(rate, Real) or isinstance(rate, bool) or not 0 <= rate <= 1:
            raise ValueError(f"label_noise_rate={shown(rate)} is invalid; expected a float in [0, 1]")
        if kind is None and rate > 0:
            raise ValueError(f"label_noise_rate={rate!r} needs a label_noise_kind; expected one of {list(KINDS)}")

    def _corrupt_labels(self, Y_tr, Y_val, seed: int):
        """Training and validation labels with the requested noise (one draw over both, so one co-occurrence)."""
        from .noise import add_train_val_noise

        if self.label_noise_kind is None:
            return Y_tr, Y_val
        return add_train_val_noise(Y_tr, Y_val, self.label_noise_kind, float(self.label_noise_rate), seed)

    def _fit_threshold(self, X_val, Y_val):
        if not isinstance(self.threshold, str):
            return float(self.threshold)
        if X_val is None:
            return 0.5
        scores = self._proba_scaled(X_val)
        return metrics.tune_threshold(Y_val, scores, per_label=self.threshold == "tuned-per-label")

    # -- prediction -----------------------------------------------------------------------------------
    def _proba_scaled(self, X_scaled: np.ndarray) -> np.ndarray:
        return torch.sigmoid(predict_logits(self.model_, X_scaled)).cpu().numpy().astype(np.float64)

    def _is_binary(self) -> bool:
        return self.binary_classes_ is not None

    def _label_proba(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        return self._proba_scaled(self.scaler_.transform(self._validate_X(X, reset=False)))

    def predict_proba(self, X) -> np.ndarray:
        """Per-label probabilities, array of shape (n_samples, n_labels).

        For a model fitted on a 1-D binary y: shape (n_samples, 2), columns ordered as ``classes_``.
        """
        p = self._label_proba(X)
        return np.hstack([1 - p, p]) if self._is_binary() else p

    def predict(self, X) -> np.ndarray:
        """0/1 predictions of shape (n_samples, n_labels) at ``threshold_`` (1-D class labels for binary y)."""
        pred = (self._label_proba(X) >= self.threshold_).astype(np.int64)
        return self.binary_classes_[pred[:, 0]] if self._is_binary() else pred

    def score(self, X, y, sample_weight=None) -> float:
        """Example-based F1 of ``predict(X)`` against ``y`` (n_samples, n_labels) — what GridSearchCV maximises;
        with ``sample_weight``, each example's F1 weighted by it."""
        pred = (self._label_proba(X) >= self.threshold_).astype(np.int64)
        Y = self._validate_labels(y, pred.shape[0])
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, Y, ensure_non_negative=True)
        return metrics.threshold_metrics(Y, pred, sample_weight)["example_f1"]

    def evaluate(self, X, Y, threshold=None) -> dict[str, float]:
        """Every PROTOCOL metric at ``threshold`` (default: the fitted ``threshold_``)."""
        scores = self._label_proba(X)
        Y = self._validate_labels(Y, scores.shape[0])
        return metrics.evaluate(Y, scores, self.threshold_ if threshold is None else threshold)

    def _validate_labels(self, Y, n_rows: int) -> np.ndarray:
        """``score``/``evaluate``'s labels: valid, and one column per label the model predicts."""
        _check_label_order(Y, self.label_names_, "Y")
        Y = self._validate_Y(Y, n_rows)
        if Y.shape[1] != self.n_labels_:
            raise ValueError(f"Y has {Y.shape[1]} labels, but the model predicts {self.n_labels_}; expected Y of shape "
                             f"(n_samples, {self.n_labels_})")
        return Y

    # -- files ------------------------------------------------------------------------------------------
    def save(self, path, overwrite=False) -> Path:
        """Write the fitted model to a directory: ``model.safetensors`` + ``config.json`` (no pickle).

        ``path`` must be a new or empty directory: one that holds anything is refused with a ValueError, so no
        model (or other file) is replaced by accident. ``overwrite=True`` replaces the model files in an
        existing directory, each atomically (other files in it are left alone). Returns the path.
        """
        from .io import save_model

        return save_model(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path) -> MultiLabelClassifier:
        """The model saved in directory ``path``; a class bound to one method (SKDTEAClassifier, …) refuses a model
        of another method (``mlkd.load_model`` loads any)."""
        from .io import load_model

        model = load_model(path)
        method = getattr(cls, "bound_method", None)
        if method is not None and model.method != method:
            raise ValueError(f"model {path} was trained with method {model.method!r}, not {cls.__name__}'s {method!r}; "
                             "expected a model of that method (mlkd.load_model loads any model)")
        return model

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True  # a 1-D binary y is one label
        tags.classifier_tags.multi_class = False
        tags.classifier_tags.multi_label = True
        tags.input_tags.sparse = True
        return tags


#: Marks a checkpoint fingerprint of resolved values; earlier ones held the typed parameters (``get_params``).
_RESOLVED_FINGERPRINT = "resolved"


def _estimator_identity(estimator) -> str:
    """The estimator a fingerprint names: "MultiLabelClassifier" for mlkd's own classes (``DistillClassifier(...)``
    is ``MultiLabelClassifier("distill", ...)``: the same fit), a subclass's own name otherwise. ``estimator`` is
    a class, or the name an earlier fingerprint recorded."""
    if isinstance(estimator, type):
        own, name = estimator.__module__ == __name__, estimator.__name__
    else:
        name = str(estimator)
        own = any(isinstance(c, type) and issubclass(c, MultiLabelClassifier) and c.__name__ == name
                  for c in globals().values())
    return MultiLabelClassifier.__name__ if own else name


def _fingerprint_config(estimator, method: str, method_config, cfg: TrainConfig, settings: dict) -> dict:
    """What a checkpoint's fingerprint hashes: identities, not spellings. The built method config
    (``config_identity``) and the resolved training settings (``train_identity``: the device it trains on), so a
    parameter typed at its default is the same fit as one left out and ``device="auto"`` the same as the device it
    picks; a ``teacher_dir`` / ``model_dir`` as the absolute, symlink-free folder it names, with the save id of the
    model there; the estimator by ``_estimator_identity``. A method parameter named like a setting (none is)
    would be kept apart as ``param.NAME``."""
    fixed = {"fingerprint": _RESOLVED_FINGERPRINT, "estimator": _estimator_identity(estimator), "method": method,
             **train_identity(cfg), **settings}
    params = absolute_model_dirs(config_identity(method_config))
    config = {**fixed, **{(f"param.{k}" if k in fixed else k): v for k, v in params.items()}}
    # a teacher_dir / model_dir stands for the model it holds: another model fitted into that folder is another fit
    saved = saved_model_ids(method, absolute_model_dirs(dataclasses.asdict(method_config)))
    return {**config, "saved_models": saved} if saved else config


def _upgrade_fingerprint(saved: dict, current) -> dict:
    """A checkpoint's fingerprint in today's form. One written before fingerprints held resolved values hashed
    the typed parameters (``get_params``, the REFERENCE_KERNELS settings left out at their value): they are
    resolved as today's are, so such a checkpoint resumes when the resolved configs agree. A parameter added
    since (``ADDED_PARAMS``) that it did not type is taken from ``current``, this fit's method config: which
    value the interrupted fit used is not in that fingerprint, and each stage's own fingerprint (the built
    config, exact) decides. One of resolved values written until 2026-12-04 named the estimator's class,
    the device and a teacher_dir / model_dir as typed: those become identities as ``_fingerprint_config`` makes
    them ("auto" the device it picks here: a fit that trained on another is refused by its stages' fingerprints,
    which recorded the device it picked)."""
    typed = dict(saved.get("config") or {})
    if typed.get("fingerprint") == _RESOLVED_FINGERPRINT:
        typed.update(absolute_model_dirs({k: v for k, v in typed.items() if k in MODEL_DIR_PARAMS}))
        typed["estimator"] = _estimator_identity(typed.get("estimator"))
        if "device" in typed:
            typed["device"] = device_identity(typed["device"])
        upgraded = fingerprint(typed)
        return {**saved, "config": upgraded["config"], "config_hash": upgraded["config_hash"]}
    estimator, method = typed.pop("estimator", None), typed.pop("method", None)
    method_class(method)
    typed.update({k: getattr(current, k) for k in ADDED_PARAMS
                  if k in config_fields(method) and k not in typed and hasattr(current, k)})
    clone = MultiLabelClassifier(method, **{**REFERENCE_KERNELS, **typed})
    clone._check_param_names()
    config = _fingerprint_config(str(estimator), method, make_config(method, clone.method_params()),
                                 clone._train_config(), clone._fit_settings())
    upgraded = fingerprint(config)
    return {**saved, "config": upgraded["config"], "config_hash": upgraded["config_hash"]}


def _fitted_state(estimator) -> dict:
    """The estimator's fitted attributes (scikit-learn's convention: public names ending in ``_``)."""
    return {k: v for k, v in vars(estimator).items() if k.endswith("_") and not k.startswith("_")}


def _label_names(given, columns, n_labels: int) -> list[str]:
    """One string per label: ``given``, else Y's column names, else ``label_0`` …; anything else is an error."""
    names = given if given is not None else columns
    if names is None:
        return [f"label_{i}" for i in range(n_labels)]
    what = "label_names" if given is not None else "Y's column names"
    if isinstance(names, (str, bytes)) or not hasattr(names, "__len__"):
        raise ValueError(f"{what} is {shown(names)}; expected a list of {n_labels} label name(s)")
    names = _column_names(names)
    if len(names) != n_labels:
        raise ValueError(f"{what} has {len(names)} name(s); expected one per label ({n_labels})")
    _check_unique(names, what)
    return names


def _column_names(columns) -> list[str]:
    """Label names as strings (a pandas MultiIndex's tuples as a/b)."""
    return ["/".join(map(str, n)) if isinstance(n, tuple) else str(n) for n in list(columns)]


def _check_label_order(Y, names: list[str], what: str, kind: str = "label") -> None:
    """A ValueError when one of ``what``'s DataFrame columns is named like a label of the model at another position:
    labels are taken by position, so those columns would be scored (or validated) against other labels. Columns
    0, 1, … in order (a DataFrame made from an array without names) name no label, whatever the model's names."""
    if not hasattr(Y, "columns"):
        return
    columns = _column_names(Y.columns)
    if unnamed(columns):  # pandas' default column numbers (pd.DataFrame(Y)) or label_0 …: they name no label
        return
    at: dict[str, list[int]] = {}  # every position of a name: an earlier mlkd saved models that repeat one
    for i, name in enumerate(names):
        at.setdefault(name, []).append(i)
    for j, name in enumerate(columns):
        if j not in at.get(name, [j]):
            order = "label order" if kind == "label" else "order"
            raise ValueError(f"{what}'s column {j} is {name!r}, the model's {kind} {at[name][0]}; expected {what}'s "
                             f"columns in the model's {order} ({_short_names(names)})")


def _check_unique(names: list[str], what: str) -> None:
    """A ValueError naming the first repeated name: columns are matched by name (predict, evaluate)."""
    name = first_repeated(names)
    if name is not None:
        raise ValueError(f"{what} hold {name!r} more than once; expected unique names (columns are matched by name)")


def _short_names(names, limit: int = 5) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:limit]) + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _name_mismatch(lines: list[str]) -> str:
    """scikit-learn's reasons for a feature-name mismatch (one per line, names as '- a' lines) on one line."""
    parts: list[str] = []
    for line in lines:
        if line.startswith("- ") and parts:
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + line[2:]
        elif not line.startswith("- "):
            parts.append(line.rstrip("."))
    return "; ".join(parts) or "other names"


def _is_missing(value) -> bool:
    """None, or pandas' NA (without importing pandas)."""
    return value is None or type(value).__name__ == "NAType"


class _InputTypeError(TypeError, ValueError):
    """Non-numeric values in X (objects, strings such as 'a'): a TypeError as scikit-learn requires for objects,
    and a ValueError like every bad input (and as scikit-learn raises for strings)."""


def _setting(name: str, value, kind: type):
    """A training setting as int or float; a ValueError naming it otherwise (0.5 is not a batch size)."""
    try:
        fractional = kind is int and isinstance(value, Real) and not float(value).is_integer()
        if isinstance(value, (bool, np.bool_)) or fractional:
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):
        expected = "an integer" if kind is int else "a number"
        raise ValueError(f"training parameter {name!r}={shown(value)} is invalid; expected {expected}") from None


def _verbosity(value) -> bool:
    """``verbose``: True or False, or a scikit-learn verbosity level (an integer ≥ 0; above 0 shows the bar); a
    ValueError otherwise (bool("no") was True: anything was taken)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)) and value >= 0:
        return value > 0
    raise ValueError(f"verbose={shown(value)} is invalid; expected True or False (or a verbosity level: an "
                     "integer ≥ 0)")


def _flag(name: str, value) -> bool:
    """A True/False training setting; a ValueError naming it otherwise (1 or "yes" are not accepted)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"training parameter {name!r}={value!r} is invalid; expected True or False")
    return bool(value)


def _registry():
    from .methods import REGISTRY

    return REGISTRY


def _warn_constant_labels(Y: np.ndarray) -> None:
    pos = Y.sum(axis=0)
    never, always = np.flatnonzero(pos == 0), np.flatnonzero(pos == Y.shape[0])
    if len(never) or len(always):
        warnings.warn(
            f"{len(never)} label(s) never positive and {len(always)} always positive in the training data "
            f"(columns {np.concatenate([never, always])[:10].tolist()}…); the model can only learn the constant",
            stacklevel=4,  # the caller of fit (fit → _fit → here)
        )


def fixed_method_classifier(method: str, class_name: str) -> type[MultiLabelClassifier]:
    """A MultiLabelClassifier subclass bound to one method whose parameters are explicit sklearn params."""
    defaults = config_fields(method)
    base_sig = inspect.signature(MultiLabelClassifier.__init__)
    params = [p for p in base_sig.parameters.values() if p.name != "method" and p.kind != p.VAR_KEYWORD]
    params += [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in defaults.items()]

    def __init__(self, **params):
        if "method" in params:
            raise TypeError(f"{class_name} always trains {method!r} (got method={params['method']!r}); expected "
                            f"MultiLabelClassifier({params['method']!r}, ...) for another method")
        for key in set(defaults) - set(params):
            params[key] = defaults[key]
        MultiLabelClassifier.__init__(self, method, **params)

    __init__.__signature__ = inspect.Signature(params)

    def get_params(self, deep=True):
        out = MultiLabelClassifier.get_params(self, deep=deep)
        out.pop("method", None)
        return out

    doc = (
        f"MultiLabelClassifier bound to method {method!r}; its parameters ({', '.join(defaults)}) are "
        "constructor arguments. See MultiLabelClassifier for the training parameters."
    )
    cls = type(class_name, (MultiLabelClassifier,), {"__init__": __init__, "get_params": get_params, "__doc__": doc,
                                                       "bound_method": method})
    cls.__module__ = __name__
    return cls


SKDTEAClassifier = fixed_method_classifier("skdtea", "SKDTEAClassifier")
C2AEClassifier = fixed_method_classifier("c2ae", "C2AEClassifier")
MPVAEClassifier = fixed_method_classifier("mpvae", "MPVAEClassifier")
KDTEAClassifier = fixed_method_classifier("kdtea", "KDTEAClassifier")
DistillClassifier = fixed_method_classifier("distill", "DistillClassifier")
