"""The method interface and the registry.

A method is an ``nn.Module`` that builds its modules from the data shape and its config, maps a batch to a
dict of named, already-weighted loss terms plus the prediction logits, and never runs a training loop.
The trainer sums and logs the terms without knowing what they are.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import os
import threading
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn


@dataclass
class Batch:
    """One mini-batch: features, 0/1 targets as float, and the rows' positions in the training set."""

    x: Tensor
    y: Tensor
    index: Tensor


@dataclass
class StepContext:
    """What a method may know about where training is (for schedules and seeded randomness)."""

    epoch: int
    max_epochs: int
    generator: torch.Generator


@dataclass
class StepOutput:
    """Named, already-weighted loss terms (summed by the trainer), prediction logits and optional extras."""

    losses: dict[str, Tensor]
    logits: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """Base of every method's config; subclasses add fields with defaults and check ranges in ``validate``."""

    def validate(self, n_features: int, n_labels: int) -> None:  # noqa: B027 - optional hook
        """Raise ValueError naming the parameter, its value and the accepted range."""

    def validate_new(self, n_features: int, n_labels: int) -> None:  # noqa: B027 - optional hook
        """Checks for a config about to be fitted only, beyond ``validate``: a saved model's config is loaded as
        it was saved (``rebuild_saved``), also one that an earlier mlkd accepted and these checks refuse."""

    def inert_params(self) -> set[str]:
        """Names of parameters that cannot change this config's numbers (e.g. a term's options while the term
        is off); ``config_identity`` leaves those of ``ADDED_PARAMS`` out."""
        return set()


#: Method parameters added after results were published, with the value that reproduces the behaviour before
#: they existed. ``kd_reduction`` (2026-12-03): METHODS.md's binKL_T is a sum over labels; until then the
#: self-KD methods averaged it over labels (``"mean"``, 1/L of the specified term). ``student_loss``
#: (2026-12-03): KD-TEA's student as METHODS.md writes it (``"bce"``) or with its whole TEA loss (``"tea"``,
#: the default and the earlier behaviour). ``t2_scaling`` (2026-12-03): CS-KD, BAN and TF-KD reg multiplied
#: their binKL_T term by T² (``True``), which METHODS.md §6 does not write; their default is now ``False``.
#: (2026-12-04) distill's ``logit_loss="kd"`` takes it too, default ``True`` as before (``False``: binKL_T, §3).
#: ``extra_feature_loss``/``lambda_extra`` (2026-12-03): L2D's optional feature-KD slot beside LED, off before.
#: ``partners`` (2026-12-04): CS-KD's partner drawn within the batch (``"batch"``, the default and the only
#: behaviour before) or METHODS.md §6's pair batches (``"train"``: a partner training row per row).
ADDED_PARAMS: dict[str, Any] = {"kd_reduction": "mean", "student_loss": "tea", "t2_scaling": True,
                                "extra_feature_loss": "none", "lambda_extra": 1.0, "partners": "batch"}


def config_identity(config: MethodConfig) -> dict:
    """The config as a dict, less each ``ADDED_PARAMS`` entry that is at its earlier value or inert: what a
    benchmark cell's key and a checkpoint's fingerprint hash, so that results written before a parameter was
    added keep their identity under the settings that reproduce them."""
    inert = config.inert_params()
    return {k: v for k, v in dataclasses.asdict(config).items()
            if not (k in ADDED_PARAMS and (v == ADDED_PARAMS[k] or k in inert))}


