"""Backbones with a label-wise embedding head (METHODS.md §3): every one returns a ``ModelOutput``.

* ``MLPBackbone`` — tabular rows: hidden layers d → h (× depth), then ``LabelwiseProjectionHead``
  (E_k = W_k h, logit_k = ⟨E_k, w_k⟩ + b_k, one einsum over all labels).
* ``ResNetBackbone`` — images given as flattened rows (n, C·H·W) and reshaped with ``image_shape``, so the
  estimator's API stays 2-D: a small ResNet (3 stages of basic blocks, widths w, 2w, 4w) and
  ``LabelQueryAttentionHead`` (ML-Decoder-like: one fixed, non-learned query per label attends over the
  last feature map's spatial tokens).

Plain torch only (no torchvision).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .nn import ACTIVATIONS, PIECEWISE_LINEAR_SLOPES, fused_dense, fused_mlp_enabled


@dataclass
class ModelOutput:
    """What every backbone returns for a batch of B examples and L labels.

    logits : (B, L); label_embeddings : (B, L, e) with logit_k = ⟨E_k, w_k⟩ + b_k; features : (B, p), the
    pooled representation (an MLP's last hidden vector, a CNN's globally averaged feature map);
    intermediates : each hidden layer's / stage's output, first to last.
    """

    logits: Tensor
    label_embeddings: Tensor | None = None
    features: Tensor | None = None
    intermediates: list[Tensor] = field(default_factory=list)


def count_parameters(module: nn.Module) -> int:
    """Number of parameters (buffers such as the fixed label queries and BatchNorm statistics excluded)."""
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------------------------------------
# label-wise embedding heads
# ---------------------------------------------------------------------------------------------------
class LabelwiseProjectionHead(nn.Module):
    """Per-label projection of one hidden vector: E_k = W_k h (W_k ∈ R^{e×h}), logit_k = ⟨E_k, w_k⟩ + b_k.

    Parameters: L·e·h + L·e + L.
    """

    def __init__(self, in_dim: int, n_labels: int, embed_dim: int) -> None:
        super().__init__()
        self.projection = nn.Parameter(torch.empty(n_labels, embed_dim, in_dim))  # W_k, stacked
        self.weight = nn.Parameter(torch.empty(n_labels, embed_dim))  # w_k
        self.bias = nn.Parameter(torch.zeros(n_labels))  # b_k
        nn.init.uniform_(self.projection, -1 / math.sqrt(in_dim), 1 / math.sqrt(in_dim))  # nn.Linear's range
        nn.init.uniform_(self.weight, -1 / math.sqrt(embed_dim), 1 / math.sqrt(embed_dim))

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """h (B, in_dim) → (label embeddings (B, L, e), logits (B, L))."""
        embeddings = torch.einsum("bh,keh->bke", h, self.projection)
        logits = torch.einsum("bke,ke->bk", embeddings, self.weight) + self.bias
        return embeddings, logits


class LabelQueryAttentionHead(nn.Module):
    """Cross-attention from one fixed query per label to spatial tokens (the official ML-Decoder-like head).

    tokens (B, N, C) → memory = ReLU(Linear(C → e)); single-head scaled dot-product attention with queries
    Q ∈ R^{L×e} (a random-normal *buffer*: never trained, saved with the model), keys/values = Linear(memory);
    E = LayerNorm(Q + softmax(Q Kᵀ / √e) V) (the decoder layer's residual + norm); logit_k = ⟨E_k, w_k⟩ + b_k.
    """

    def __init__(self, in_channels: int, n_labels: int, embed_dim: int) -> None:
        super().__init__()
        self.token_projection = nn.Linear(in_channels, embed_dim)
        self.key = nn.Linear(embed_dim, embed_dim)
        self.value = nn.Linear(embed_dim, embed_dim)
        self.norm = nn.LayerNorm(embed_dim)
        # Fixed like ML-Decoder's requires_grad_(False) query embedding, drawn from the build seed.
        self.register_buffer("queries", torch.randn(n_labels, embed_dim))
        self.weight = nn.Parameter(torch.empty(n_labels, embed_dim))
        self.bias = nn.Parameter(torch.zeros(n_labels))
        nn.init.uniform_(self.weight, -1 / math.sqrt(embed_dim), 1 / math.sqrt(embed_dim))

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """tokens (B, N, C) → (label embeddings (B, L, e), logits (B, L))."""
        memory = F.relu(self.token_projection(tokens))
        keys, values = self.key(memory), self.value(memory)
        scores = torch.einsum("ke,bne->bkn", self.queries, keys) / math.sqrt(keys.shape[-1])
        attended = torch.einsum("bkn,bne->bke", scores.softmax(dim=-1), values)
        embeddings = self.norm(self.queries + attended)
        logits = torch.einsum("bke,ke->bk", embeddings, self.weight) + self.bias
        return embeddings, logits


# ---------------------------------------------------------------------------------------------------
# backbones
# ---------------------------------------------------------------------------------------------------
class MLPBackbone(nn.Module):
    """d → hidden (× depth, activation + dropout after each) → label-wise projection head."""

    def __init__(
        self,
        n_features: int,
        n_labels: int,
        hidden: int = 128,
        depth: int = 2,
        embed_dim: int = 32,
        activation: str = "leaky_relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}")
        layers: list[nn.Module] = []
        prev = n_features
        for _ in range(depth):
            block: list[nn.Module] = [nn.Linear(prev, hidden), ACTIVATIONS[activation]()]
            if dropout > 0:
                block.append(nn.Dropout(dropout))
            layers.append(nn.Sequential(*block))
            prev = hidden
        self.layers = nn.ModuleList(layers)
        self.head = LabelwiseProjectionHead(prev, n_labels, embed_dim)
        self.activation, self.dropout = activation, float(dropout)

    def forward(self, x: Tensor) -> ModelOutput:
        intermediates = []
        h = x
        # the fast path (mlkd.nn): each block as one FusedDense node, its output kept as an intermediate
        fused = (self.training and fused_mlp_enabled() and torch.is_grad_enabled() and x.dtype == torch.float32
                 and self.activation in PIECEWISE_LINEAR_SLOPES)
        for layer in self.layers:
            if fused:
                h = fused_dense(h, [layer[0]], PIECEWISE_LINEAR_SLOPES[self.activation], self.dropout, True)
            else:
                h = layer(h)
            intermediates.append(h)
        embeddings, logits = self.head(h)
        return ModelOutput(logits, embeddings, h, intermediates)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3×3 conv-BN layers with an identity (or 1×1 conv-BN) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetBackbone(nn.Module):
    """A small ResNet for images passed as flattened rows.

    3×3 conv stem (C → w), three stages of ``blocks`` basic blocks with widths (w, 2w, 4w) and strides
    (1, 2, 2) — a 16×16 input ends as a 4×4 map of 4w channels, i.e. 16 tokens for the label-query head.
    Dropout (if any) is applied to the tokens before the head.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        n_labels: int,
        width: int = 16,
        blocks: int = 1,
        embed_dim: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, height, width_px = (int(v) for v in image_shape)
        self.image_shape = (channels, height, width_px)
        self.stem = nn.Sequential(nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages, prev = [], width
        for i, stride in enumerate((1, 2, 2)):
            out = width * 2**i
            stages.append(nn.Sequential(*(BasicBlock(prev if b == 0 else out, out, stride if b == 0 else 1)
                                          for b in range(blocks))))
            prev = out
        self.stages = nn.ModuleList(stages)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.head = LabelQueryAttentionHead(prev, n_labels, embed_dim)
        side = lambda n: (n - 1) // 4 + 1  # noqa: E731 - 3×3 convolutions, padding 1, strides 1, 2, 2
        self._final_area = side(height) * side(width_px)
        # float32 activations a row holds at once in an eval forward, about 6 maps of w × H × W (measured 5.3 at
        # widths 16 and 40 on 16×16 and 32×32): predict_logits sizes its chunks by it
        self.activation_bytes_per_row = 4 * (channels + 6 * width) * height * width_px

    def forward(self, x: Tensor) -> ModelOutput:
        if self.training and x.shape[0] * self._final_area == 1:
            h, w = self.image_shape[1:]
            raise ValueError(
                f"a one-row batch of {h}×{w} images ends as a 1×1 map, one value per channel for BatchNorm; expected "
                "images of at least 5×5, or a batch_size that leaves no one-row last batch (rows % batch_size != 1)")
        fmap = self.stem(x.reshape(x.shape[0], *self.image_shape))
        intermediates = []
        for stage in self.stages:
            fmap = stage(fmap)
            intermediates.append(fmap)
        tokens = self.dropout(fmap.flatten(2).transpose(1, 2))  # (B, H'·W', C)
        embeddings, logits = self.head(tokens)
        return ModelOutput(logits, embeddings, fmap.mean(dim=(2, 3)), intermediates)


def parse_image_shape(spec: str, n_features: int) -> tuple[int, int, int]:
    """``"auto"`` (one channel, square: n_features must be a perfect square) or ``"C,H,W"`` → (C, H, W).

    ValueError unless C·H·W equals the number of features.
    """
    if spec == "auto":
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(
                f"parameter 'image_shape'='auto' needs a square single-channel image, but there are {n_features} "
                "features; expected image_shape='C,H,W' with C·H·W equal to the number of features"
            )
        return 1, side, side
    try:
        shape = tuple(int(v) for v in spec.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"parameter 'image_shape'={spec!r} is invalid; expected 'auto' or 'C,H,W' such as '1,16,16'")
    if shape[0] * shape[1] * shape[2] != n_features:
        raise ValueError(
            f"parameter 'image_shape'={spec!r} has {shape[0] * shape[1] * shape[2]} pixels but the data has "
            f"{n_features} features; expected C·H·W equal to the number of features"
        )
    if min(shape[1:]) < 4:
        raise ValueError(f"parameter 'image_shape'={spec!r} is too small; expected H, W ≥ 4 (two stride-2 stages)")
    return shape  # type: ignore[return-value]


#: Default sizes: (hidden or base width, depth or blocks per stage) for each backbone and role.
DEFAULT_SIZES = {
    "mlp": {"student": (128, 2), "teacher": (1024, 2)},
    "cnn": {"student": (16, 1), "teacher": (40, 2)},
}


def build_backbone(
    kind: str,
    n_features: int,
    n_labels: int,
    *,
    hidden: int,
    depth: int,
    embed_dim: int,
    activation: str = "leaky_relu",
    dropout: float = 0.0,
    image_shape: str = "auto",
) -> nn.Module:
    """``kind="mlp"``: MLPBackbone(hidden, depth); ``kind="cnn"``: ResNetBackbone(width=hidden, blocks=depth)."""
    if kind == "mlp":
        return MLPBackbone(n_features, n_labels, hidden, depth, embed_dim, activation, dropout)
    if kind == "cnn":
        return ResNetBackbone(parse_image_shape(image_shape, n_features), n_labels, hidden, depth, embed_dim, dropout)
    raise ValueError(f"unknown backbone {kind!r}; expected 'mlp' or 'cnn'")
