"""Property tests: the ARFF reader round-trips what liac-arff writes and fails only with its documented
errors on garbage; the metrics keep their bounds and agree with independent computations."""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import arff as liac_arff
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from scipy.stats import rankdata

from mlkd.data import read_arff
from mlkd.data.dataset import features_dtype
from mlkd.metrics import METRICS, evaluate, ranking_metrics, threshold_metrics

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])



def _liac_round_trips(name: str) -> bool:
    """liac-arff's writer leaves some names unquoted that its reader then misreads (a lone quote): out of scope."""
    text = liac_arff.dumps({"relation": "r", "attributes": [(name, "REAL")], "data": [[0.0]]})
    try:
        return [a[0] for a in liac_arff.loads(text)["attributes"]] == [name]
    except liac_arff.ArffException:
        return False


# attribute names: printable text with the characters ARFF quotes or escapes (spaces, quotes, commas, braces,
# %, backslashes, non-ASCII); liac-arff strips surrounding whitespace, so names have none
NAME_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs"), exclude_characters="\x85\xa0")
NAMES = st.text(NAME_CHARS, min_size=1, max_size=8).map(str.strip).filter(bool).filter(_liac_round_trips)
FLOAT32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def datasets(draw):
    n = draw(st.integers(1, 8))
    d = draw(st.integers(1, 4))
    L = draw(st.integers(1, 3))
    names = draw(st.lists(NAMES, min_size=d + L, max_size=d + L, unique_by=str.lower))
    X = np.array(draw(st.lists(st.lists(FLOAT32, min_size=d, max_size=d), min_size=n, max_size=n)), np.float32)
    Y = np.array(draw(st.lists(st.lists(st.integers(0, 1), min_size=L, max_size=L), min_size=n, max_size=n)))
    return names, X.reshape(n, d), Y.reshape(n, L).astype(np.uint8)


def _arff_text(names, X, Y, sparse: bool) -> str:
    d = X.shape[1]
    attributes = [(name, "REAL") for name in names[:d]] + [(name, ["0", "1"]) for name in names[d:]]
    if sparse:  # liac-arff writes a list of {index: value} dicts as sparse rows; absent = 0 (nominal: "0")
        data = [{**{j: float(v) for j, v in enumerate(x) if v != 0}, **{d + k: "1" for k in np.flatnonzero(y)}}
                for x, y in zip(X, Y, strict=True)]
    else:
        data = [[*map(float, x), *map(str, y)] for x, y in zip(X, Y, strict=True)]
    return liac_arff.dumps({"relation": "fuzz", "attributes": attributes, "data": data})


def _read_text(text: str, suffix: str = ".arff", **kwargs):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"f{suffix}"
        path.write_text(text, encoding="utf-8")
        return read_arff(path, **kwargs)


@FUZZ
@given(datasets(), st.booleans())
def test_arff_round_trip_dense_and_sparse(data, sparse):
    names, X, Y = data
    ds = _read_text(_arff_text(names, X, Y, sparse), n_labels=Y.shape[1])
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.Y, Y)
    assert ds.feature_names == names[: X.shape[1]] and ds.label_names == names[X.shape[1] :]
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.uint8


def _expect_documented_errors(read):
    """Success, or the reader's documented one-line ValueError; nothing else. X is float32, or float64 where
    float32 would round a column (features_dtype: a mutation can make a number float32 cannot hold)."""
    try:
        ds = read()
    except ValueError as exc:
        assert "\n" not in str(exc), str(exc)
        return
    assert ds.X.shape[0] == ds.Y.shape[0] and ds.X.dtype == features_dtype(ds.X.astype(np.float64))
    assert set(np.unique(ds.Y)) <= {0, 1}


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([".arff", ".arff.gz", ".arff.bz2", ".arff.xz"]))
def test_arff_garbage_bytes_give_only_the_documented_error(raw, suffix):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"g{suffix}"
        path.write_bytes(raw)
        _expect_documented_errors(lambda: read_arff(path, n_labels=1))


ARFF_ALPHABET = st.sampled_from(list("@{}(),'\"%?\\ \n\t-+.eE0123456789abcXYZ") + ["@data", "@attribute", "{0,1}",
                                                                                      "numeric", "string", "\n"])