class Method(nn.Module):
    """Base class: subclasses set ``name`` and ``Config``, build modules in ``__init__``, implement
    ``forward`` (prediction logits) and ``step`` (training losses)."""

    name: ClassVar[str]
    Config: ClassVar[type[MethodConfig]]

    def __init__(self, n_features: int, n_labels: int, config: MethodConfig) -> None:
        super().__init__()
        self.n_features, self.n_labels, self.config = n_features, n_labels, config

    def forward(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_epoch_end(self, ctx: StepContext) -> None:  # noqa: B027 - optional hook
        """Called by the trainer after each training epoch (buffers, schedules)."""

    #: True for a method trained on pair batches (CS-KD with ``partners="train"``): the trainer then hands
    #: ``step`` the batch's rows followed by their partners' (2B rows, ``Batch.index`` both), drawn by
    #: ``partner_sampler``.
    pair_batches: bool = False

    def partner_sampler(self, Y: Tensor):
        """For ``pair_batches``: an object whose ``draw(idx, generator)`` gives each batch row ``idx`` a partner
        row of the training labels ``Y``."""
        raise NotImplementedError(f"method {self.name!r} does not train on pair batches")

    def bind_input_scaler(self, scaler) -> None:  # noqa: B027 - optional hook
        """Told, before training, the ``FeatureScaler`` that turned raw rows into this method's inputs (the
        estimator passes it through ``mlkd.stages.run_stages``). A method wrapping a model saved with its own
        scaling (a teacher loaded from disk) maps its inputs with it; others ignore it."""

    # -- multi-stage training (see mlkd.stages) ---------------------------------------------------------
    #: True for a method whose ``step`` reads a frozen teacher; the stage runner then requires ``teacher=``.
    needs_teacher: ClassVar[bool] = False

    @classmethod
    def teacher_problem(cls, config: MethodConfig, teacher: type[Method], teacher_config: MethodConfig) -> str | None:
        """Why a ``teacher`` model (its method class and config) cannot teach this method with ``config``, or None
        when it can; ``mlkd.stages.check_stages`` asks it for every stage with a teacher, before anything trains."""
        return None

    def batch_coupling(self) -> str | None:
        """What couples this method's loss across the rows of a batch (a term computed over the whole batch,
        partners drawn within it), or None when the loss is a mean of per-row terms. Data-parallel training
        (``nproc`` > 1) computes the loss per shard of a batch, so it refuses a coupled method."""
        return None

    @classmethod
    def stages(cls, config: MethodConfig) -> list | None:
        """The ``mlkd.stages.Stage`` list that trains this method (teacher first, this method last), or None
        for a single ``Trainer.fit``. The estimator runs it with ``mlkd.stages.run_stages``."""
        return None

    @property
    def teacher(self) -> Method | None:
        """The frozen teacher attached by ``attach_teacher`` (None if there is none)."""
        return self.__dict__.get("_frozen_teacher")

    def attach_teacher(self, teacher: nn.Module | None) -> None:
        """Attach (or with None, detach) a frozen teacher: no gradients, always in eval mode, moved with this
        module by ``.to()``, and absent from ``parameters()`` and ``state_dict()`` so saved files hold only
        the predictor."""
        if teacher is not None:
            teacher.requires_grad_(False)
            teacher.eval()
        # Stored outside nn.Module's registries on purpose: a registered submodule would be trained and saved.
        self.__dict__["_frozen_teacher"] = teacher

    @contextlib.contextmanager
    def taught_by(self, teacher: nn.Module | None):
        """``with model.taught_by(teacher):`` — the teacher is attached frozen inside the block, then detached
        and each of its parameters given back the requires_grad it had (a BAN ensemble's ancestors stay frozen),
        so afterwards each model is a plain predictor again."""
        before = [] if teacher is None else [(p, p.requires_grad) for p in teacher.parameters()]
        self.attach_teacher(teacher)
        try:
            yield self
        finally:
            self.attach_teacher(None)
            for param, flag in before:  # frozen only while it teaches
                param.requires_grad_(flag)

    def teacher_output(self, x: Tensor) -> Tensor:
        """The frozen teacher's prediction logits for ``x``, computed under no_grad."""
        if self.teacher is None:
            raise ValueError(
                f"method {self.name!r} needs a trained teacher; train it through mlkd.stages.run_stages "
                f"({type(self).__name__}.stages(config)) or MultiLabelClassifier(method={self.name!r})"
            )
        with torch.no_grad():
            return self.teacher(x)

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never trains, and its dropout stays off
        return self

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)  # .to(device) and dtype casts take the teacher along
        return self


REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    if not isinstance(name, str) or name not in REGISTRY:  # a list is unhashable: a TypeError from the lookup
        close = did_you_mean([name], sorted(REGISTRY)) if isinstance(name, str) else ""
        raise ValueError(f"unknown method {name!r}; expected one of: {', '.join(sorted(REGISTRY))}{close}")
    return REGISTRY[name]


def config_fields(name: str) -> dict[str, Any]:
    """The method's parameters and their defaults."""
    cls = method_class(name).Config
    return {f.name: f.default for f in dataclasses.fields(cls)}


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Turn a CLI string (or a numpy scalar) into the field's declared type."""
    if isinstance(annotation, str):  # postponed annotations
        annotation = eval(annotation, vars(typing), {})  # noqa: S307 - our own dataclass annotations
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for a in inner:
            try:
                return _coerce(key, value, a)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ValueError(f"parameter {key!r}={value!r} is not one of {list(args)}")
        return value
    try:
        if annotation is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("true", "1", "yes"):
                    return True
                if low in ("false", "0", "no"):
                    return False
                raise ValueError
            if isinstance(value, (bool, int, np.bool_, np.integer)) and value in (0, 1):  # numpy: a grid's array
                return bool(value)
            raise ValueError
        if annotation is int:
            if isinstance(value, (bool, np.bool_)):
                raise ValueError
            number = int(value)  # an OverflowError for an infinity, a ValueError for NaN
            # any number that int() would truncate (np.float32(8.5), Decimal("8.5"); int(value) of a str is exact)
            if not isinstance(value, (str, int, np.integer)) and number != value:
                raise ValueError
            return number
        if annotation is float:
            if isinstance(value, (bool, np.bool_)):
                raise ValueError
            return float(value)  # an OverflowError for an int beyond any float (10**400)
        if annotation is str:
            if isinstance(value, os.PathLike):  # a path parameter (teacher_dir) given as a pathlib.Path
                value = os.fspath(value)
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError, OverflowError):
        name = getattr(annotation, "__name__", str(annotation))
        expected = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(annotation, name)
        raise ValueError(f"parameter {key!r}={shown(value)} is not a valid {name}; expected {expected}") from None
    return value


