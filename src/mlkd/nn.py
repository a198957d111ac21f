"""Small building blocks shared by every method."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.1),  # C2AE's LeakyReLU(0.1)
    "gelu": lambda: nn.GELU(),
    "tanh": lambda: nn.Tanh(),
}


class MLP(nn.Sequential):
    """Linear layers ``in_dim → widths… → out_dim`` with an activation and dropout after each hidden layer.

    The output layer is linear (logits or latent codes); callers add their own output activation.
    """

    def __init__(
        self,
        in_dim: int,
        widths: Sequence[int],
        out_dim: int,
        activation: str = "leaky_relu",
        dropout: float = 0.0,
    ) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        prev = in_dim
        for width in widths:
            layers += [nn.Linear(prev, width), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = width
        layers.append(nn.Linear(prev, out_dim))
        super().__init__(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim
