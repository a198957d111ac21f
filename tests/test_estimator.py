"""The scikit-learn estimators: three-line use, sklearn tooling, model files, bad input."""

import json
import pickle
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MinMaxScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import mlkd.estimator as estimator_module
from mlkd import MultiLabelClassifier, SKDTEAClassifier, load_model
from mlkd.data.splits import validation_split
from mlkd.estimator import SPLIT_SEED
from mlkd.methods import config_fields
from mlkd.metrics import tune_threshold
from mlkd.preprocessing import FeatureScaler

from .helpers import TINY, linear_problem

# Checks that cannot pass by design; each reason is what a reviewer would need to accept it. The xfails are
# strict: a check listed here that starts passing fails the suite, so a stale reason cannot linger.
EXPECTED_FAILED_CHECKS = {
    "check_no_attributes_set_in_init": (
        "MultiLabelClassifier takes method parameters as **kwargs (they depend on `method`); the per-method "
        "classes such as SKDTEAClassifier declare them explicitly and pass this check"
    ),
    "check_classifier_multioutput": (
        "predict() applies the validation-tuned threshold (PROTOCOL.md §4), not 0.5, so it can differ from "
        "predict_proba() > 0.5 by design"
    ),
    "check_classifiers_train": (
        "same reason: it asserts argmax(predict_proba) == predict, i.e. a 0.5 threshold; the check's other "
        "assertions (accuracy > 0.83, shapes, errors) hold: test_the_estimators_in_the_check_list_pass_"
        "check_classifiers_train_at_threshold_half runs them on the check's own problem"
    ),
}

# The settings the checks run with. SKDTEA gets patience=30: at patience=10 it stopped at epoch ~15 on the
# check's binary blobs (best epoch 4) and scored 0.77 < the check's 0.83, a failure that the threshold reason
# above hid (audit D1).
CHECKED_ESTIMATORS = [
    SKDTEAClassifier(hidden=16, max_epochs=30, patience=30, batch_size=32),
    MultiLabelClassifier("bce", hidden=16, max_epochs=30, patience=10, batch_size=32),
]


def _expected_failures(estimator):
    if type(estimator) is MultiLabelClassifier:
        return EXPECTED_FAILED_CHECKS
    # SKDTEAClassifier declares its parameters, and at these settings its tuned threshold happens to give
    # argmax's predictions on the check's blobs, so check_classifiers_train passes: neither reason holds
    return {k: v for k, v in EXPECTED_FAILED_CHECKS.items() if k == "check_classifier_multioutput"}


# Skips raised inside these checks, none of them GPU-related: "does not have a decision_function method" (the
# estimators have none: not applicable) and "SCIPY_ARRAY_API is not set" (mlkd takes numpy / scipy.sparse input
# only; the array-API check runs only when that variable is set). The pandas checks run: pandas is in the dev
# extra.
@parametrize_with_checks(CHECKED_ESTIMATORS, expected_failed_checks=_expected_failures, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


@pytest.fixture(scope="module")
def data():
    X, Y = linear_problem(n=360, d=10, L=5, seed=4)
    return X[:300], Y[:300], X[300:], Y[300:]


@pytest.fixture(scope="module")
def fitted(data):
    X, Y, _, _ = data
    return SKDTEAClassifier(hidden=32, max_epochs=40, random_state=0).fit(X, Y)


def test_three_lines_fit_predict(fitted, data):
    _, _, Xt, Yt = data
    proba = fitted.predict_proba(Xt)
    pred = fitted.predict(Xt)
    assert proba.shape == pred.shape == Yt.shape
    assert np.all((proba >= 0) & (proba <= 1))
    assert np.array_equal(pred, (proba >= fitted.threshold_).astype(int))
    assert 0.0 < fitted.threshold_ < 1.0
    assert fitted.score(Xt, Yt) > 0.6  # example-F1; an all-ones guess scores ≈ 0.45 here
    assert fitted.evaluate(Xt, Yt)["mAP"] > 0.8


def test_fit_is_deterministic_for_a_seed(data):
    X, Y, Xt, _ = data
    a = MultiLabelClassifier("skdtea", hidden=16, max_epochs=5, random_state=3).fit(X, Y).predict_proba(Xt)
    b = MultiLabelClassifier("skdtea", hidden=16, max_epochs=5, random_state=3).fit(X, Y).predict_proba(Xt)
    c = MultiLabelClassifier("skdtea", hidden=16, max_epochs=5, random_state=4).fit(X, Y).predict_proba(Xt)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_explicit_validation_set_is_used(data):
    X, Y, Xt, Yt = data
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y, X_val=Xt, Y_val=Yt)
    from mlkd.metrics import mean_average_precision

    best = clf.history_[clf.best_epoch_]["val_score"]
    assert best == pytest.approx(mean_average_precision(Yt, clf.predict_proba(Xt)))