#: Names users bring from other libraries for a setting mlkd names otherwise; ``did_you_mean`` offers the
#: mlkd name where it is one of the names the place takes.
SAME_MEANING = {"n_jobs": "num_threads", "seed": "random_state", "epochs": "max_epochs", "threads": "num_threads"}


def did_you_mean(unknown, candidates, shown: dict[str, str] | None = None) -> str:
    """The ``"; 'max_epoch': did you mean 'max_epochs'?"`` tail of an unknown-name error: the closest of
    ``candidates`` (or its mlkd name, ``SAME_MEANING``) for each unknown name that has one; "" when none has.
    ``shown`` gives a candidate's spelling where the user writes it otherwise (a command-line flag)."""
    candidates = list(candidates)
    shown = shown or {}
    hints = []
    for name in unknown:
        close = SAME_MEANING.get(name)
        if close not in candidates:  # the same name in other letter case (SKDTEA), else the closest spelling
            close = next((c for c in candidates if c.lower() == name.lower()), None)
        if close is None:
            close = next(iter(difflib.get_close_matches(name, candidates, n=1)), None)
        if close is not None:
            hints.append(f"{name!r}: did you mean {shown.get(close, repr(close))}?")
    return f"; {' '.join(hints)}" if hints else ""


def make_config(name: str, params: dict[str, Any] | None = None) -> MethodConfig:
    """Build and type-check a method's config; unknown parameters are an error that lists the known ones (and
    the closest to each unknown one)."""
    cls = method_class(name).Config
    params = dict(params or {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {name!r}; "
            f"expected some of: {', '.join(sorted(known))}{did_you_mean(unknown, sorted(known))}"
        )
    return cls(**{k: _coerce(k, v, hints[k]) for k, v in params.items()})


#: Held while a fit seeds and draws from torch's process-wide state (the global RNG, the CPU thread count):
#: fits started from threads of one process (joblib's threading backend, a thread pool) run one at a time, so
#: each stays deterministic for its seed. Re-entrant: a stage's fit runs inside its method's. A child forked
#: while another thread fits gets it released (its holder does not exist there), not held forever.
TORCH_GLOBAL_STATE = threading.RLock()
if hasattr(os, "register_at_fork") and hasattr(TORCH_GLOBAL_STATE, "_at_fork_reinit"):
    os.register_at_fork(after_in_child=TORCH_GLOBAL_STATE._at_fork_reinit)


@contextlib.contextmanager
def model_defaults():
    """The torch settings mlkd's models are built and trained under, whatever the caller's: float32 as torch's
    default dtype (process-wide: changed, when it is another, in a fit's turn, ``TORCH_GLOBAL_STATE``, and given
    back after) and autograd on, outside inference mode (per thread). A fit inside the caller's ``torch.no_grad()``
    was an autograd error, and after ``torch.set_default_dtype(torch.float64)`` a built or loaded model was a
    float64 one that float32 rows could not go through."""
    with torch.inference_mode(False), torch.enable_grad():
        dtype = torch.get_default_dtype()
        if dtype == torch.float32:
            yield
            return
        with TORCH_GLOBAL_STATE:
            torch.set_default_dtype(torch.float32)
            try:
                yield
            finally:
                torch.set_default_dtype(dtype)


def cuda_index(device: torch.device) -> int:
    """The index of CUDA ``device``: its own, or for a bare "cuda" the current device (where it computes)."""
    return torch.cuda.current_device() if device.index is None else device.index


def fit_rng(device: torch.device | None = None):
    """``torch.random.fork_rng`` over the generators a fit on ``device`` draws from: the CPU's and, on CUDA, that
    device's; their states are restored when the block ends."""
    return torch.random.fork_rng(devices=[cuda_index(device)] if device is not None and device.type == "cuda" else [])


def seed_fit_rng(seed: int, device: torch.device | None = None) -> None:
    """Seed the generators ``fit_rng`` forks, as ``torch.manual_seed(seed)`` seeds them, and no other: that one
    also seeds every CUDA device, MPS, XPU, …, whose states the fork does not restore, so a fit (a CPU one too)
    reseeded the caller's streams there, or queued that for when CUDA starts."""
    torch.default_generator.manual_seed(seed)
    if device is not None and device.type == "cuda":
        torch.cuda.init()  # its generators exist once CUDA has started
        torch.cuda.default_generators[cuda_index(device)].manual_seed(seed)


def build_method(
    name: str, n_features: int, n_labels: int, params: dict[str, Any] | None = None, seed: int | None = None,
    *, derived: bool = False,
) -> Method:
    """Build a method from its registry name, the data shape and its (validated) parameters.

    With ``seed`` the initial weights are drawn from that seed (the caller's global RNG is left untouched).
    ``derived``: parameters mlkd derived, not a user's (a saved model's, a stage's of a method whose own
    config was checked): ``MethodConfig.validate_new`` is skipped.
    """
    config = make_config(name, params)
    config.validate(n_features, n_labels)
    if not derived:
        config.validate_new(n_features, n_labels)
    try:
        with model_defaults():
            if seed is None:
                return method_class(name)(n_features, n_labels, config)
            with TORCH_GLOBAL_STATE, fit_rng():
                seed_fit_rng(seed)
                return method_class(name)(n_features, n_labels, config)
    except (RuntimeError, MemoryError) as exc:  # a size within range can still exceed memory: hidden=2**20
        if not is_out_of_memory(exc):  # anything else is not ours to re-word
            raise
        import re

        wanted = re.search(r"allocate (\d+) bytes", str(exc))
        size = (f"allocating {int(wanted.group(1)):,} bytes ({int(wanted.group(1)) / 2**30:,.1f} GiB)" if wanted
                else "allocating its weights")
        sizes = [k for k in ("hidden", "teacher_hidden", "latent", "embed_dim", "teacher_embed_dim", "depth",
                             "teacher_depth", "covariance_rank") if hasattr(config, k)]
        named = [k for k in sizes if k in (params or {})] or sizes  # the sizes the caller set: the likely typo
        named.sort(key=lambda k: -(getattr(config, k) or 0))  # the largest first
        lower = ", ".join(f"{k}={getattr(config, k)}" for k in named) or "its size"
        raise ValueError(f"method {name!r} cannot be built for {n_features} features and {n_labels} labels: {size} "
                         f"failed, out of memory; expected a model that fits in memory: lower {lower} (or use fewer "
                         "features or labels)") from None


def rebuild_saved(name: str, n_features: int, n_labels: int, params: dict[str, Any], inner: dict | None) -> Method:
    """A saved model's method, built to take its saved state: a fine-tuned ``pretrained`` model from the spec of
    the model it wraps (``inner``, as ``Pretrained.inner_spec`` recorded it; its ``model_dir`` is not read), any
    other with ``build_method``."""
    if name == "pretrained" and isinstance(inner, dict):
        return method_class(name)(n_features, n_labels, make_config(name, params), inner=inner)
    return build_method(name, n_features, n_labels, params, derived=True)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure: a MemoryError, torch's OutOfMemoryError (CUDA), or the plain
    RuntimeError torch's CPU allocator raises."""
    oom = (MemoryError, getattr(torch, "OutOfMemoryError", MemoryError))
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and any(
        s in str(exc) for s in ("can't allocate", "not enough memory", "out of memory")))


