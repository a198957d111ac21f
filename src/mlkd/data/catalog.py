"""The MULAN benchmark catalogue: where the files live, their checksums, and loading them.

The catalogue (``catalog.json``, shipped with the package) lists, for each of the 11 MULAN data sets,
the folder and files of the official train/test split, the SHA256 of each file and the shapes that
:func:`load_dataset` produces. Files are looked up as ``<data_dir>/<folder>/<file>``, i.e. a copy of
the ``data/multi-label`` folders of the MULAN repository, where ``data_dir`` is ``$MLKD_DATA`` or,
by default, ``~/.cache/mlkd/mulan`` (``$XDG_CACHE_HOME/mlkd/mulan``).

``load_dataset("digits-ml")`` returns the embedded synthetic image data set (no files needed).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .arff import DroppedAttributeWarning, read_arff_pair
from .dataset import BenchmarkData, MultiLabelDataset

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "MULAN_NAMES",
    "DatasetInfo",
    "DatasetNotFoundError",
    "ChecksumError",
    "data_dir",
    "load_dataset",
    "dataset_status",
    "clear_cache",
]

MULAN_URL = "https://github.com/tsoumakas/mulan"
ENV_VAR = "MLKD_DATA"
DIGITS_NAME = "digits-ml"


class DatasetNotFoundError(FileNotFoundError):
    """A benchmark file is not where the catalogue expects it."""


class ChecksumError(ValueError):
    """A benchmark file's SHA256 differs from the catalogue's."""


@dataclass(frozen=True)
class DatasetInfo:
    """One catalogue entry (an official MULAN train/test split)."""

    name: str
    folder: str
    train: str  # train ARFF file name
    test: str  # test ARFF file name
    labels: str  # MULAN label XML file name
    sha256: dict  # file name -> hex digest
    n_train: int
    n_test: int
    n_features: int  # after one-hot encoding nominal attributes and dropping identifiers
    n_labels: int
    domain: str
    cardinality: float = float("nan")  # mean labels per example, train and test together
    notes: str = ""

    @property
    def files(self) -> tuple[str, str, str]:
        return (self.train, self.test, self.labels)

    def folder_path(self, root=None) -> Path:
        """The folder its files are read from: ``<root>/<folder>``, or ``<root>/mulan/<folder>`` where only that
        one exists (root defaults to :func:`data_dir`)."""
        return _folder(self, _resolve_root(root))


def _load_catalog() -> dict[str, DatasetInfo]:
    text = resources.files(__package__).joinpath("catalog.json").read_text(encoding="utf-8")
    entries = json.loads(text)["datasets"]
    return {name: DatasetInfo(name=name, **entry) for name, entry in entries.items()}


DATASETS: dict[str, DatasetInfo] = _load_catalog()
MULAN_NAMES: tuple[str, ...] = tuple(DATASETS)
DATASET_NAMES: tuple[str, ...] = MULAN_NAMES + (DIGITS_NAME,)


def data_dir() -> Path:
    """Root of the MULAN files: ``$MLKD_DATA`` if set, else ``$XDG_CACHE_HOME/mlkd/mulan``
    (``~/.cache/mlkd/mulan`` when ``XDG_CACHE_HOME`` is unset)."""
    env = os.environ.get(ENV_VAR, "").strip()
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME", "").strip()
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "mlkd" / "mulan"


def _resolve_root(root) -> Path:
    return data_dir() if root is None else Path(root).expanduser()


def _normalise_name(name) -> str:
    key = str(name).strip().lower()
    if key in DATASETS or key == DIGITS_NAME:
        return key
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASET_NAMES)}")


def _folder(info: DatasetInfo, root: Path) -> Path:
    """``<root>/<folder>``; also accepts a root that holds a ``mulan/`` folder."""
    primary = root / info.folder
    if not primary.is_dir() and (root / "mulan" / info.folder).is_dir():
        return root / "mulan" / info.folder
    return primary


# --------------------------------------------------------------------------------------------------
# checksums (cached per path + mtime + size, in-process)
# --------------------------------------------------------------------------------------------------

_HASH_CACHE: dict[tuple, str] = {}
_LOCK = threading.Lock()


def _stat_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_mtime_ns, st.st_size, st.st_ino)


def file_sha256(path: Path) -> str:
    """The sha256 hex digest of a file, cached by (path, mtime, size, inode): a file is read once per change."""
    key = _stat_key(path)
    with _LOCK:
        hit = _HASH_CACHE.get(key)
    if hit is not None:
        return hit
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _HASH_CACHE[key] = digest
    return digest


def _not_found(info: DatasetInfo, root: Path, missing: Path, explicit: bool) -> DatasetNotFoundError:
    env = os.environ.get(ENV_VAR, "").strip()
    if explicit:
        where = f"the data directory {root} was passed as data_dir; by default it is ${ENV_VAR}"
    elif env:
        where = f"the data directory {root} comes from ${ENV_VAR}"
    else:
        where = f"${ENV_VAR} is unset, so the default data directory {root} is used; set ${ENV_VAR} to yours"
    return DatasetNotFoundError(
        f"dataset {info.name!r}: {missing} not found; expected {', '.join(info.files)} in "
        f"{_folder(info, root)} ({where}). The files come from the MULAN repository, {MULAN_URL} "
        f"(folder data/multi-label): copy its {info.folder} folder into the data directory"
    )


def _check_files(info: DatasetInfo, root: Path, verify: bool, explicit: bool = False) -> list[Path]:
    folder = _folder(info, root)
    paths = [folder / f for f in info.files]
    for p in paths:
        if not p.is_file():
            raise _not_found(info, root, p, explicit)
    if verify:
        for p in paths:
            expected = info.sha256[p.name]
            actual = file_sha256(p)
            if actual != expected:
                raise ChecksumError(
                    f"dataset {info.name!r}: {p} has SHA256 {actual}, expected {expected}; the file is "
                    f"altered or a different version, get it again from the MULAN repository ({MULAN_URL}, "
                    "folder data/multi-label), or load it unchecked with load_dataset(..., verify=False)"
                )
    return paths


def dataset_status(name, data_dir=None) -> str:
    """``"found"``, ``"missing"`` or ``"checksum mismatch"`` for a catalogue data set.

    Checksums are cached per file (path, mtime, size), so repeated calls are cheap. The embedded
    ``digits-ml`` is always ``"found"``.
    """
    key = _normalise_name(name)
    if key == DIGITS_NAME:
        return "found"
    try:
        _check_files(DATASETS[key], _resolve_root(data_dir), verify=True, explicit=data_dir is not None)
    except DatasetNotFoundError:
        return "missing"
    except ChecksumError:
        return "checksum mismatch"
    return "found"


# --------------------------------------------------------------------------------------------------
# loading (with a small in-process cache of parsed data sets; callers always get copies)
# --------------------------------------------------------------------------------------------------

_CACHE_SIZE = 4
_DATA_CACHE: OrderedDict[tuple, tuple[MultiLabelDataset, MultiLabelDataset, list[str]]] = OrderedDict()


def clear_cache() -> None:
    """Forget parsed data sets and cached checksums."""
    with _LOCK:
        _DATA_CACHE.clear()
        _HASH_CACHE.clear()


def _load_digits() -> BenchmarkData:
    from .digits import load_digits_ml

    return load_digits_ml()


def load_dataset(name: str, data_dir=None, verify: bool = True) -> BenchmarkData:
    """Load the official train/test split of a benchmark data set.

    Args:
        name: one of :data:`DATASET_NAMES` (case-insensitive).
        data_dir: root holding ``<folder>/<files>``; default :func:`data_dir` (``$MLKD_DATA``).
        verify: check each file's SHA256 against the catalogue (cached per path+mtime+size).

    Raises:
        ValueError: unknown name (the message lists the known ones) or a malformed file.
        DatasetNotFoundError: a file is missing (the message says where it was expected).
        ChecksumError: a file's checksum differs from the catalogue.
    """
    key = _normalise_name(name)
    if key == DIGITS_NAME:
        return _load_digits()
    info = DATASETS[key]
    root = _resolve_root(data_dir)
    paths = _check_files(info, root, verify, explicit=data_dir is not None)
    cache_key = (key, tuple(_stat_key(p) for p in paths))
    with _LOCK:
        hit = _DATA_CACHE.get(cache_key)
        if hit is not None:
            _DATA_CACHE.move_to_end(cache_key)
    if hit is None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DroppedAttributeWarning)
            train, test = read_arff_pair(paths[0], paths[1], label_file=paths[2], name=key)
        dropped = []
        for w in caught:
            if issubclass(w.category, DroppedAttributeWarning):
                dropped.append(str(w.message))
            else:  # pass other warnings on unchanged
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        got = (train.n_samples, test.n_samples, train.n_features, train.n_labels)
        want = (info.n_train, info.n_test, info.n_features, info.n_labels)
        if got != want:
            msg = (
                f"dataset {key!r} in {paths[0].parent}: (n_train, n_test, n_features, n_labels) = {got}, "
                f"expected {want} from the catalogue"
            )
            if verify:  # checksums matched, so this is a bug in the reader
                raise ValueError(msg)
            warnings.warn(msg + " (verify=False: files differ from the catalogued ones)", stacklevel=2)
        hit = (train, test, dropped)
        with _LOCK:
            _DATA_CACHE[cache_key] = hit
            while len(_DATA_CACHE) > _CACHE_SIZE:
                _DATA_CACHE.popitem(last=False)
    train, test, dropped = hit
    for msg in dropped:
        warnings.warn(msg, DroppedAttributeWarning, stacklevel=2)
    return BenchmarkData(name=key, train=train.copy(), test=test.copy())