@pytest.fixture
def recorded_fits(monkeypatch):
    """The training and validation rows each ``Trainer.fit`` of the estimator receives (already scaled)."""
    seen = []

    class RecordingTrainer(estimator_module.Trainer):
        def fit(self, method, X, Y, X_val=None, Y_val=None, **kwargs):
            seen.append((X.copy(), Y.copy(), X_val.copy(), Y_val.copy()))
            return super().fit(method, X, Y, X_val, Y_val, **kwargs)

    monkeypatch.setattr(estimator_module, "Trainer", RecordingTrainer)
    return seen


@pytest.mark.parametrize("fraction", [0.3, 0.1])
def test_validation_fraction_sets_the_internal_hold_out(recorded_fits, fraction):
    X, Y = linear_problem(n=300, d=6, L=4, seed=1)
    MultiLabelClassifier("bce", hidden=8, max_epochs=1, validation_fraction=fraction).fit(X, Y)
    (_, Y_tr, _, Y_val), = recorded_fits
    tr, va = validation_split(Y, fraction=fraction, seed=SPLIT_SEED)
    assert abs(len(Y_val) - fraction * 300) <= 3 and len(Y_tr) == 300 - len(Y_val)  # 1/6 would be about 50
    assert np.array_equal(Y_tr, Y[tr]) and np.array_equal(Y_val, Y[va])


def test_scaler_is_fitted_on_the_training_rows_and_the_threshold_tuned_on_the_validation_rows(recorded_fits):
    X, Y = linear_problem(n=360, d=10, L=5, seed=4)
    X = X * np.linspace(0.5, 3.0, X.shape[1], dtype=np.float32) + 1.0  # statistics a scaler must really fit
    clf = MultiLabelClassifier("bce", hidden=16, max_epochs=10, random_state=0).fit(X, Y)
    tr, va = validation_split(Y, fraction=1 / 6, seed=SPLIT_SEED)
    train_only, all_rows = FeatureScaler().fit(X[tr]), FeatureScaler().fit(X)
    assert not np.allclose(train_only.mean, all_rows.mean)  # the validation rows would move the statistics
    assert np.array_equal(clf.scaler_.mean, train_only.mean) and np.array_equal(clf.scaler_.scale, train_only.scale)
    (X_tr, _, X_val, _), = recorded_fits
    assert np.array_equal(X_tr, train_only.transform(X[tr])) and np.array_equal(X_val, train_only.transform(X[va]))
    # PROTOCOL §4: the threshold is tuned on the held-out rows, and tuning on the training rows would differ
    assert clf.threshold_ == tune_threshold(Y[va], clf.predict_proba(X[va]))
    assert tune_threshold(Y[tr], clf.predict_proba(X[tr])) != clf.threshold_


def test_an_explicit_validation_set_tunes_the_threshold(data):
    X, Y, Xt, Yt = data
    clf = MultiLabelClassifier("bce", hidden=16, max_epochs=10, random_state=0).fit(X, Y, X_val=Xt, Y_val=Yt)
    assert clf.threshold_ == tune_threshold(Yt, clf.predict_proba(Xt))
    assert tune_threshold(Y, clf.predict_proba(X)) != clf.threshold_  # the training rows would give another
    assert np.array_equal(clf.scaler_.mean, FeatureScaler().fit(X).mean)  # every row of X trains: all of X


