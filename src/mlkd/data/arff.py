"""Reading multi-label ARFF files (MULAN and MEKA conventions) into :class:`MultiLabelDataset`.

Parsing is delegated to the ``liac-arff`` package; this module adds label handling, feature encoding
and clear one-line errors.

* Files may be plain, ``.gz``, ``.bz2`` or ``.xz``; dense and sparse (``{index value, ...}``) data
  sections are both supported (sparse ones are decoded through liac-arff's COO mode and assembled
  with scipy, which is several times faster than its dense mode).
* Labels come from, in this order: a MULAN label file (``label_file``, the ``.xml`` naming the label
  attributes), an explicit ``n_labels`` (the last ``n_labels`` attributes), or a MEKA ``-C n`` option
  inside the ``@relation`` name (the first ``n`` attributes; a negative ``n`` means the last ``|n|``).
  Labels keep the order in which they appear in the ARFF file.
* Features: numeric/real/integer -> float; nominal {0,1}, {YES,NO}, {y,n}, {true,false}
  (case-insensitive) -> one 0/1 column; any other nominal -> one-hot columns named ``attr=value``
  (from the *declared* values, so train and test files get the same columns); string attributes and
  identifier-like nominal attributes (very many distinct values) are dropped with a warning.
* Missing values (``?``) in used attributes are rejected with a ``ValueError``.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import warnings
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import arff as liac_arff
import numpy as np
import scipy.sparse as sp

from .dataset import MultiLabelDataset, features_dtype, first_repeated, sparse_features_dtype

__all__ = ["read_arff", "read_arff_pair", "read_arff_for_model", "read_label_xml", "DroppedAttributeWarning",
           "NoLabelInfoError"]

# Nominal value sets that are encoded as a single 0/1 column (compared case-insensitively).
_BINARY_MAPS: tuple[dict[str, int], ...] = (
    {"0": 0, "1": 1},
    {"no": 0, "yes": 1},
    {"n": 0, "y": 1},
    {"false": 0, "true": 1},
)
_MIN_ID_VALUES = 50  # a nominal attribute needs at least this many values to be taken for an identifier
_MEKA_RE = re.compile(r"(?:^|[\s:;'\"])-C\s+(-?\d+)")
_MAX_MSG = 160

_NUMERIC_TYPES = ("NUMERIC", "REAL", "INTEGER")


class DroppedAttributeWarning(UserWarning):
    """An attribute was dropped while reading an ARFF file (string or identifier-like nominal)."""


class NoLabelInfoError(ValueError):
    """An ARFF file that names no label attributes, read without ``label_file``/``n_labels``. ``options`` words
    how to give them: the Python names by default; the command line catches it and names its own flags."""

    def __init__(self, path, options: str = "label_file= (MULAN .xml), n_labels=") -> None:
        self.path, self.options = path, options
        super().__init__(f"{path}: no label information; pass {options}, or put a MEKA '-C n' option in the "
                         "@relation name")

    def __reduce__(self):  # rebuilt from its arguments, not its message (worker processes pickle errors)
        return type(self), (self.path, self.options)


def _short(text: str, limit: int = _MAX_MSG) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------------------
# raw parsing
# --------------------------------------------------------------------------------------------------


@dataclass
class _RawArff:
    path: str
    relation: str
    attributes: list  # [(name, "NUMERIC"|"REAL"|"INTEGER"|"STRING" or [nominal values])]
    # (n_rows, n_attributes), float32 or float64 where float32 would round a column: numbers as is, nominal
    # columns hold the index into the declared values, NaN marks a missing value ('?'); string columns are NaN.
    values: np.ndarray

    @property
    def names(self) -> list[str]:
        return [a[0] for a in self.attributes]

    @property
    def n_rows(self) -> int:
        return int(self.values.shape[0])


def _read_text(path: Path) -> str:
    if not path.exists():
        raise FileNotFoundError(f"{path}: ARFF file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; expected an ARFF file (.arff, .arff.gz, .arff.bz2)")
    suffix = path.suffix.lower()
    openers = {".gz": (gzip.open, "gzip"), ".bz2": (bz2.open, "bzip2"), ".xz": (lzma.open, "xz")}
    try:
        if suffix in openers:
            opener, kind = openers[suffix]
            try:
                with opener(path, "rb") as fh:
                    raw = fh.read()
            except (OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise ValueError(
                    f"{path}: cannot decompress ({_short(exc)}); the file is truncated or not "
                    f"{kind}-compressed as its suffix says"
                ) from exc
        else:
            raw = path.read_bytes()
    except PermissionError as exc:
        raise ValueError(f"{path}: cannot read the file ({exc.strerror})") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


_HINTS = {
    "BadDataFormat": "a data row has the wrong number of values or a sparse index outside the "
    "declared attributes",
    "BadNominalValue": "every nominal value must be one of those declared in its @attribute line",
    "BadNumericalValue": "numeric attributes need numbers",
    "BadAttributeType": "expected NUMERIC, REAL, INTEGER, STRING or a {nominal,list}",
    "BadAttributeName": "attribute names must be unique",
    "BadLayout": "expected @relation, then @attribute lines, then @data rows",
}


def _arff_error_text(exc: Exception) -> str:
    """liac-arff's message; its ``__str__`` applies ``%`` to text quoting the bad row, which a '%' there breaks."""
    try:
        return str(exc)
    except (TypeError, ValueError):
        return str(getattr(exc, "message", type(exc).__name__)).replace("%d", str(getattr(exc, "line", "?")), 1)


