"""Multi-round self-distillation [code + adapt] (METHODS.md §5, Jeong & Chung 2024), multi-label.

Stages ``round0 … round{R}`` (R = ``rounds``, default 4): round 0 is a plain BCE-MLP on the labels; round
r + 1 is a FRESH network (new initial weights, same architecture) trained only on round r's probabilities,
BCE(z, sg(σ(z_r))) with T = 1 and no hard-label term. Round r's logits come from its frozen, eval-mode model
on the same training rows. The fitted model is round R; ``MultiLabelClassifier.stage_models_`` keeps every
round's model and ``stage_results_`` every round's training record. Each round early-stops on the
validation labels, like any other method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._kd import backbone_params
from .base import Batch, StepContext, StepOutput, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class MultiRoundConfig(MLPConfig):
    rounds: int = 4  # distillation rounds after round 0; the fitted model is round ``rounds``

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("rounds", self.rounds, 1, 1000)


@register
class MultiRound(BCE):
    name = "multiround"
    Config = MultiRoundConfig
    needs_teacher = True

    @classmethod
    def stages(cls, config: MultiRoundConfig) -> list:
        from ..stages import Stage

        params = dataclasses.asdict(config)
        rounds = [Stage("round0", BCE.name, backbone_params(config))]
        rounds += [Stage(f"round{r}", cls.name, params, teacher=f"round{r - 1}") for r in range(1, config.rounds + 1)]
        return rounds

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        soft_targets = torch.sigmoid(self.teacher_output(batch.x))
        logits = self.net(batch.x)
        loss = F.binary_cross_entropy_with_logits(logits, soft_targets)
        return StepOutput({"distillation": loss}, logits, {"soft_targets": soft_targets})
