"""Model files: ``model.safetensors`` (tensors only) + ``config.json`` (everything else). Never pickle.

Both files are written to temporary names and renamed into place, so an interrupted save never leaves a
half-written model where a good one was; the two carry one save id (a digest of the tensors), which
``load_model`` checks, and it finishes a save killed between the two renames.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .checkpoint import file_mode, refuse_pickle, temporary_file
from .methods import config_fields
from .methods.base import ADDED_PARAMS, rebuild_saved, shown
from .preprocessing import FeatureScaler

try:
    import fcntl
except ImportError:  # not POSIX: no locks, and leftover temporary files stay
    fcntl = None

FORMAT = "mlkd-model"
FORMAT_VERSION = 1
WEIGHTS, CONFIG = "model.safetensors", "config.json"
#: Estimator options about how one fit ran (checkpointing, processes), not about the model: not saved.
RUN_OPTIONS = ("checkpoint_dir", "checkpoint_every", "checkpoint_seconds", "resume", "nproc")


#: The temporary names ``temporary_file`` gives a model's two files while a save writes them (``tempfile``'s
#: eight random characters): a save killed before its renames leaves such hidden files behind.
_SAVE_TEMPORARY = re.compile(r"^\.(?:model\.safetensors|config\.json)\.[a-z0-9_]{8}\.tmp$")
_CONFIG_TEMPORARY = re.compile(r"^\.config\.json\.[a-z0-9_]{8}\.tmp$")
#: A leftover temporary file is removed by a later save only when it is this old and no save holds it.
_STALE_SECONDS = 60.0


class ModelDirectoryNotEmptyError(ValueError):
    """``save_model(path, overwrite=False)`` found ``path`` holding files (or another save filled it meanwhile)."""


def model_dir_entries(path) -> list[str]:
    """The names in directory ``path`` (sorted), less the hidden temporary files an interrupted model save left:
    those do not make a directory non-empty for a save."""
    return sorted(p.name for p in Path(path).iterdir() if not _SAVE_TEMPORARY.match(p.name))


def listed(names: list[str]) -> str:
    """A few of ``names`` for a message: ``a, b, c, … (7 entries)``."""
    return ", ".join(names[:3]) + (f", … ({len(names)} entries)" if len(names) > 3 else "")


@contextlib.contextmanager
def _interrupts_held():
    """Hold Ctrl-C (SIGINT) and SIGTERM back meanwhile: one that comes is recorded and delivered again when this
    ends, so it cannot land between a save's two renames. Python handles signals in the main thread only, so
    its handlers are swapped (a signal mask would not do: torch's threads would take the signal); elsewhere,
    and for a signal whose handler is not Python's, a no-op."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not None and handler is not signal.SIG_IGN:
            previous[signum] = signal.signal(signum, lambda s, _frame: received.append(s))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)  # as it would have come: KeyboardInterrupt, or the end for SIGTERM


def _hold(tmp: str):
    """An open file holding a shared lock on ``tmp`` (POSIX), so that no other save removes it as stale."""
    handle = open(tmp, "rb")
    if fcntl is not None:
        fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def _remove_stale_temporaries(directory: Path) -> None:
    """Remove the temporary files that earlier saves into ``directory`` left when they were killed: names of
    ``_SAVE_TEMPORARY`` only, older than ``_STALE_SECONDS`` and locked by no running save."""
    if fcntl is None:
        return
    now = time.time()
    for entry in directory.iterdir():
        if not _SAVE_TEMPORARY.match(entry.name):
            continue
        with contextlib.suppress(OSError):
            if now - entry.lstat().st_mtime < _STALE_SECONDS or not entry.is_file() or entry.is_symlink():
                continue
            with open(entry, "rb") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a running save holds it
                    continue
                entry.unlink()


def _commit(tmp: str, path: Path, exclusive: bool) -> None:
    """Rename ``tmp`` over ``path``; with ``exclusive``, only where ``path`` does not exist (a hard link then an
    unlink: atomic, and FileExistsError if another save put a file there first)."""
    if exclusive:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # a file system without hard links: the plain rename, after a look
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        else:
            os.unlink(tmp)
            return
    os.replace(tmp, path)


