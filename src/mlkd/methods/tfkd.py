"""Teacher-free KD baselines [adapt] (METHODS.md §6, Yuan et al. 2020), multi-label.

- ``tfkd_self``: two stages. "teacher" trains a plain BCE-MLP; "student" trains a fresh copy (same network,
  new initial weights) with (1−α)·BCE(z, y) + α·T²·binKL_T(teacher ‖ z); α = 0.9, T = 4.
- ``tfkd_reg``: one stage; a hand-made virtual teacher p_k = a for positives and 1 − a for negatives
  (a = 0.99) replaces the trained one: (1−α)·BCE(z, y) + α·binKL_T(logit(p) ‖ z); α = 0.9, T = 1 (× T² only
  with ``t2_scaling=True``, as before 2026-12-03 evening: METHODS.md writes plain binKL; the same at T = 1).
  With T = 1 this is label smoothing towards (1−α)·y + α·p (binKL = BCE(z, p) − H(p)).
binKL_T is summed over labels and averaged over samples (METHODS.md; ``kd_reduction="mean"`` averages over
labels too, as before 2026-12-03), BCE averaged over both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ._kd import KD_REDUCTIONS, bce_teacher_stages, binary_kl, inert_kd_params, kd_factor
from .base import MIN_TEMPERATURE, Batch, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class TFKDSelfConfig(MLPConfig):
    alpha: float = 0.9  # weight of the distillation term; 1 − α weighs the hard-label BCE
    temperature: float = 4.0
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller value > 0 still loads
        check_range("temperature", self.temperature, MIN_TEMPERATURE, 1e6)

    def inert_params(self) -> set[str]:
        return {"kd_reduction"} if self.alpha == 0 else set()


@register
class TFKDSelf(BCE):
    """Self-training TF-KD: a fresh copy of the network distils from the trained network (its frozen teacher)."""

    name = "tfkd_self"
    Config = TFKDSelfConfig
    needs_teacher = True

    @classmethod
    def stages(cls, config: TFKDSelfConfig) -> list:
        return bce_teacher_stages(cls.name, config, init_from_teacher=False)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        teacher_logits = self.teacher_output(batch.x)
        logits = self.net(batch.x)
        kd = binary_kl(teacher_logits, logits, c.temperature, reduction=c.kd_reduction)
        losses = {
            "bce": (1 - c.alpha) * F.binary_cross_entropy_with_logits(logits, batch.y),
            "distillation": c.alpha * c.temperature**2 * kd,
        }
        return StepOutput(losses, logits)


@dataclass
class TFKDRegConfig(MLPConfig):
    alpha: float = 0.9
    temperature: float = 1.0
    a: float = 0.99  # the virtual teacher's probability for a positive label (1 − a for a negative)
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)
    t2_scaling: bool = False  # × T² on the KD term (until 2026-12-03; the same at T = 1); METHODS.md: none

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_range("a", self.a, 0.5, 1.0, high_open=True)
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller value > 0 still loads
        check_range("temperature", self.temperature, MIN_TEMPERATURE, 1e6)

    def inert_params(self) -> set[str]:
        return inert_kd_params(self.alpha, self.temperature)


def virtual_teacher_logits(y: Tensor, a: float) -> Tensor:
    """Logits of the virtual teacher: σ(·) = a on positives, 1 − a on negatives."""
    return (2 * y - 1) * math.log(a / (1 - a))


@register
class TFKDReg(BCE):
    name = "tfkd_reg"
    Config = TFKDRegConfig

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        logits = self.net(batch.x)
        teacher_logits = virtual_teacher_logits(batch.y, c.a)
        kd = binary_kl(teacher_logits, logits, c.temperature, reduction=c.kd_reduction)
        losses = {
            "bce": (1 - c.alpha) * F.binary_cross_entropy_with_logits(logits, batch.y),
            "distillation": c.alpha * kd_factor(c.temperature, c.t2_scaling) * kd,
        }
        return StepOutput(losses, logits)
