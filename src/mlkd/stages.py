"""Multi-stage training as data: a list of stages that the one trainer runs in order.

A stage names a registered method, its parameters, training overrides, and optionally an earlier stage
whose trained model is its frozen teacher (``teacher=``) and/or whose weights initialise it (``init_from=``).
Teacher → student KD, KD-TEA, multi-round self-distillation, born-again generations and the PLL student
are all stage lists; nothing here knows any method's name.

>>> stages = [
...     Stage("teacher", "tea", {"hidden": 1024}),
...     Stage("student", "kdtea", {"hidden": 128, "beta": 1.0}, teacher="teacher"),
... ]
>>> outcomes = run_stages(stages, X, Y, X_val, Y_val, TrainConfig(max_epochs=100))
>>> student, result = outcomes["student"]

Multi-round self-distillation is ``[Stage("round0", m), Stage("round1", m_sd, teacher="round0"), …]``; a
student initialised from its teacher adds ``init_from="teacher"``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .methods.base import Method, build_method, make_config, method_class
from .trainer import TrainConfig, Trainer, TrainResult


@dataclass(frozen=True)
class Stage:
    """One training run of a stage list.

    name : unique within the list; later stages refer to it.
    method : a registered method name; params : its parameters (``mlkd.methods.config_fields``).
    train : ``TrainConfig`` fields overriding the run's base config for this stage only.
    teacher : an earlier stage whose trained model is attached frozen (eval mode, no grad, not saved); only for a
        method that learns from one (``needs_teacher``), and one it can learn from (``Method.teacher_problem``).
    init_from : an earlier stage whose weights are copied into this stage's fresh model (same architecture).
    fit : False for a stage whose model is used as built, untrained (e.g. a method that loads a saved model).
    derived : True for a stage a method's ``stages()`` made from its own, already checked config (the estimator
        sets it): its parameters then skip ``MethodConfig.validate_new``, which a user's own stages get.
    """

    name: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    teacher: str | None = None
    init_from: str | None = None
    fit: bool = True
    derived: bool = False


class StageOutcome(NamedTuple):
    """A trained stage: unpacks as ``model, result = outcome``."""

    model: Method
    result: TrainResult


def stage_train_config(stage: Stage, base: TrainConfig) -> TrainConfig:
    """The base config with the stage's overrides; unknown or invalid settings are a ValueError."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(stage.train) - known)
    if unknown:
        raise ValueError(
            f"stage {stage.name!r}: unknown training setting(s) {', '.join(map(repr, unknown))}; "
            f"expected some of: {', '.join(sorted(known))}"
        )
    cfg = dataclasses.replace(base, **stage.train)
    cfg.validate()
    return cfg


def check_stages(stages: list[Stage], n_features: int, n_labels: int, base: TrainConfig) -> None:
    """Validate a whole stage list before anything trains, so a typo in the last stage costs nothing."""
    if not stages:
        raise ValueError("got an empty stage list; expected at least one Stage")
    seen: dict[str, Stage] = {}
    for stage in stages:
        if not isinstance(stage, Stage):
            raise ValueError(f"got {stage!r}; expected mlkd.stages.Stage objects")
        if stage.name in seen:
            raise ValueError(f"stage name {stage.name!r} is used twice; expected unique names")
        for role in ("teacher", "init_from"):
            ref = getattr(stage, role)
            if ref is not None and ref not in seen:
                raise ValueError(
                    f"stage {stage.name!r} has {role}={ref!r}, which is not an earlier stage; "
                    f"expected one of: {', '.join(map(repr, sorted(seen))) or '(none before it)'}"
                )
        cls = method_class(stage.method)
        if cls.needs_teacher and stage.teacher is None:
            raise ValueError(f"stage {stage.name!r}: method {stage.method!r} needs a teacher; set teacher=<stage>")
        if not cls.needs_teacher and stage.teacher is not None:  # it would train as if there were none
            raise ValueError(f"stage {stage.name!r}: method {stage.method!r} does not use a teacher; expected "
                             "teacher=None, or a method that learns from one")
        config = make_config(stage.method, stage.params)
        config.validate(n_features, n_labels)
        if not stage.derived:
            config.validate_new(n_features, n_labels)
        if stage.teacher is not None:
            teacher = seen[stage.teacher]
            problem = cls.teacher_problem(config, method_class(teacher.method), make_config(teacher.method,
                                                                                           teacher.params))
            if problem:
                raise ValueError(f"stage {stage.name!r}: method {stage.method!r} cannot learn from teacher "
                                 f"{teacher.name!r} (method {teacher.method!r}): {problem}")
        stage_train_config(stage, base)
        seen[stage.name] = stage


def run_stages(
    stages: list[Stage], X, Y, X_val=None, Y_val=None, config: TrainConfig | None = None, input_scaler=None
) -> dict[str, StageOutcome]:
    """Train every stage in order with the one ``Trainer``; returns ``{stage name: (model, TrainResult)}``.

    X : array of shape (n_samples, n_features); Y : array of shape (n_samples, n_labels), 0/1; the
    validation pair (optional) drives each stage's early stopping. Stage ``i`` draws its initial weights
    from seed ``config.seed + i`` (successive fresh models differ) and trains with its own config's seed.
    A teacher is attached frozen for its student's training and detached afterwards, so each returned
    model is a plain predictor. ``input_scaler`` (the ``FeatureScaler`` that produced X, if any) is passed
    to each model's ``Method.bind_input_scaler`` before it trains. A stage with ``fit=False`` is not trained
    (its TrainResult is empty).
    """
    base = config or TrainConfig()
    n_features, n_labels = X.shape[1], Y.shape[1]
    check_stages(stages, n_features, n_labels, base)
    outcomes: dict[str, StageOutcome] = {}
    for position, stage in enumerate(stages):
        cfg = stage_train_config(stage, base)
        model = build_method(stage.method, n_features, n_labels, stage.params, seed=cfg.seed + position,
                             derived=stage.derived)
        if stage.init_from is not None:
            source = outcomes[stage.init_from].model
            try:
                model.load_state_dict(source.state_dict(), strict=True)
            except RuntimeError as exc:
                raise ValueError(
                    f"stage {stage.name!r} cannot init_from {stage.init_from!r}: the architectures differ "
                    f"({str(exc).splitlines()[0]}); expected the same modules and shapes"
                ) from None
        if input_scaler is not None:
            model.bind_input_scaler(input_scaler)
        if not stage.fit:
            model.eval()
            outcomes[stage.name] = StageOutcome(model, TrainResult())
            continue
        teacher = outcomes[stage.teacher].model if stage.teacher is not None else None
        with model.taught_by(teacher):
            result = Trainer(cfg).fit(model, X, Y, X_val, Y_val)
        outcomes[stage.name] = StageOutcome(model, result)
    return outcomes
