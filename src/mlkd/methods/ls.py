"""Multi-label label smoothing (METHODS.md §0): each label's target moves towards ½."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from .base import check_range, register
from .bce import BCE, MLPConfig


@dataclass
class LSConfig(MLPConfig):
    epsilon: float = 0.1

    def validate(self, n_features: int, n_labels: int) -> None:
        super().validate(n_features, n_labels)
        check_range("epsilon", self.epsilon, 0.0, 1.0)


@register
class LabelSmoothing(BCE):
    """BCE against q = (1 − ε)·y + ε/2."""

    name = "ls"
    Config = LSConfig

    def targets(self, y: Tensor) -> Tensor:
        eps = self.config.epsilon
        return (1.0 - eps) * y + eps / 2