def _atomic_write_pair(writes: list, exclusive: bool = False) -> None:
    """Write each ``(path, write)`` to a temporary file beside its path, then rename them over their paths
    one right after the other, with Ctrl-C and SIGTERM held back meanwhile (the last is the commit point).
    ``save_id`` ties the two files of a model. Once the first rename has happened, the other temporary file
    is never removed: a save killed between the renames (SIGKILL) leaves the new config beside the new
    weights under its temporary name, and ``load_model`` finishes the save from it.
    ``exclusive``: the first file is only put where none is (``ModelDirectoryNotEmptyError`` otherwise)."""
    tmps, held, renamed = [], [], 0
    try:
        for path, write in writes:
            tmps.append(temporary_file(path))
            write(tmps[-1])
            os.chmod(tmps[-1], file_mode())
            held.append(_hold(tmps[-1]))
            os.fsync(held[-1].fileno())  # on disk before it is renamed: a power cut leaves no empty model file
        with _interrupts_held():
            for i, ((path, _), tmp) in enumerate(zip(writes, tmps, strict=True)):
                try:
                    _commit(tmp, path, exclusive and i == 0)
                except FileExistsError:
                    raise ModelDirectoryNotEmptyError(
                        f"model directory {path.parent} got {path.name} from another save meanwhile; expected an "
                        "empty or new directory, or overwrite=True to replace the model files in it") from None
                except FileNotFoundError:
                    if i == 0 or os.path.exists(tmp) or not path.exists():
                        raise
                    # load_model finished this save meanwhile (it read the pair between the renames)
                renamed += 1
    finally:
        for handle in held:
            handle.close()
        if not renamed:  # after the first rename, the rest belongs to the save (load_model completes it)
            for tmp in tmps:
                if os.path.exists(tmp):
                    os.unlink(tmp)


def _jsonable(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.device):  # device=torch.device("cpu"): stored as the string it stands for
        return str(value)
    return value


