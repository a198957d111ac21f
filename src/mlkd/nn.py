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

Evaluation, ``no_grad`` and other activations use the plain ``nn.Sequential`` path. Under ``torch.func.vmap``
(``mlkd.batched``: several seeds as one model) the members' layers run as batched matmuls, each member with
its own dropout masks. ``MLPBackbone`` (the L2D label-wise models) runs each hidden block the same way.
"""

from __future__ import annotations

import contextlib
import math
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


def dropout_keep_masks(shape: tuple[int, ...], count: int, p: float, device) -> Tensor:
    """``count`` masks of ``shape`` (float 0/1, stacked on a new first axis) keeping each unit with probability
    ``rounded_keep_probability(p)``, from one draw of the default generator: a 64-bit integer gives four masks'
    worth of 15-bit integers (the draw's top bit is always 0, so each 16-bit slice is masked to 15 bits)."""
    n = count * math.prod(shape)
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_()
    slices = words.view(torch.int16)[:n].bitwise_and_(_MASK_LEVELS - 1)
    threshold = round(rounded_keep_probability(p) * _MASK_LEVELS)
    if threshold >= _MASK_LEVELS:
        return torch.ones((count, *shape), device=device)
    # threshold − v > 0 ⇔ v < threshold; clamping to {0, 1} avoids comparisons, whose bool kernels are slow on CPU
    keep = slices.neg_().add_(threshold).clamp_(0, 1)
    return keep.view(count, *shape).to(torch.float32)


def _masks(x: Tensor, weights, n_act: int, p: float, members: int | None):
    """The dropout masks of the ``n_act`` activated layers (None without dropout); ``members`` stacks an axis."""
    if p <= 0 or n_act == 0:
        return None
    lead = (x.shape[0],) if members is None else (members, x.shape[-2])
    width = weights[0].shape[-2]
    if all(w.shape[-2] == width for w in weights[1:n_act]):  # one draw for every layer's mask
        return dropout_keep_masks((*lead, width), n_act, p, x.device)
    return [dropout_keep_masks((*lead, w.shape[-2]), 1, p, x.device)[0] for w in weights[:n_act]]


def _dense_forward(x: Tensor, weights, biases, slope: float, p: float, n_act: int, masks):
    """(output, each layer's input after the first, each activated layer's factor d) for rows x of shape
    (rows, in), or (members, rows, in) with weights (members, out, in) and biases (members, out)."""
    stacked = x.ndim == 3
    scale = 1.0 / rounded_keep_probability(p) if p > 0 else 1.0
    rise, floor = (1.0 - slope) * scale, slope * scale
    inputs, factors = [], []
    h = x
    for i in range(len(weights)):
        if i:
            inputs.append(h)
        if stacked:
            pre = torch.baddbmm(biases[i].unsqueeze(-2), h, weights[i].transpose(-1, -2))
        else:
            pre = torch.addmm(biases[i], h, weights[i].t())
        if i >= n_act:
            return pre, inputs, factors
        # d = (pre > 0 ? 1 : slope) · mask / keep from sign() and clamp(): exactly 1 or slope, and no
        # comparison (bool kernels are slow on CPU)
        d = pre.sign().clamp_(0, 1).mul_(rise).add_(floor)
        if masks is not None:
            h = pre.mul_(d.mul_(masks[i]))
        else:  # the reference forward, bit for bit
            h = torch.relu(pre) if slope == 0 else torch.nn.functional.leaky_relu(pre, slope)
        factors.append(d)
    return h, inputs, factors


def _dense_backward(grad: Tensor, inputs, factors, weights, need_input_grad: bool) -> list:
    """[grad of x, grad W₁, grad b₁, …] for ``_dense_forward``'s layers (``inputs`` here include x)."""
    stacked = grad.ndim == 3
    n, n_act = len(weights), len(factors)
    grads: list[Tensor | None] = [None] * (2 * n)
    g = grad
    for i in reversed(range(n)):
        if i < n_act:
            g = g * factors[i]
        if stacked:  # computed as (members, in, out): the layout of mlkd.batched's stored weights
            grads[2 * i] = torch.bmm(inputs[i].transpose(1, 2), g).transpose(1, 2)
            grads[2 * i + 1] = g.sum(1)
        else:  # the products autograd's addmm backward computes for x·Wᵀ + b: bit-identical gradients
            grads[2 * i] = g.t().mm(inputs[i])
            grads[2 * i + 1] = g.sum(0)
        if i > 0 or need_input_grad:
            g = torch.bmm(g, weights[i]) if stacked else g.mm(weights[i])
        else:
            g = None
    return [g, *grads]


class FusedDense(torch.autograd.Function):
    """Linear layers with a piecewise-linear activation and dropout after each (and after the last one too
    when ``activate_last``), as one autograd node.

    apply(x, slope, p, activate_last, W₁, b₁, W₂, b₂, …) with nn.Linear's (out, in) weights → the output.
    Under ``torch.func.vmap`` (``mlkd.batched``) ``fused_dense`` uses ``_VmappedDense`` instead: torch.func
    needs the setup_context form, whose ``apply`` binds the arguments with ``inspect.signature`` on every call
    (~0.15 ms, a tenth of a small step).
    """

    @staticmethod
    def forward(ctx, x: Tensor, slope: float, p: float, activate_last: bool, *params: Tensor) -> Tensor:
        weights, biases = params[0::2], params[1::2]
        n_act = len(weights) - (0 if activate_last else 1)
        h, inputs, factors = _dense_forward(x, weights, biases, slope, p, n_act, _masks(x, weights, n_act, p, None))
        ctx.save_for_backward(x, *inputs, *factors, *weights)
        ctx.n_layers, ctx.n_act = len(weights), n_act
        return h

    @staticmethod
    def backward(ctx, grad: Tensor):
        return _saved_backward(ctx, grad, 4)


def _saved_backward(ctx, grad: Tensor, n_options: int) -> tuple:
    """The gradients of a dense node that saved (x, later inputs, factors, weights): None for its options."""
    n, n_act = ctx.n_layers, ctx.n_act
    saved = ctx.saved_tensors
    inputs, factors, weights = saved[:n], saved[n : n + n_act], saved[n + n_act :]
    g, *grads = _dense_backward(grad, inputs, factors, weights, ctx.needs_input_grad[0])
    return (g, *([None] * (n_options - 1)), *grads)


class _VmappedDense(torch.autograd.Function):
    """``FusedDense`` in the setup_context form torch.func requires; its ``vmap`` rule runs the members' layers
    as batched matmuls (``_StackedDense``). Returns (output, intermediates…) like ``_StackedDense``."""

    @staticmethod
    def forward(x: Tensor, slope: float, p: float, activate_last: bool, *params: Tensor):
        weights, biases = params[0::2], params[1::2]
        n_act = len(weights) - (0 if activate_last else 1)
        h, inputs, factors = _dense_forward(x, weights, biases, slope, p, n_act, _masks(x, weights, n_act, p, None))
        return (h, *inputs, *factors)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, _, activate_last, *params = inputs
        ctx.n_layers = len(params) // 2
        ctx.n_act = ctx.n_layers - (0 if activate_last else 1)
        ctx.mark_non_differentiable(*output[1:])
        ctx.save_for_backward(x, *output[1:], *params[0::2])

    @staticmethod
    def backward(ctx, grad: Tensor, *_):
        return _saved_backward(ctx, grad, 4)

    @staticmethod
    def vmap(info, in_dims, x, slope, p, activate_last, *params):
        if p > 0 and info.randomness == "error":
            raise RuntimeError("vmap: FusedDense draws dropout masks; call vmap with randomness='different' or 'same'")

        def stacked(t, dim):
            return t.movedim(dim, 0) if dim is not None else t.expand(info.batch_size, *t.shape)

        outputs = _StackedDense.apply(stacked(x, in_dims[0]), slope, p, activate_last, info.randomness == "same",
                                      *(stacked(t, d) for t, d in zip(params, in_dims[4:], strict=True)))
        return outputs, (0,) * len(outputs)


class _StackedDense(torch.autograd.Function):
    """``FusedDense`` of K members at once: x (K, rows, in), W (K, out, in), b (K, out); each member draws its own
    dropout masks (or, with ``same_masks``, all share one draw, as vmap's randomness="same" asks)."""

    @staticmethod
    def forward(ctx, x, slope, p, activate_last, same_masks, *params):
        weights, biases = params[0::2], params[1::2]
        n_act = len(weights) - (0 if activate_last else 1)
        members = x.shape[0]
        masks = _masks(x, weights, n_act, p, 1 if same_masks else members)
        if same_masks and masks is not None:
            masks = [m.expand(members, *m.shape[1:]) for m in masks]
        h, inputs, factors = _dense_forward(x, weights, biases, slope, p, n_act, masks)
        ctx.mark_non_differentiable(*inputs, *factors)
        ctx.save_for_backward(x, *inputs, *factors, *weights)
        ctx.n_layers, ctx.n_act = len(weights), n_act
        return (h, *inputs, *factors)

    @staticmethod
    def backward(ctx, grad, *_):
        return _saved_backward(ctx, grad, 5)


def fused_dense(x: Tensor, linears: Sequence[nn.Linear], slope: float, p: float, activate_last: bool) -> Tensor:
    """``FusedDense`` over ``linears`` (each with a bias): the layers' output."""
    params = [t for layer in linears for t in (layer.weight, layer.bias)]
    if _functorch_active():
        return _VmappedDense.apply(x, slope, p, activate_last, *params)[0]
    return FusedDense.apply(x, slope, p, activate_last, *params)


def _functorch_active() -> bool:
    """Whether a torch.func transform (vmap) is running: torch's own test, as autograd.Function.apply uses it."""
    return torch._C._are_functorch_transforms_active()


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