def test_per_label_and_fixed_thresholds(data):
    X, Y, Xt, _ = data
    per_label = MultiLabelClassifier("bce", threshold="tuned-per-label", **TINY).fit(X, Y)
    assert per_label.threshold_.shape == (Y.shape[1],)
    fixed = MultiLabelClassifier("bce", threshold=0.3, **TINY).fit(X, Y)
    assert fixed.threshold_ == 0.3
    assert np.array_equal(fixed.predict(Xt), (fixed.predict_proba(Xt) >= 0.3).astype(int))


def test_sklearn_tooling_pipeline_gridsearch_cross_val(data):
    X, Y, _, _ = data
    pipe = make_pipeline(MinMaxScaler(), MultiLabelClassifier("ls", **TINY))
    assert pipe.fit(X, Y).predict(X).shape == Y.shape
    # each candidate is fitted and scored, and the refitted best model was trained with the chosen value (for
    # MultiLabelClassifier's **kwargs parameters too): what a user of GridSearchCV relies on
    for grid, name, values in (
        (GridSearchCV(SKDTEAClassifier(**TINY), {"alpha": [0.0, 0.5]}, cv=2), "alpha", [0.0, 0.5]),
        (GridSearchCV(MultiLabelClassifier("skdtea", **TINY), {"tau": [1.0, 2.0]}, cv=2), "tau", [1.0, 2.0]),
    ):
        grid.fit(X, Y)
        assert [p[name] for p in grid.cv_results_["params"]] == values
        scores = grid.cv_results_["mean_test_score"]
        assert np.all(np.isfinite(scores)) and grid.best_score_ == scores.max()
        best = values[int(np.argmax(scores))]
        assert grid.best_params_ == {name: best} and getattr(grid.best_estimator_.model_.config, name) == best
    scores = cross_val_score(MultiLabelClassifier("bce", **TINY), X, Y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.parametrize("n_labels", [1, 2, 3])
def test_probability_scorers_and_grid_search_work_with_any_number_of_labels(n_labels, tmp_path):
    # classes_ as one [0, 1] per label: with arange(n_labels) a 2-label model looked binary to scikit-learn's
    # scorers (average_precision failed, GridSearchCV scored NaN) and a 1-column Y looked like one class
    from sklearn.metrics import average_precision_score, get_scorer

    X, Y = linear_problem(n=90, d=5, L=3)
    Y = Y[:, :n_labels]
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    assert [list(c) for c in clf.classes_] == [[0, 1]] * n_labels
    assert [list(c) for c in load_model(clf.save(tmp_path / "m")).classes_] == [[0, 1]] * n_labels
    for name in ("average_precision", "roc_auc"):
        assert np.isfinite(get_scorer(name)(clf, X, Y))
    assert get_scorer("average_precision")(clf, X, Y) == pytest.approx(
        average_precision_score(Y, clf.predict_proba(X)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed candidate is only a warning in GridSearchCV: make it fail here
        grid = GridSearchCV(SKDTEAClassifier(**TINY), {"detach_teacher": np.array([True, False])}, cv=2,
                            scoring="average_precision").fit(X, Y)  # numpy booleans, as a grid array gives
    assert np.all(np.isfinite(grid.cv_results_["mean_test_score"]))


def test_fit_takes_the_target_as_y_too_as_scikit_learn_code_writes_it():
    X, Y = linear_problem(n=60, d=5, L=3)
    by_name = MultiLabelClassifier("bce", **TINY).fit(X, y=Y)
    assert np.array_equal(by_name.predict_proba(X), MultiLabelClassifier("bce", **TINY).fit(X, Y).predict_proba(X))
    with pytest.raises(ValueError, match="given twice"):
        MultiLabelClassifier("bce", **TINY).fit(X, Y, y=Y)
    with pytest.raises(ValueError, match="requires y to be passed"):
        MultiLabelClassifier("bce", **TINY).fit(X)


def test_skdtea_classifier_exposes_every_method_flag_as_a_parameter():
    params = SKDTEAClassifier().get_params()
    for flag in ("alpha", "tau", "label_noise", "detach_teacher", "shared_decoder", "teacher_input", "alignment",
                 "warmup", "lambda_rec"):
        assert params[flag] == config_fields("skdtea")[flag]
    assert "method" not in params
    assert clone(SKDTEAClassifier(alpha=0.2)).alpha == 0.2


@pytest.mark.parametrize("variant", [{}, {"readonly_memmap": True}, {"readonly_memmap": True, "X_dtype": "float32"}])
@pytest.mark.parametrize("index", range(len(CHECKED_ESTIMATORS)))
def test_the_estimators_in_the_check_list_pass_check_classifiers_train_at_threshold_half(index, variant):
    """The xfailed check_classifiers_train itself, with the check list's settings, passes once the threshold is
    0.5: its accuracy > 0.83 on its own blobs, shapes and errors hold, and only the threshold reason is left."""
    from sklearn.utils.estimator_checks import check_classifiers_train

    est = clone(CHECKED_ESTIMATORS[index]).set_params(threshold=0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_classifiers_train(type(est).__name__, est, **variant)


def test_fixed_threshold_agrees_with_argmax_and_learns_blobs():
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=300, centers=2, random_state=0)
    for est in (SKDTEAClassifier(hidden=16, max_epochs=30, threshold=0.5), MultiLabelClassifier("bce", **TINY)):
        est.set_params(threshold=0.5).fit(X, y)
        assert np.array_equal(est.classes_[np.argmax(est.predict_proba(X), axis=1)], est.predict(X))
        assert (est.predict(X) == y).mean() > 0.83


def test_binary_1d_target_is_a_single_label(data):
    X, Y, Xt, _ = data
    y = np.where(Y[:, 0] == 1, "yes", "no")
    clf = MultiLabelClassifier("bce", **TINY).fit(X, y)
    assert set(clf.predict(Xt)) <= {"yes", "no"} and clf.predict_proba(Xt).shape == (len(Xt), 2)


def test_save_load_round_trip_gives_identical_predictions(fitted, data, tmp_path):
    _, _, Xt, _ = data
    fitted.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "m")
    assert np.array_equal(loaded.predict_proba(Xt), fitted.predict_proba(Xt))
    assert np.array_equal(loaded.predict(Xt), fitted.predict(Xt))
    assert loaded.get_params() == fitted.get_params()
    assert SKDTEAClassifier.load(tmp_path / "m").threshold_ == fitted.threshold_
    bce = MultiLabelClassifier("bce", **TINY).fit(*data[:2]).save(tmp_path / "bce")
    with pytest.raises(ValueError, match="trained with method 'bce', not SKDTEAClassifier's 'skdtea'"):
        SKDTEAClassifier.load(bce)  # was a bce MultiLabelClassifier, returned as if SKDTEA
    assert MultiLabelClassifier.load(bce).method == "bce"


def test_loading_never_unpickles(fitted, tmp_path):
    fitted.save(tmp_path / "m")

    class Boom:
        def __reduce__(self):
            return (print, ("pickle executed!",))

    (tmp_path / "m" / "model.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model(tmp_path / "m")


def test_model_dir_problems_are_clear_errors(fitted, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_model(tmp_path / "absent")
    fitted.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["format_version"] = 99
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="format version 99, newer than this mlkd"):
        load_model(tmp_path / "m")
    fitted.save(tmp_path / "n")
    (tmp_path / "n" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="model.safetensors is missing"):
        load_model(tmp_path / "n")
    fitted.save(tmp_path / "o")
    data = (tmp_path / "o" / "model.safetensors").read_bytes()
    (tmp_path / "o" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupted"):
        load_model(tmp_path / "o")


def _bad(X, Y, **kw):
    return lambda: MultiLabelClassifier(**{**TINY, **kw}).fit(X, Y)


X0, Y0 = linear_problem(n=40, d=4, L=3)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (_bad(np.where(np.eye(40, 4) > 0, np.nan, X0), Y0), "NaN"),
        (_bad(np.where(np.eye(40, 4) > 0, np.inf, X0), Y0), "infinity"),
        (_bad(X0, Y0 * 2), "Y must contain only 0 and 1; found other values such as \\[2\\]"),
        (_bad(X0, Y0[:-1]), "different numbers of rows \\(40 and 39\\)"),
        (_bad(X0[:1], Y0[:1]), "1 sample"),
        (_bad(X0, Y0[:, :0]), "no label columns"),
        (_bad(X0, np.arange(40) % 3), "Only binary classification is supported for a 1-D y"),
        (_bad(X0, np.linspace(0, 1, 40)), "Unknown label type: continuous"),
        (_bad(X0, Y0, method="nope"), "unknown method 'nope'"),
        (_bad(X0, Y0, alhpa=0.1), "unknown parameter\\(s\\) 'alhpa'"),
        (_bad(X0, Y0, alpha=2.0), "'alpha'=2.0 is out of range"),
        (_bad(X0, Y0, lr=-1.0), "'lr'=-1.0 is invalid"),
        (_bad(X0, Y0, threshold="best"), "threshold='best' is invalid"),
        (_bad(X0, Y0, validation_fraction=0.9), "validation_fraction=0.9 is invalid"),
    ],
)
def test_bad_input_is_a_clear_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_predict_before_fit_and_wrong_feature_count(fitted, data):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        SKDTEAClassifier().predict(data[2])
    with pytest.raises(ValueError, match="X has 3 features, but SKDTEAClassifier is expecting 10"):
        fitted.predict(data[2][:, :3])


def test_constant_labels_are_accepted_with_a_warning(data):
    X, Y, Xt, _ = data
    Y = Y.copy()
    Y[:, 1] = 0
    with pytest.warns(UserWarning, match="1 label\\(s\\) never positive"):
        clf = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    assert clf.predict_proba(Xt)[:, 1].max() < 0.5


# -- what a user's inputs may look like (the 2026-12-03 audit) ----------------------------------------------
def test_label_names_are_strings_one_per_label_and_a_model_with_them_loads(tmp_path):
    X, Y = linear_problem(n=120, d=6, L=4)
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y, label_names=[10, 11, 12, 13])  # e.g. pandas' int columns
    assert clf.label_names_ == ["10", "11", "12", "13"]
    assert load_model(clf.save(tmp_path / "m")).label_names_ == ["10", "11", "12", "13"]
    names = np.array(list("wxyz"))  # or a pandas Index
    assert MultiLabelClassifier("bce", **TINY).fit(X, Y, label_names=names).label_names_ == list("wxyz")
    for bad, message in ((["a", "b", "c"], "has 3 name"), ("abcd", "expected a list of 4 label name")):
        with pytest.raises(ValueError, match=message):
            MultiLabelClassifier("bce", **TINY).fit(X, Y, label_names=bad)


def test_a_binary_target_of_strings_held_as_objects_saves_and_loads(tmp_path):
    X, Y = linear_problem(n=120, d=6, L=1)
    y = np.where(Y[:, 0] == 1, "yes", "no").astype(object)  # what a pandas string column gives
    clf = MultiLabelClassifier("bce", **TINY).fit(X, y)
    model = tmp_path / "m"
    clf.save(model)
    np.testing.assert_array_equal(load_model(model).predict(X), clf.predict(X))
    assert set(clf.predict(X)) <= {"yes", "no"}


def test_a_target_save_cannot_write_is_refused_before_the_directory_is_made(tmp_path):
    X, Y = linear_problem(n=120, d=6, L=1)
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y[:, 0])
    clf.binary_classes_ = np.array([object(), object()])  # classes that are neither numbers nor strings
    with pytest.raises(ValueError, match="cannot save class labels of dtype object"):
        clf.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_a_failed_refit_leaves_the_fitted_model_as_it_was():
    X, Y = linear_problem(n=120, d=6, L=3)
    y = np.where(Y[:, 0] == 1, "yes", "no")
    clf = MultiLabelClassifier("bce", **TINY).fit(X, y)
    before = clf.predict_proba(X)
    with pytest.raises(ValueError, match="only 0 and 1"):
        clf.fit(X[:, :4], Y * 2)  # another shape and bad labels: fails after the inputs were partly read
    assert clf.n_features_in_ == 6 and list(clf.classes_) == ["no", "yes"]
    np.testing.assert_array_equal(clf.predict_proba(X), before)
    assert set(clf.predict(X)) <= {"yes", "no"}