def save_model(estimator, path, overwrite: bool = False, *, beside_other_files: bool = False) -> Path:
    """Save a fitted MultiLabelClassifier to directory ``path``: ``model.safetensors`` + ``config.json``.

    ``path`` must be new or empty: a directory holding anything is refused (a ValueError) so that no model or
    other file is replaced or mixed with the model's files by accident. ``overwrite=True`` replaces the two
    model files in an existing directory (each atomically, other files are left as they are).
    ``beside_other_files`` (``mlkd fit``, whose ``--out`` was checked empty before the fit): only model files
    there refuse the save; what the fit itself put there (a ``--checkpoint-dir`` inside ``--out``) does not.
    """
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(estimator, "model_")
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"model path {path!r} is invalid; expected the path of a new or empty directory")
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ValueError(f"overwrite={overwrite!r} is invalid; expected True or False")
    path = Path(path)
    binary_classes = estimator.binary_classes_  # checked before anything is written
    if binary_classes is not None and binary_classes.dtype.kind not in "biufU":
        raise ValueError(f"cannot save class labels of dtype {binary_classes.dtype}; expected numbers or strings")
    if path.is_file():
        raise ValueError(f"model path {path} is a file; expected the path of a new or empty directory")
    held = model_dir_entries(path) if path.is_dir() and not overwrite else []
    if beside_other_files:
        held = [name for name in held if name in (WEIGHTS, CONFIG)]
    if held:
        raise ModelDirectoryNotEmptyError(
            f"model directory {path} is not empty (holds {listed(held)}); expected an empty or new directory, "
            "or overwrite=True to replace the model files in it")
    if path.is_symlink() and not path.exists():
        raise ValueError(f"model directory {path} is a symlink to {os.readlink(path)}, which does not exist (or is a "
                         "symlink loop); expected a directory or a new path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create model directory {path}: {exc.strerror or exc}; expected a writable "
                         "path") from None
    if not os.access(path, os.W_OK):
        raise ValueError(f"model directory {path} is not writable; expected a writable path")
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in estimator.model_.state_dict().items()}
    scaler = estimator.scaler_  # float32, or float64 for a model fitted on float64 rows
    dtype = np.float64 if np.asarray(scaler.mean).dtype == np.float64 else np.float32
    tensors["scaler.mean"] = torch.from_numpy(np.ascontiguousarray(scaler.mean, dtype=dtype))
    tensors["scaler.scale"] = torch.from_numpy(np.ascontiguousarray(scaler.scale, dtype=dtype))
    method_params = estimator.method_params()
    # a parameter added later is written even at its default, so that loading tells it from a file that predates it
    model_config = getattr(estimator.model_, "config", None)
    method_params.update({k: getattr(model_config, k) for k in ADDED_PARAMS
                          if k not in method_params and hasattr(model_config, k)})
    params = {k: _jsonable(v) for k, v in estimator.get_params(deep=False).items() if k not in method_params}
    for key in ("method", *RUN_OPTIONS):
        params.pop(key, None)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlkd_version": __version__,
        "torch_version": torch.__version__,
        "estimator": type(estimator).__name__,
        "method": estimator.method,
        "params": params,
        "method_params": {k: _jsonable(v) for k, v in method_params.items()},
        "n_features": int(estimator.n_features_in_),
        "n_labels": int(estimator.n_labels_),
        "label_names": list(estimator.label_names_),
        "feature_names": [str(f) for f in getattr(estimator, "feature_names_in_", [])],
        # the data file's column names (``mlkd fit``): predict/evaluate match a file's columns by them
        "column_names": [str(f) for f in getattr(estimator, "column_names_", [])],
        "threshold": _jsonable(estimator.threshold_),  # float, or one per label
        "binary_classes": None if binary_classes is None else binary_classes.tolist(),
        "best_epoch": int(estimator.best_epoch_),
        "history": estimator.history_,
    }
    source = getattr(estimator, "source_models_", None)
    if source:  # where a distilled student's teacher (a fine-tuned model's start) came from; not read to load
        config["source_models"] = _jsonable(source)
    inner = getattr(estimator.model_, "inner_spec", None)
    if inner is not None:  # a fine-tuned saved model (method "pretrained"): loads without its model_dir
        config["inner_model"] = _jsonable(inner)
    # the pair's id: a digest of the tensors, so saving the same model twice writes the same bytes (a config
    # beside the same tensors is the same model with other bookkeeping: history, timings)
    save_id = _save_id(tensors)
    config["save_id"] = save_id
    # in a tensor, not the header's metadata: safetensors writes a metadata map in no fixed order
    tensors["save_id"] = torch.tensor(list(bytes.fromhex(save_id)), dtype=torch.uint8)

    def write_json(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)

    _atomic_write_pair([(path / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT})),
                        (path / CONFIG, write_json)], exclusive=not overwrite)
    with contextlib.suppress(OSError):
        _remove_stale_temporaries(path)
    return path


def _save_id(tensors: dict, prefix: bytes = b"") -> str:
    """A save's id: 32 hex digits of SHA-256 over ``prefix`` then each tensor but ``save_id`` (name, then bytes),
    in name order. ``load_model`` recomputes it: weights that do not hash to their id are corrupted."""
    digest = hashlib.sha256(prefix)
    for name in sorted(tensors):
        if name != "save_id":
            digest.update(name.encode())
            digest.update(tensors[name].numpy().tobytes())
    return digest.hexdigest()[:32]


def _check_save_id(tensors: dict, config: dict, weights: Path) -> None:
    """The weights hash to the id they carry (a flipped bit anywhere is caught), and it is the config's."""
    saved = tensors.get("save_id")
    if saved is None:  # a model saved before save ids: nothing to check against
        if "save_id" in config:
            raise ValueError(f"{weights} carries no save id but its {CONFIG} does; expected the pair one save wrote "
                             "(the weights were replaced by an older mlkd's, or are corrupted)")
        return
    try:
        saved_id = bytes(saved.tolist()).hex()
    except (TypeError, ValueError):
        saved_id = ""
    computed = _save_id(tensors)
    if computed != saved_id and isinstance(config.get("save_id"), str) and config["save_id"] == saved_id:
        # a model saved in the short while (format 1, mlkd 0.x) when the id also hashed the config
        earlier = {k: v for k, v in config.items() if k != "save_id"}
        computed = _save_id(tensors, json.dumps(earlier, sort_keys=True, default=str).encode())
    if computed != saved_id:
        raise ValueError(f"{weights}: weights do not match their save id (the file is corrupted); expected the file "
                         "as mlkd saved it: fit or save the model again, or restore it from a copy")
    if "save_id" in config and config["save_id"] != saved_id:
        raise ValueError(f"{weights} and {CONFIG} come from different saves (a save interrupted between its two "
                         "files, and no config of the new save is left beside them); expected the pair one save "
                         "wrote: save the model again, or restore it from a copy")


