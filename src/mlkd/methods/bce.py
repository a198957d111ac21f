"""BCE-MLP: the binary-relevance network every comparison needs (METHODS.md §0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from ..nn import ACTIVATIONS, MLP
from .base import Batch, Method, MethodConfig, StepContext, StepOutput, check_choice, check_range, register


@dataclass
class MLPConfig(MethodConfig):
    hidden: int = 512
    depth: int = 2
    dropout: float = 0.1
    activation: str = "leaky_relu"

    def validate(self, n_features: int, n_labels: int) -> None:
        check_range("hidden", self.hidden, 1, 1 << 20)
        check_range("depth", self.depth, 0, 64)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))


@register
class BCE(Method):
    """MLP d → h → h → L trained with binary cross-entropy on the hard labels."""

    name = "bce"
    Config = MLPConfig

    def __init__(self, n_features: int, n_labels: int, config: MLPConfig) -> None:
        super().__init__(n_features, n_labels, config)
        c = config
        self.net = MLP(n_features, [c.hidden] * c.depth, n_labels, c.activation, c.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def targets(self, y: Tensor) -> Tensor:
        return y

    def step(self, batch: Batch, ctx: StepContext) -> StepOutput:
        logits = self.net(batch.x)
        return StepOutput({"bce": F.binary_cross_entropy_with_logits(logits, self.targets(batch.y))}, logits)
