"""A benchmark grid: data sets × method configs × seeds × label-noise settings, expanded into cells.

A cell's identity is a hash of everything that determines its numbers: the data set, the *resolved* config
(the method's defaults merged with the given parameters, the training defaults merged with the given
training settings, and the protocol's fixed choices), the seed and the noise setting. A changed default
therefore makes a new cell, and the same config written two ways (``alpha=0.3`` / ``alpha=3e-1``) is one.
A parameter naming a saved model (``MODEL_DIR_PARAMS``: a distilled student's ``teacher_dir``, ``pretrained``'s
``model_dir``) is made absolute when the grid is built, and the model's save id joins the identity: a different
model fitted into the same folder makes new cells instead of reusing the old model's.

>>> grid = Grid.build(datasets=["emotions", "flags"], methods=["bce", "skdtea:alpha=0.3,tau=1"],
...                   seeds=[0, 1, 2], params={"hidden": 16, "max_epochs": 3})
>>> cells = grid.cells()          # 12 cells, validated: unknown names or parameters raised ValueError
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data import DATASET_NAMES
from ..estimator import SPLIT_SEED
from ..io import absolute_model_dirs, saved_model_ids
from ..methods import REGISTRY, config_fields, make_config, method_class
from ..methods.base import config_identity, did_you_mean, shown
from ..trainer import TrainConfig, early_stopping_rule, identity_settings

#: Protocol choices fixed for every cell (PROTOCOL.md §2, §4, §6); part of the resolved config, and what
#: ``runner.run_cell`` splits and thresholds with. The split seed is the estimator's own hold-out seed.
PROTOCOL = {"validation_fraction": 1 / 6, "split_seed": SPLIT_SEED, "threshold": "tuned"}
#: Training settings a grid may set (``TrainConfig`` fields); ``seed`` is the grid's seed axis.
TRAIN_KEYS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "progress", "num_threads")
)
#: The default label-noise axis: clean training labels. Other settings are ``KIND:RATE`` (see ``parse_noise``).
NOISE_SETTINGS: tuple[str, ...] = ("none",)
DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)

_SPEC = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?::(.*))?$")


@dataclass(frozen=True)
class Cell:
    """One unit of work: fit ``method`` with ``params``/``train`` on ``dataset`` with ``seed``; evaluate test once.

    ``label`` names the method config in reports (e.g. ``"skdtea:alpha=0.3"``); ``data_dir`` is where the
    worker finds the MULAN files (None: its ``$MLKD_DATA``). ``checkpoint_dir`` (None: no checkpoints) is
    a folder whose ``<key>/`` subfolder keeps the fit's training state at least ``checkpoint_seconds``
    apart, so a killed cell resumes mid-fit to the same numbers. None of these three is part of its identity.
    ``saved_models`` is part of it: the save id of the model each ``MODEL_DIR_PARAMS`` parameter names
    (``{"teacher_dir": "3fa9…"}``); None (the default) reads them when the cell is made, after making those
    paths absolute.
    """

    dataset: str
    method: str
    label: str
    params: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    seed: int = 0
    noise: str = "none"
    data_dir: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_seconds: float = 60.0
    saved_models: dict | None = None
    aliases: tuple[str, ...] = ()  # the grid's other labels for this config (two specs resolving to it)

    def __post_init__(self) -> None:
        if self.saved_models is None:  # pinned now: the cell is the model its folder holds now, wherever it runs
            object.__setattr__(self, "params", absolute_model_dirs(self.params))
            object.__setattr__(self, "saved_models", saved_model_ids(self.method, self.params, self.label))

    @property
    def config(self) -> dict:
        return resolved_config(self.method, self.params, self.train, self.saved_models)

    @property
    def config_hash(self) -> str:
        return _hash(self.config)

    @property
    def key(self) -> str:
        return cell_key(self.dataset, self.config_hash, self.seed, self.noise)

    def __hash__(self) -> int:  # params/train are dicts; the key stands for them
        return hash((self.key, self.label, self.data_dir))


def _hash(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_hash(config: dict) -> str:
    """The hash of a resolved config (``resolved_config``): 16 hex digits of SHA-256 of its canonical JSON."""
    return _hash(config)


def resolved_config(method: str, params: dict | None = None, train: dict | None = None,
                    saved_models: dict | None = None) -> dict:
    """Everything that determines a cell's numbers apart from data set, seed and noise.

    ``{"method": name, "params": method defaults ∪ params, "train": TrainConfig defaults ∪ train,
    "protocol": PROTOCOL}``, with every value coerced to its declared type (a training setting added after
    the first cells were written is left out at its earlier behaviour's value: ``trainer.identity_settings``),
    and ``"saved_models"``: ``saved_models`` (``saved_model_ids``) when the params name a saved model.
    """
    config, train_cfg = make_config(method, params or {}), train_config(train)
    resolved = {
        "method": method,
        "params": config_identity(config),
        "train": identity_settings({k: v for k, v in dataclasses.asdict(train_cfg).items() if k in TRAIN_KEYS}),
        "protocol": dict(PROTOCOL),
        "early_stopping": early_stopping_rule(train_cfg.monitor),  # a changed rule: a new cell, not a reused one
    }
    if saved_models:  # absent otherwise: the cells without a saved model keep the keys they were written with
        resolved["saved_models"] = dict(sorted(saved_models.items()))
    return resolved


def cell_key(dataset: str, config_hash: str, seed: int, noise: str = "none") -> str:
    """The primary key of a results row: a hash of (data set, resolved-config hash, seed, noise)."""
    return _hash({"dataset": dataset, "config": config_hash, "seed": int(seed), "noise": noise})


def train_config(train: dict | None) -> TrainConfig:
    """A validated ``TrainConfig`` from training settings given as strings or values."""
    train = dict(train or {})
    unknown = sorted(set(train) - set(TRAIN_KEYS))
    if unknown:
        raise ValueError(f"unknown training setting(s) {', '.join(map(repr, unknown))}; expected some of: "
                         f"{', '.join(TRAIN_KEYS)}")
    defaults = TrainConfig()
    cfg = TrainConfig(**{k: _coerce_like(k, v, getattr(defaults, k)) for k, v in train.items()})
    cfg.validate()
    if "device" in train:  # a misspelt device would fail every cell after the plan was accepted (availability is
        from ..estimator import check_device  # the worker's to check: the cells may run on a Ray cluster's GPUs)

        check_device(cfg.device, available=False)
    return cfg


def _coerce_like(key: str, value: Any, default: Any) -> Any:
    kind = type(default)
    try:
        if kind is bool:
            text = str(value).lower()
            if text in ("true", "1", "yes"):
                return True
            if text in ("false", "0", "no"):
                return False
            raise ValueError
        if kind is int:
            number = float(value)
            if isinstance(value, bool) or not number.is_integer():
                raise ValueError
            return int(number)
        if kind is float and isinstance(value, bool):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: float(10**400)
        expected = {bool: "true or false", int: "an integer", float: "a number"}.get(kind, f"a {kind.__name__}")
        raise ValueError(f"training setting {key!r}={shown(value)} is not a valid {kind.__name__}; expected "
                         f"{expected}") from None


def parse_value(text: str) -> Any:
    """A CLI value as JSON where it parses (numbers, true/false/null), else the string itself."""
    text = text.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(text: str, what: str) -> dict[str, Any]:
    """``"alpha=0.3,tau=1"`` → ``{"alpha": 0.3, "tau": 1}``."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"bad {what} {part!r} in {text!r}; expected KEY=VALUE pairs separated by commas "
                             "such as alpha=0.3,tau=1")
        if key in out:
            raise ValueError(f"parameter {key!r} given twice in {what} {text!r}; expected each parameter once")
        out[key] = parse_value(value)
    return out