@FUZZ
@given(datasets(), st.booleans(), st.data())
def test_mutated_arff_gives_only_the_documented_error(data, sparse, draw):
    names, X, Y = data
    text = _arff_text(names, X, Y, sparse)
    for _ in range(draw.draw(st.integers(1, 3))):  # cut, insert or replace a few spans
        i = draw.draw(st.integers(0, len(text)))
        j = draw.draw(st.integers(i, min(len(text), i + 12)))
        junk = "".join(draw.draw(st.lists(ARFF_ALPHABET, max_size=4)))
        text = text[:i] + junk + text[j:]
    n_labels = draw.draw(st.integers(1, 3))
    _expect_documented_errors(lambda: _read_text(text, n_labels=n_labels))
    with tempfile.TemporaryDirectory() as tmp:  # and compressed, cut short
        path = Path(tmp) / "m.arff.gz"
        path.write_bytes(gzip.compress(text.encode())[: draw.draw(st.integers(0, 200))])
        _expect_documented_errors(lambda: read_arff(path, n_labels=n_labels))


@FUZZ
@given(st.text(max_size=200))
@example("0%:")  # liac-arff's own message formatting used to crash on a '%' in a bad row
@example("118777836.5,1")  # float32 would round it: read as float64, as documented (a fresh run found this)
def test_arff_garbage_text_gives_only_the_documented_error(text):
    _expect_documented_errors(lambda: _read_text("@relation r\n@attribute a numeric\n@attribute b {0,1}\n"
                                                 "@data\n" + text, n_labels=1))


def test_missing_arff_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_arff(tmp_path / "absent.arff", n_labels=1)


# --------------------------------------------------------------------------------------------------
# metrics: what tests/test_metrics.py does not already cover
# --------------------------------------------------------------------------------------------------
@st.composite
def problems(draw, max_n=8, max_l=5):
    n, L = draw(st.integers(1, max_n)), draw(st.integers(2, max_l))
    Y = np.array(draw(st.lists(st.integers(0, 1), min_size=n * L, max_size=n * L))).reshape(n, L)
    grid = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0]), st.floats(0.0, 1.0))
    S = np.array(draw(st.lists(grid, min_size=n * L, max_size=n * L)), dtype=float).reshape(n, L)
    return Y, S


def _f1(tp, fp, fn):
    return 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 0.0


@FUZZ
@given(problems(), st.floats(0.01, 0.99))
def test_micro_and_macro_f1_agree_with_flattened_and_per_label_counts(prob, t):
    Y, S = prob
    P = (S >= t).astype(int)
    out = threshold_metrics(Y, P)
    y, p = Y.ravel(), P.ravel()  # micro-F1 is the binary F1 of all cells at once
    assert out["micro_f1"] == pytest.approx(_f1(np.sum(y & p), np.sum(p & (1 - y)), np.sum(y & (1 - p))), abs=1e-12)
    per_label = [_f1(np.sum(Y[:, j] & P[:, j]), np.sum(P[:, j] & (1 - Y[:, j])), np.sum(Y[:, j] & (1 - P[:, j])))
                 for j in range(Y.shape[1])]
    assert out["macro_f1"] == pytest.approx(np.mean(per_label), abs=1e-12)
    assert out["hamming_loss"] == pytest.approx(np.mean(Y != P), abs=1e-12)
    assert out["subset_accuracy"] <= out["example_f1"] + 1e-12  # an exact row has F1 1


@FUZZ
@given(problems(), st.randoms(use_true_random=False))
def test_metrics_do_not_depend_on_the_order_of_examples(prob, rnd):
    Y, S = prob
    order = list(range(Y.shape[0]))
    rnd.shuffle(order)
    a, b = evaluate(Y, S), evaluate(Y[order], S[order])
    for key in METRICS:
        assert a[key] == pytest.approx(b[key], abs=1e-12, nan_ok=True), key


@FUZZ
@given(problems())
def test_ranking_metrics_depend_only_on_the_order_of_scores(prob):
    Y, S = prob
    S = S * 0.98 + 0.01  # logit needs (0, 1); the map is strictly increasing, so the order is unchanged
    logits = np.log(S) - np.log1p(-S)
    # ... in exact arithmetic: in floats it can merge scores a few ulps apart (0.01 + 9e-18 and 0.01), so the
    # claim is checked where the two score matrices order each label's examples (mAP) and each example's
    # labels (ranking loss, coverage, one-error, LRAP) alike
    assume(all(np.array_equal(rankdata(S[:, j]), rankdata(logits[:, j])) for j in range(S.shape[1])))
    assume(all(np.array_equal(rankdata(S[i]), rankdata(logits[i])) for i in range(S.shape[0])))
    a, b = ranking_metrics(Y, S), ranking_metrics(Y, logits)
    for key in a:
        assert a[key] == pytest.approx(b[key], abs=1e-9, nan_ok=True), key
    assume(Y.any())
    assert 0.0 < a["mAP"] <= 1.0 and not math.isnan(a["lrap"])