def _decode(path: Path, text: str) -> _RawArff:
    lines = text.splitlines()
    data_at = None
    for i, line in enumerate(lines):
        if line.strip()[:5].upper() == "@DATA":
            data_at = i
            break
    if data_at is None:
        raise ValueError(
            f"{path}: no '@data' line; the file is truncated or not an ARFF file "
            "(expected @relation, @attribute lines, then @data)"
        )
    n_rows = 0
    first = None
    for line in lines[data_at + 1 :]:
        s = line.strip()
        if s and not s.startswith("%"):
            n_rows += 1
            if first is None:
                first = s
    sparse = first is not None and first.startswith("{")

    decoder = liac_arff.ArffDecoder()
    try:
        obj = decoder.decode(
            lines, encode_nominal=True, return_type=liac_arff.COO if sparse else liac_arff.DENSE
        )
    except liac_arff.ArffException as exc:
        kind, text = type(exc).__name__, _arff_error_text(exc)
        in_data = getattr(exc, "line", -1) > data_at + 1
        if kind == "BadLayout" and in_data and "Error parsing" in text:
            hint = "a data row could not be parsed: unbalanced quotes or braces, or a truncated file"
        elif kind == "BadLayout" and in_data and sparse:
            hint = "a dense row inside sparse data (every row must be written as {index value, ...})"
        else:
            hint = _HINTS.get(kind, "not a valid ARFF file")
        raise ValueError(f"{path}: malformed ARFF file: {_short(text)} ({hint})") from exc
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise ValueError(
            f"{path}: malformed ARFF file: {type(exc).__name__}: {_short(exc)} "
            "(expected @relation, @attribute lines, then @data rows)"
        ) from exc

    attributes = [(str(n), t) for n, t in obj["attributes"]]
    n_attr = len(attributes)
    if n_attr == 0:
        raise ValueError(f"{path}: no @attribute declarations; expected at least one feature and one label")
    string_cols = [j for j, (_, t) in enumerate(attributes) if t == "STRING"]

    try:
        if sparse:
            data, rows, cols = obj["data"]
            rows = np.asarray(rows, dtype=np.int64)
            cols = np.asarray(cols, dtype=np.int64)
            if cols.size and (cols.min() < 0 or cols.max() >= n_attr):
                bad = int(cols.max() if cols.max() >= n_attr else cols.min())
                raise ValueError(
                    f"{path}: malformed ARFF file: sparse index {bad} in data row "
                    f"{int(rows[np.argmax((cols >= n_attr) | (cols < 0))]) + 1}; expected indices "
                    f"0..{n_attr - 1} ({n_attr} attributes declared)"
                )
            if rows.size and rows.max() >= n_rows:  # cannot happen unless liac-arff changes
                raise ValueError(f"{path}: malformed ARFF file: inconsistent number of data rows")
            if string_cols:
                keep = ~np.isin(cols, string_cols)
                vals = np.asarray(np.array(data, dtype=object)[keep], dtype=np.float64)
                rows, cols = rows[keep], cols[keep]
            else:
                vals = np.array(data, dtype=np.float64)
            dtype = sparse_features_dtype(vals, cols, n_rows, n_attr)  # float32 unless it would round a column
            values = sp.coo_matrix((vals.astype(dtype, copy=False), (rows, cols)), shape=(n_rows, n_attr)).toarray()
        else:
            data = obj["data"]
            if len(data) == 0:
                values = np.zeros((0, n_attr), dtype=np.float64)
            elif string_cols:
                arr = np.array(data, dtype=object)
                arr[:, string_cols] = None
                values = arr.astype(np.float64)
            else:
                values = np.array(data, dtype=np.float64)
            values = values.astype(features_dtype(values), copy=False)  # float32 unless it would round a column
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(
            f"{path}: malformed ARFF file: {_short(exc)} (a numeric attribute holds a non-number)"
        ) from exc
    if values.shape != (n_rows, n_attr):
        raise ValueError(
            f"{path}: malformed ARFF file: data has shape {values.shape}, expected ({n_rows}, {n_attr})"
        )
    return _RawArff(
        path=str(path), relation=str(obj.get("relation", "")), attributes=attributes, values=values
    )


