"""C2AE: canonical-correlated autoencoder (Yeh et al., AAAI 2017), as the official code trains it (METHODS.md §2).

F_x: d → 512 → 512 → k, F_e: L → 512 → k, F_d: k → 512 → L, k = round(0.8·L), LeakyReLU(0.1), latent
activation σ(·)−0.5 on both codes. Per batch of N rows (the official objective is a batch sum; dividing it
by N only rescales the learning rate):

    (1/N)·[‖F_x(X) − F_e(Y)‖²_F + 0.5·(‖F_xᵀF_x − I‖²_F + ‖F_eᵀF_e − I‖²_F)] + α·mean_i Γ_i(σ(F_d(F_e(y_i))), y_i)

Γ is the pairwise exponential ranking loss, α = 0.5 (the official ``G4 / alpha`` with alpha = 2).
Gradient routing of the official ``DCCA_grad.m``: the ranking loss reaches F_e and F_d only (F_x is not on
that path); the alignment and orthogonality terms reach F_x and F_e (both sides, nothing detached) and never
F_d. So F_x learns from the alignment alone. Prediction: F_d(F_x(x)), thresholded at 0.5 by the paper.
The official code's second decoder on F_x's code (trained, but its gradient never reaches F_x and it is
never used to predict) is left out: it cannot change a prediction.

Training defaults: the repo's TrainConfig (AdamW lr 1e-3, weight decay 1e-4, batch 64, ≤ 200 epochs, early
stopping on validation mAP). It beats the official optimiser (``c2ae_official_train_config()``) on validation
mAP on emotions / yeast / scene (0.772 / 0.497 / 0.799 vs 0.737 / 0.465 / 0.707, seed 0), so it is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..nn import ACTIVATIONS, MLP
from .base import Batch, Method, MethodConfig, StepContext, StepOutput, check_choice, check_range, register
from .skdtea import orthogonality_penalty

#: The fixed sharpness of the exponential ranking loss in C2AE and MPVAE ("5 is a fixed parameter").
RANKING_SHARPNESS = 5.0


def exp_ranking_loss(scores: Tensor, y: Tensor) -> Tensor:
    """Γ per instance: Σ_{p∈Y+, q∈Y−} exp(−5(a_p − a_q)) / (5·|Y+|·|Y−|); 0 where Y+ or Y− is empty.

    scores : (..., L) bounded scores (probabilities), y : (..., L) 0/1 broadcastable to scores; returns (...).
    The double sum factorises, Σ_p Σ_q e^{−5a_p}·e^{5a_q} = (Σ_p e^{−5a_p})·(Σ_q e^{5a_q}), so this is the
    masked B×L×L pairwise sum in O(B·L) memory (scores are bounded, so the exponentials cannot overflow).
    The /5 matches the official gradients: C2AE's BR_error.m drops the 5 of the derivative, MPVAE divides by 5.
    """
    pos = y.expand_as(scores)
    neg = 1.0 - pos
    s = RANKING_SHARPNESS
    total = (torch.exp(-s * scores) * pos).sum(-1) * (torch.exp(s * scores) * neg).sum(-1)
    pairs = pos.sum(-1) * neg.sum(-1)
    return torch.where(pairs > 0, total / (s * pairs.clamp_min(1.0)), torch.zeros_like(total))


def alignment_terms(z_x: Tensor, z_e: Tensor) -> tuple[Tensor, Tensor]:
    """(‖z_x − z_e‖²_F, ‖z_xᵀz_x − I‖²_F + ‖z_eᵀz_e − I‖²_F) over a batch of latent codes (N, k): C2AE's
    deep-CCA surrogate — aligned codes whose dimensions are uncorrelated with unit norm."""
    return (z_x - z_e).pow(2).sum(), orthogonality_penalty(z_x) + orthogonality_penalty(z_e)


class ShiftedSigmoid(nn.Module):
    """σ(·) − 0.5: C2AE's zero-mean latent activation, range (−0.5, 0.5)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(x) - 0.5