#: The smallest temperature a method divides logits by to soften them (a KD temperature, RAS-KD's relation τ):
#: below about 1e-37, logits / T overflow float32 and the first epoch's loss is NaN; 1e-6 is far below any
#: useful softening and far above that.
MIN_TEMPERATURE = 1e-6


def shown(value: Any) -> str:
    """``repr(value)`` for an error message, an integer of more than 20 digits shortened (10**400, or the int a
    float parameter of 1e300 became, would fill the one line with its digits), any other repr cut at 60 characters."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        digits = str(abs(int(value)))
        if len(digits) > 20:
            sign = "-" if value < 0 else ""
            return f"{sign}{digits[0]}.{digits[1:4]}e+{len(digits) - 1} (an integer of {len(digits)} digits)"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_range(name: str, value: float | None, low: float, high: float, *, low_open=False, high_open=False):
    """ValueError unless ``low ≤ value ≤ high`` (with open ends where asked)."""
    if value is None:
        return
    if value != value:  # NaN compares false with every bound
        raise ValueError(f"parameter {name!r}={shown(value)} is not a number; expected a value in "
                         f"{'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}")
    below = value <= low if low_open else value < low
    above = value >= high if high_open else value > high
    if below or above:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"parameter {name!r}={shown(value)} is out of range; expected a value in "
                         f"{lo}{low}, {high}{hi}")


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"parameter {name!r}={value!r} is not valid; expected one of {list(choices)}")