def test_float64_features_are_standardised_before_they_become_float32():
    # a feature with a large offset and unit spread: float32 keeps ~8 distinct values of 1e7 + N(0, 1)
    rng = np.random.default_rng(0)
    s = rng.normal(size=(400, 1))
    X, y = 1e7 + s, (s[:, 0] > 0).astype(int)
    clf = MultiLabelClassifier("bce", max_epochs=15, hidden=16, random_state=0).fit(X[:300], y[:300])
    assert (clf.predict(X[300:]) == y[300:]).mean() > 0.95
    assert clf.scaler_.mean.dtype == np.float64
    # float32 rows keep the float32 statistics (and the bits of every earlier fit)
    X32, Y32 = linear_problem(n=120, d=6, L=3)
    assert MultiLabelClassifier("bce", **TINY).fit(X32, Y32).scaler_.mean.dtype == np.float32


def test_score_weights_each_examples_f1():
    X, Y = linear_problem(n=120, d=6, L=3)
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    w = np.zeros(len(X))
    w[:10] = 1
    assert clf.score(X, Y, sample_weight=w) == pytest.approx(clf.score(X[:10], Y[:10]))
    assert clf.score(X, Y, sample_weight=np.full(len(X), 3.0)) == pytest.approx(clf.score(X, Y))
    with pytest.raises(ValueError, match="Negative values"):
        clf.score(X, Y, sample_weight=-w)


