"""TEA: a simple C2AE-like target-embedding autoencoder with latent alignment (the foundation's TEA).

Same modules as SKDTEA; the prediction branch trains on the hard labels (α = 0), the label branch
reconstructs clean labels, and the two latent codes are pulled together by an L2 alignment term — the
alignment that SKDTEA removes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import register
from .skdtea import SKDTEA, SKDTEAConfig


@dataclass
class TEAConfig(SKDTEAConfig):
    alpha: float = 0.0
    label_noise: float = 0.0
    alignment: str | None = "l2"


@register
class TEA(SKDTEA):
    name = "tea"
    Config = TEAConfig