@dataclass(frozen=True)
class MethodSpec:
    """One method config of a grid: registry name, report label, given method params and training settings."""

    method: str
    label: str
    params: dict
    train: dict

    @classmethod
    def parse(cls, spec: str | dict) -> MethodSpec:
        """``"skdtea"``, ``"skdtea:alpha=0.3,tau=1"`` or ``{"name": "skdtea", "label": ..., "params": {...}}``.

        Parameters may be the method's own or training settings (``max_epochs``, ``lr``, …).
        """
        if isinstance(spec, dict):
            unknown = sorted(set(spec) - {"name", "method", "label", "params"})
            if unknown or not isinstance(spec.get("name", spec.get("method")), str):
                raise ValueError(f"bad method entry {spec!r}; expected {{name = \"skdtea\", label = \"...\" "
                                 "(optional), params = {alpha = 0.3} (optional)}")
            name = spec.get("name", spec.get("method"))
            method_class(name)  # unknown method → ValueError listing the known ones
            given = none_as_text(name, dict(spec.get("params") or {}))
            label = spec.get("label") or _label(name, given)
        else:
            match = _SPEC.match(str(spec))
            if not match:
                raise ValueError(f"bad method spec {spec!r}; expected NAME or NAME:KEY=VALUE,... such as "
                                 "skdtea:alpha=0.3,tau=1")
            name, rest = match.group(1), match.group(2) or ""
            method_class(name)  # unknown method → ValueError listing the known ones
            given = none_as_text(name, parse_assignments(rest, "method parameter"))
            label = _label(name, given)
        fields = config_fields(name)
        train = {k: v for k, v in given.items() if k in TRAIN_KEYS and k not in fields}
        params = {k: v for k, v in given.items() if k not in train}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ValueError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for method {name!r}; expected "
                             f"some of: {', '.join(sorted(fields))} or the training settings {', '.join(TRAIN_KEYS)}"
                             + did_you_mean(unknown, [*fields, *TRAIN_KEYS]))
        return cls(name, label, params, train)