class ModelFileNotFoundError(FileNotFoundError, ValueError):
    """A model directory or one of its files does not exist: a ``FileNotFoundError`` like every missing file,
    and a ``ValueError`` like every other bad model path (what it was before)."""


def read_config(path) -> dict:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"model path {path!r} is invalid; expected a model directory written by mlkd fit/save")
    path = Path(path)
    cfg_path = path / CONFIG
    if path.is_file():
        raise ValueError(f"model path {path} is a file; expected the directory mlkd fit/save wrote (holding {CONFIG} "
                         f"and {WEIGHTS})")
    if not path.is_dir():
        raise ModelFileNotFoundError(f"model directory {path} does not exist; expected a directory written by mlkd "
                                     "fit/save")
    if not cfg_path.is_file():
        raise ModelFileNotFoundError(f"{cfg_path} is missing; expected a model directory with {CONFIG} and {WEIGHTS}")
    return _parse_config(cfg_path, cfg_path.read_bytes())


def _parse_config(cfg_path: Path, raw: bytes) -> dict:
    """A model config's bytes (read from ``cfg_path``) as a checked dict; one clear ValueError otherwise."""
    refuse_pickle(cfg_path, raw[:16], "a valid JSON model config")
    try:
        config = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{cfg_path} is not valid JSON ({exc}); expected an mlkd model config") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise ValueError(f"{cfg_path} is not an mlkd model config (format field {FORMAT!r} missing)")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{cfg_path} has an invalid format_version {version!r}; expected an integer ≥ 1 (the "
                         "model config is corrupted)")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{cfg_path} has model format version {version!r}, newer than this mlkd ({__version__}) reads "
            f"(≤ {FORMAT_VERSION}); upgrade mlkd to load it"
        )
    _check_config(config, cfg_path)
    return config


def _check_config(config: dict, cfg_path: Path) -> None:
    """Every field load_model reads has the type save_model writes; otherwise one clear ValueError."""

    def count(v):
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    n_features, n_labels = config.get("n_features"), config.get("n_labels")
    names = config.get("label_names")
    features = config.get("feature_names", [])
    columns = config.get("column_names", [])
    classes = config.get("binary_classes")
    checks = [
        ("method", isinstance(config.get("method"), str), "a method name"),
        ("params", isinstance(config.get("params"), dict), "an object of estimator parameters"),
        ("method_params", isinstance(config.get("method_params"), dict), "an object of method parameters"),
        ("n_features", count(n_features), "a positive integer"),
        ("n_labels", count(n_labels), "a positive integer"),
        ("label_names", isinstance(names, list) and all(isinstance(n, str) for n in names)
         and len(names) == (n_labels if count(n_labels) else -1),
         "one name per label"),
        ("feature_names", isinstance(features, list) and all(isinstance(f, str) for f in features)
         and len(features) in (0, n_features),
         "none, or one name per feature"),
        ("column_names", isinstance(columns, list) and all(isinstance(f, str) for f in columns)
         and len(columns) in (0, n_features),
         "none, or one name per feature"),
        ("binary_classes", classes is None or (n_labels == 1 and _two_classes(classes)),
         f"null for a {n_labels}-label model (binary classes need n_labels = 1)" if count(n_labels) and n_labels > 1
         else "null or two distinct class labels of one type (strings, integers, booleans or numbers)"),
        ("history", isinstance(config.get("history", []), list), "a list of per-epoch records"),
        ("best_epoch", isinstance(config.get("best_epoch", -1), int), "an integer"),
    ]
    for key, ok, expected in checks:
        if not ok:
            value = shown(config.get(key))
            raise ValueError(f"{cfg_path} has an invalid {key!r} ({value}); expected {expected} (the model config "
                             "is corrupted)")