def test_bad_settings_and_shapes_name_what_was_wrong():
    X, Y = linear_problem(n=120, d=6, L=3)
    with pytest.raises(ValueError, match="'alpha'=nan is not a number; expected a value in"):
        MultiLabelClassifier("skdtea", alpha=float("nan"), **TINY).fit(X, Y)
    with pytest.raises(ValueError, match="X_val and Y_val have different numbers of rows"):
        MultiLabelClassifier("bce", **TINY).fit(X, Y, X_val=X[:20], Y_val=Y[:10])
    with pytest.raises(ValueError, match="rows of different lengths"):
        MultiLabelClassifier("bce", **TINY).fit(X[:3], [[1, 0], [1], [0, 1]])
    with pytest.raises(ValueError, match=r"Unknown label type for y \(values such as 1, 'a'"):
        MultiLabelClassifier("bce", **TINY).fit(X, np.array([1, "a"] * 60, dtype=object))
    with pytest.raises(TypeError, match="always trains 'skdtea'"):
        SKDTEAClassifier(method="bce")
    clf = MultiLabelClassifier("bce", **TINY).fit(X, Y)
    with pytest.raises(ValueError, match=r"threshold: got 2.0 -- expected values in \[0, 1\]"):
        clf.evaluate(X, Y, threshold=2.0)
    assert clf.evaluate(X, Y, threshold=[0.3, 0.5, 0.7])["example_f1"] >= 0


