"""PS-KD: progressive self-knowledge distillation [adapt] (METHODS.md §6, Kim et al. 2021), multi-label.

The target of sample i at epoch t is q = (1 − α_t)·y + α_t·p_i, where p_i = σ(z_i) is the model's own
prediction for that sample in the previous epoch and α_t = α_T·min(1, t/T_total) (t = 0-based epoch, T_total =
``ramp_epochs``, by default the run's ``max_epochs`` as in the paper), so epoch 0 trains on the labels alone.
The official code's α_T·(t + 1)/T_total (its epoch-0 table holds the labels, so that epoch also trains on
them) runs one epoch ahead of this: α_T/T_total more at every epoch (0.004 at the defaults).
With early stopping a run may stop long before ``max_epochs``, where α_t is still small: ``ramp_epochs``
sets a shorter ramp. As in the official code, p_i is the training-mode
prediction made when the sample was last visited, kept in an N × L table indexed by ``Batch.index``.

The table is training-only state: a non-persistent buffer (moves with ``.to()``, absent from
``state_dict()`` and saved files). It grows to the largest row index seen, so the method needs no hook
telling it N: the trainer visits every training row in epoch 0, where α_0 = 0 and the table is not read.
A row not yet visited (only possible if ``step`` is called with t > 0 first) falls back to its label.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import Batch, StepContext, StepOutput, check_range, register
from .bce import BCE, MLPConfig


@dataclass
class PSKDConfig(MLPConfig):
    alpha_T: float = 0.8  # α at the end of the ramp; α grows linearly from 0
    ramp_epochs: int | None = None  # epochs over which α reaches α_T; None: max_epochs

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("alpha_T", self.alpha_T, 0.0, 1.0)
        check_range("ramp_epochs", self.ramp_epochs, 1, 1 << 30)


def pskd_alpha(alpha_T: float, epoch: int, total_epochs: int) -> float:
    """α_t = α_T·min(1, t/T_total)."""
    return alpha_T * min(1.0, epoch / total_epochs)


@register
class PSKD(BCE):
    name = "pskd"
    Config = PSKDConfig

    def __init__(self, n_features: int, n_labels: int, config: PSKDConfig) -> None:
        super().__init__(n_features, n_labels, config)
        self.register_buffer("previous_probs", torch.zeros(0, n_labels), persistent=False)
        self.register_buffer("visited", torch.zeros(0, dtype=torch.bool), persistent=False)

    def _grow(self, n_rows: int) -> None:
        have = self.previous_probs.shape[0]
        if n_rows <= have:
            return
        extra = n_rows - have
        probs, visited = self.previous_probs, self.visited
        self.previous_probs = torch.cat([probs, probs.new_zeros(extra, probs.shape[1])])
        self.visited = torch.cat([visited, visited.new_zeros(extra)])

    def soft_targets(self, y: Tensor, index: Tensor, alpha: float) -> Tensor:
        """(1 − α)·y + α·(previous prediction of each row, or its label if never visited)."""
        self._grow(int(index.max()) + 1)
        previous = torch.where(self.visited[index, None], self.previous_probs[index], y)
        return (1 - alpha) * y + alpha * previous

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        c = self.config
        alpha = pskd_alpha(c.alpha_T, ctx.epoch, c.ramp_epochs or ctx.max_epochs)
        targets = self.soft_targets(batch.y, batch.index, alpha)  # read before this visit overwrites the row
        logits = self.net(batch.x)
        with torch.no_grad():
            self.previous_probs[batch.index] = torch.sigmoid(logits).to(self.previous_probs.dtype)
            self.visited[batch.index] = True
        loss = F.binary_cross_entropy_with_logits(logits, targets)
        return StepOutput({"bce": loss}, logits, {"soft_targets": targets, "alpha": torch.tensor(alpha)})
