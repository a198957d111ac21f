"""Loss helpers shared by the self-distillation methods: pure functions of tensors (no modules, no state).

Reductions: BCE and GCE are means over samples and labels, as ``F.binary_cross_entropy_with_logits``.
``binary_kl`` is METHODS.md's binKL_T — summed over labels, averaged over samples — by default
(``reduction="sum"``); ``reduction="mean"`` averages over labels too (binKL_T / L), what the self-KD methods
did before 2026-12-03 and what their published benchmark cells used (their ``kd_reduction`` parameter).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from .bce import MLPConfig


def bernoulli_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Per-entry KL(Bern(σ(t/T)) ‖ Bern(σ(s/T))), same shape as the inputs; zero where t == s.

    Computed from log-sigmoids, so it stays finite for saturated logits.
    """
    t, s = teacher_logits / temperature, student_logits / temperature
    p = torch.sigmoid(t)
    return p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))


def kd_factor(temperature: float, t2_scaling: bool) -> float:
    """The factor a binKL_T term carries on top of its weight: T² with ``t2_scaling`` (Hinton et al.'s
    correction for the 1/T² shrinking of soft-target gradients, which the official CS-KD and BAN code apply),
    else 1 (METHODS.md §6 writes CS-KD's, BAN's and TF-KD reg's term as plain binKL_T)."""
    return temperature**2 if t2_scaling else 1.0


def inert_kd_params(weight: float, temperature: float) -> set[str]:
    """The KD options that cannot change a config's numbers: both while the KD term's weight is 0,
    ``t2_scaling`` while T = 1 (T² = 1)."""
    if weight == 0:
        return {"kd_reduction", "t2_scaling"}
    return {"t2_scaling"} if temperature == 1 else set()


#: ``kd_reduction`` choices: "sum" over labels (METHODS.md's binKL_T) or "mean" over labels (binKL_T / L).
KD_REDUCTIONS = ("sum", "mean")


def binary_kl(teacher_logits: Tensor, student_logits: Tensor, temperature: float = 1.0, mask: Tensor | None = None,
              reduction: str = "sum") -> Tensor:
    """binKL_T(teacher ‖ student) of (batch, labels) logits: summed over labels (``reduction="sum"``,
    METHODS.md) or averaged over them (``"mean"``), then averaged over samples; entries where ``mask`` is 0
    count as 0 (and still count in the mean)."""
    kl = bernoulli_kl(teacher_logits, student_logits, temperature)
    if mask is not None:
        kl = kl * mask
    if reduction == "mean":
        return kl.mean()
    if reduction != "sum":
        raise ValueError(f"reduction {reduction!r} is not valid; expected one of {list(KD_REDUCTIONS)}")
    return kl.sum() / kl.shape[0]


def binary_gce(logits: Tensor, targets: Tensor, q: float = 0.7) -> Tensor:
    """Binary generalised cross-entropy (Zhang & Sabuncu 2018) per label, averaged over samples and labels.

    For target t ∈ [0, 1] and p = σ(z): t·(1 − p^q)/q + (1 − t)·(1 − (1 − p)^q)/q — the multi-class GCE
    (1 − p_y^q)/q applied to the two outcomes of each label, each weighted by its target mass. q → 0 gives BCE.
    """
    p_pos = torch.exp(q * F.logsigmoid(logits))  # p^q, stable for very negative z
    p_neg = torch.exp(q * F.logsigmoid(-logits))  # (1 − p)^q
    return (targets * (1 - p_pos) / q + (1 - targets) * (1 - p_neg) / q).mean()


def backbone_params(config: MLPConfig) -> dict:
    """The MLP fields of a method's config: the parameters of a plain "bce" model with the same network."""
    names = {f.name for f in dataclasses.fields(MLPConfig)}
    return {k: v for k, v in dataclasses.asdict(config).items() if k in names}


def bce_teacher_stages(student: str, config: MLPConfig, init_from_teacher: bool = False) -> list:
    """[a plain "bce" teacher with the student's network, then ``student`` distilling from it (frozen)]."""
    from ..stages import Stage  # the stage runner imports the methods, not the other way round

    return [
        Stage("teacher", "bce", backbone_params(config)),
        Stage("student", student, dataclasses.asdict(config), teacher="teacher",
              init_from="teacher" if init_from_teacher else None),
    ]