def none_as_text(method: str, params: dict) -> dict:
    """``params`` with a None given to a parameter that takes a string and never None (``feature_loss``,
    ``logit_loss``, ``extra_feature_loss``) as the string "none", their choice that ``parse_value`` and a JSON
    null read as None: ``distill:feature_loss=none`` was refused ("None is not a valid str")."""
    hints = typing.get_type_hints(method_class(method).Config)
    return {k: ("none" if v is None and hints.get(k) is str else v) for k, v in params.items()}


def _label(name: str, given: dict) -> str:
    return name if not given else name + ":" + ",".join(f"{k}={_text(v)}" for k, v in given.items())


def _text(v: Any) -> str:
    return json.dumps(v) if not isinstance(v, str) else v


@dataclass
class Grid:
    """Data sets × method specs × seeds × noise settings, with parameters shared by every method."""

    datasets: list[str]
    methods: list[MethodSpec]
    seeds: list[int] = field(default_factory=lambda: list(DEFAULT_SEEDS))
    noise: list[str] = field(default_factory=lambda: list(NOISE_SETTINGS))
    params: dict = field(default_factory=dict)
    data_dir: str | None = None

    @classmethod
    def build(cls, datasets, methods, seeds=DEFAULT_SEEDS, noise=NOISE_SETTINGS, params=None, data_dir=None) -> Grid:
        """Validate every axis up front: unknown data sets, methods, parameters or values raise ValueError."""
        datasets = _unique([_dataset(d) for d in datasets])
        specs = [m if isinstance(m, MethodSpec) else MethodSpec.parse(m) for m in methods]
        if not datasets:
            raise ValueError("the grid has no data sets; expected at least one (e.g. --datasets emotions,flags)")
        if not specs:
            raise ValueError("the grid has no methods; expected at least one (e.g. --method bce --method skdtea)")
        seeds = _unique([_seed(s) for s in seeds])
        if not seeds:
            raise ValueError("the grid has no seeds; expected at least one (e.g. --seeds 0,1,2)")
        noise = _unique([_noise(n) for n in noise]) or ["none"]
        # saved-model paths are resolved once, here: the grid's cells name the folders meant now
        specs = [dataclasses.replace(s, params=absolute_model_dirs(s.params)) for s in specs]
        params = absolute_model_dirs(dict(params or {}))
        grid = cls(datasets, specs, seeds, noise, params, None if data_dir is None else str(data_dir))
        grid._check()
        return grid

    def _check(self) -> None:
        shared = self.params
        for key in shared:
            if key not in TRAIN_KEYS and not any(key in config_fields(s.method) for s in self.methods):
                names = {k for s in self.methods for k in config_fields(s.method)}
                raise ValueError(f"unknown parameter {key!r}: no method of the grid has it and it is no training "
                                 f"setting; expected a method parameter or one of {', '.join(TRAIN_KEYS)}"
                                 + did_you_mean([key], [*TRAIN_KEYS, *sorted(names)]))
        labels: dict[str, str] = {}
        for spec in self.methods:
            params, train = self._merged(spec)
            saved = saved_model_ids(spec.method, params, spec.label)  # a missing model fails before any cell runs
            h = _hash(resolved_config(spec.method, params, train, saved))  # type-checks every value
            for dataset in self.datasets:  # ranges may depend on the data's shape
                config = make_config(spec.method, params)
                config.validate(*_shape(dataset))
                config.validate_new(*_shape(dataset))  # as the cell's fit will: refused before any cell runs
            if labels.setdefault(spec.label, h) != h:
                raise ValueError(f"label {spec.label!r} names two different configs; expected a unique label per "
                                 "method config")

    def _merged(self, spec: MethodSpec) -> tuple[dict, dict]:
        fields = config_fields(spec.method)
        params = none_as_text(spec.method, {k: v for k, v in self.params.items() if k in fields})
        train = {k: v for k, v in self.params.items() if k not in fields and k in TRAIN_KEYS}
        return {**params, **spec.params}, {**train, **spec.train}

    def cells(self) -> list[Cell]:
        """Every cell, data set-major, each once (two specs resolving to the same config give one cell)."""
        out: dict[str, Cell] = {}
        resolved = []  # per spec, once: its typed params and settings and its saved models' ids
        for spec in self.methods:
            params, train = self._merged(spec)
            params = _typed_params(spec.method, params)  # model folders were made absolute by build
            train = {k: getattr(train_config(train), k) for k in train}
            resolved.append((spec, params, train, saved_model_ids(spec.method, params, spec.label)))
        for dataset in self.datasets:
            for spec, params, train, saved in resolved:
                for noise in self.noise:
                    for seed in self.seeds:
                        cell = Cell(dataset, spec.method, spec.label, params, train, seed, noise, self.data_dir,
                                    saved_models=saved)
                        kept = out.setdefault(cell.key, cell)
                        if cell.label not in (kept.label, *kept.aliases):  # one cell, found under either name
                            out[cell.key] = dataclasses.replace(kept, aliases=(*kept.aliases, cell.label))
        return list(out.values())

    @classmethod
    def from_file(cls, path, **overrides) -> Grid:
        """A grid from a TOML (``.toml``) or JSON file; non-None ``overrides`` replace its axes (``params`` merge).

        Keys: ``datasets`` (list), ``methods`` (list of ``"name:k=v,..."`` strings or ``{name, label, params}``
        tables), ``seeds`` (list of ints), ``noise`` (list), ``params`` (table shared by every method).
        """
        spec = read_grid_file(path)
        params = {**spec.get("params", {}), **(overrides.pop("params", None) or {})}
        kw = {k: spec[k] for k in ("datasets", "methods", "seeds", "noise") if k in spec}
        kw.update({k: v for k, v in overrides.items() if v is not None})
        kw.setdefault("datasets", [])
        kw.setdefault("methods", [])
        return cls.build(params=params, **kw)