def _parse(path) -> _RawArff:
    path = Path(path).expanduser()
    return _decode(path, _read_text(path))


# --------------------------------------------------------------------------------------------------
# label files
# --------------------------------------------------------------------------------------------------


def read_label_xml(label_file) -> list[str]:
    """Label names from a MULAN label file (``<labels><label name="..."/>...</labels>``).

    Namespace-agnostic; nested (hierarchical) labels are included in document order.
    """
    path = Path(label_file).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: label file not found")
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise ValueError(
            f"{path}: not a valid MULAN label file ({_short(exc)}); expected XML "
            '<labels><label name="..."></label>...</labels>'
        ) from exc
    names: list[str] = []
    seen: set[str] = set()
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1] if isinstance(el.tag, str) else ""
        name = el.get("name")
        if tag == "label" and name is not None and name not in seen:
            names.append(name)
            seen.add(name)
    if not names:
        raise ValueError(
            f"{path}: no <label name=...> elements; expected a MULAN label file naming the label attributes"
        )
    return names


# --------------------------------------------------------------------------------------------------
# schema: which attributes are labels, how features are encoded
# --------------------------------------------------------------------------------------------------


@dataclass
class _Feature:
    index: int  # attribute index in the ARFF file
    kind: str  # "numeric" | "binary" | "onehot"
    values: list[str] = field(default_factory=list)  # declared values (nominal)
    binmap: dict[str, int] | None = None  # lower-case value -> 0/1 for "binary"


@dataclass
class _Schema:
    source: str
    attr_names: list[str]
    attr_kinds: list[str]  # "numeric" | "nominal" | "string"
    label_idx: list[int]
    features: list[_Feature]
    feature_names: list[str]
    binary_mask: np.ndarray
    dropped: list[str]


def _kind(t) -> str:
    if isinstance(t, (list, tuple)):
        return "nominal"
    return "string" if t == "STRING" else "numeric"


def _binary_map(values: list[str]) -> dict[str, int] | None:
    low = [v.strip().lower() for v in values]
    if not low or len(set(low)) != len(low):
        return None
    for m in _BINARY_MAPS:
        if all(v in m for v in low):
            return m
    return None


def _listed(names, most: int = 5) -> str:
    """"'a', 'b', ..." for messages: the first ``most`` names."""
    return ", ".join(repr(n) for n in names[:most]) + (", ..." if len(names) > most else "")


