"""Tests for mlkd.data: ARFF reading, the MULAN catalogue, digits-ml and stratified splits."""

import bz2
import gzip
import re
import shutil
import warnings

import numpy as np
import pytest

from mlkd.data import (
    DATASET_NAMES,
    DATASETS,
    BenchmarkData,
    ChecksumError,
    DatasetNotFoundError,
    MultiLabelDataset,
    data_dir,
    dataset_status,
    kfold_splits,
    load_dataset,
    make_digits_ml,
    read_arff,
    validation_split,
)
from mlkd.data.arff import DroppedAttributeWarning, read_arff_pair
from mlkd.data.digits import _source_digits, digits_source_split

# name: (n_train, n_test, n_features after encoding, n_labels), from /work/shared/datasets/README.md
# (genbase: 1185 {YES,NO} features once the protein id is dropped; flags: 4 nominal attributes
# one-hot encoded (6+4+10+8) + 5 {0,1} + 10 numeric = 43).
EXPECTED = {
    "emotions": (391, 202, 72, 6),
    "scene": (1211, 1196, 294, 6),
    "yeast": (1500, 917, 103, 14),
    "enron": (1123, 579, 1001, 53),
    "medical": (333, 645, 1449, 45),
    "genbase": (463, 199, 1185, 27),
    "bibtex": (4880, 2515, 1836, 159),
    "delicious": (12920, 3185, 500, 983),
    "corel5k": (4500, 500, 499, 374),
    "tmc2007": (21519, 7077, 500, 22),
    "flags": (129, 65, 43, 7),
}
NUMERIC_SETS = {"emotions", "scene", "yeast"}


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _write(path, text):
    path.write_text(text)
    return path


def _xml(path, names):
    body = "".join(f'<label name="{n}"></label>\n' for n in names)
    return _write(
        path,
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<labels xmlns="http://mulan.sourceforge.net/labels">\n{body}</labels>\n',
    )


DENSE = """% a comment
@relation toy

@attribute f1 numeric
@attribute f2 real
@attribute b {0,1}
@attribute lab1 {0,1}
@attribute lab2 {0,1}

@data
1.5,-2,1,0,1
0,3.25,0,1,1
% comment inside data
-1,0,1,0,0
"""

SPARSE = """@relation toy_sparse
@attribute w0 {0,1}
@attribute w1 {0,1}
@attribute x numeric
@attribute lab1 {0,1}
@attribute lab2 {0,1}
@data
{0 1,2 2.5,4 1}
{}
{1 1,3 1}
"""


def _one_line(exc_info):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------
# the 11 MULAN benchmark data sets
# ------------------------------------------------------------------------------------------------


def test_expected_table_matches_readme(mulan_dir):
    readme = mulan_dir.parent / "README.md"
    if not readme.is_file():
        pytest.skip(f"{readme} not found")
    rows = {}
    for line in readme.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] in EXPECTED:
            rows[cells[0]] = (int(cells[2]), int(cells[3]), int(cells[5]))
    assert set(rows) == set(EXPECTED)
    for name, (n_train, n_test, _, n_labels) in EXPECTED.items():
        assert rows[name] == (n_train, n_test, n_labels), name


def test_catalog_entries():
    assert DATASET_NAMES == tuple(EXPECTED) + ("digits-ml",)
    assert set(DATASETS) == set(EXPECTED)
    for name, info in DATASETS.items():
        assert (info.n_train, info.n_test, info.n_features, info.n_labels) == EXPECTED[name]
        assert set(info.sha256) == set(info.files)
        assert all(re.fullmatch(r"[0-9a-f]{64}", h) for h in info.sha256.values())


@pytest.mark.parametrize("name", list(EXPECTED))
def test_benchmark_dataset_loads(name, mulan_dir):
    n_train, n_test, n_features, n_labels = EXPECTED[name]
    if name == "genbase":
        with pytest.warns(DroppedAttributeWarning, match="'protein'.*identifier"):
            data = load_dataset(name, data_dir=mulan_dir)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DroppedAttributeWarning)
            data = load_dataset(name, data_dir=mulan_dir)
    assert isinstance(data, BenchmarkData) and data.name == name
    tr, te = data.train, data.test
    assert (tr.n_samples, te.n_samples) == (n_train, n_test)
    assert tr.n_features == te.n_features == n_features
    assert tr.n_labels == te.n_labels == n_labels
    assert tr.feature_names == te.feature_names and tr.label_names == te.label_names
    for ds in (tr, te):
        assert ds.X.dtype == np.float32 and ds.Y.dtype == np.uint8
        assert np.isfinite(ds.X).all()
        assert set(np.unique(ds.Y)) <= {0, 1}
        assert ds.binary_features.dtype == bool and ds.binary_features.shape == (n_features,)
        assert np.isin(ds.X[:, ds.binary_features], (0, 1)).all()
    assert tr.Y.sum() > 0 and 1.0 <= tr.cardinality <= 25.0
    if name in NUMERIC_SETS:
        assert not tr.binary_features.any()
    elif name != "flags":
        assert tr.binary_features.all()
    if name == "genbase":
        assert "protein" not in tr.feature_names
    if name == "flags":
        assert sum(f.startswith("landmass=") for f in tr.feature_names) == 6
        assert sum(f.startswith("language=") for f in tr.feature_names) == 10
        assert int(tr.binary_features.sum()) == 33  # 28 one-hot + 5 {0,1}
        onehot = tr.X[:, [f.startswith("religion=") for f in tr.feature_names]]
        assert (onehot.sum(axis=1) == 1).all()