def read_grid_file(path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist; expected a .toml or .json grid file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            spec = tomllib.loads(text)
        else:
            spec = json.loads(text)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        raise ValueError(f"cannot parse grid file {path}: {exc}; expected TOML (.toml) or JSON") from None
    if not isinstance(spec, dict):
        raise ValueError(f"grid file {path} holds a {type(spec).__name__}; expected a table/object")
    unknown = sorted(set(spec) - {"datasets", "methods", "seeds", "noise", "params"})
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))} in grid file {path}; expected some of: "
                         "datasets, methods, seeds, noise, params")
    shapes = {"datasets": 'a list of data set names such as ["emotions", "yeast"]',
              "methods": 'a list of method specs such as ["bce", "skdtea:alpha=0.3"] or {name = "skdtea", ...} tables',
              "seeds": "a list of integer seeds such as [0, 1, 2]",
              "noise": 'a list of label-noise settings such as ["none", "symmetric:0.2"]'}
    for key, expected in shapes.items():
        if key in spec and not isinstance(spec[key], list):
            raise ValueError(f"{key} = {spec[key]!r} in grid file {path} is not a list; expected {expected}")
    if not isinstance(spec.get("params", {}), dict):
        raise ValueError(f"params = {spec['params']!r} in grid file {path} is not a table; expected parameters "
                         "shared by every method, such as {hidden = 256}")
    for entry in spec.get("methods", []):
        if isinstance(entry, dict) and not (isinstance(entry.get("params", {}), dict)
                                            and isinstance(entry.get("label", ""), str)):
            raise ValueError(f"method entry {entry!r} in grid file {path} is malformed; expected {{name = \"skdtea\", "
                             "label = \"...\" (optional, a string), params = {alpha = 0.3} (optional, a table)}")
    return spec


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` (inclusive) or a mix: ``"0-2,7"``."""
    seeds: list[int] = []
    for part in filter(None, (p.strip() for p in str(text).split(","))):
        lo, dash, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(part), int(part))
        except ValueError:
            raise ValueError(f"bad seeds {text!r}; expected integers >= 0 such as 0,1,2 or 0-4") from None
        if not 0 <= first <= last <= MAX_SEED or last - first >= 100_000:
            raise ValueError(f"bad seeds {text!r}; expected integers in [0, {MAX_SEED}] such as 0,1,2 or 0-4 "
                             "(a range of at most 100000)")
        seeds += list(range(first, last + 1))
    return seeds


def _shape(dataset: str) -> tuple[int, int]:
    """(n_features, n_labels) of a data set, from the catalogue (no file is read for MULAN sets)."""
    from ..data import DATASETS, load_dataset

    info = DATASETS.get(dataset)
    if info is not None:
        return info.n_features, info.n_labels
    train = load_dataset(dataset).train
    return train.n_features, train.n_labels


def _typed_params(method: str, params: dict) -> dict:
    config = make_config(method, params)
    return {k: getattr(config, k) for k in params}


def _dataset(name) -> str:
    key = str(name).strip().lower()
    if key not in DATASET_NAMES:
        raise ValueError(f"unknown data set {name!r}; expected one of: {', '.join(DATASET_NAMES)}")
    return key


#: Seeds are numpy's (and the results database's integers): below 2**32.
MAX_SEED = 2**32 - 1


def _seed(value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"bad seed {value!r}; expected an integer in [0, {MAX_SEED}]")
    return value


def parse_noise(text: str) -> tuple[str | None, float]:
    """``"none"`` → (None, 0.0); ``"KIND:RATE"`` (KIND of ``mlkd.noise.KINDS``, RATE in (0, 1]) → (kind, rate)."""
    from ..noise import KINDS

    text = "none" if text is None else str(text).strip().lower()
    if text == "none":
        return None, 0.0
    kind, sep, rate = text.partition(":")
    try:
        value = float(rate) if sep else math.nan
    except ValueError:
        value = math.nan
    if kind not in KINDS or not 0.0 < value <= 1.0:
        raise ValueError(f"bad label-noise setting {text!r}; expected 'none' or KIND:RATE with KIND one of "
                         f"{', '.join(KINDS)} and RATE in (0, 1], e.g. symmetric:0.2")
    return kind, value


def _noise(value) -> str:
    """The canonical text of a noise setting (``KIND:RATE`` with RATE as %g; rate 0 is ``none``)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0:
        return "none"
    kind, rate = parse_noise(value)
    return "none" if kind is None else f"{kind}:{rate:g}"


def _unique(items: list) -> list:
    return list(dict.fromkeys(items))


def known_methods() -> str:
    return ", ".join(sorted(REGISTRY))