def _label_indices(raw: _RawArff, label_file, n_labels) -> list[int]:
    path, names = raw.path, raw.names
    n_attr = len(names)
    if n_labels is not None:
        if isinstance(n_labels, bool) or not isinstance(n_labels, (int, np.integer)):
            raise ValueError(f"n_labels must be an integer, got {n_labels!r}")
        n_labels = int(n_labels)
        if not 0 <= n_labels < n_attr:
            raise ValueError(
                f"{path}: n_labels={n_labels} but the file has {n_attr} attributes; "
                f"expected 0 <= n_labels <= {n_attr - 1} (0: features only, data to predict)"
            )
    if label_file is not None:
        label_names = read_label_xml(label_file)
        pos = {n: j for j, n in enumerate(names)}
        absent = [n for n in label_names if n not in pos]
        if absent:
            raise ValueError(
                f"{label_file}: {len(absent)} label(s) not declared as attributes in {path}: {_listed(absent)}; "
                "expected every <label name=...> to match an @attribute name"
            )
        if n_labels is not None and n_labels != len(label_names):
            raise ValueError(
                f"{label_file}: names {len(label_names)} labels but n_labels={n_labels} was given"
            )
        return sorted(pos[n] for n in label_names)
    if n_labels is not None:
        return list(range(n_attr - n_labels, n_attr))
    m = _MEKA_RE.search(raw.relation)
    if m:
        c = int(m.group(1))
        if c == 0 or abs(c) >= n_attr:
            raise ValueError(
                f"{path}: MEKA option '-C {c}' in the @relation name is invalid for {n_attr} attributes; "
                f"expected 1 <= |C| <= {n_attr - 1}"
            )
        return list(range(c)) if c > 0 else list(range(n_attr + c, n_attr))
    raise NoLabelInfoError(path)


def _build_schema(raw: _RawArff, label_file, n_labels, id_threshold, label_idx=None, skip=()) -> _Schema:
    """The encoding of ``raw``: its label attributes (from ``label_file``/``n_labels``, or ``label_idx``
    when given) and its features, every other attribute but those in ``skip``."""
    path = raw.path
    if label_idx is None:
        label_idx = _label_indices(raw, label_file, n_labels)
    label_set = set(label_idx) | set(skip)
    for j in label_idx:
        name, t = raw.attributes[j]
        kind = _kind(t)
        if kind == "string":
            raise ValueError(f"{path}: label attribute {name!r} is a string; expected {{0,1}} or numeric 0/1")
        if kind == "nominal" and not {v.strip() for v in t} <= {"0", "1"}:
            raise ValueError(
                f"{path}: label attribute {name!r} is nominal {{{_short(','.join(t), 60)}}}; "
                "expected {0,1} (or numeric 0/1)"
            )
    threshold = 0.5 * raw.n_rows if id_threshold is None else float(id_threshold)
    features: list[_Feature] = []
    feature_names: list[str] = []
    binary: list[bool] = []
    dropped: list[str] = []
    for j, (name, t) in enumerate(raw.attributes):
        if j in label_set:
            continue
        kind = _kind(t)
        if kind == "string":
            dropped.append(f"{path}: dropping string attribute {name!r} (strings are not features)")
            continue
        if kind == "numeric":
            features.append(_Feature(j, "numeric"))
            feature_names.append(name)
            binary.append(False)
            continue
        values = [str(v) for v in t]
        bmap = _binary_map(values)
        if bmap is not None:
            features.append(_Feature(j, "binary", values, bmap))
            feature_names.append(name)
            binary.append(True)
        elif len(values) >= _MIN_ID_VALUES and len(values) > threshold:
            dropped.append(
                f"{path}: dropping nominal attribute {name!r}: {len(values)} distinct values for "
                f"{raw.n_rows} rows looks like an identifier, not a feature"
            )
        else:
            features.append(_Feature(j, "onehot", values))
            feature_names.extend(f"{name}={v}" for v in values)
            binary.extend([True] * len(values))
    if not features:
        raise ValueError(f"{path}: no feature attributes left besides the {len(label_idx)} label(s)")
    clash = first_repeated(feature_names)
    if clash is not None:  # a model matches a file's columns by name: two columns of one name cannot be told apart
        raise ValueError(f"{path}: two feature columns are named {clash!r} (a nominal attribute's one-hot column "
                         "NAME=VALUE and an attribute of that name); expected distinct names (rename the attribute)")
    return _Schema(
        source=path,
        attr_names=raw.names,
        attr_kinds=[_kind(t) for _, t in raw.attributes],
        label_idx=label_idx,
        features=features,
        feature_names=feature_names,
        binary_mask=np.asarray(binary, dtype=bool),
        dropped=dropped,
    )


# --------------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------------


