"""Loss functions as pure functions of tensors (no modules, no state).

Conventions: ``student`` / ``teacher`` name the two sides of a distillation term; the teacher side is a
target and is detached. binKL_T(t ‖ s) = Σ_k KL(Bern(σ(t_k/T)) ‖ Bern(σ(s_k/T))) (METHODS.md notation).

Teacher → student multi-label KD (L2D, METHODS.md §3; reductions as the official code):

* ``mld`` — binKL_1 summed over labels, divided by the batch size; ``binary_kd`` — T²·binKL_T, same reduction;
  ``mse_logits`` — squared logit gap, same reduction;
* ``rkd`` (distance + angle) and ``pkt`` — relational KD on pooled features (any two widths);
* ``cd_loss`` / ``id_loss`` / ``led`` — RKD-distance on *positive* label-wise embeddings (B, L, e), per class
  over its positive images (CD) and per image over its positive labels (ID), vectorised with masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ---------------------------------------------------------------------------------------------------
# logit losses
# ---------------------------------------------------------------------------------------------------


def binary_kl(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """Element-wise KL(Bern(σ(t/T)) ‖ Bern(σ(s/T))), same shape as the inputs; computed with log-sigmoids
    so saturated logits stay finite."""
    t = teacher_logits.detach() / T
    s = student_logits / T
    p = torch.sigmoid(t)
    return p * (F.logsigmoid(t) - F.logsigmoid(s)) + (1 - p) * (F.logsigmoid(-t) - F.logsigmoid(-s))


def mld(student_logits: Tensor, teacher_logits: Tensor, T: float = 1.0) -> Tensor:
    """L2D's multi-label logit distillation: binKL_T(teacher ‖ student) summed over labels and examples,
    divided by the batch size (the official "batchmean"; T = 1 there). Logits of shape (B, L)."""
    return binary_kl(student_logits, teacher_logits, T).sum() / student_logits.shape[0]


def binary_kd(student_logits: Tensor, teacher_logits: Tensor, T: float = 4.0) -> Tensor:
    """Vanilla KD made multi-label: T²·binKL_T on the per-label sigmoids (reduced like ``mld``)."""
    return T * T * mld(student_logits, teacher_logits, T)


def mse_logits(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Squared logit gap summed over labels, divided by the batch size (reduced like ``mld``, so one
    ``lambda_logits`` means the same for every logit loss)."""
    return F.mse_loss(student_logits, teacher_logits.detach(), reduction="sum") / student_logits.shape[0]


