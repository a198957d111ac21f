"""The parameter sweep's defects: each parameter of a method, of the training and of the estimator, given a value
of the wrong type or out of range, is one clear ValueError naming it and what was expected, raised before any
training step; valid values (numpy scalars, a Python int for a float) keep working.

Each case below was, before its fix, a traceback from inside torch or Python's int/float conversion, a value
accepted silently, or an error after training had started.
"""

from __future__ import annotations

import re
from decimal import Decimal

import numpy as np
import pytest

import mlkd.trainer as trainer_module
from mlkd import MultiLabelClassifier
from mlkd.methods import make_config

from .helpers import linear_problem

X, Y = linear_problem(n=40, d=5, L=3)
TINY = dict(hidden=8, max_epochs=1, patience=1, batch_size=16)


@pytest.fixture
def no_training(monkeypatch):
    """Fails the test if a training step runs: a bad parameter must be refused before any training time."""
    def step(*args, **kwargs):
        raise AssertionError("a training step ran before the bad parameter was refused")

    monkeypatch.setattr(trainer_module, "training_step", step)


def _refused(error, call, *expected):
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    assert "\n" not in message, message
    for text in expected:
        assert re.search(text, message), f"{text!r} not in: {message}"
    assert "expected" in message, message
    return message


# -- method parameters through make_config (every surface: estimator, --param, bench specs) -------------------
@pytest.mark.parametrize("value", [np.float32(8.5), np.float16(8.5), Decimal("8.5")], ids=repr)
def test_a_fractional_number_of_any_type_is_no_integer_parameter(value, no_training):
    # np.float32(8.5) was truncated to hidden=8 without a word (only Python and numpy float64s were checked)
    _refused(ValueError, lambda: MultiLabelClassifier("bce", **{**TINY, "hidden": value}).fit(X, Y),
             "'hidden'", "expected an integer")


@pytest.mark.parametrize("value", [np.float32("inf"), np.float64("-inf"), np.float32("nan")], ids=repr)
def test_a_non_finite_numpy_float_is_no_integer_parameter(value, no_training):
    # np.float32(inf) was an OverflowError traceback from int()
    _refused(ValueError, lambda: MultiLabelClassifier("bce", **{**TINY, "depth": value}).fit(X, Y),
             "'depth'", "expected an integer")


@pytest.mark.parametrize("method, key", [("ls", "epsilon"), ("cskd", "temperature"), ("distill", "lambda_cd")])
def test_an_integer_beyond_any_float_is_refused_not_an_overflow_traceback(method, key):
    # 10**400 for a float parameter was "OverflowError: int too large to convert to float" from float()
    _refused(ValueError, lambda: make_config(method, {key: 10**400}), f"'{key}'", "expected a number")


def test_huge_integers_are_shortened_in_the_message():
    # the whole 401 digits of 10**400 (or the 301 of int(1e300)) filled the one line
    for value in (10**400, 1e300):
        message = _refused(ValueError, lambda v=value: make_config("bce", {"hidden": v}).validate(5, 3), "'hidden'")
        assert len(message) < 200, message


@pytest.mark.parametrize("value", [np.int64(8), np.int32(8), np.uint8(8), np.float32(8.0), 8.0, "8"], ids=repr)
def test_integral_values_of_any_type_are_still_an_integer_parameter(value):
    assert make_config("bce", {"hidden": value}).hidden == 8
    assert type(make_config("bce", {"hidden": value}).hidden) is int


# -- distill's teacher parameters ----------------------------------------------------------------------------
@pytest.mark.parametrize("key, value", [("teacher_hidden", 0), ("teacher_hidden", -1), ("teacher_depth", -1),
                                        ("teacher_depth", 65), ("teacher_embed_dim", 0)])
def test_a_bad_teacher_size_names_the_teacher_parameter(key, value, no_training):
    # the error named 'hidden' / 'depth' / 'embed_dim', the student's parameters, which the user had not set
    _refused(ValueError, lambda: MultiLabelClassifier("distill", **{**TINY, key: value}).fit(X, Y),
             f"parameter '{key}'={value}", "expected a value in")


@pytest.fixture(scope="module")
def saved_teacher(tmp_path_factory):
    path = tmp_path_factory.mktemp("teacher") / "labelwise"
    MultiLabelClassifier("labelwise", hidden=8, depth=1, embed_dim=4, max_epochs=1).fit(X, Y).save(path)
    return path


@pytest.mark.parametrize("key, value", [("teacher_hidden", 64), ("teacher_hidden", -1), ("teacher_backbone", "cnnx"),
                                        ("teacher_depth", 3), ("teacher_embed_dim", 16), ("teacher_max_epochs", 5),
                                        ("teacher_lr", 0.01)])
def test_a_teacher_setting_beside_teacher_dir_is_refused_not_ignored(key, value, saved_teacher, no_training):
    # a saved teacher is loaded as it is: these were accepted (-1 and 'cnnx' too) and had no effect
    _refused(ValueError, lambda: MultiLabelClassifier("distill", teacher_dir=str(saved_teacher), embed_dim=4,
                                                      **{**TINY, key: value}).fit(X, Y),
             f"'{key}'", "teacher_dir")


# -- temperatures ------------------------------------------------------------------------------------------
TEMPERATURES = [("ban", "temperature", {"generations": 2}), ("cskd", "temperature", {}),
                ("tfkd_self", "temperature", {}), ("tfkd_reg", "temperature", {}), ("raskd", "tau", {}),
                ("raskd_plus", "temperature", {}), ("distill", "T", {"logit_loss": "kd"})]


@pytest.mark.parametrize("method, key, extra", TEMPERATURES, ids=[f"{m}-{k}" for m, k, _ in TEMPERATURES])
@pytest.mark.parametrize("value", [1e-300, 1e-40])
def test_a_temperature_too_small_for_float32_is_refused_before_training(method, key, extra, value, no_training):
    # logits / T overflowed float32: "training diverged at epoch 0 (loss=nan)" after the first epoch had run
    _refused(ValueError, lambda: MultiLabelClassifier(method, **{**TINY, **extra, key: value}).fit(X, Y),
             f"'{key}'={value!r}", "expected a value in")


@pytest.mark.parametrize("method, key, extra", TEMPERATURES, ids=[f"{m}-{k}" for m, k, _ in TEMPERATURES])
def test_the_smallest_temperature_accepted_trains(method, key, extra):
    from mlkd.methods.base import MIN_TEMPERATURE

    clf = MultiLabelClassifier(method, **{**TINY, **extra, key: MIN_TEMPERATURE, "max_epochs": 3}).fit(X, Y)
    assert np.isfinite(clf.predict_proba(X)).all()