def _check_compatible(raw: _RawArff, schema: _Schema) -> None:
    if raw.path == schema.source:
        return
    names = raw.names
    if names != schema.attr_names:
        diff = next(
            (i for i, (a, b) in enumerate(zip(names, schema.attr_names, strict=False)) if a != b),
            min(len(names), len(schema.attr_names)),
        )
        raise ValueError(
            f"{raw.path}: attributes differ from {schema.source} "
            f"({len(names)} vs {len(schema.attr_names)} attributes, first difference at attribute "
            f"{diff + 1}); expected identical @attribute declarations in train and test files"
        )
    for j, (name, t) in enumerate(raw.attributes):
        if _kind(t) != schema.attr_kinds[j]:
            raise ValueError(
                f"{raw.path}: attribute {name!r} is {_kind(t)} but {schema.attr_kinds[j]} in "
                f"{schema.source}; expected identical @attribute declarations in train and test files"
            )


def _encode(raw: _RawArff, schema: _Schema, name: str) -> MultiLabelDataset:
    _check_compatible(raw, schema)
    M = raw.values
    n = raw.n_rows
    attrs = raw.attributes
    path = raw.path

    used = np.asarray(schema.label_idx + [f.index for f in schema.features], dtype=np.intp)
    if n:
        missing = np.isnan(M[:, used]).any(axis=0)
        if missing.any():
            j = int(used[np.argmax(missing)])
            count = int(np.isnan(M[:, j]).sum())
            raise ValueError(
                f"{path}: attribute {attrs[j][0]!r} has {count} missing value(s) ('?'); "
                "missing values are not supported, impute or remove them first"
            )
        infinite = np.isinf(M[:, used]).any(axis=0)
        if infinite.any():
            j = int(used[np.argmax(infinite)])
            r = int(np.argmax(np.isinf(M[:, j])))
            raise ValueError(
                f"{path}: attribute {attrs[j][0]!r} has an infinite value (data row {r + 1}: inf, or a number "
                f"beyond the float range such as 1e400); expected finite numbers"
            )

    # ---- features
    X = np.empty((n, len(schema.feature_names)), dtype=M.dtype)  # float64 only where float32 would round
    num_out, num_in, bin_out, bin_in, bin_luts = [], [], [], [], []
    out = 0
    for f in schema.features:
        if f.kind == "numeric":
            num_out.append(out)
            num_in.append(f.index)
            out += 1
        elif f.kind == "binary":
            file_values = [str(v).strip().lower() for v in attrs[f.index][1]]
            try:
                lut = [f.binmap[v] for v in file_values]
            except KeyError:
                raise ValueError(
                    f"{path}: attribute {attrs[f.index][0]!r} declares values {attrs[f.index][1]} but "
                    f"{schema.source} declares {f.values}; expected the same values in train and test"
                ) from None
            if lut == [0, 1]:  # index == value: copy as is
                num_out.append(out)
                num_in.append(f.index)
            else:
                bin_out.append(out)
                bin_in.append(f.index)
                bin_luts.append(lut + [0] * (2 - len(lut)))
            out += 1
        else:
            k = len(f.values)
            pos = {v: i for i, v in enumerate(f.values)}
            file_values = [str(v) for v in attrs[f.index][1]]
            lut = np.array([pos.get(v, -1) for v in file_values], dtype=np.intp)
            p = lut[M[:, f.index].astype(np.intp)] if n else np.zeros(0, dtype=np.intp)
            if (p < 0).any():
                r = int(np.argmax(p < 0))
                raise ValueError(
                    f"{path}: attribute {attrs[f.index][0]!r} has value "
                    f"{file_values[int(M[r, f.index])]!r} (data row {r + 1}) that {schema.source} does "
                    f"not declare; expected one of {_short(f.values, 80)}"
                )
            X[:, out : out + k] = p[:, None] == np.arange(k)[None, :]
            out += k
    if num_out:
        X[:, num_out] = M[:, num_in]
    if bin_out:
        luts = np.asarray(bin_luts, dtype=X.dtype)  # (k, 2)
        idx = M[:, bin_in].astype(np.intp)
        X[:, bin_out] = luts[np.arange(len(bin_out))[None, :], idx]

    # ---- labels
    Y = np.empty((n, len(schema.label_idx)), dtype=np.uint8)
    for c, j in enumerate(schema.label_idx):
        lname, t = attrs[j]
        col = M[:, j]
        if isinstance(t, (list, tuple)):
            vals = [str(v).strip() for v in t]
            if not set(vals) <= {"0", "1"}:
                raise ValueError(
                    f"{path}: label attribute {lname!r} is nominal {{{_short(','.join(vals), 60)}}}; "
                    "expected {0,1} (or numeric 0/1)"
                )
            lut = np.array([int(v) for v in vals] + [0], dtype=np.uint8)
            Y[:, c] = lut[col.astype(np.intp)]
        else:
            bad = (col != 0) & (col != 1)
            if bad.any():
                r = int(np.argmax(bad))
                raise ValueError(
                    f"{path}: label attribute {lname!r} has value {col[r]:g} in data row {r + 1}; "
                    "expected only 0 or 1"
                )
            Y[:, c] = col
    return MultiLabelDataset(
        X=X,
        Y=Y,
        feature_names=list(schema.feature_names),
        label_names=[attrs[j][0] for j in schema.label_idx],
        name=name,
        binary_features=schema.binary_mask.copy(),
    )