def c2ae_official_train_config() -> dict:
    """``TrainConfig`` overrides reproducing the official optimiser (``DCCAtrain_SGD.m`` + ``demo.m``).

    RMS-normalised momentum SGD (momentum 0.99, RMS decay 0.9), lr 1e-4·0.98^epoch, batch 500, 50 epochs,
    best validation epoch kept (patience = all epochs). The official L2 is 1e-3·‖W‖² on the batch-*sum*
    objective; on our per-row mean loss the same ratio of L2 to data gradient is weight_decay = 2·1e-3/500.
    Use: ``TrainConfig(**c2ae_official_train_config())``, ``Stage(..., train=c2ae_official_train_config())``
    or ``MultiLabelClassifier("c2ae", **c2ae_official_train_config())`` (the CLI has no optimiser flags yet).
    """
    batch_size = 500
    return {
        "optimizer": "rmsprop",
        "momentum": 0.99,
        "lr": 1e-4,
        "lr_decay": 0.98,
        "batch_size": batch_size,
        "max_epochs": 50,
        "patience": 50,
        "weight_decay": 2 * 1e-3 / batch_size,
    }


@dataclass
class C2AEConfig(MethodConfig):
    hidden: int = 512
    latent: int | None = None  # None: round(0.8·L) (at least 1), the official reduction rate
    activation: str = "leaky_relu"
    dropout: float = 0.0  # the official code uses none
    alpha: float = 0.5  # weight of the ranking loss (official G4/alpha with alpha = 2)
    lambda_ortho: float = 0.5  # weight of the orthogonality penalties (official CORR_error.m lambda)

    def validate(self, n_features: int, n_labels: int) -> None:
        check_range("hidden", self.hidden, 1, 1 << 20)
        check_range("latent", self.latent, 1, 1 << 20)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_range("alpha", self.alpha, 0.0, 1e6)
        check_range("lambda_ortho", self.lambda_ortho, 0.0, 1e6)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        # F_d learns from the ranking loss alone: without it the fit predicts through a decoder left at its
        # random initial weights (near-constant scores), silently
        if n_labels < 2:
            raise ValueError(f"method 'c2ae' needs at least 2 labels, got {n_labels}: its decoder learns only from the "
                             "ranking loss between a row's positive and negative labels, which is 0 with one label; "
                             "expected a method with a likelihood for one label (bce, skdtea, mpvae)")
        if self.alpha == 0:
            raise ValueError("parameter 'alpha'=0.0 turns off the ranking loss, the only loss that trains c2ae's "
                             "decoder (it would predict through its random initial weights); expected alpha > 0")

    def latent_dim(self, n_labels: int) -> int:
        return self.latent if self.latent is not None else max(1, round(0.8 * n_labels))


@register
class C2AE(Method):
    name = "c2ae"
    Config = C2AEConfig

    def batch_coupling(self) -> str | None:
        return "its orthogonality term is computed over the whole batch's latent codes"

    def __init__(self, n_features: int, n_labels: int, config: C2AEConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        k = self.latent_dim = c.latent_dim(n_labels)
        h, act, p = c.hidden, c.activation, c.dropout
        self.feature_encoder = nn.Sequential(MLP(n_features, [h, h], k, act, p), ShiftedSigmoid())
        self.target_encoder = nn.Sequential(MLP(n_labels, [h], k, act, p), ShiftedSigmoid())
        self.decoder = MLP(k, [h], n_labels, act, p)

    def forward(self, x: Tensor) -> Tensor:
        """Prediction logits F_d(F_x(x)) (the decoder's sigmoid is applied by the caller)."""
        return self.decoder(self.feature_encoder(x))

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        n = batch.x.shape[0]
        z_x = self.feature_encoder(batch.x)
        z_e = self.target_encoder(batch.y)
        reconstruction = self.decoder(z_e)
        align, ortho = alignment_terms(z_x, z_e)
        losses = {
            "alignment": align / n,
            "orthogonality": c.lambda_ortho * ortho / n,
            "ranking": c.alpha * exp_ranking_loss(torch.sigmoid(reconstruction), batch.y).mean(),
        }
        with torch.no_grad():  # the prediction path is reported, never trained through the decoder
            logits = self.decoder(z_x)
        return StepOutput(losses, logits, {"reconstruction_logits": reconstruction.detach()})
