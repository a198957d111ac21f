"""MPVAE: multivariate probit VAE (Bai et al., IJCAI 2020), following the official code (METHODS.md §2).

Label encoder q(z|x,y): concat[x, y] → 512 → 256 → (μ_e, logσ²_e); feature encoder p(z|x): x → 256 → 512 →
256 → (μ_x, logσ²_x); latent 50; one ε shared by both reparameterised samples. Shared decoder
concat[x, z] → 256 → 512 with one linear head per branch to L probit means. Multivariate probit with
Σ = RRᵀ + I (R ∈ R^{L×L} learned): p_s = Φ(Rξ_s + μ), ξ_s ~ N(0, I), the same S draws for both branches.

Loss = nll_weight·(NLL_e + NLL_x) + c·(Γ_e + Γ_x) + 1.1·KL(q_label ‖ p_feature), with NLL = −log mean_s
Π_k Bern(y_k; p_{s,k}) (log-mean-exp over samples), Γ the exponential ranking loss averaged over samples,
KL in closed form between diagonal Gaussians. Weight decay is the trainer's.

Prediction (eval): z = μ_x (no latent sampling) and the exact marginal P(y_k = 1) = Φ(μ_k / √Σ_kk) — the
S → ∞ limit of the official mean of Φ over probit samples, so no test-time sampling and no test-time noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.special import ndtr

from ..nn import MLP
from .base import Batch, Method, MethodConfig, StepContext, StepOutput, check_range, register
from .c2ae import exp_ranking_loss

#: Probabilities are squeezed into [EPS/2, 1 − EPS/2] before any log, as the official code does.
PROB_EPS = 1e-6


def squeeze_probabilities(p: Tensor) -> Tensor:
    return p * (1 - PROB_EPS) + 0.5 * PROB_EPS


def probit_probabilities(mu: Tensor, R: Tensor, xi: Tensor) -> Tensor:
    """p_{b,s} = Φ(R ξ_{b,s} + μ_b): mu (B, L), R (L, r), xi (B, S, r) → (B, S, L), squeezed away from 0/1."""
    return squeeze_probabilities(ndtr(xi @ R.T + mu.unsqueeze(1)))


def sample_nll(p: Tensor, y: Tensor) -> Tensor:
    """−log mean_s Π_k Bern(y_k; p_{s,k}) per instance: p (B, S, L), y (B, L) → (B,), by log-sum-exp."""
    y = y.unsqueeze(1)
    log_lik = (y * torch.log(p) + (1 - y) * torch.log1p(-p)).sum(-1)  # (B, S)
    return -(torch.logsumexp(log_lik, dim=1) - math.log(p.shape[1]))


def gaussian_kl(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(μ_q, σ²_q) ‖ N(μ_p, σ²_p)) for diagonal Gaussians, summed over the last dimension."""
    return 0.5 * (logvar_p - logvar_q - 1 + torch.exp(logvar_q - logvar_p) + (mu_q - mu_p).pow(2) / logvar_p.exp()).sum(
        -1
    )


@dataclass
class MPVAEConfig(MethodConfig):
    latent: int = 50
    dropout: float = 0.5  # official keep_prob 0.5, on the encoders' hidden layers
    n_samples: int = 100  # probit samples S per instance in training (evaluation is closed form)
    covariance_rank: int | None = None  # columns of R; None: L (the official scripts set z_dim = L)
    nll_weight: float = 0.1  # official nll_coeff
    # Ranking weight. The official c_coeff is tuned per data set (config.py 200 = mirflickr, yeast 20, scene 40,
    # bibtex 0.1); 20 has the best mean validation mAP on emotions/yeast/scene (200 stalls on emotions).
    c: float = 20.0
    kl_weight: float = 1.1

    def validate(self, n_features: int, n_labels: int) -> None:
        check_range("latent", self.latent, 1, 1 << 16)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_range("n_samples", self.n_samples, 1, 1 << 16)
        check_range("covariance_rank", self.covariance_rank, 1, 1 << 16)
        check_range("nll_weight", self.nll_weight, 0.0, 1e6)
        check_range("c", self.c, 0.0, 1e6)
        check_range("kl_weight", self.kl_weight, 0.0, 1e6)


@register
class MPVAE(Method):
    name = "mpvae"
    Config = MPVAEConfig

    def __init__(self, n_features: int, n_labels: int, config: MPVAEConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        self.label_encoder = MLP(n_features + n_labels, [512, 256], 2 * c.latent, "relu", c.dropout)
        self.feature_encoder = MLP(n_features, [256, 512, 256], 2 * c.latent, "relu", c.dropout)
        self.decoder = MLP(n_features + c.latent, [256], 512, "relu")
        self.label_head = nn.Linear(512, n_labels)
        self.feature_head = nn.Linear(512, n_labels)
        rank = c.covariance_rank or n_labels
        bound = math.sqrt(6.0 / (n_labels + rank))  # the official Glorot-uniform init of R
        self.covariance_root = nn.Parameter(torch.empty(n_labels, rank).uniform_(-bound, bound))

    def covariance(self) -> Tensor:
        """Σ = RRᵀ + I, positive definite by construction."""
        R = self.covariance_root
        return R @ R.T + torch.eye(R.shape[0], device=R.device, dtype=R.dtype)

    def decode(self, x: Tensor, z: Tensor, head: nn.Linear) -> Tensor:
        return head(torch.relu(self.decoder(torch.cat([x, z], dim=1))))

    def forward(self, x: Tensor) -> Tensor:
        """Logits of the feature branch's marginal probabilities Φ(μ_k/√Σ_kk) at z = μ_x."""
        mu_z, _ = self.feature_encoder(x).chunk(2, dim=1)
        mu = self.decode(x, mu_z, self.feature_head)
        scale = torch.sqrt(1.0 + self.covariance_root.pow(2).sum(1))  # √Σ_kk
        p = squeeze_probabilities(ndtr(mu / scale))
        return torch.log(p) - torch.log1p(-p)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        x, y = batch.x, batch.y
        mu_e, logvar_e = self.label_encoder(torch.cat([x, y], dim=1)).chunk(2, dim=1)
        mu_x, logvar_x = self.feature_encoder(x).chunk(2, dim=1)
        eps = torch.randn(mu_x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
        z_e = mu_e + eps * torch.exp(0.5 * logvar_e)
        z_x = mu_x + eps * torch.exp(0.5 * logvar_x)
        R = self.covariance_root
        xi = torch.randn((x.shape[0], c.n_samples, R.shape[1]), generator=ctx.generator, device=x.device, dtype=x.dtype)
        p_e = probit_probabilities(self.decode(x, z_e, self.label_head), R, xi)
        p_x = probit_probabilities(self.decode(x, z_x, self.feature_head), R, xi)
        y_s = y.unsqueeze(1)
        losses = {
            "nll_label": c.nll_weight * sample_nll(p_e, y).mean(),
            "nll_feature": c.nll_weight * sample_nll(p_x, y).mean(),
            "ranking_label": c.c * exp_ranking_loss(p_e, y_s).mean(),
            "ranking_feature": c.c * exp_ranking_loss(p_x, y_s).mean(),
            "kl": c.kl_weight * gaussian_kl(mu_e, logvar_e, mu_x, logvar_x).mean(),
        }
        p_mean = p_x.mean(1).detach()
        return StepOutput(losses, torch.log(p_mean) - torch.log1p(-p_mean), {"probabilities": p_mean})
