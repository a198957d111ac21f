"""SKDTEA: self-knowledge distillation from a target-embedding autoencoder (METHODS.md §1, seed 000).

Feature encoder F_x: d → h → h → k, target encoder F_e: L (or d+L) → h → k, decoder F_d: k → h → L.
The label-reconstruction branch t = F_d(F_e(ỹ)) supplies soft targets q = (1−α)·y + α·sg(σ(t/τ)) to the
prediction branch s = F_d(F_x(x)): learned multi-label smoothing with no latent alignment by default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn import ACTIVATIONS, MLP, fused_mlp_enabled
from .base import Batch, Method, MethodConfig, StepContext, StepOutput, check_choice, check_range, register


@dataclass
class SKDTEAConfig(MethodConfig):
    hidden: int = 512
    latent: int | None = None  # None: max(4, round(0.8·L)), C2AE's choice
    dropout: float = 0.1
    activation: str = "leaky_relu"
    alpha: float = 0.5
    tau: float = 2.0
    lambda_rec: float = 1.0
    label_noise: float = 0.1
    detach_teacher: bool = True
    shared_decoder: bool = True
    teacher_input: str = "y"
    alignment: str | None = None
    lambda_align: float = 1.0
    warmup: int = 0

    def validate(self, n_features: int, n_labels: int) -> None:
        check_range("hidden", self.hidden, 1, 1 << 20)
        check_range("latent", self.latent, 1, 1 << 20)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_range("alpha", self.alpha, 0.0, 1.0)
        check_range("tau", self.tau, 0.0, 1e6, low_open=True)
        check_range("lambda_rec", self.lambda_rec, 0.0, 1e6)
        check_range("label_noise", self.label_noise, 0.0, 0.5)
        check_choice("teacher_input", self.teacher_input, ("y", "x+y"))
        check_choice("alignment", self.alignment, (None, "l2", "cca"))
        check_range("lambda_align", self.lambda_align, 0.0, 1e6)
        check_range("warmup", self.warmup, 0, 1 << 30)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        # alpha mixes the label branch's σ(t/τ) into the targets; with lambda_rec=0 and a detached teacher only the
        # alignment (F_e pulled to F_x's codes, into the shared decoder) trains that branch: else it stays at random
        trained_by_alignment = self.alignment is not None and self.lambda_align > 0 and self.shared_decoder
        if self.alpha > 0 and self.lambda_rec == 0 and self.detach_teacher and not trained_by_alignment:
            raise ValueError(f"parameter 'alpha'={self.alpha!r} mixes the label branch's outputs into the targets, but "
                             f"with lambda_rec={self.lambda_rec!r} nothing trains that branch (its reconstruction "
                             "term is off and the teacher detached); expected lambda_rec > 0, alpha=0, "
                             "detach_teacher=False, or an alignment (lambda_align > 0) into the shared decoder")

    def latent_dim(self, n_labels: int) -> int:
        return self.latent if self.latent is not None else max(4, round(0.8 * n_labels))


def orthogonality_penalty(z: Tensor) -> Tensor:
    """‖zᵀz − I‖²_F over the batch: C2AE's constraint that latent dimensions be uncorrelated and unit."""
    gram = z.T @ z
    return (gram - torch.eye(gram.shape[0], device=z.device, dtype=z.dtype)).pow(2).sum()


@register
class SKDTEA(Method):
    name = "skdtea"
    Config = SKDTEAConfig

    def batch_coupling(self) -> str | None:
        if self.config.alignment == "cca":
            return "alignment='cca' adds an orthogonality term over the whole batch's latent codes"
        return None

    def __init__(self, n_features: int, n_labels: int, config: SKDTEAConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        k = c.latent_dim(n_labels)
        self.latent_dim = k
        teacher_in = n_labels + (n_features if c.teacher_input == "x+y" else 0)
        self.feature_encoder = MLP(n_features, [c.hidden, c.hidden], k, c.activation, c.dropout)
        self.target_encoder = MLP(teacher_in, [c.hidden], k, c.activation, c.dropout)
        self.decoder = MLP(k, [c.hidden], n_labels, c.activation, c.dropout)
        # shared_decoder=False: the teacher path gets its own head, so F_d is trained by the student loss alone.
        self.teacher_head = None if c.shared_decoder else MLP(k, [c.hidden], n_labels, c.activation, c.dropout)

    @property
    def teacher_decoder(self) -> MLP:
        return self.decoder if self.teacher_head is None else self.teacher_head

    def forward(self, x: Tensor) -> Tensor:
        """Prediction logits s = F_d(F_x(x)); the only path used at prediction time."""
        return self.decoder(self.feature_encoder(x))

    def corrupt_labels(self, y: Tensor, generator: torch.Generator) -> Tensor:
        """ỹ: each bit flipped with probability ``label_noise`` (training only) so F_e∘F_d is not the identity."""
        p = self.config.label_noise
        if not self.training or p == 0:
            return y
        flip = torch.rand(y.shape, generator=generator, device=y.device, dtype=y.dtype) < p
        return torch.where(flip, 1.0 - y, y)

    def target_code(self, x: Tensor, y_tilde: Tensor) -> Tensor:
        """z_e = F_e(ỹ) (or F_e([x, ỹ]) with teacher_input="x+y")."""
        return self.target_encoder(y_tilde if self.config.teacher_input == "y" else torch.cat([x, y_tilde], dim=1))

    def teacher_logits(self, x: Tensor, y_tilde: Tensor) -> tuple[Tensor, Tensor]:
        """(t, z_e): reconstruction logits of the auxiliary branch and its latent code."""
        z_e = self.target_code(x, y_tilde)
        return self.teacher_decoder(z_e), z_e

    def distillation_weight(self, epoch: int) -> float:
        """α, ramped linearly from 0 over the first ``warmup`` epochs (PS-KD style)."""
        c = self.config
        if c.warmup <= 0:
            return c.alpha
        return c.alpha * min(1.0, epoch / c.warmup)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        x, y = batch.x, batch.y
        z_x = self.feature_encoder(x)
        y_tilde = self.corrupt_labels(y, ctx.generator)
        if self.teacher_head is None and fused_mlp_enabled():
            # fused path: both branches through the shared decoder as one batch (one node, 2B-row matmuls)
            z_e = self.target_code(x, y_tilde)
            s, t = self.decoder(torch.cat([z_x, z_e])).split(x.shape[0])
        else:  # the reference order of random draws, which the published cells used
            s = self.decoder(z_x)
            t, z_e = self.teacher_logits(x, y_tilde)
        teacher_probs = torch.sigmoid(t / c.tau)
        if c.detach_teacher:
            teacher_probs = teacher_probs.detach()
        alpha = self.distillation_weight(ctx.epoch)
        soft_targets = (1.0 - alpha) * y + alpha * teacher_probs
        losses = {
            "student": F.binary_cross_entropy_with_logits(s, soft_targets),
            "reconstruction": c.lambda_rec * F.binary_cross_entropy_with_logits(t, y),
        }
        if c.alignment is not None:
            align = (z_x - z_e).pow(2).sum(dim=1).mean()
            if c.alignment == "cca":
                n = z_x.shape[0]
                align = align + 0.5 * (orthogonality_penalty(z_x) + orthogonality_penalty(z_e)) / n
            losses["alignment"] = c.lambda_align * align
        return StepOutput(losses, s, {"soft_targets": soft_targets.detach(), "teacher_probs": teacher_probs.detach()})