def _default_name(path) -> str:
    p = Path(path)
    name = p.name
    for suffix in (".gz", ".bz2", ".xz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    if name.lower().endswith(".arff"):
        name = name[:-5]
    return name


def _warn(messages: list[str]) -> None:
    for msg in messages:
        warnings.warn(msg, DroppedAttributeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------


def read_arff(
    path,
    label_file=None,
    n_labels: int | None = None,
    id_threshold: float | None = None,
    name: str | None = None,
) -> MultiLabelDataset:
    """Read one multi-label ARFF file.

    Args:
        path: ``.arff`` file, optionally ``.gz``/``.bz2``/``.xz`` compressed; dense or sparse data.
        label_file: MULAN label ``.xml`` naming the label attributes (takes precedence over a MEKA
            ``-C n`` in the relation name).
        n_labels: the last ``n_labels`` attributes are the labels (used when no ``label_file``); 0 reads
            every attribute as a feature (unlabelled rows to predict; Y has no columns).
        id_threshold: nominal feature attributes with more declared values than this (and at least 50)
            are treated as identifiers and dropped with a :class:`DroppedAttributeWarning`. Default:
            half the number of rows.
        name: data set name (default: the file name without ``.arff`` and compression suffix).

    Raises:
        FileNotFoundError: ``path`` or ``label_file`` does not exist.
        ValueError: any malformed input (one line naming the file, the problem and what was expected).
    """
    raw = _parse(path)
    schema = _build_schema(raw, label_file, n_labels, id_threshold)
    _warn(schema.dropped)
    return _encode(raw, schema, _default_name(path) if name is None else name)


def read_arff_pair(
    train_path,
    test_path,
    label_file=None,
    n_labels: int | None = None,
    id_threshold: float | None = None,
    name: str = "",
) -> tuple[MultiLabelDataset, MultiLabelDataset]:
    """Read a train and a test ARFF file with one shared encoding (identical feature columns).

    The label/feature schema (label attributes, one-hot values, dropped attributes) is derived from
    the train file; the test file must declare the same attributes.
    """
    raw_train = _parse(train_path)
    raw_test = _parse(test_path)
    schema = _build_schema(raw_train, label_file, n_labels, id_threshold)
    _warn(schema.dropped)
    return _encode(raw_train, schema, name), _encode(raw_test, schema, name)


#: The hint of read_arff_for_model's label errors: a file of rows to predict has no labels to require.
_ROWS_TO_PREDICT = "(rows to predict are read with labels_required=False, as mlkd predict does)"


def read_arff_for_model(
    path, feature_names, label_names, labels_required: bool = True, name: str | None = None
) -> MultiLabelDataset:
    """Read an ARFF file for a model trained on ``feature_names`` and ``label_names``: columns are matched
    by name, not position.

    The labels are the attributes named in ``label_names``, returned in that order. With
    ``labels_required=False`` (data to predict) they may be absent or hold ``?``: they are left out and Y has
    no columns. The features are encoded from this file's header and then matched to ``feature_names``: a
    one-hot column ``attr=value`` of a value the file does not declare is all zero; an attribute the model
    has no feature of is ignored with a :class:`DroppedAttributeWarning`; nothing is dropped as an identifier.

    Raises:
        ValueError: a label is missing (with ``labels_required``), a feature of the model is missing or has
            another type, or a row holds a nominal value the training data did not declare.
    """
    raw = _parse(path)
    path = raw.path
    feature_names, label_names = [str(f) for f in feature_names], [str(n) for n in label_names]
    pos = {n: j for j, n in enumerate(raw.names)}
    absent = [n for n in label_names if n not in pos]
    if labels_required and absent:
        raise ValueError(
            f"{path}: {len(absent)} of the model's {len(label_names)} label(s) are not declared as attributes: "
            f"{_listed(absent)}; expected the training data's label attributes {_ROWS_TO_PREDICT}"
        )
    present = [pos[n] for n in label_names if n in pos]
    if labels_required and raw.n_rows:
        unknown = [j for j in present if np.isnan(raw.values[:, j]).any()]
        if unknown:
            j = unknown[0]
            raise ValueError(f"{path}: label attribute {raw.names[j]!r} has {int(np.isnan(raw.values[:, j]).sum())} "
                             f"missing value(s) ('?'); expected 0/1 labels {_ROWS_TO_PREDICT}")
    schema = _build_schema(raw, None, None, float("inf"), label_idx=present if labels_required else [],
                           skip=() if labels_required else present)
    _warn(schema.dropped)
    ds = _encode(raw, schema, _default_name(path) if name is None else name)

    col = {n: i for i, n in enumerate(schema.feature_names)}
    onehot: dict[str, tuple[_Feature, int]] = {}  # attribute name -> (feature, first column)
    start = 0
    for f in schema.features:
        width = len(f.values) if f.kind == "onehot" else 1
        if f.kind == "onehot":
            onehot[raw.names[f.index]] = (f, start)
        start += width
    take = np.full(len(feature_names), -1, dtype=np.intp)  # -1: a value this file does not declare (zeros)
    missing = []
    for i, fname in enumerate(feature_names):
        if fname in col:
            take[i] = col[fname]
        elif not any(fname.startswith(a + "=") for a in onehot):
            missing.append(fname)
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} of the model's {len(feature_names)} features are not in this file "
            f"(or have another type): {_listed(missing)}; expected the training data's attributes"
        )
    used = set(take[take >= 0].tolist())
    known = set(feature_names)
    # every "a" a one-hot feature "a=value" may belong to (a name may hold "=" itself): one set, not a scan a call
    one_hot_of = {n[:i] for n in known for i, ch in enumerate(n) if ch == "="}
    ignored = []

    def model_has(a: str) -> bool:  # the model has a feature of attribute a (one-hot: any of its values)
        return a in known or a in one_hot_of

    for a, (f, first) in onehot.items():
        cols = range(first, first + len(f.values))
        if not model_has(a):
            continue  # an attribute the model has no feature of: ignored below
        extra = [c for c in cols if c not in used and ds.X[:, c].any()]
        if extra:
            c = extra[0]
            r = int(np.argmax(ds.X[:, c] != 0))
            raise ValueError(
                f"{path}: attribute {a!r} has value {f.values[c - first]!r} (data row {r + 1}) that the model's "
                f"training data did not declare; expected one of "
                f"{_short([n[len(a) + 1:] for n in feature_names if n.startswith(a + '=')], 80)}"
            )
    for f in schema.features:
        a = raw.names[f.index]
        if not model_has(a):
            ignored.append(a)
    if ignored:
        _warn([f"{path}: ignoring attribute(s) {_short(ignored, 80)}: the model has no feature of that name"])
    X = np.zeros((ds.n_samples, len(feature_names)), dtype=ds.X.dtype)
    X[:, take >= 0] = ds.X[:, take[take >= 0]]
    binary = np.ones(len(feature_names), dtype=bool)
    binary[take >= 0] = ds.binary_features[take[take >= 0]]
    return MultiLabelDataset(X=X, Y=ds.Y, feature_names=feature_names, label_names=ds.label_names, name=ds.name,
                             binary_features=binary)
