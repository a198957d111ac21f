"""RAS-KD: relation-aware label smoothing for self-KD [recon + adapt] (METHODS.md §4, seed 003), multi-label.

Backbone: the BCE-MLP; h = its penultimate features, z = its logits. A light auxiliary linear head
g(h) = V·h + b is trained with BCE on the labels. Class representatives are V's rows (``representatives=
"head"``) or EMA class prototypes of h over each class's positive samples (``"ema"``). Their cosine
relations give R_jk = softmax_{k≠j}(cos(v_j, v_k)/τ), R_jj = 0, detached. Targets: positives 1 − ε′;
negative k gets ε·max_{j∈P} R_jk over the sample's positives P (``reduce="mean"``: the mean over P; a sample
with no positive gets 0). Loss: BCE(z, q) + λ_aux·BCE(g(h), y) [+ λ_inst·binKL_T(sg(g(h)) ‖ z) with
``instance=True``, the "RAS-KD+" variant, also registered as ``raskd_plus``]. Prediction uses z only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._kd import KD_REDUCTIONS, binary_kl
from .base import MIN_TEMPERATURE, Batch, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class RASKDConfig(MLPConfig):
    epsilon: float = 0.1  # smoothing mass scale for negatives
    epsilon_pos: float = 0.0  # ε′: positives' target is 1 − ε′
    tau: float = 0.1  # temperature of the cosine-relation softmax
    lambda_aux: float = 1.0
    instance: bool = False  # add the instance-level term (RAS-KD+)
    lambda_inst: float = 1.0
    temperature: float = 2.0  # T of the instance-level binKL
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)
    representatives: str = "head"  # "head" (auxiliary weight rows) | "ema" (class prototypes of h)
    reduce: str = "max"  # "max" | "mean" over the sample's positive labels
    ema_momentum: float = 0.9

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("epsilon", self.epsilon, 0.0, 1.0)
        check_range("epsilon_pos", self.epsilon_pos, 0.0, 1.0)
        check_range("tau", self.tau, 0.0, 1e6, low_open=True)
        check_range("lambda_aux", self.lambda_aux, 0.0, 1e6)
        check_range("lambda_inst", self.lambda_inst, 0.0, 1e6)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_choice("representatives", self.representatives, ("head", "ema"))
        check_choice("reduce", self.reduce, ("max", "mean"))
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)
        check_range("ema_momentum", self.ema_momentum, 0.0, 1.0, high_open=True)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller value > 0 still loads
        check_range("tau", self.tau, MIN_TEMPERATURE, 1e6)
        check_range("temperature", self.temperature, MIN_TEMPERATURE, 1e6)

    def inert_params(self) -> set[str]:
        return set() if self.instance and self.lambda_inst > 0 else {"kd_reduction"}


def relation_matrix(representatives: Tensor, tau: float) -> Tensor:
    """R of shape (L, L): row j is softmax over k ≠ j of cos(v_j, v_k)/τ; R_jj = 0 (all zero when L = 1)."""
    v = F.normalize(representatives, dim=1)
    n = v.shape[0]
    if n == 1:
        return v.new_zeros(1, 1)
    eye = torch.eye(n, dtype=torch.bool, device=v.device)
    return torch.softmax((v @ v.T / tau).masked_fill(eye, float("-inf")), dim=1)


def relation_smoothed_targets(y: Tensor, relations: Tensor, epsilon: float, epsilon_pos: float, reduce: str):
    """q of shape (B, L): 1 − ε′ on positives; ε·max_j (or mean_j) over positives j of R_jk on negatives k."""
    if reduce == "max":
        spread = _max_over_positives(y, relations)
    else:
        spread = (y @ relations) / y.sum(dim=1, keepdim=True).clamp(min=1)
    return torch.where(y > 0, torch.full_like(y, 1 - epsilon_pos), epsilon * spread)


def _max_over_positives(y: Tensor, relations: Tensor) -> Tensor:
    """max_j y_bj·R_jk over the labels j, computed on each row's positives only: (B, P, L) with P the most
    positives of any row, instead of (B, L, L). A row's P largest y_bj hold all its nonzero ones, and the
    padding products are 0, like the products of its negatives in the dense form (R ≥ 0), so the result is
    the dense form's bit for bit — at 983 labels and ~19 positives (delicious) ~50× fewer elements."""
    n_pos = int((y > 0).sum(dim=1).max()) if y.numel() else 0
    if n_pos == 0:
        return torch.zeros_like(y)
    y_top, idx = torch.topk(y, n_pos, dim=1)  # (B, P): every positive of a row, then zeros as padding
    return (y_top.unsqueeze(2) * relations[idx]).amax(dim=1)


@register
class RASKD(BCE):
    name = "raskd"
    Config = RASKDConfig

    def __init__(self, n_features: int, n_labels: int, config: RASKDConfig) -> None:
        super().__init__(n_features, n_labels, config)
        width = self.net[-1].in_features
        self.aux_head = nn.Linear(width, n_labels)
        # training-only state: prediction never reads it, so it is not saved
        self.register_buffer("prototypes", torch.zeros(n_labels, width), persistent=False)
        self.register_buffer("prototype_seen", torch.zeros(n_labels, dtype=torch.bool), persistent=False)

    def penultimate(self, x: Tensor) -> Tensor:
        """h: the backbone's output before its last linear layer (x itself for depth 0)."""
        return self.net.hidden(x)

    def representatives(self) -> Tensor:
        return self.aux_head.weight if self.config.representatives == "head" else self.prototypes

    @torch.no_grad()
    def update_prototypes(self, features: Tensor, y: Tensor) -> None:
        """EMA of each class's mean feature over its positives in the batch (first sighting: the mean itself)."""
        counts = y.sum(0)
        present = counts > 0
        means = (y.T @ features) / counts.clamp(min=1).unsqueeze(1)
        m = self.config.ema_momentum
        blended = torch.where(self.prototype_seen.unsqueeze(1), m * self.prototypes + (1 - m) * means, means)
        self.prototypes.copy_(torch.where(present.unsqueeze(1), blended, self.prototypes))
        self.prototype_seen |= present

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        features = self.penultimate(batch.x)
        logits = self.net[-1](features)
        aux_logits = self.aux_head(features)
        relations = relation_matrix(self.representatives().detach(), c.tau)
        targets = relation_smoothed_targets(batch.y, relations, c.epsilon, c.epsilon_pos, c.reduce)
        if c.representatives == "ema":
            self.update_prototypes(features.detach(), batch.y)
        losses = {
            "bce": F.binary_cross_entropy_with_logits(logits, targets),
            "auxiliary": c.lambda_aux * F.binary_cross_entropy_with_logits(aux_logits, batch.y),
        }
        if c.instance:
            kd = binary_kl(aux_logits.detach(), logits, c.temperature, reduction=c.kd_reduction)
            losses["instance"] = c.lambda_inst * kd
        return StepOutput(losses, logits, {"soft_targets": targets, "relations": relations})


@dataclass
class RASKDPlusConfig(RASKDConfig):
    instance: bool = True


@register
class RASKDPlus(RASKD):
    """RAS-KD+ : RAS-KD with the instance-level term on (the same as ``raskd`` with ``instance=True``)."""

    name = "raskd_plus"
    Config = RASKDPlusConfig