# -- the 2026-12-04 audit of the estimator API ---------------------------------------------------------------
def test_save_refuses_a_non_empty_directory_unless_overwrite(tmp_path):
    X, Y = linear_problem(n=60, d=6, L=3)
    first = MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X, Y)
    first.save(tmp_path / "model")
    other = MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X[:, :4], Y[:, :2])
    with pytest.raises(ValueError, match=r"model directory .*model is not empty \(holds config.json, "
                                         r"model.safetensors\); expected an empty or new directory, or overwrite=True"):
        other.save(tmp_path / "model")
    assert load_model(tmp_path / "model").n_features_in_ == 6  # the first model is untouched
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"notes is not empty \(holds notes.txt\)"):
        first.save(notes)
    assert [p.name for p in notes.iterdir()] == ["notes.txt"]
    assert other.save(tmp_path / "model", overwrite=True) == tmp_path / "model"  # replaced, atomically
    assert load_model(tmp_path / "model").n_features_in_ == 4
    other.save(notes, overwrite=True)
    assert sorted(p.name for p in notes.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    (tmp_path / "empty").mkdir()
    first.save(tmp_path / "empty")  # an empty directory is a new one
    for bad in ("", None):
        with pytest.raises(ValueError, match="model path .* is invalid; expected the path of a new or empty"):
            first.save(bad)


def test_a_value_that_overflows_float32_once_standardised_is_a_clear_error():
    X, Y = linear_problem(n=60, d=6, L=3)
    X64 = X.astype(np.float64)
    huge = X64[:5].copy()
    huge[2, 3] = 1e39  # finite in float64; about 1e39 standard deviations from the training mean
    for clf in (MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X64, Y),  # float64 statistics
                MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X, Y)):  # float32 statistics
        with pytest.raises(ValueError, match=r"^X has a value too large for float32 after standardisation "
                                             r"\(column 3: 1e\+39\); expected values within float32's range"):
            clf.predict_proba(huge)
    with pytest.raises(ValueError, match=r"^X_val has a value too large for float32 .*\(column 3: 1e\+39\)"):
        MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X64, Y, X_val=huge, Y_val=Y[:5])
    X64[7, 1] = 1e200  # its square overflows float64: the column's statistics would be NaN
    with pytest.raises(ValueError, match=r"^X column 1 has values too large to standardise \(such as 1e\+200\)"):
        MultiLabelClassifier("bce", hidden=8, max_epochs=1).fit(X64, Y, X_val=X[:5], Y_val=Y[:5])  # all rows train