def test_benchmark_spot_values(mulan_dir):
    # dense: first row of emotions-train
    emo = load_dataset("emotions", data_dir=mulan_dir)
    assert emo.train.X[0, 0] == np.float32(0.034741)
    assert emo.train.label_names[0] == "amazed-suprised"
    # sparse: first row of tmc2007-500-train is {19 1,...,480 1,501 1,505 1,506 1}
    tmc = load_dataset("tmc2007", data_dir=mulan_dir)
    row = tmc.train.X[0]
    assert set(np.flatnonzero(row)) == {19, 35, 90, 109, 123, 165, 185, 212, 227, 271, 333, 375, 382, 480}
    assert set(np.flatnonzero(tmc.train.Y[0])) == {1, 5, 6}
    # medical's relation says '-C 45' (labels first) but its xml says labels are last: the xml wins
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        med = load_dataset("medical", data_dir=mulan_dir)
    assert med.train.label_names[0] == "Class-0-593_70" and med.train.feature_names[0] == "-"
    # genbase: first row 'Q9PQS9,NO,...': YES/NO -> 1/0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = load_dataset("genbase", data_dir=mulan_dir)
    assert gen.train.X[0, 0] == 0.0 and gen.train.X.max() == 1.0


def test_load_dataset_returns_independent_copies(mulan_dir):
    a = load_dataset("flags", data_dir=mulan_dir)
    b = load_dataset("FLAGS", data_dir=mulan_dir)
    np.testing.assert_array_equal(a.train.X, b.train.X)
    a.train.X[:] = -7
    assert not (b.train.X == -7).any()
    assert not (load_dataset("flags", data_dir=mulan_dir).train.X == -7).any()


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'nope'; known datasets: emotions, .*digits-ml"):
        load_dataset("nope")
    with pytest.raises(ValueError, match="unknown dataset"):
        dataset_status("nope")


