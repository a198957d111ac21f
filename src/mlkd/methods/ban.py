"""Born-again networks [adapt] (METHODS.md §6, Furlanello et al. 2018), multi-label.

Generations 1 … G (``generations``, default 3) are stages ``gen1 … gen{G}``: gen 1 is a plain BCE-MLP on
the labels; gen k ≥ 2 is a fresh network trained with BCE(z, y) + λ·binKL_T(z_{k−1} ‖ z), z_{k−1} the
frozen gen k − 1 network's logits (λ = 1, T = 1); T² only with ``t2_scaling=True`` (METHODS.md writes plain
binKL; the same at the default T = 1). The stage training gen k is this method with
``generations=k``, so "a BAN of k generations" and "generation k" are the same model.

``ensemble=True`` predicts with the mean of all G generations' probabilities (returned as its logit). The
model then holds the earlier generations' networks as frozen submodules (``ancestors``: never trained, kept
in eval mode, saved with the model so a loaded file predicts the same). They are copied from the chain of
teachers when the teacher is attached, so gen k's ancestors are gen k − 1's ancestors plus gen k − 1. The
validation score that early-stops gen k is then the ensemble's.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import MLP
from ._kd import KD_REDUCTIONS, backbone_params, binary_kl, inert_kd_params, kd_factor
from .base import MIN_TEMPERATURE, REGISTRY, Batch, Method, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class BANConfig(MLPConfig):
    generations: int = 3  # G ≥ 2; the fitted model is generation G
    lambda_kd: float = 1.0
    temperature: float = 1.0
    ensemble: bool = False
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)
    t2_scaling: bool = False  # × T² on the KD term (until 2026-12-03; the same at T = 1); METHODS.md: none

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("generations", self.generations, 2, 1000)
        check_range("lambda_kd", self.lambda_kd, 0.0, 1e6)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller value > 0 still loads
        check_range("temperature", self.temperature, MIN_TEMPERATURE, 1e6)

    def inert_params(self) -> set[str]:
        return inert_kd_params(self.lambda_kd, self.temperature)


@register
class BAN(BCE):
    name = "ban"
    Config = BANConfig
    needs_teacher = True

    def __init__(self, n_features: int, n_labels: int, config: BANConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        n_ancestors = c.generations - 1 if c.ensemble else 0
        self.ancestors = nn.ModuleList(
            MLP(n_features, [c.hidden] * c.depth, n_labels, c.activation, c.dropout) for _ in range(n_ancestors)
        )
        self.ancestors.requires_grad_(False)

    @classmethod
    def stages(cls, config: BANConfig) -> list:
        from ..stages import Stage

        params = dataclasses.asdict(config)
        gens = [Stage("gen1", BCE.name, backbone_params(config))]
        gens += [
            Stage(f"gen{k}", cls.name, {**params, "generations": k}, teacher=f"gen{k - 1}")
            for k in range(2, config.generations + 1)
        ]
        return gens

    @classmethod
    def teacher_problem(cls, config: BANConfig, teacher: type[Method], teacher_config) -> str | None:
        if not issubclass(teacher, BCE):  # step reads the previous generation's MLP, ``teacher.net``
            mlps = ", ".join(sorted(name for name, method in REGISTRY.items() if issubclass(method, BCE)))
            return f"BAN distils from the previous generation's MLP; expected a teacher of a BCE-MLP method ({mlps})"
        if not config.ensemble:
            return None
        held = 1 + (teacher_config.generations - 1 if issubclass(teacher, BAN) and teacher_config.ensemble else 0)
        if held != config.generations - 1:
            return (f"a {config.generations}-generation ensemble needs a teacher holding {config.generations - 1} "
                    f"generation(s); got {held} (train it through BAN.stages)")
        for name in ("hidden", "depth", "activation"):  # the ensemble runs copies of the teacher's MLP as its own
            if getattr(teacher_config, name) != getattr(config, name):
                return (f"the ensemble copies the teacher's network, whose {name!r}={getattr(teacher_config, name)!r}; "
                        f"expected {getattr(config, name)!r} like this generation's")
        return None

    def forward(self, x: Tensor) -> Tensor:
        if not self.config.ensemble:
            return self.net(x)
        probs = torch.stack([torch.sigmoid(net(x)) for net in [*self.ancestors, self.net]]).mean(0)
        return torch.logit(probs, eps=1e-7)

    def attach_teacher(self, teacher: nn.Module | None) -> None:
        super().attach_teacher(teacher)
        if teacher is not None and self.config.ensemble:
            nets = [*getattr(teacher, "ancestors", []), teacher.net]
            if len(nets) != len(self.ancestors):
                raise ValueError(
                    f"a {self.config.generations}-generation ensemble needs a teacher holding "
                    f"{len(self.ancestors)} generation(s); got {len(nets)} (train it through BAN.stages)"
                )
            for mine, theirs in zip(self.ancestors, nets, strict=True):
                mine.load_state_dict(theirs.state_dict())

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        self.ancestors.eval()  # frozen generations never use dropout
        return self

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        if self.teacher is None:
            self.teacher_output(batch.x)  # raises the base class's "needs a trained teacher" error
        with torch.no_grad():
            teacher_logits = self.teacher.net(batch.x)  # generation k − 1 alone, not its ensemble
        logits = self.net(batch.x)
        kd = binary_kl(teacher_logits, logits, c.temperature, reduction=c.kd_reduction)
        losses = {
            "bce": F.binary_cross_entropy_with_logits(logits, batch.y),
            "distillation": c.lambda_kd * kd_factor(c.temperature, c.t2_scaling) * kd,
        }
        return StepOutput(losses, logits)