def test_standardising_in_place_gives_the_same_bits():
    from mlkd.preprocessing import FeatureScaler

    rng = np.random.default_rng(1)
    for dtype in (np.float32, np.float64):
        X = (rng.normal(size=(50, 7)) * 1e3 + 17).astype(dtype)
        scaler = FeatureScaler().fit(X)
        expected = ((X - scaler.mean) / scaler.scale).astype(np.float32)
        assert np.array_equal(scaler.transform(X), expected)
        assert np.array_equal(scaler.transform(X.astype(np.float64)),
                              ((X.astype(np.float64).astype(dtype) - scaler.mean) / scaler.scale).astype(np.float32))


def test_a_torch_device_is_accepted_and_saved_as_its_string(tmp_path):
    import torch

    X, Y = linear_problem(n=60, d=6, L=3)
    clf = MultiLabelClassifier("bce", hidden=8, max_epochs=1, device=torch.device("cpu")).fit(X, Y)
    loaded = load_model(clf.save(tmp_path / "m"))
    assert loaded.device == "cpu" == str(clf.device)
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_an_unknown_keyword_is_kept_until_fit_then_named_with_a_suggestion():
    X, Y = linear_problem(n=60, d=6, L=3)
    clf = SKDTEAClassifier(n_jobs=2, hidden=8, max_epochs=1)  # scikit-learn's convention: checked at fit
    assert clf.get_params()["n_jobs"] == 2 and clone(clf).get_params()["n_jobs"] == 2
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'n_jobs' for SKDTEAClassifier: neither a parameter "
                                         r"of method 'skdtea' \(expected some of: activation, .*\) nor a training "
                                         r"setting \(batch_size, .*num_threads.*\); 'n_jobs': did you mean "
                                         r"'num_threads'\?$"):
        clf.fit(X, Y)
    with pytest.raises(ValueError, match=r"'max_epoch': did you mean 'max_epochs'\?$"):
        MultiLabelClassifier("bce", max_epoch=5, hidden=8).fit(X, Y)
    with pytest.raises(ValueError, match=r"'tua': did you mean 'tau'\?$"):
        MultiLabelClassifier("skdtea", tua=5, hidden=8, max_epochs=1).fit(X, Y)
