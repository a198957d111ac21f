"""CS-KD: class-wise self-knowledge distillation [adapt] (METHODS.md §6, Yun et al. 2020), multi-label.

METHODS.md: "batch of pairs that share a positive label c; binKL_T on the shared label(s) only, from the
partner's detached prediction". Two ways to find the partner (``partners``):

* ``"batch"`` (the default, and the only way until 2026-12-04: every published CS-KD cell): each example draws,
  within its batch, a random partner that shares at least one positive label with it (uniform over the
  eligible rows); an example with no such row in its batch gets the BCE term only.
* ``"train"``: the spec's pair batches, as the official code's PairBatchSampler builds them: each example gets
  a partner from the whole training set — one of its positive labels c drawn uniformly (among those with
  another training row), then a uniform other training row with c. The trainer hands the step the B rows
  and their B partners; the BCE is on the B rows, the partners' logits come from a forward pass in training
  mode without gradient (the official code's ``torch.no_grad()``). Only an example without a positive label
  (or whose labels no other row has) has no partner.

L = BCE(z, y) + λ·binKL_T(sg(z_partner) ‖ z) masked to shared labels (binKL_T summed over the shared labels
and averaged over the batch, as METHODS.md; ``kd_reduction="mean"`` divides it by L too, as before
2026-12-03). ``t2_scaling=True`` multiplies the term by T² as the official code's KDLoss does (and as this
method did until 2026-12-03; METHODS.md writes no T² here). T = 4, λ = 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._kd import KD_REDUCTIONS, binary_kl, inert_kd_params, kd_factor
from .base import MIN_TEMPERATURE, Batch, StepContext, StepOutput, check_choice, check_range, register
from .bce import BCE, MLPConfig

PARTNERS = ("batch", "train")


@dataclass
class CSKDConfig(MLPConfig):
    lambda_kd: float = 1.0
    temperature: float = 4.0
    kd_reduction: str = "sum"  # binKL_T over labels: "sum" (METHODS.md) | "mean" (÷ L, the pre-2026-12-03 cells)
    t2_scaling: bool = False  # × T² on the KD term: the official code, the pre-2026-12-03 cells; METHODS.md: none
    partners: str = "batch"  # "batch": a partner within the batch | "train": pair batches (METHODS.md, see above)

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("lambda_kd", self.lambda_kd, 0.0, 1e6)
        check_range("temperature", self.temperature, 0.0, 1e6, low_open=True)
        check_choice("kd_reduction", self.kd_reduction, KD_REDUCTIONS)
        check_choice("partners", self.partners, PARTNERS)

    def validate_new(self, n_features: int, n_labels: int) -> None:
        super().validate_new(n_features, n_labels)
        # new fits only (MIN_TEMPERATURE): a model an earlier mlkd saved with a smaller value > 0 still loads
        check_range("temperature", self.temperature, MIN_TEMPERATURE, 1e6)

    def inert_params(self) -> set[str]:
        return inert_kd_params(self.lambda_kd, self.temperature)


class ClassWisePartners:
    """Partner rows for CS-KD's pair batches (``partners="train"``), vectorised: for each row, one of its
    positive labels that another training row has, drawn uniformly, then a uniform other row with that label.
    A row with no such label is its own placeholder partner (``CSKD.step`` then leaves out its KD term)."""

    def __init__(self, Y: Tensor) -> None:
        self.Y = Y
        n = Y.shape[0]
        pairs = (Y.T > 0).nonzero()  # (label, row), sorted by label then row
        self.rows = pairs[:, 1].contiguous()
        self.counts = (Y > 0).sum(0)
        self.starts = torch.cumsum(self.counts, 0) - self.counts
        self.keys = (pairs[:, 0] * n + pairs[:, 1]).contiguous()  # sorted: a row's place in its label's list
        self.n = n
        self.eligible = (self.counts >= 2).to(Y.dtype)  # a label another row has too

    def draw(self, idx: Tensor, generator: torch.Generator) -> Tensor:
        if self.rows.numel() == 0:  # no positive label anywhere: no row has a partner
            return idx
        labels = (self.Y.index_select(0, idx) > 0).to(self.eligible.dtype) * self.eligible
        has = labels.sum(1) > 0
        weights = labels + (~has).to(labels.dtype)[:, None]  # any label for a row without one: discarded below
        c = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        others = self.counts[c] - 1  # the rows with label c, this one left out
        u = torch.rand(idx.shape[0], generator=generator, device=idx.device, dtype=torch.float64)
        pick = torch.minimum((u * others.clamp_min(1)).long(), (others - 1).clamp_min(0))
        own = torch.searchsorted(self.keys, c * self.n + idx) - self.starts[c]  # this row's place in c's list
        pick = pick + (pick >= own).long()  # skip over the row itself
        partner = self.rows[(self.starts[c] + pick).clamp_max(self.rows.shape[0] - 1)]
        return torch.where(has, partner, idx)


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
        if self.config.partners == "train":
            return ("each row's partner, drawn from the training rows, joins its row's batch, and a shard would "
                    "split the two")
        return "each row's partner is drawn from within its batch"

    @property
    def pair_batches(self) -> bool:
        return self.config.partners == "train"

    def partner_sampler(self, Y: Tensor) -> ClassWisePartners:
        return ClassWisePartners(Y)

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        if self.pair_batches:  # the batch's rows, then their partners (the trainer's pair batch)
            b = batch.x.shape[0] // 2
            x, y = batch.x[:b], batch.y[:b]
            logits = self.net(x)
            with torch.no_grad():
                partner_logits = self.net(batch.x[b:])
            has_partner = batch.index[b:] != batch.index[:b]
            partner = torch.arange(b, device=x.device)  # reported as positions among the partner rows
            shared = y * batch.y[b:] * has_partner[:, None]
        else:
            y = batch.y
            logits = self.net(batch.x)
            partner, has_partner = draw_partners(y, ctx.generator)
            partner_logits = logits[partner].detach()
            shared = y * y[partner] * has_partner[:, None]
        kd = binary_kl(partner_logits, logits, c.temperature, mask=shared, reduction=c.kd_reduction)
        losses = {
            "bce": F.binary_cross_entropy_with_logits(logits, y),
            "distillation": c.lambda_kd * kd_factor(c.temperature, c.t2_scaling) * kd,
        }
        return StepOutput(losses, logits, {"partner": partner, "has_partner": has_partner, "shared_labels": shared})
