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


# -- training settings ---------------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, tmp_path):
    """``mlkd ARGS`` in this process: (exit status, stderr lines)."""
    from mlkd.cli import main

    def run(*args):
        capsys.readouterr()
        rc = main([str(a) for a in args])
        return rc, capsys.readouterr().err.strip().splitlines()

    return run


def _arff(path):
    lines = ["@relation tiny", *(f"@attribute f{j} numeric" for j in range(5)),
             *(f"@attribute l{j} {{0,1}}" for j in range(3)), "@data"]
    lines += [",".join([*(f"{v:.4f}" for v in x), *(str(int(v)) for v in y)]) for x, y in zip(X, Y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("nproc", [2**70, 10**400, 1025], ids=["2**70", "10**400", "1025"])
def test_a_process_count_beyond_any_machine_is_refused_before_spawning(nproc, no_training, monkeypatch):
    # 2**70 was an OverflowError traceback from torch's spawn (uncaught by 'mlkd fit'); 1025 spawned 1025 processes
    # of torch each, which took this test's machine down
    def spawn(*args):
        raise AssertionError("processes were spawned")

    monkeypatch.setattr("mlkd.distributed._run_spawned", spawn)
    _refused(ValueError, lambda: MultiLabelClassifier("bce", **TINY, nproc=nproc).fit(X, Y), "nproc", "1024")


def test_fit_ddp_refuses_a_process_count_beyond_any_machine():
    from mlkd.distributed import fit_ddp
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig

    model = build_method("bce", 5, 3, {"hidden": 8})
    _refused(ValueError, lambda: fit_ddp(model, X, Y, config=TrainConfig(max_epochs=1), nproc=2**70), "nproc", "1024")


def test_mlkd_fit_nproc_beyond_any_machine_is_one_line(cli, tmp_path):
    rc, err = cli("fit", _arff(tmp_path / "t.arff"), "--n-labels", "3", "-m", "bce", "-p", "hidden=8", "-q",
                  "--max-epochs", "1", "--out", tmp_path / "m", "--nproc", str(2**70))
    assert rc == 2 and len(err) == 1 and err[0].startswith("mlkd: error: nproc=") and "expected" in err[0], err


def test_checkpoint_seconds_beyond_any_float_is_refused(tmp_path, no_training):
    # math.isfinite(10**400) was an OverflowError traceback
    _refused(ValueError, lambda: MultiLabelClassifier("bce", **TINY, checkpoint_dir=tmp_path / "ck",
                                                      checkpoint_seconds=10**400).fit(X, Y),
             "checkpoint_seconds", "seconds ≥ 0")


@pytest.mark.parametrize("verbose", ["maybe", "no", None, [True], float("nan"), 1.0, -1], ids=repr)
def test_verbose_is_a_flag_not_anything_truthy(verbose, no_training):
    # verbose="no" showed the progress bar (bool("no")), None/[True]/nan were taken without a word
    _refused(ValueError, lambda: MultiLabelClassifier("bce", **TINY, verbose=verbose).fit(X, Y), "verbose")


@pytest.mark.parametrize("verbose", [False, True, 0, 1, 2, np.True_, np.int64(1)], ids=repr)
def test_verbose_takes_a_bool_or_a_scikit_learn_verbosity_level(verbose):
    assert MultiLabelClassifier("bce", **TINY, verbose=verbose).fit(X, Y).history_


@pytest.mark.parametrize("progress", ["maybe", None, 2, [True], float("nan"), 1.0], ids=repr)
def test_train_config_progress_is_a_flag(progress):
    from mlkd.trainer import TrainConfig

    _refused(ValueError, lambda: TrainConfig(progress=progress).validate(), "'progress'", "True or False")


@pytest.mark.parametrize("device", ["", "cpux", "CPU", " cpu ", "tpu", "meta", "cuda:x"], ids=repr)
def test_train_config_refuses_a_misspelt_or_unsupported_device(device):
    # TrainConfig took any string: Trainer then failed inside torch.device (RuntimeError) or later ('meta')
    import torch

    from mlkd.trainer import TrainConfig, Trainer

    _refused(ValueError, lambda: TrainConfig(device=device).validate(), "device", "'auto', 'cpu'")
    _refused(ValueError, lambda: Trainer(TrainConfig(device=torch.device("meta"))), "device", "'auto', 'cpu'")


def test_the_trainer_refuses_a_cuda_device_this_machine_lacks():
    # an AssertionError "Torch not compiled with CUDA enabled" from inside torch, on the first tensor moved there
    from mlkd.trainer import TrainConfig, Trainer

    _refused(ValueError, lambda: Trainer(TrainConfig(device="cuda:99")), "cuda:99", "not available")


@pytest.mark.parametrize("seed", [np.int64(3), np.int32(3), np.uint16(3)], ids=repr)
def test_the_trainer_takes_a_numpy_integer_seed(seed):
    # torch.Generator.manual_seed(np.int64(3)) was "TypeError: an integer is required"
    from mlkd.methods import build_method
    from mlkd.trainer import TrainConfig, Trainer

    def weights(seed):
        model = build_method("bce", 5, 3, {"hidden": 8}, seed=0)
        Trainer(TrainConfig(seed=seed, max_epochs=2, batch_size=16)).fit(model, X, Y)
        return [p.detach().clone() for p in model.parameters()]

    assert all((a == b).all() for a, b in zip(weights(seed), weights(3), strict=True))


def test_train_config_takes_numpy_scalars_as_the_python_values_they_equal():
    from mlkd.trainer import TrainConfig

    cfg = TrainConfig(max_epochs=np.int64(2), lr=np.float32(0.5), fused_optimizer=np.False_, fused_mlp=np.True_,
                      progress=np.False_, num_threads=np.int32(1), seed=np.uint8(7))
    cfg.validate()  # np.bool_ flags were refused ("expected True or False")
    assert [type(getattr(cfg, k)) for k in ("max_epochs", "lr", "fused_optimizer", "progress", "seed")] == \
        [int, float, bool, bool, int]


# -- bench grid specs and mlkd distill's specs -----------------------------------------------------------------
@pytest.mark.parametrize("spec, key", [("distill:feature_loss=none", "feature_loss"),
                                       ("distill:logit_loss=none,feature_loss=none", "logit_loss"),
                                       ("distill:extra_feature_loss=none", "extra_feature_loss")])
def test_a_bench_spec_takes_the_choice_none(spec, key):
    # 'none' was read as null (None), and refused: "parameter 'feature_loss'=None is not a valid str"
    from mlkd.bench.grid import Grid, MethodSpec

    parsed = MethodSpec.parse(spec)
    assert parsed.params[key] == "none" and parsed.label == spec
    cell, = Grid.build(["emotions"], [spec], seeds=[0]).cells()
    assert cell.config["params"].get(key, "none") == "none"
    if spec.count("=") == 1:  # the same as a --param shared by the grid's methods
        from mlkd.bench.grid import parse_assignments

        shared = parse_assignments(f"{key}=none", "--param")
        assert Grid.build(["emotions"], ["distill"], seeds=[0], params=shared).cells()[0].config == cell.config


def test_a_bench_spec_keeps_null_for_a_parameter_that_takes_none():
    from mlkd.bench.grid import MethodSpec

    assert MethodSpec.parse("distill:teacher_backbone=none").params["teacher_backbone"] is None
    assert MethodSpec.parse("skdtea:alignment=null").params["alignment"] is None


@pytest.mark.parametrize("key, value, expected", [
    ("max_epochs", "abc", "an integer"), ("batch_size", "2.5", "an integer"), ("patience", "None", "an integer"),
    ("lr", "abc", "a number"), ("weight_decay", "[1]", "a number"), ("fused_mlp", "maybe", "true or false"),
    ("max_epochs", "1" + "0" * 400, "an integer"), ("lr", "1" + "0" * 400, "a number")])
def test_a_bad_training_setting_in_a_bench_spec_says_what_was_expected(key, value, expected):
    # no "expected" in the message; 10**400 was an OverflowError traceback from float()
    from mlkd.bench.grid import Grid

    message = _refused(ValueError, lambda: Grid.build(["emotions"], [f"bce:{key}={value}"], seeds=[0]),
                       f"'{key}'", expected)
    assert len(message) < 200, message


@pytest.mark.parametrize("spec, key, value", [("--student-spec", "max_epochs", "abc"),
                                              ("--student-spec", "batch_size", "2.5"),
                                              ("--student-spec", "lr", "abc"), ("--student-spec", "weight_decay", "")])
def test_a_bad_training_setting_of_mlkd_distill_says_what_was_expected(spec, key, value, cli, tmp_path, no_training):
    rc, err = cli("distill", _arff(tmp_path / "t.arff"), "--n-labels", "3", "-q", "--out", tmp_path / "m",
                  spec, f"{key}={value}")
    assert rc == 2 and len(err) == 1 and f"{key}=" in err[0] and "expected" in err[0], err


@pytest.mark.parametrize("method", [["bce"], {"name": "bce"}, None, 3], ids=repr)
def test_a_method_that_is_no_name_is_one_clear_error(method, no_training):
    # a list or dict was "TypeError: unhashable type: 'list'" from the registry lookup
    _refused(ValueError, lambda: MultiLabelClassifier(method, **TINY).fit(X, Y), "method", "expected one of")


def test_huge_estimator_settings_are_shortened_in_the_message(no_training):
    for key in ("max_epochs", "lr", "random_state", "threshold", "validation_fraction", "label_noise_rate",
                "num_threads"):
        message = _refused(ValueError, lambda k=key: MultiLabelClassifier("bce", **{**TINY, k: 10**400}).fit(X, Y),
                           key)
        assert len(message) < 250, message


@pytest.mark.parametrize("q", [1e-300, 1e-50, 1e-9])
def test_a_gce_q_too_small_for_float32_is_refused_before_training(q, no_training):
    # 1e-300 is 0 in float32: GCE's (1 − p^q)/q was 0/0, "diverged at epoch 0 (loss=nan)" after the epoch had run;
    # below ~1e-7 1 − p^q rounded to 0 and the logged loss was 0
    _refused(ValueError, lambda: MultiLabelClassifier("pll", **TINY, loss="gce", gce_q=q).fit(X, Y),
             f"'gce_q'={q!r}", r"expected a value in \[0.001, 1.0\]")


def test_the_smallest_gce_q_accepted_trains_with_a_true_loss():
    clf = MultiLabelClassifier("pll", **{**TINY, "max_epochs": 3}, loss="gce", gce_q=1e-3).fit(X, Y)
    assert np.isfinite(clf.predict_proba(X)).all() and clf.history_[-1]["gce"] > 0.1


# -- saved models of an earlier mlkd -----------------------------------------------------------------------
EARLIER = [*((m, k, e, 1e-7) for m, k, e in TEMPERATURES), ("pll", "gce_q", {"loss": "gce"}, 1e-4)]


@pytest.mark.parametrize("method, key, extra, earlier", EARLIER, ids=[f"{m}-{k}" for m, k, _, _ in EARLIER])
def test_a_saved_model_with_a_value_the_new_bounds_refuse_still_loads(method, key, extra, earlier, tmp_path):
    # an earlier mlkd accepted any temperature > 0 and any gce_q > 0 (and fitted these: 1e-7 does not overflow
    # float32); the new bounds are for new fits only, loading a saved model must not refuse its config
    import json

    from mlkd import load_model

    clf = MultiLabelClassifier(method, **{**TINY, **extra}).fit(X, Y)
    path = clf.save(tmp_path / "model")
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config["method_params"][key] = earlier
    config_path.write_text(json.dumps(config))
    loaded = load_model(path)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)
    _refused(ValueError, lambda: MultiLabelClassifier(method, **{**TINY, **extra, key: earlier}).fit(X, Y),
             f"'{key}'={earlier!r}", "expected a value in")
