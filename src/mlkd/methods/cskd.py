"""CS-KD: class-wise self-knowledge distillation [adapt] (METHODS.md §6, Yun et al. 2020), multi-label.

Instead of a sampler that builds same-class pairs, each example draws, within its batch, a random partner
that shares at least one positive label with it (uniform over the eligible partners). The KD term pulls its
prediction towards the partner's detached prediction on the shared positive labels only:
L = BCE(z, y) + λ·binKL_T(sg(z_partner) ‖ z) masked to shared labels (binKL_T summed over the shared labels
and averaged over the batch, as METHODS.md; ``kd_reduction="mean"`` divides it by L too, as before
2026-12-03). ``t2_scaling=True`` multiplies the term by T² as the official code's KDLoss does (and as this
method did until 2026-12-03; METHODS.md writes no T² here). Examples with no eligible partner in the batch get
the BCE term only. T = 4, λ = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._kd import KD_REDUCTIONS, binary_kl, inert_kd_params, kd_factor
from .base import Batch, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class CSKDConfig(MLPConfig):
    lambda_kd: float = 1.0
    temperature: float = 4.0
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)
    t2_scaling: bool = False  # × T² on the KD term: the official code, the pre-2026-12-03 cells; METHODS.md: none

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("lambda_kd", self.lambda_kd, 0.0, 1e6)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)

    def inert_params(self) -> set[str]:
        return inert_kd_params(self.lambda_kd, self.temperature)


def draw_partners(y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(partner, has_partner): for each row, a uniformly drawn other row of the batch sharing ≥ 1 positive.

    y : (B, L) 0/1. Random scores are masked by the shared-label matrix and arg-maxed (no loops); a row with
    no eligible partner gets has_partner False and itself as a placeholder partner.
    """
    shares = (y @ y.T) > 0
    shares.fill_diagonal_(False)
    scores = torch.rand(shares.shape, generator=generator, device=y.device)
    scores = scores.masked_fill(~shares, -1.0)
    has_partner = shares.any(dim=1)
    partner = torch.where(has_partner, scores.argmax(dim=1), torch.arange(y.shape[0], device=y.device))
    return partner, has_partner


@register
class CSKD(BCE):
    name = "cskd"
    Config = CSKDConfig

    def batch_coupling(self) -> str | None:
        return "each row's partner is drawn from within its batch"

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        logits = self.net(batch.x)
        partner, has_partner = draw_partners(batch.y, ctx.generator)
        shared = batch.y * batch.y[partner] * has_partner[:, None]
        kd = binary_kl(logits[partner].detach(), logits, c.temperature, mask=shared, reduction=c.kd_reduction)
        losses = {
            "bce": F.binary_cross_entropy_with_logits(logits, batch.y),
            "distillation": c.lambda_kd * kd_factor(c.temperature, c.t2_scaling) * kd,
        }
        return StepOutput(losses, logits, {"partner": partner, "has_partner": has_partner, "shared_labels": shared})
