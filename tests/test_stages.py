"""The stage runner: multi-stage training (teacher → student, round after round) is data run by one trainer."""

import pytest
import torch

import mlkd.stages as stages_module
from mlkd.stages import Stage, StageOutcome, run_stages
from mlkd.trainer import TrainConfig, TrainResult

from .helpers import linear_problem

X, Y = linear_problem(n=80, d=6, L=4, seed=5)
BASE = TrainConfig(max_epochs=2, batch_size=32, seed=0)
SMALL = {"hidden": 8}


def test_stages_run_in_order_and_every_result_is_returned(monkeypatch):
    built = []
    original = stages_module.build_method

    def recording(name, *args, **kwargs):
        built.append(name)
        return original(name, *args, **kwargs)

    monkeypatch.setattr(stages_module, "build_method", recording)
    stages = [
        Stage("round0", "bce", SMALL),
        Stage("teacher", "tea", SMALL, train={"max_epochs": 3}),
        Stage("student", "kdtea", SMALL, teacher="teacher", train={"max_epochs": 1}),
    ]
    out = run_stages(stages, X[:60], Y[:60], X[60:], Y[60:], BASE)
    assert built == ["bce", "tea", "kdtea"]
    assert list(out) == ["round0", "teacher", "student"]
    assert all(isinstance(o, StageOutcome) and isinstance(o.result, TrainResult) for o in out.values())
    assert [o.result.epochs_run for o in out.values()] == [2, 3, 1]  # base config, then each stage's overrides
    assert all("val_score" in o.result.history[-1] for o in out.values())
    model, result = out["student"]
    assert model.name == "kdtea" and "distillation" in result.history[0]


def test_fresh_stages_draw_different_initial_weights():
    out = run_stages([Stage("a", "bce", SMALL), Stage("b", "bce", SMALL)], X, Y, config=TrainConfig(max_epochs=1))
    a, b = (o.model.state_dict() for o in out.values())
    assert not torch.equal(a["net.0.weight"], b["net.0.weight"])


def test_init_from_copies_the_earlier_stage_weights():
    stages = [
        Stage("a", "bce", SMALL),
        Stage("b", "bce", SMALL, init_from="a", train={"lr": 1e-9, "max_epochs": 1}),  # a step this small ≈ none
    ]
    out = run_stages(stages, X, Y, config=BASE)
    a, b = out["a"].model.state_dict(), out["b"].model.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert out["a"].model is not out["b"].model


def test_init_from_a_different_architecture_is_a_value_error():
    stages = [Stage("a", "bce", SMALL), Stage("b", "bce", {"hidden": 16}, init_from="a")]
    with pytest.raises(ValueError, match="cannot init_from 'a': the architectures differ"):
        run_stages(stages, X, Y, config=TrainConfig(max_epochs=1))


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        ([Stage("s", "kdtea", SMALL, teacher="t"), Stage("t", "tea", SMALL)], "teacher='t', which is not an earlier"),
        ([Stage("a", "bce", SMALL), Stage("b", "bce", SMALL, init_from="nope")], "init_from='nope', which is not an"),
        ([Stage("a", "bce"), Stage("a", "ls")], "stage name 'a' is used twice"),
        ([Stage("s", "kdtea", SMALL)], "method 'kdtea' needs a teacher"),
        ([Stage("a", "bce"), Stage("b", "nope")], "unknown method 'nope'"),
        ([Stage("a", "bce"), Stage("b", "bce", {"alhpa": 1})], r"unknown parameter\(s\) 'alhpa'"),
        ([Stage("a", "bce"), Stage("b", "bce", train={"epochs": 3})], r"stage 'b': unknown training setting\(s\)"),
        ([Stage("a", "bce"), Stage("b", "bce", train={"lr": -1.0})], "'lr'=-1.0 is invalid"),
        ([], "empty stage list"),
        # a user's own stage gets the checks of a new fit (an image_shape without a CNN would train an MLP)
        ([Stage("a", "labelwise", {"image_shape": "1,2,2"})], "'image_shape'='1,2,2' applies to backbone='cnn'"),
    ],
)
def test_bad_stage_lists_fail_before_anything_trains(monkeypatch, stages, match):
    def no_training(*args, **kwargs):
        raise AssertionError("a stage trained before the stage list was validated")

    monkeypatch.setattr(stages_module.Trainer, "fit", no_training)
    with pytest.raises(ValueError, match=match):
        run_stages(stages, X, Y, config=BASE)


def test_teacher_is_attached_only_while_its_student_trains():
    out = run_stages([Stage("t", "bce", SMALL), Stage("s", "kdtea", SMALL, teacher="t")], X, Y, config=BASE)
    assert out["s"].model.teacher is None
    assert all(p.requires_grad for p in out["t"].model.parameters())  # unfrozen again once it has taught


@pytest.mark.parametrize(
    ("stages", "match"),
    [
        # a teacher the method never reads would train a plain model the user took for a distilled one
        ([Stage("t", "bce", SMALL), Stage("s", "bce", SMALL, teacher="t")], "method 'bce' does not use a teacher"),
        # BAN distils from the previous generation's MLP: a TEA has none (was an AttributeError after 't' trained)
        ([Stage("t", "tea", SMALL), Stage("s", "ban", {**SMALL, "generations": 2}, teacher="t")],
         "method 'ban' cannot learn from teacher 't' \\(method 'tea'\\): .*; expected a teacher of a BCE-MLP method "
         "\\(ban, bce, .*\\)$"),
        # an ensemble copies its teacher's MLP: another width was a RuntimeError after 't' trained, another
        # activation an ensemble whose copied generation computed what its teacher never did
        ([Stage("t", "bce", {"hidden": 16}), Stage("s", "ban", {**SMALL, "generations": 2, "ensemble": True},
                                                   teacher="t")], "'hidden'=16; expected 8"),
        ([Stage("t", "bce", {**SMALL, "activation": "relu"}),
          Stage("s", "ban", {**SMALL, "generations": 2, "ensemble": True}, teacher="t")], "'activation'='relu'"),
        ([Stage("t", "bce", SMALL), Stage("s", "ban", {**SMALL, "generations": 3, "ensemble": True}, teacher="t")],
         "needs a teacher holding 2 generation"),
        # LED needs the teacher's label-wise embeddings (was an AttributeError after 't' trained)
        ([Stage("t", "bce", SMALL), Stage("s", "distill", {**SMALL, "embed_dim": 4}, teacher="t")],
         "feature_loss='led' needs a teacher with label-wise embeddings"),
    ],
)
def test_a_teacher_its_student_cannot_learn_from_fails_before_anything_trains(monkeypatch, stages, match):
    test_bad_stage_lists_fail_before_anything_trains(monkeypatch, stages, match)


def test_distill_learns_logits_from_a_teacher_without_label_wise_embeddings():
    stages = [Stage("t", "bce", SMALL),
              Stage("s", "distill", {**SMALL, "embed_dim": 4, "feature_loss": "none"}, teacher="t")]
    out = run_stages(stages, X, Y, config=BASE)
    assert "mld" in out["s"].result.history[0]
