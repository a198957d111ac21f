"""PLL student [code + adapt] (METHODS.md §5, Jeong & Chung 2024), multi-label.

Multi-label version of "top-2 candidates, weight ½": per label, the target is the given label y_k where the
teacher's decision (σ(t_k) ≥ 0.5) agrees with it and ½ where they disagree. Two stages: "teacher" is a
plain BCE-MLP on the labels; "student" is this method, initialised from the teacher's weights and trained
once on those targets with BCE or binary GCE (q = 0.7, the official code's value).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._kd import bce_teacher_stages, binary_gce
from .base import Batch, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class PLLConfig(MLPConfig):
    loss: str = "bce"  # "bce" | "gce"
    gce_q: float = 0.7

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_choice("loss", self.loss, ("bce", "gce"))
        check_range("gce_q", self.gce_q, 0.0, 1.0, low_open=True)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # q → 0 is BCE (loss="bce"); below 1e-3, GCE's (1 − p^q)/q loses its digits in float32 (0 below ~1e-7,
        # 0/0 = NaN once q itself is 0 in float32). New fits only: a model an earlier mlkd saved with a smaller
        # q > 0 still loads
        check_range("gce_q", self.gce_q, 1e-3, 1.0)


def pll_targets(y: Tensor, teacher_logits: Tensor) -> Tensor:
    """y where the teacher's 0.5-thresholded decision equals y, ½ where they disagree."""
    teacher_says = (teacher_logits >= 0).to(y.dtype)  # σ(t) ≥ 0.5
    return torch.where(teacher_says == y, y, torch.full_like(y, 0.5))


@register
class PLL(BCE):
    name = "pll"
    Config = PLLConfig
    needs_teacher = True

    @classmethod
    def stages(cls, config: PLLConfig) -> list:
        return bce_teacher_stages(cls.name, config, init_from_teacher=True)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        targets = pll_targets(batch.y, self.teacher_output(batch.x))
        logits = self.net(batch.x)
        if self.config.loss == "gce":
            loss = binary_gce(logits, targets, self.config.gce_q)
        else:
            loss = F.binary_cross_entropy_with_logits(logits, targets)
        return StepOutput({self.config.loss: loss}, logits, {"soft_targets": targets})