# ---------------------------------------------------------------------------------------------------
# relational losses on pooled features
# ---------------------------------------------------------------------------------------------------
def pairwise_distances(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between the rows of x (..., n, d) → (..., n, n), zero diagonal.

    Squared norms minus twice the Gram matrix, clamped at ``eps`` before the square root (as RKD's and
    L2D's official code), so the gradient stays finite for coincident rows.
    """
    sq = x.pow(2).sum(-1)
    d = (sq.unsqueeze(-1) + sq.unsqueeze(-2) - 2 * x @ x.transpose(-1, -2)).clamp(min=eps).sqrt()
    eye = torch.eye(x.shape[-2], dtype=torch.bool, device=x.device)
    return d.masked_fill(eye, 0.0)


def rkd_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-D: SmoothL1 between mean-normalised pairwise distance matrices, summed and divided by B.

    student (B, p_s), teacher (B, p_t); the widths may differ.
    """
    mask = torch.ones(1, student.shape[0], dtype=torch.bool, device=student.device)
    return _relational_distance(student.unsqueeze(0), teacher.unsqueeze(0), mask).sum()


def rkd_angle(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD-A: SmoothL1 (mean) between the cosines of the angles every triple of examples forms."""

    def angles(x: Tensor) -> Tensor:
        diff = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # (B, B, p): e_j − e_i, unit
        return torch.bmm(diff, diff.transpose(1, 2))

    return F.smooth_l1_loss(angles(student), angles(teacher.detach()))


def rkd(student: Tensor, teacher: Tensor, distance_weight: float = 1.0, angle_weight: float = 2.0) -> Tensor:
    """Relational KD (Park et al. 2019): distance_weight·RKD-D + angle_weight·RKD-A (the paper's 1 and 2)."""
    return distance_weight * rkd_distance(student, teacher) + angle_weight * rkd_angle(student, teacher)


def pkt(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic KT (Passalis & Tefas 2018): KL between row-normalised cosine-similarity kernels, mean.

    student (B, p_s), teacher (B, p_t); the widths may differ.
    """

    def kernel(x: Tensor) -> Tensor:
        x = x / (x.norm(dim=1, keepdim=True) + eps)
        sim = (x @ x.t() + 1.0) / 2.0
        return sim / sim.sum(dim=1, keepdim=True)

    p_s, p_t = kernel(student), kernel(teacher.detach())
    return torch.mean(p_t * torch.log((p_t + eps) / (p_s + eps)))


# ---------------------------------------------------------------------------------------------------
# label-wise embedding distillation (LED = λ_cd·CD + λ_id·ID)
# ---------------------------------------------------------------------------------------------------
def _relational_distance(student: Tensor, teacher: Tensor, mask: Tensor) -> Tensor:
    """Per group g: Σ_{i,j valid} SmoothL1(ψ_s − ψ_t)_{ij} / n_g, with ψ = pairwise distances divided by
    their mean over the valid off-diagonal pairs. student (G, n, e_s), teacher (G, n, e_t), mask (G, n)
    bool with ≥ 2 valid rows per group → (G,)."""
    n = mask.shape[1]
    eye = torch.eye(n, dtype=torch.bool, device=mask.device)
    pairs = mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye
    n_pairs = pairs.sum(dim=(1, 2)).clamp(min=1)

    def normalised(d: Tensor) -> Tensor:
        mean = torch.where(pairs, d, 0.0).sum(dim=(1, 2)) / n_pairs
        return d / mean[:, None, None]

    psi_s = normalised(pairwise_distances(student))
    with torch.no_grad():
        psi_t = normalised(pairwise_distances(teacher.detach()))
    per_pair = F.smooth_l1_loss(psi_s, psi_t, reduction="none")
    return torch.where(pairs, per_pair, 0.0).sum(dim=(1, 2)) / mask.sum(dim=1).clamp(min=1)


def _grouped_led(student: Tensor, teacher: Tensor, mask: Tensor, rows: Tensor) -> Tensor:
    """Σ over the groups with ≥ 2 valid rows of the RKD-distance loss between those rows.

    student (B, L, e_s), teacher (B, L, e_t); mask (G, n) bool, the valid rows of each group; rows (G, n), the
    position of each row in the flattened (B·L) embeddings. Only the valid rows are gathered, moved to the
    front of their group and padded to the largest count, so memory follows the positives, not B or L.
    """
    keep = mask.sum(dim=1) >= 2
    if not bool(keep.any()):
        return student.new_zeros(())
    mask, rows = mask[keep], rows[keep]
    width = int(mask.sum(dim=1).max())
    order = torch.argsort(mask.to(torch.int8), dim=1, descending=True, stable=True)[:, :width]
    index = rows.gather(1, order)
    s = student.reshape(-1, student.shape[-1])[index]  # (G', width, e_s)
    t = teacher.reshape(-1, teacher.shape[-1])[index]
    return _relational_distance(s, t, mask.gather(1, order)).sum()


def _flat_positions(targets: Tensor) -> Tensor:
    """(B, L) positions of each (example, label) in the flattened (B·L) label-wise embeddings."""
    return torch.arange(targets.numel(), device=targets.device).view(targets.shape)


def cd_loss(student: Tensor, teacher: Tensor, targets: Tensor) -> Tensor:
    """Class-aware LED: for each class with ≥ 2 positive examples in the batch, the RKD-distance loss
    between those examples' class-k embeddings; summed over classes (official reduction).

    student (B, L, e_s), teacher (B, L, e_t) label-wise embeddings; targets (B, L) 0/1.
    """
    positive = targets.detach() > 0.5
    return _grouped_led(student, teacher, positive.t(), _flat_positions(targets).t())  # groups: classes


def id_loss(student: Tensor, teacher: Tensor, targets: Tensor) -> Tensor:
    """Instance-aware LED: for each example with ≥ 2 positive labels, the RKD-distance loss between its
    positive labels' embeddings; summed over examples (official reduction). Shapes as ``cd_loss``."""
    return _grouped_led(student, teacher, targets.detach() > 0.5, _flat_positions(targets))  # groups: examples


def led(
    student: Tensor, teacher: Tensor, targets: Tensor, lambda_cd: float = 100.0, lambda_id: float = 1000.0
) -> Tensor:
    """Label-wise embedding distillation λ_cd·CD + λ_id·ID (official weights 100 and 1000)."""
    total = student.new_zeros(())
    if lambda_cd:
        total = total + lambda_cd * cd_loss(student, teacher, targets)
    if lambda_id:
        total = total + lambda_id * id_loss(student, teacher, targets)
    return total