def _two_classes(classes) -> bool:
    """Two distinct class labels of one JSON scalar type, as save_model writes a binary model's classes."""
    return (isinstance(classes, list) and len(classes) == 2 and classes[0] != classes[1]
            and type(classes[0]) is type(classes[1]) and isinstance(classes[0], (str, int, float))
            and all(not isinstance(c, float) or math.isfinite(c) for c in classes))


def _with_earlier_behaviour(method: str, params: dict) -> dict:
    """``params`` of a saved model, plus each ``ADDED_PARAMS`` entry the method has and the file lacks at its
    earlier value: a model saved before the parameter existed was trained that way."""
    try:
        fields = config_fields(method)
    except ValueError:  # an unknown method: building the model reports it
        return params
    return {**{k: v for k, v in ADDED_PARAMS.items() if k in fields}, **params}


def _read_weights(weights: Path) -> dict:
    if not weights.is_file():
        raise ModelFileNotFoundError(f"{weights} is missing; expected the model weights beside {CONFIG}")
    with open(weights, "rb") as f:
        refuse_pickle(weights, f.read(16), "a valid safetensors file")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{weights} is not a valid safetensors file ({exc}); the weights are corrupted") from None


def _finish_interrupted_save(path) -> dict | None:
    """The config of a save killed between its two renames (``_atomic_write_pair``), if ``path`` holds one:
    new weights whose save id is not ``config.json``'s (or no ``config.json``) beside the hidden temporary
    config that save wrote, which carries the weights' id. The save is completed (the temporary config renamed
    to ``config.json``); where the directory is read-only, the config is read from the temporary file. None
    when there is nothing to finish: the caller reads the directory as it is."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        return None
    path = Path(path)
    try:
        pending = sorted(p for p in path.iterdir() if _CONFIG_TEMPORARY.match(p.name)) if path.is_dir() else []
        if not pending or not (path / WEIGHTS).is_file():
            return None
        with safe_open(str(path / WEIGHTS), framework="pt") as f:
            if "save_id" not in f.keys():
                return None
            weights_id = bytes(f.get_tensor("save_id").tolist()).hex()
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError):
        return None  # the normal reading reports what is wrong
    current = None
    with contextlib.suppress(OSError, ValueError, UnicodeDecodeError):
        current = json.loads((path / CONFIG).read_bytes().decode("utf-8"))
    if isinstance(current, dict) and current.get("save_id") == weights_id:
        return None  # the pair is whole: the temporary files are leftovers of an earlier, unfinished save
    for candidate in pending:
        try:
            raw = candidate.read_bytes()
            config = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            continue
        if not isinstance(config, dict) or config.get("save_id") != weights_id:
            continue
        config = _parse_config(path / CONFIG, raw)
        try:
            os.replace(candidate, path / CONFIG)  # the rename the interrupted save did not make
        except OSError:
            pass  # a read-only directory: the model loads from the temporary config all the same
        return config
    return None


def load_model(path):
    """Load a model directory written by ``save_model``; reads tensors with safetensors only.

    Returns a fitted estimator of the class that was saved (``MultiLabelClassifier`` or a class bound to one
    method) with ``model_``, ``scaler_``, ``threshold_``, ``classes_``, ``binary_classes_``, ``label_names_``,
    ``n_features_in_``, ``n_labels_``, ``history_``, ``best_epoch_``, ``source_models_`` and, where saved,
    ``feature_names_in_`` and ``column_names_``. What describes only the fit that ran is not saved:
    ``stage_results_``, ``stage_models_`` (only the last stage's model is saved) and ``resumed_seconds_`` are absent.
    """
    from . import estimator as estimators

    config = _finish_interrupted_save(path) or read_config(path)
    path = Path(path)
    weights = path / WEIGHTS
    tensors = _read_weights(weights)
    missing = [k for k in ("scaler.mean", "scaler.scale") if k not in tensors]
    if missing:
        raise ValueError(f"{weights} lacks the tensor(s) {', '.join(missing)}; expected the tensors mlkd save writes "
                         "(the model is corrupted)")
    _check_save_id(tensors, config, weights)
    unknown = sorted(set(config["params"]) - set(estimators.MultiLabelClassifier._get_param_names()))
    if unknown:
        raise ValueError(f"{path / CONFIG} has unknown estimator parameter(s) {', '.join(map(repr, unknown))}; "
                         "expected only MultiLabelClassifier parameters (the config is corrupted or from another mlkd)")
    config["method_params"] = _with_earlier_behaviour(config["method"], config["method_params"])
    try:
        cls = getattr(estimators, str(config.get("estimator")), None)
        if not (isinstance(cls, type) and issubclass(cls, estimators.MultiLabelClassifier)):
            cls = estimators.MultiLabelClassifier
        if cls is estimators.MultiLabelClassifier:
            est = cls(config["method"], **config["params"], **config["method_params"])
        else:  # a class bound to one method (SKDTEAClassifier, …)
            est = cls(**config["params"], **config["method_params"])
            if est.method != config["method"]:
                raise ValueError(f"{path / CONFIG} has an invalid 'estimator' ({cls.__name__} trains method "
                                 f"{est.method!r}, the config's method is {config['method']!r}); expected "
                                 f"MultiLabelClassifier or the class of method {config['method']!r} (the model "
                                 "config is corrupted)")
        # a fine-tuned pretrained model is self-contained: its model_dir is not read
        model = rebuild_saved(config["method"], config["n_features"], config["n_labels"], config["method_params"],
                              config.get("inner_model"))
        state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        model.load_state_dict(state, strict=True)
    except (KeyError, TypeError, RuntimeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} does not match its config ({first_line}); the model is corrupted") from None
    except ValueError as exc:  # a method or parameter value the config names (an edited or foreign config)
        if str(path) in str(exc):
            raise
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        expected = "" if "expected" in first_line else "; expected a config as mlkd save writes it"
        raise ValueError(f"model {path}: {first_line} (in its {CONFIG}: the model config is corrupted or from another "
                         f"mlkd){expected}") from None
    model.eval()
    est.model_ = model
    est.scaler_ = FeatureScaler(tensors["scaler.mean"].numpy(), tensors["scaler.scale"].numpy())
    threshold = config.get("threshold")
    values = threshold if isinstance(threshold, list) else [threshold]
    if not ((not isinstance(threshold, list) or len(threshold) == config["n_labels"])
            and all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0 <= t <= 1 for t in values)):
        raise ValueError(f"{path / CONFIG} has an invalid threshold {shown(threshold)}; expected one in [0, 1] "
                         "or one per label: the model is corrupted")
    for name in ("scaler.mean", "scaler.scale"):
        if tuple(tensors[name].shape) != (config["n_features"],):
            raise ValueError(f"{path} has {name} of shape {tuple(tensors[name].shape)} for {config['n_features']} "
                             "features; the model is corrupted")
    est.threshold_ = np.asarray(threshold, dtype=np.float32) if isinstance(threshold, list) else float(threshold)
    est.n_features_in_ = config["n_features"]
    if config.get("feature_names"):
        est.feature_names_in_ = np.asarray(config["feature_names"], dtype=object)
    if config.get("column_names"):
        est.column_names_ = list(config["column_names"])
    est.n_labels_ = config["n_labels"]
    est.binary_classes_ = None if config.get("binary_classes") is None else np.asarray(config["binary_classes"])
    est.classes_ = (est.binary_classes_ if est.binary_classes_ is not None
                    else estimators.multilabel_classes(est.n_labels_))
    est.label_names_ = config["label_names"]
    est.source_models_ = config.get("source_models") if isinstance(config.get("source_models"), dict) else {}
    est.history_ = config.get("history", [])
    est.best_epoch_ = config.get("best_epoch", -1)
    return est


# -- saved models named by a method parameter (a distilled student's teacher, a fine-tuned model) -------------
#: Method parameters that name a saved model's directory (``MultiLabelClassifier.save`` / ``mlkd fit --out``).
MODEL_DIR_PARAMS: tuple[str, ...] = ("teacher_dir", "model_dir")


def absolute_model_dirs(params: dict) -> dict:
    """``params`` with each ``MODEL_DIR_PARAMS`` path made absolute (``~`` expanded), as ``--data-dir`` is: a
    cell then names the same folder from any working directory, and its stored config says which."""
    return {k: str(Path(os.fspath(v)).expanduser().resolve())
            if k in MODEL_DIR_PARAMS and isinstance(v, (str, os.PathLike)) and str(v).strip() else v
            for k, v in params.items()}


def saved_model_id(path) -> str:
    """The content identity of the model saved in directory ``path``: the save id its files carry
    (``mlkd.io.save_model``: a digest of its tensors), or ``sha256:`` and a digest of its weights file for a
    model saved before save ids. A missing directory or file, or one mlkd did not write, is an error. A save
    killed between its two renames is finished first, as ``load_model`` does: the id is the new model's."""
    config = _finish_interrupted_save(path) or read_config(path)
    weights = Path(path) / WEIGHTS
    if not weights.is_file():
        raise ModelFileNotFoundError(f"{weights} is missing; expected the model weights beside {CONFIG}")
    save_id = config.get("save_id")
    if isinstance(save_id, str) and save_id:
        return save_id
    from .data.catalog import file_sha256

    return "sha256:" + file_sha256(weights)[:32]


def _each_saved_model(method: str, params: dict, read, label: str | None = None):
    """``(parameter, path, read(path))`` for each ``MODEL_DIR_PARAMS`` parameter of ``method`` that ``params`` sets;
    a model that cannot be read is one error naming the parameter and ``label``."""
    for name in MODEL_DIR_PARAMS:
        path = params.get(name)
        if path is None or not str(path).strip() or name not in config_fields(method):  # '' is the method's error
            continue
        try:
            value = read(path)
        except (ValueError, OSError) as exc:
            message = f"{name} of method {label or method!r}: {exc}"
            raise (ModelFileNotFoundError if isinstance(exc, FileNotFoundError) else ValueError)(message) from None
        yield name, path, value


def saved_model_ids(method: str, params: dict, label: str | None = None) -> dict[str, str]:
    """``{parameter: saved_model_id(path)}`` for each ``MODEL_DIR_PARAMS`` parameter of ``method`` that
    ``params`` sets; a model that cannot be read is one error naming the parameter and ``label``."""
    return {name: save_id for name, _, save_id in _each_saved_model(method, params, saved_model_id, label)}


def check_saved_model_columns(method: str, params: dict, label_names, feature_names=None) -> None:
    """Refuse a model that a ``MODEL_DIR_PARAMS`` parameter of ``method`` names (a teacher, a model to fine-tune)
    when it was fitted on other labels or feature columns than the data's: the same count under other names, or
    in another order, would be read column by column as if they matched. A side that has no names (``label_0`` …,
    pandas' default ``0``, ``1`` …, a fit on an array without column names) is not compared, nor lists of other
    lengths (the method's own check says how many it expected)."""
    # read as saved_model_ids reads it: a save killed between its two renames is finished, not refused
    for name, path, saved in _each_saved_model(method, params, lambda p: _finish_interrupted_save(p) or read_config(p)):
        for what, ours, theirs in (("labels", label_names, saved.get("label_names")),
                                   ("feature columns", feature_names,
                                    saved.get("feature_names") or saved.get("column_names"))):
            ours, theirs = [str(n) for n in ours] if ours is not None else [], list(theirs or [])
            if not ours or len(ours) != len(theirs) or ours == theirs or unnamed(ours) or unnamed(theirs):
                continue
            how = "the same " + what + " in another order" if sorted(ours) == sorted(theirs) else "other " + what
            at = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
            raise ValueError(
                f"{name} {path} was fitted on {how} than the data's (position {at}: {theirs[at]!r} there, "
                f"{ours[at]!r} here); expected data with the model's {what}, in its order ({shown(theirs)})")


def unnamed(names: list[str]) -> bool:
    """Whether ``names`` name nothing: the ``label_0`` … the estimator gives labels that were not named, or the
    ``0``, ``1`` … of a DataFrame made from an array (pandas' default columns)."""
    return names in ([f"label_{i}" for i in range(len(names))], [str(i) for i in range(len(names))])