@pytest.fixture
def flags_copy(mulan_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(mulan_dir / "flags", root / "flags")
    for f in (root / "flags").iterdir():
        f.chmod(0o644)
    return root


def test_checksum_mismatch(flags_copy):
    assert dataset_status("flags", data_dir=flags_copy) == "found"
    path = flags_copy / "flags" / "flags-train.arff"
    raw = bytearray(path.read_bytes())
    assert raw[-2:] == b"0\n"
    raw[-2:] = b"1\n"  # a different (still valid) label value in the last row
    path.write_bytes(bytes(raw))
    with pytest.raises(
        ChecksumError, match=r"flags-train\.arff has SHA256 [0-9a-f]{64}, expected 1861cdab"
    ) as e:
        load_dataset("flags", data_dir=flags_copy)
    assert str(path) in _one_line(e)
    assert isinstance(e.value, ValueError)
    assert dataset_status("flags", data_dir=flags_copy) == "checksum mismatch"
    data = load_dataset("flags", data_dir=flags_copy, verify=False)  # opting out of the check
    assert data.train.n_samples == 129 and data.train.Y[-1, -1] == 1


def test_missing_file(flags_copy, monkeypatch):
    monkeypatch.setenv("MLKD_DATA", str(flags_copy))
    assert data_dir() == flags_copy
    assert load_dataset("flags").test.n_samples == 65  # found through $MLKD_DATA
    missing = flags_copy / "flags" / "flags-test.arff"
    missing.unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("flags")
    msg = _one_line(e)
    assert isinstance(e.value, FileNotFoundError)
    assert str(missing) in msg and "MLKD_DATA" in msg and "github.com/tsoumakas/mulan" in msg
    assert dataset_status("flags") == "missing"
    assert dataset_status("digits-ml") == "found"


def test_data_dir_default(monkeypatch, tmp_path):
    monkeypatch.delenv("MLKD_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data_dir() == tmp_path / "mlkd" / "mulan"
    with pytest.raises(DatasetNotFoundError, match=r"MLKD_DATA is unset.*mlkd/mulan"):
        load_dataset("emotions")


def test_a_root_holding_mulan_names_the_folder_its_files_are_read_from(flags_copy):
    # a data directory that holds mulan/<name>/ (a copy of the mirror's parent) is accepted: the folder
    # reported (mlkd datasets NAME, the not-found error) is the one the files are read from, not <root>/<name>
    parent = flags_copy.parent / "parent"
    shutil.copytree(flags_copy, parent / "mulan")
    assert load_dataset("flags", data_dir=parent).train.n_samples == 129
    assert DATASETS["flags"].folder_path(parent) == parent / "mulan" / "flags"
    assert DATASETS["flags"].folder_path(flags_copy) == flags_copy / "flags"
    (parent / "mulan" / "flags" / "flags-test.arff").unlink()
    with pytest.raises(DatasetNotFoundError) as e:
        load_dataset("flags", data_dir=parent)
    assert f"in {parent / 'mulan' / 'flags'} (" in _one_line(e)


# ------------------------------------------------------------------------------------------------
# read_arff on hand-written files
# ------------------------------------------------------------------------------------------------


def test_dense_mulan_with_xml(tmp_path):
    path = _write(tmp_path / "toy.arff", DENSE)
    ds = read_arff(path, label_file=_xml(tmp_path / "toy.xml", ["lab2", "lab1"]))
    assert ds.name == "toy"
    assert ds.feature_names == ["f1", "f2", "b"] and ds.label_names == ["lab1", "lab2"]  # ARFF order
    np.testing.assert_array_equal(ds.X, np.array([[1.5, -2, 1], [0, 3.25, 0], [-1, 0, 1]], np.float32))
    np.testing.assert_array_equal(ds.Y, np.array([[0, 1], [1, 1], [0, 0]], np.uint8))
    np.testing.assert_array_equal(ds.binary_features, [False, False, True])
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.uint8
    assert ds.cardinality == pytest.approx(1.0)


def test_labels_need_not_be_last(tmp_path):
    path = _write(tmp_path / "mid.arff", DENSE)
    ds = read_arff(path, label_file=_xml(tmp_path / "mid.xml", ["b"]))  # a label in the middle
    assert ds.label_names == ["b"] and ds.feature_names == ["f1", "f2", "lab1", "lab2"]
    np.testing.assert_array_equal(ds.Y[:, 0], [1, 0, 1])
    path2 = _write(tmp_path / "bad.arff", DENSE)
    with pytest.raises(
        ValueError, match=r"label attribute 'f2' has value -2 in data row 1; expected only 0 or 1"
    ):
        read_arff(path2, label_file=_xml(tmp_path / "bad.xml", ["f2", "lab1"]))


def test_sparse_matches_dense(tmp_path):
    ds = read_arff(_write(tmp_path / "s.arff", SPARSE), n_labels=2)
    np.testing.assert_array_equal(ds.X, np.array([[1, 0, 2.5], [0, 0, 0], [0, 1, 0]], np.float32))
    np.testing.assert_array_equal(ds.Y, np.array([[0, 1], [0, 0], [1, 0]], np.uint8))
    np.testing.assert_array_equal(ds.binary_features, [True, True, False])
    dense = SPARSE.replace("{0 1,2 2.5,4 1}", "1,0,2.5,0,1").replace("{}", "0,0,0,0,0")
    dense = dense.replace("{1 1,3 1}", "0,1,0,1,0")
    dd = read_arff(_write(tmp_path / "d.arff", dense), n_labels=2)
    np.testing.assert_array_equal(ds.X, dd.X)
    np.testing.assert_array_equal(ds.Y, dd.Y)


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2")])
def test_compressed(tmp_path, opener, suffix):
    xml = _xml(tmp_path / "toy.xml", ["lab1", "lab2"])
    plain = read_arff(_write(tmp_path / "toy.arff", DENSE), label_file=xml)
    path = tmp_path / f"toy.arff{suffix}"
    with opener(path, "wt") as fh:
        fh.write(DENSE)
    ds = read_arff(path, label_file=xml)
    assert ds.name == "toy"
    np.testing.assert_array_equal(ds.X, plain.X)
    np.testing.assert_array_equal(ds.Y, plain.Y)
    with opener(tmp_path / f"sp.arff{suffix}", "wt") as fh:
        fh.write(SPARSE)
    assert read_arff(tmp_path / f"sp.arff{suffix}", n_labels=2).X.shape == (3, 3)


def test_corrupt_compressed(tmp_path):
    path = tmp_path / "toy.arff.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(DENSE * 50)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(ValueError, match=r"toy\.arff\.gz: cannot decompress .*truncated"):
        read_arff(path, n_labels=2)
    bogus = _write(tmp_path / "plain.arff.bz2", DENSE)
    with pytest.raises(ValueError, match="cannot decompress"):
        read_arff(bogus, n_labels=2)


def test_meka_relation_option(tmp_path):
    meka = """@relation 'Toy: -C 2 -split-percentage 50'
@attribute y1 {0,1}
@attribute y2 {0,1}
@attribute a numeric
@attribute b numeric
@data
1,0,0.5,1
0,1,1.5,2
"""
    ds = read_arff(_write(tmp_path / "m2.arff", meka))
    assert ds.label_names == ["y1", "y2"] and ds.feature_names == ["a", "b"]
    np.testing.assert_array_equal(ds.Y, [[1, 0], [0, 1]])
    np.testing.assert_array_equal(ds.X, [[0.5, 1], [1.5, 2]])
    neg = DENSE.replace("@relation toy", "@relation 'toy: -C -2'")
    ds = read_arff(_write(tmp_path / "m3.arff", neg))
    assert ds.label_names == ["lab1", "lab2"] and ds.n_features == 3
    # an explicit label file wins over a (stale) -C in the relation name
    stale = DENSE.replace("@relation toy", "@relation 'toy: -C 2'")
    ds = read_arff(
        _write(tmp_path / "m4.arff", stale), label_file=_xml(tmp_path / "m4.xml", ["lab1", "lab2"])
    )
    assert ds.label_names == ["lab1", "lab2"]
    # so does n_labels
    assert read_arff(tmp_path / "m4.arff", n_labels=2).label_names == ["lab1", "lab2"]


def test_meka_positive_c_on_non_binary_fails(tmp_path):
    path = _write(tmp_path / "m.arff", DENSE.replace("@relation toy", "@relation 'toy: -C 2'"))
    with pytest.raises(
        ValueError, match=r"label attribute 'f1' has value 1.5 in data row 1; expected only 0 or 1"
    ):
        read_arff(path)


def test_yes_no_and_boolean_nominals(tmp_path):
    text = """@relation yn
@attribute g1 {YES,NO}
@attribute g2 {no,yes}
@attribute g3 {True,False}
@attribute g4 {y,n}
@attribute g5 {1,0}
@attribute lab1 {0,1}
@attribute lab2 numeric
@data
YES,no,True,n,1,1,0
NO,yes,False,y,0,0,1
"""
    ds = read_arff(_write(tmp_path / "yn.arff", text), n_labels=2)
    assert ds.feature_names == ["g1", "g2", "g3", "g4", "g5"]
    np.testing.assert_array_equal(ds.X, [[1, 0, 1, 0, 1], [0, 1, 0, 1, 0]])
    assert ds.binary_features.all()
    np.testing.assert_array_equal(ds.Y, [[1, 0], [0, 1]])


def test_multivalued_nominal_one_hot(tmp_path):
    text = """@relation oh
@attribute colour {red,green,'dark blue'}
@attribute size numeric
@attribute lab1 {0,1}
@attribute lab2 {0,1}
@data
green,1,1,0
'dark blue',2,0,1
red,3,1,1
"""
    ds = read_arff(_write(tmp_path / "oh.arff", text), n_labels=2)
    assert ds.feature_names == ["colour=red", "colour=green", "colour=dark blue", "size"]
    np.testing.assert_array_equal(ds.X, [[0, 1, 0, 1], [0, 0, 1, 2], [1, 0, 0, 3]])
    np.testing.assert_array_equal(ds.binary_features, [True, True, True, False])
    # a test file using a subset of the declared values gets the same columns
    test_text = text.split("@data")[0] + "@data\nred,5,0,0\n"
    _write(tmp_path / "oh-test.arff", test_text)
    tr, te = read_arff_pair(tmp_path / "oh.arff", tmp_path / "oh-test.arff", n_labels=2)
    assert tr.feature_names == te.feature_names
    np.testing.assert_array_equal(te.X, [[1, 0, 0, 5]])


def test_id_and_string_attributes_dropped(tmp_path):
    n = 60
    ids = ",".join(f"P{i:03d}" for i in range(n))
    rows = "\n".join(f"P{i:03d},'note {i}',{i % 3},{i % 2},{(i + 1) % 2}" for i in range(n))
    text = (
        f"@relation ids\n@attribute protein {{{ids}}}\n@attribute note string\n@attribute v numeric\n"
        f"@attribute lab1 {{0,1}}\n@attribute lab2 {{0,1}}\n@data\n{rows}\n"
    )
    path = _write(tmp_path / "ids.arff", text)
    with pytest.warns(DroppedAttributeWarning) as rec:
        ds = read_arff(path, n_labels=2)
    messages = " | ".join(str(w.message) for w in rec)
    assert "'protein'" in messages and "identifier" in messages and "'note'" in messages
    assert ds.feature_names == ["v"] and ds.n_samples == n
    # with a higher threshold the nominal is kept (one-hot), the string is still dropped
    with pytest.warns(DroppedAttributeWarning, match="'note'"):
        kept = read_arff(path, n_labels=2, id_threshold=1000)
    assert kept.n_features == n + 1


def test_missing_values_rejected(tmp_path):
    path = _write(tmp_path / "miss.arff", DENSE.replace("0,3.25,0,1,1", "0,?,0,1,1"))
    with pytest.raises(ValueError, match=r"miss\.arff: attribute 'f2' has 1 missing value"):
        read_arff(path, n_labels=2)


# ---- malformed input: each raises one clear line


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.arff: ARFF file not found"):
        read_arff(tmp_path / "nope.arff", n_labels=1)
    path = _write(tmp_path / "toy.arff", DENSE)
    with pytest.raises(FileNotFoundError, match="nope.xml: label file not found"):
        read_arff(path, label_file=tmp_path / "nope.xml")


def test_truncated_file(tmp_path):
    cut_row = _write(tmp_path / "cut.arff", DENSE[: DENSE.index("-1,0,1") + 4])
    with pytest.raises(ValueError, match=r"cut\.arff: malformed ARFF file: .*wrong number of values") as e:
        read_arff(cut_row, n_labels=2)
    _one_line(e)
    cut_header = _write(tmp_path / "head.arff", DENSE[: DENSE.index("@attribute b")])
    with pytest.raises(ValueError, match=r"head\.arff: no '@data' line; the file is truncated"):
        read_arff(cut_header, n_labels=2)
    with pytest.raises(ValueError, match="no '@data' line"):
        read_arff(_write(tmp_path / "empty.arff", ""), n_labels=2)
    cut_sparse = _write(tmp_path / "cs.arff", SPARSE[: SPARSE.index("{1 1,3 1}") + 5])
    with pytest.raises(ValueError, match=r"cs\.arff: malformed ARFF file: .*truncated file"):
        read_arff(cut_sparse, n_labels=2)
    bad_header = _write(tmp_path / "hdr.arff", DENSE.replace("@attribute b {0,1}", "@attribute b date"))
    with pytest.raises(ValueError, match=r"hdr\.arff: malformed ARFF file: Bad @ATTRIBUTE type, at line 6"):
        read_arff(bad_header, n_labels=2)


def test_row_with_too_many_values(tmp_path):
    path = _write(tmp_path / "long.arff", DENSE.replace("1.5,-2,1,0,1", "1.5,-2,1,0,1,7"))
    with pytest.raises(
        ValueError, match=r"long\.arff: malformed ARFF file: Bad @DATA instance .*wrong number"
    ):
        read_arff(path, n_labels=2)


def test_bad_nominal_and_numeric_values(tmp_path):
    path = _write(tmp_path / "nom.arff", DENSE.replace("0,3.25,0,1,1", "0,3.25,2,1,1"))
    with pytest.raises(ValueError, match=r"nom\.arff: malformed ARFF file: Data value 2 not found"):
        read_arff(path, n_labels=2)
    path = _write(tmp_path / "num.arff", DENSE.replace("0,3.25,0,1,1", "0,abc,0,1,1"))
    with pytest.raises(ValueError, match=r"num\.arff: malformed ARFF file"):
        read_arff(path, n_labels=2)


def test_sparse_index_out_of_range(tmp_path):
    path = _write(tmp_path / "sp.arff", SPARSE.replace("{1 1,3 1}", "{1 1,9 1}"))
    with pytest.raises(ValueError, match=r"sp\.arff: malformed ARFF file: .*sparse index outside") as e:
        read_arff(path, n_labels=2)
    _one_line(e)
    path = _write(tmp_path / "sp2.arff", SPARSE.replace("{1 1,3 1}", "{1 1,7 ?}"))
    with pytest.raises(ValueError, match=r"sparse index 7 in data row 3; expected indices 0\.\.4"):
        read_arff(path, n_labels=2)
    path = _write(tmp_path / "sp3.arff", SPARSE.replace("{1 1,3 1}", "0,1,0,1,0"))
    with pytest.raises(ValueError, match=r"sp3\.arff: malformed ARFF file: .*dense row inside sparse data"):
        read_arff(path, n_labels=2)


def test_label_file_naming_absent_attribute(tmp_path):
    path = _write(tmp_path / "toy.arff", DENSE)
    xml = _xml(tmp_path / "toy.xml", ["lab1", "ghost"])
    with pytest.raises(
        ValueError, match=r"toy\.xml: 1 label\(s\) not declared as attributes in .*'ghost'"
    ) as e:
        read_arff(path, label_file=xml)
    _one_line(e)
    bad_xml = _write(tmp_path / "bad.xml", "<labels><label name='lab1'>")
    with pytest.raises(ValueError, match=r"bad\.xml: not a valid MULAN label file"):
        read_arff(path, label_file=bad_xml)
    no_labels = _write(tmp_path / "none.xml", "<labels></labels>")
    with pytest.raises(ValueError, match=r"none\.xml: no <label name=\.\.\.> elements"):
        read_arff(path, label_file=no_labels)


def test_label_values(tmp_path):
    numeric = DENSE.replace("@attribute lab2 {0,1}", "@attribute lab2 numeric").replace(
        "0,3.25,0,1,1", "0,3.25,0,1,2"
    )
    with pytest.raises(
        ValueError, match=r"label attribute 'lab2' has value 2 in data row 2; expected only 0 or 1"
    ):
        read_arff(_write(tmp_path / "num.arff", numeric), n_labels=2)
    nominal = DENSE.replace("0,3.25,0,1,1", "0,3.25,0,1,2")
    with pytest.raises(
        ValueError, match=r"malformed ARFF file: Data value 2 not found in nominal declaration"
    ):
        read_arff(_write(tmp_path / "nom.arff", nominal), n_labels=2)
    declared = DENSE.replace("@attribute lab2 {0,1}", "@attribute lab2 {a,b}").replace(",1\n", ",a\n")
    declared = declared.replace(",0\n", ",b\n")
    with pytest.raises(ValueError, match=r"label attribute 'lab2' is nominal \{a,b\}; expected \{0,1\}"):
        read_arff(_write(tmp_path / "decl.arff", declared), n_labels=2)


def test_no_label_information(tmp_path):
    path = _write(tmp_path / "toy.arff", DENSE)
    with pytest.raises(ValueError, match=r"toy\.arff: no label information; pass label_file="):
        read_arff(path)
    with pytest.raises(ValueError, match=r"n_labels=5 but the file has 5 attributes"):
        read_arff(path, n_labels=5)


def test_train_test_header_mismatch(tmp_path):
    _write(tmp_path / "a.arff", DENSE)
    _write(tmp_path / "b.arff", DENSE.replace("@attribute f2 real", "@attribute g2 real"))
    with pytest.raises(ValueError, match=r"b\.arff: attributes differ from .*a\.arff"):
        read_arff_pair(tmp_path / "a.arff", tmp_path / "b.arff", n_labels=2)


# ------------------------------------------------------------------------------------------------
# MultiLabelDataset
# ------------------------------------------------------------------------------------------------


def test_dataset_container():
    ds = MultiLabelDataset(
        X=np.arange(12, dtype=np.float64).reshape(4, 3),
        Y=np.array([[1, 0], [1, 1], [0, 0], [0, 1]]),
        feature_names=["a", "b", "c"],
        label_names=["x", "y"],
        name="t",
    )
    assert ds.X.dtype == np.float32 and ds.Y.dtype == np.uint8
    assert (ds.n_samples, ds.n_features, ds.n_labels) == (4, 3, 2)
    assert ds.cardinality == pytest.approx(1.0)
    sub = ds.subset([3, 1])
    np.testing.assert_array_equal(sub.Y, [[0, 1], [1, 1]])
    sub.X[:] = 0
    assert ds.X[3, 0] == 9.0
    assert ds.subset(np.array([True, False, False, True])).n_samples == 2
    assert "n_samples=4" in repr(ds)
    with pytest.raises(ValueError, match="only 0 and 1"):
        MultiLabelDataset(np.zeros((2, 1)), np.array([[2], [0]]), ["a"], ["y"])
    with pytest.raises(ValueError, match="2 feature names for 1 feature columns"):
        MultiLabelDataset(np.zeros((2, 1)), np.zeros((2, 1)), ["a", "b"], ["y"])


# ------------------------------------------------------------------------------------------------
# digits-ml
# ------------------------------------------------------------------------------------------------


def test_digits_deterministic_and_shapes():
    a = make_digits_ml(n_samples=300, seed=3)
    b = make_digits_ml(n_samples=300, seed=3)
    c = make_digits_ml(n_samples=300, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    assert not np.array_equal(a.X, c.X)
    assert a.images.shape == (300, 1, 16, 16) and a.images.dtype == np.float32
    np.testing.assert_array_equal(a.X, a.images.reshape(300, -1))
    assert a.X.shape == (300, 256) and a.Y.shape == (300, 10)
    assert a.label_names == [f"digit_{k}" for k in range(10)]
    n_labels = a.Y.sum(axis=1)
    assert n_labels.min() >= 1 and n_labels.max() <= 4 and n_labels.max() > 1
    assert a.X.min() >= 0.0 and a.X.max() <= 1.0
    assert not a.binary_features.any()
    noisy = make_digits_ml(n_samples=50, seed=3, noise=0.2)
    assert noisy.X.min() >= 0.0 and noisy.X.max() <= 1.0
    empty = make_digits_ml(n_samples=0, canvas=24)  # n_samples=0 is allowed: an empty set of the same width
    assert empty.X.shape == (0, 576) and empty.Y.shape == (0, 10)


def test_digits_label_matches_content():
    images, target = _source_digits()
    flat = images.reshape(len(images), -1)
    ds = make_digits_ml(n_samples=200, canvas=8, max_digits=1, seed=0)
    assert (ds.Y.sum(axis=1) == 1).all()
    dist = ((ds.X[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
    match = dist.argmin(axis=1)
    assert np.allclose(dist[np.arange(200), match], 0.0)
    np.testing.assert_array_equal(target[match], ds.Y.argmax(axis=1))
    # on a bigger canvas the single digit sits somewhere inside and keeps its label
    big = make_digits_ml(n_samples=50, canvas=20, max_digits=1, seed=1)
    assert (big.Y.sum(axis=1) == 1).all()
    assert np.allclose(np.sort(big.X, axis=1)[:, -64:].sum(1) > 0, True)


def test_digits_train_test_disjoint_sources():
    tr_idx, te_idx = digits_source_split()
    assert len(np.intersect1d(tr_idx, te_idx)) == 0
    assert len(tr_idx) + len(te_idx) == 1797
    images, _ = _source_digits()
    flat = images.reshape(len(images), -1)
    for source, pool in (("train", tr_idx), ("test", te_idx)):
        ds = make_digits_ml(n_samples=100, canvas=8, max_digits=1, seed=5, source=source)
        dist = ((ds.X[:, None, :] - flat[None, :, :]) ** 2).sum(-1)
        assert np.isin(dist.argmin(axis=1), pool).all()
    data = load_dataset("digits-ml")
    assert data.name == "digits-ml"
    assert (data.train.n_samples, data.test.n_samples) == (2000, 1000)
    assert data.train.images.shape == (2000, 1, 16, 16)
    again = load_dataset("digits-ml")
    np.testing.assert_array_equal(data.test.X, again.test.X)


# ------------------------------------------------------------------------------------------------
# splits
# ------------------------------------------------------------------------------------------------


def _labels(n=600, L=8, seed=0):
    rng = np.random.default_rng(seed)
    Y = (rng.random((n, L)) < rng.uniform(0.05, 0.4, size=L)).astype(np.uint8)
    Y[:, 3] = 0  # a label without positives
    return Y


def test_validation_split():
    Y = _labels()
    tr, va = validation_split(Y, seed=0)
    assert abs(len(va) - len(Y) / 6) <= 0.05 * len(Y)
    assert len(np.intersect1d(tr, va)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([tr, va])), np.arange(len(Y)))
    assert (np.diff(tr) > 0).all() and (np.diff(va) > 0).all()
    tr2, va2 = validation_split(Y, seed=0)
    np.testing.assert_array_equal(va, va2)
    _, va3 = validation_split(Y, seed=1)
    assert not np.array_equal(va, va3)
    # stratified: every label's share in the validation part is close to the overall share
    for j in range(Y.shape[1]):
        if Y[:, j].sum() >= 30:
            assert abs(Y[va, j].mean() - Y[:, j].mean()) < 0.06


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_validation_split_holds_out_the_requested_fraction(fraction):
    # 1/6 (the default) would give 100 of these 600 rows; each requested fraction must move the size
    Y = _labels()
    for seed in (0, 1):
        tr, va = validation_split(Y, fraction=fraction, seed=seed)
        assert abs(len(va) - fraction * len(Y)) <= 0.01 * len(Y) and len(tr) + len(va) == len(Y)


def test_validation_split_edge_cases():
    tr, va = validation_split(np.zeros((10, 3), dtype=np.uint8), fraction=0.2)
    assert len(va) == 2 and len(tr) == 8
    tr, va = validation_split(np.array([[1], [0], [1], [0], [1], [0]]), fraction=0.5)
    assert len(tr) + len(va) == 6 and len(va) >= 1
    tr, va = validation_split(np.array([[1, 0], [0, 1]]))
    assert len(tr) == 1 and len(va) == 1
    with pytest.raises(ValueError, match="at least 2 samples"):
        validation_split(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="fraction"):
        validation_split(np.zeros((10, 3)), fraction=1.0)


def test_kfold_partitions_rows():
    Y = _labels(n=203)
    folds = kfold_splits(Y, n_splits=5, seed=0)
    assert len(folds) == 5
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(np.sort(tests), np.arange(len(Y)))
    for tr, te in folds:
        assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(Y)
        assert abs(len(te) - len(Y) / 5) <= 6
    again = kfold_splits(Y, n_splits=5, seed=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again, strict=True))
    with pytest.raises(ValueError, match="n_splits"):
        kfold_splits(Y, n_splits=1)


def test_arff_numbers_float32_would_round_are_kept_in_float64(tmp_path):
    rows = [f"{1700000000 + i},{0.25 * i},{i % 2},{(i // 2) % 2}" for i in range(12)]
    path = tmp_path / "stamps.arff"
    path.write_text("@relation stamps\n@attribute t numeric\n@attribute x numeric\n@attribute a {0,1}\n"
                    "@attribute b {0,1}\n@data\n" + "\n".join(rows) + "\n")
    ds = read_arff(path, n_labels=2)
    assert ds.X.dtype == np.float64  # float32 would read 1700000000..1700000011 as a handful of values
    assert len(np.unique(ds.X[:, 0])) == 12 and ds.X[11, 0] == 1700000011
    sparse = tmp_path / "sparse.arff"  # the same rows as sparse ARFF: decided without building a float64 matrix
    entries = [", ".join(f"{j} {v}" for j, v in enumerate(row.split(",")) if float(v) != 0) for row in rows]
    sparse.write_text(path.read_text().split("@data")[0] + "@data\n" + "\n".join(f"{{{e}}}" for e in entries) + "\n")
    np.testing.assert_array_equal(read_arff(sparse, n_labels=2).X, ds.X)
    plain = tmp_path / "plain.arff"
    plain.write_text(path.read_text().replace("1700000000", "17"))
    assert read_arff(plain, n_labels=2).X.dtype == np.float32  # data float32 holds keeps float32
    plain.write_text(sparse.read_text().replace("1700000000", "17"))
    assert read_arff(plain, n_labels=2).X.dtype == np.float32
    from mlkd.data.dataset import features_dtype

    assert features_dtype(np.array([[0.1, 3.0], [0.2, 1e3]])) == np.float32
    assert features_dtype(np.array([[1e39], [0.0]])) == np.float64  # beyond float32's range


def test_dataset_of_integer_timestamps_keeps_them_distinct():
    # integers are judged like float64 data: float32 would read 1700000000..1700000011 as a handful of values
    stamps = np.arange(1700000000, 1700000012, dtype=np.int64).reshape(-1, 1)
    ds = MultiLabelDataset(X=stamps, Y=stamps % 2, feature_names=["t"], label_names=["odd"])
    assert ds.X.dtype == np.float64 and len(np.unique(ds.X)) == 12 and ds.X[11, 0] == 1700000011
    small = MultiLabelDataset(X=stamps - 1700000000, Y=stamps % 2, feature_names=["t"], label_names=["odd"])
    assert small.X.dtype == np.float32  # integers float32 holds exactly stay float32


def test_integer_features_are_judged_without_float64_copies_of_the_matrix():
    # counts and 0/1 columns (float32 holds them exactly) were copied to float64 whole, three times over, to be
    # judged: a transient 6x the float32 result for the common case of integer counts
    import tracemalloc

    from mlkd.data.dataset import features_dtype

    rng = np.random.default_rng(0)
    counts = rng.integers(0, 5, size=(2000, 300))
    tracemalloc.start()
    try:
        assert features_dtype(counts) == np.float32
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < counts.nbytes // 4
    # the decision is the float64 judgement's, column by column, for wide integers of either sign and width
    for dtype in (np.int32, np.int64, np.uint32, np.uint64):
        for offset in (0, 2**24 - 3, 2**30):
            stamps = (offset + rng.integers(0, 40, size=(50, 3))).astype(dtype)
            mixed = np.hstack([counts[:50, :2].astype(dtype), stamps])
            assert features_dtype(mixed) == features_dtype(mixed.astype(np.float64)), (dtype, offset)
            if np.dtype(dtype).kind == "i":
                assert features_dtype(-mixed) == features_dtype(-mixed.astype(np.float64)), (dtype, offset)


def test_read_arff_for_model_names_the_flag_for_rows_without_labels(tmp_path):
    # a file of rows to predict ('?' labels) is read with labels_required=False; the default's error says so
    from mlkd.data import read_arff_for_model

    path = tmp_path / "q.arff"
    path.write_text("@relation q\n@attribute f0 numeric\n@attribute f1 numeric\n@attribute l0 {0,1}\n"
                    "@attribute l1 {0,1}\n@data\n0.1,0.2,?,1\n0.3,0.1,1,0\n")
    with pytest.raises(ValueError, match=r"'l0' has 1 missing value.*labels_required=False"):
        read_arff_for_model(path, ["f0", "f1"], ["l0", "l1"])
    with pytest.raises(ValueError, match=r"'lx'.*labels_required=False"):
        read_arff_for_model(path, ["f0", "f1"], ["l0", "lx"])
    assert read_arff_for_model(path, ["f0", "f1"], ["l0", "l1"], labels_required=False).X.shape == (2, 2)
