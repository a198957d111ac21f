"""Small building blocks shared by every method, and the fused training path of their MLPs.

``MLP`` is an ``nn.Sequential`` of ``Linear → activation → Dropout`` layers. Under ``fused_mlp_training()``
(``Trainer.fit`` turns it on unless ``TrainConfig(fused_mlp=False)``) a training-mode MLP with a piecewise
linear activation (ReLU, LeakyReLU) runs all its layers as one autograd node (``FusedDense``) instead of
autograd over ~4 nodes a layer:

* activation and dropout are one multiplicative factor per unit, d = (x > 0 ? 1 : slope) · mask / keep,
  kept from the forward pass, so the backward pass is ``g·d`` and two matmuls per layer;
* the dropout mask comes from 64-bit draws of the default generator cut into four 15-bit integers, instead
  of ``bernoulli_`` (~10 ns an element on CPU): the keep probability is rounded to a multiple of 2⁻¹⁵
  (0.9 → 0.899994) and kept units are scaled by the inverse of that rounded keep probability, so the layer is
  unbiased. The masks are a different random stream from ``nn.Dropout``'s, so a fused fit equals a reference
  fit in distribution, not bit for bit (BENCHMARKS.md, "Performance", shows the metrics agree);
* without dropout the fused path computes exactly what autograd computes (same matmuls, same products),
  bit for bit (tests/test_nn.py).

Evaluation, ``no_grad`` and other activations use the plain ``nn.Sequential`` path.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence

import torch
from torch import Tensor, nn

ACTIVATIONS = {
    "relu": lambda: nn.ReLU(),
    "leaky_relu": lambda: nn.LeakyReLU(0.1),  # C2AE's LeakyReLU(0.1)
    "gelu": lambda: nn.GELU(),
    "tanh": lambda: nn.Tanh(),
}
#: Slope of the negative side of the piecewise-linear activations, which the fused path supports.
PIECEWISE_LINEAR_SLOPES = {"relu": 0.0, "leaky_relu": 0.1}

#: Dropout masks are drawn as integers in [0, 2¹⁵); the keep probability is a multiple of 2⁻¹⁵.
_MASK_BITS = 15
_MASK_LEVELS = 1 << _MASK_BITS

_state = threading.local()


def fused_mlp_enabled() -> bool:
    """Whether ``MLP`` layers train through ``FusedDense`` in this thread (see ``fused_mlp_training``)."""
    return getattr(_state, "fused", False)


@contextlib.contextmanager
def fused_mlp_training(enabled: bool = True):
    """``with fused_mlp_training():`` — training-mode MLPs in the block use the fused forward/backward."""
    previous = fused_mlp_enabled()
    _state.fused = bool(enabled)
    try:
        yield
    finally:
        _state.fused = previous


def rounded_keep_probability(p: float) -> float:
    """The keep probability the fused dropout uses for drop rate ``p``: 1 − p rounded to a multiple of 2⁻¹⁵
    (at least 2⁻¹⁵, at most 1)."""
    levels = min(max(round((1.0 - p) * _MASK_LEVELS), 1), _MASK_LEVELS)
    return levels / _MASK_LEVELS


def dropout_keep_masks(shape: tuple[int, int], count: int, p: float, device) -> Tensor:
    """``count`` masks of ``shape`` (float 0/1, stacked on a new first axis) keeping each unit with probability
    ``rounded_keep_probability(p)``, from one draw of the default generator: a 64-bit integer gives four masks'
    worth of 15-bit integers (the draw's top bit is always 0, so each 16-bit slice is masked to 15 bits)."""
    n = count * shape[0] * shape[1]
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    slices = words.view(torch.int16)[:n].bitwise_and_(_MASK_LEVELS - 1)
    threshold = round(rounded_keep_probability(p) * _MASK_LEVELS)
    if threshold >= _MASK_LEVELS:
        return torch.ones((count, *shape), device=device)
    # threshold − v > 0 ⇔ v < threshold; clamping to {0, 1} avoids comparisons, whose bool kernels are slow on CPU
    keep = slices.neg_().add_(threshold).clamp_(0, 1)
    return keep.view(count, *shape).to(torch.float32)


class FusedDense(torch.autograd.Function):
    """Linear layers with a piecewise-linear activation and dropout after each (and after the last one too
    when ``activate_last``), as one autograd node.

    apply(x, slope, p, activate_last, W₁, b₁, W₂, b₂, …) with nn.Linear's (out, in) weights.
    """

    @staticmethod
    def forward(ctx, x: Tensor, slope: float, p: float, activate_last: bool, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        n_act = len(weights) - (0 if activate_last else 1)
        masks = None
        if p > 0 and n_act > 0:
            width = weights[0].shape[0]
            if all(w.shape[0] == width for w in weights[1:n_act]):  # one draw for every layer's mask
                masks = dropout_keep_masks((x.shape[0], width), n_act, p, x.device)
            else:
                masks = [dropout_keep_masks((x.shape[0], w.shape[0]), 1, p, x.device)[0] for w in weights[:n_act]]
        scale = 1.0 / rounded_keep_probability(p) if p > 0 else 1.0
        rise, floor = (1.0 - slope) * scale, slope * scale
        inputs, factors = [], []
        h = x
        for i in range(len(weights)):
            inputs.append(h)
            pre = torch.addmm(biases[i], h, weights[i].t())
            if i >= n_act:
                h = pre
                break
            # d = (pre > 0 ? 1 : slope) · mask / keep from sign() and clamp(): exactly 1 or slope, and no
            # comparison (bool kernels are slow on CPU)
            d = pre.sign().clamp_(0, 1).mul_(rise).add_(floor)
            if masks is not None:
                h = pre.mul_(d.mul_(masks[i]))
            else:  # the reference forward, bit for bit
                h = torch.relu(pre) if slope == 0 else torch.nn.functional.leaky_relu(pre, slope)
            factors.append(d)
        ctx.save_for_backward(*inputs, *factors, *weights)
        ctx.n_layers, ctx.n_act = len(weights), n_act
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        n, n_act = ctx.n_layers, ctx.n_act
        saved = ctx.saved_tensors
        inputs, factors, weights = saved[:n], saved[n : n + n_act], saved[n + n_act :]
        grads: list[Tensor | None] = [None] * (2 * n)
        g = grad
        for i in reversed(range(n)):
            if i < n_act:
                g = g * factors[i]
            # the products autograd's addmm backward computes for x·Wᵀ + b: bit-identical gradients
            grads[2 * i] = g.t().mm(inputs[i])
            grads[2 * i + 1] = g.sum(0)
            if i > 0:
                g = g.mm(weights[i])
            elif ctx.needs_input_grad[0]:
                g = g.mm(weights[0])
            else:
                g = None
        return (g, None, None, None, *grads)


def fused_dense(x: Tensor, linears: Sequence[nn.Linear], slope: float, p: float, activate_last: bool) -> Tensor:
    """``FusedDense`` over ``linears`` (each with a bias)."""
    params = [t for layer in linears for t in (layer.weight, layer.bias)]
    return FusedDense.apply(x, slope, p, activate_last, *params)


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
        self.activation, self.dropout = activation, float(dropout)

    def _fused(self, x: Tensor) -> bool:
        return (self.training and fused_mlp_enabled() and torch.is_grad_enabled()
                and self.activation in PIECEWISE_LINEAR_SLOPES and x.dtype == torch.float32 and x.ndim == 2)

    def linears(self) -> list[nn.Linear]:
        return [layer for layer in self if isinstance(layer, nn.Linear)]

    def forward(self, x: Tensor) -> Tensor:
        if self._fused(x):
            return fused_dense(x, self.linears(), PIECEWISE_LINEAR_SLOPES[self.activation], self.dropout, False)
        return super().forward(x)

    def hidden(self, x: Tensor) -> Tensor:
        """The last hidden layer's output (after its activation and dropout); ``x`` itself with no hidden layer."""
        if self._fused(x) and len(self.linears()) > 1:
            return fused_dense(x, self.linears()[:-1], PIECEWISE_LINEAR_SLOPES[self.activation], self.dropout, True)
        for layer in list(self)[:-1]:
            x = layer(x)
        return x
