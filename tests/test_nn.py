"""The fused MLP training path (mlkd.nn): exact without dropout, correct gradients with it, an unbiased dropout
mask at the asked rate, and the trainer's choice between it and the reference path."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlkd.methods import build_method
from mlkd.nn import (
    MLP,
    PIECEWISE_LINEAR_SLOPES,
    dropout_keep_masks,
    fused_mlp_enabled,
    fused_mlp_training,
    rounded_keep_probability,
)
from mlkd.trainer import REFERENCE_KERNELS, TrainConfig, Trainer, predict_logits

from .helpers import batch_of, ctx, linear_problem


def _grads(fn, params, x, out_weights):
    """Output, input gradient and parameter gradients of ⟨fn(x), out_weights⟩."""
    x = x.detach().clone().requires_grad_(True)
    out = fn(x)
    grads = torch.autograd.grad((out * out_weights).sum(), [x, *params])
    return out.detach(), grads[0], grads[1:]


@pytest.mark.parametrize("activation", sorted(PIECEWISE_LINEAR_SLOPES))
@pytest.mark.parametrize("part", ["forward", "hidden"])
def test_without_dropout_the_fused_path_computes_what_autograd_computes_bit_for_bit(activation, part):
    torch.manual_seed(0)
    mlp = MLP(9, [16, 16], 5, activation, dropout=0.0).train()
    fn = mlp if part == "forward" else mlp.hidden
    x = torch.randn(13, 9)
    w = torch.randn(13, 5 if part == "forward" else 16)
    params = list(mlp.parameters()) if part == "forward" else [p for m in mlp.linears()[:-1] for p in m.parameters()]
    reference = _grads(fn, params, x, w)
    with fused_mlp_training():
        fused = _grads(fn, params, x, w)
    assert torch.equal(reference[0], fused[0]) and torch.equal(reference[1], fused[1])
    assert all(torch.equal(a, b) for a, b in zip(reference[2], fused[2], strict=True))


def test_with_dropout_the_fused_gradients_are_those_of_its_masks():
    """The forward/backward equal autograd over the same computation: addmm, activation, the mask drawn."""
    torch.manual_seed(1)
    p, slope = 0.3, PIECEWISE_LINEAR_SLOPES["leaky_relu"]
    mlp = MLP(7, [12, 12], 4, "leaky_relu", dropout=p).train()
    params = list(mlp.parameters())
    x, w = torch.randn(10, 7), torch.randn(10, 4)
    torch.manual_seed(5)
    with fused_mlp_training():
        fused = _grads(mlp, params, x, w)
    torch.manual_seed(5)  # the same draw: both hidden layers' masks come from one call
    masks = dropout_keep_masks((10, 12), 2, p, "cpu")
    keep = rounded_keep_probability(p)

    def reference(h):
        for i, layer in enumerate(mlp.linears()[:-1]):
            h = F.leaky_relu(layer(h), slope) * masks[i] / keep
        return mlp.linears()[-1](h)

    expected = _grads(reference, params, x, w)
    for a, b in zip([fused[0], fused[1], *fused[2]], [expected[0], expected[1], *expected[2]], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert masks.mean().item() < 0.85  # units were actually dropped


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_dropout_mask_keeps_units_at_the_asked_rate_in_every_slice_of_a_draw(p):
    torch.manual_seed(0)
    keep = rounded_keep_probability(p)
    assert abs(keep - (1 - p)) <= 2**-16
    masks = dropout_keep_masks((4096, 64), 2, p, "cpu")
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    flat = masks.flatten()
    n = flat.numel() // 4
    sd = np.sqrt(keep * (1 - keep) / n)
    # each of the four 16-bit slices of a 64-bit draw (the top one has one bit less) keeps at the same rate
    for slot in range(4):
        assert abs(flat[slot::4].mean().item() - keep) < 5 * sd
    # neighbouring units are independent: P(both kept) = keep²
    both = (flat[:-1] * flat[1:]).mean().item()
    assert abs(both - keep**2) < 5 * np.sqrt(keep**2 * (1 - keep**2) / flat.numel())


def test_fused_dropout_is_unbiased_and_off_in_eval_mode():
    torch.manual_seed(0)
    mlp = MLP(3, [256], 2, "relu", dropout=0.5)
    for layer in mlp.linears():
        torch.nn.init.constant_(layer.weight, 0.01)
        torch.nn.init.zeros_(layer.bias)
    x = torch.ones(2000, 3)
    with fused_mlp_training(), torch.enable_grad():
        train_out = mlp.train()(x)
        eval_out = mlp.eval()(x)
    expected = 256 * 0.01 * 0.03  # every unit 0.03, the output sums 256 of them at weight 0.01
    assert eval_out.allclose(torch.full_like(eval_out, expected))
    assert train_out.mean().item() == pytest.approx(expected, rel=0.01)
    assert train_out.std().item() > 0  # masks differ per row


def test_the_fused_switch_is_scoped_and_off_outside_a_fit():
    assert not fused_mlp_enabled()
    with fused_mlp_training():
        assert fused_mlp_enabled()
        with fused_mlp_training(False):
            assert not fused_mlp_enabled()
        assert fused_mlp_enabled()
    assert not fused_mlp_enabled()


def _fit(name, params, **train):
    X, Y = linear_problem(n=160, seed=3)
    m = build_method(name, X.shape[1], Y.shape[1], {"hidden": 32, **params}, seed=0)
    res = Trainer(TrainConfig(max_epochs=4, batch_size=32, **train)).fit(m, X[:120], Y[:120], X[120:], Y[120:])
    return res, predict_logits(m, X)


def test_without_dropout_a_fused_mlp_fit_equals_the_reference_fit_bit_for_bit():
    ref, ref_logits = _fit("bce", {"dropout": 0.0}, **REFERENCE_KERNELS)
    fused, fused_logits = _fit("bce", {"dropout": 0.0}, fused_optimizer=False, fused_mlp=True)
    assert torch.equal(ref_logits, fused_logits)
    assert [h["total"] for h in ref.history] == [h["total"] for h in fused.history]


@pytest.mark.parametrize("name", ["bce", "skdtea", "raskd"])
def test_the_fast_path_is_the_default_and_repeatable_and_the_reference_path_differs(name):
    fast, fast_logits = _fit(name, {})
    again, again_logits = _fit(name, {})
    assert torch.equal(fast_logits, again_logits)
    ref, ref_logits = _fit(name, {}, **REFERENCE_KERNELS)
    assert not torch.equal(fast_logits, ref_logits)  # other dropout masks and a fused update
    # ... but the same training problem: losses of the same size
    assert fast.history[-1]["total"] == pytest.approx(ref.history[-1]["total"], rel=0.3)


def test_skdtea_fused_step_runs_both_branches_through_one_decoder_call_with_the_reference_losses():
    """Without dropout and label noise, the fused step (one decoder call on [z_x; z_e]) gives the reference
    step's losses and gradients up to float rounding."""
    batch = batch_of(n=24, d=6, L=4)
    model = build_method("skdtea", 6, 4, {"hidden": 16, "dropout": 0.0, "label_noise": 0.0}, seed=0).train()
    fused_model = copy.deepcopy(model)
    out = model.step(batch, ctx())
    sum(out.losses.values()).backward()
    calls = []
    hook = fused_model.decoder.register_forward_pre_hook(lambda mod, args: calls.append(args[0].shape[0]))
    with fused_mlp_training():
        fused_out = fused_model.step(batch, ctx())
        sum(fused_out.losses.values()).backward()
    hook.remove()
    assert calls == [48]
    for key in out.losses:
        torch.testing.assert_close(out.losses[key], fused_out.losses[key])
    for a, b in zip(model.parameters(), fused_model.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_a_non_boolean_fast_path_setting_is_refused(bad):
    from mlkd import MultiLabelClassifier

    X, Y = linear_problem(n=40)
    with pytest.raises(ValueError, match="fused_mlp.*expected True or False"):
        MultiLabelClassifier("bce", fused_mlp=bad, max_epochs=1).fit(X, Y)


def _member_losses(members, x, y, **vmap_kwargs):
    """Per-member ⟨MLP(x_k), y_k⟩ under vmap over stacked weights, and each member's weight gradients."""
    from torch.func import functional_call, stack_module_state, vmap

    params, _ = stack_module_state(members)
    params = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    template = copy.deepcopy(members[0]).to("meta")

    def loss(p, xk, yk):
        return (functional_call(template, p, (xk,)) * yk).sum()

    with fused_mlp_training():
        losses = vmap(loss, **vmap_kwargs)(params, x, y)
    losses.sum().backward()
    return losses, {k: v.grad for k, v in params.items()}


def test_under_vmap_the_members_train_as_batched_matmuls_with_each_members_own_gradients():
    torch.manual_seed(0)
    members = [MLP(6, [10, 10], 3, "leaky_relu", dropout=0.0).train() for _ in range(4)]
    x, y = torch.randn(4, 9, 6), torch.randn(4, 9, 3)
    losses, grads = _member_losses(members, x, y, randomness="different")
    for k, member in enumerate(members):
        with fused_mlp_training():
            member.zero_grad()
            expected = (member(x[k]) * y[k]).sum()
            expected.backward()
        torch.testing.assert_close(losses[k], expected)
        for name, p in member.named_parameters():
            torch.testing.assert_close(grads[name][k], p.grad, rtol=1e-5, atol=1e-6)


def test_under_vmap_each_member_draws_its_own_dropout_masks_and_error_mode_refuses():
    torch.manual_seed(0)
    member = MLP(6, [64], 3, "relu", dropout=0.5).train()
    members = [copy.deepcopy(member) for _ in range(3)]  # identical weights: only the masks can differ
    x = torch.randn(5, 6).expand(3, 5, 6)
    y = torch.ones(3, 5, 3)
    different, _ = _member_losses(members, x, y, randomness="different")
    same, _ = _member_losses(members, x, y, randomness="same")
    assert len(set(different.tolist())) == 3 and len(set(same.tolist())) == 1
    with pytest.raises(RuntimeError, match="randomness"):
        _member_losses(members, x, y, randomness="error")


def test_the_labelwise_backbone_trains_its_blocks_on_the_fused_path_with_the_same_intermediates():
    from mlkd.backbones import MLPBackbone

    torch.manual_seed(0)
    net = MLPBackbone(7, 4, hidden=12, depth=2, embed_dim=3, dropout=0.0).train()
    x = torch.randn(5, 7)
    reference = net(x)
    with fused_mlp_training():
        fused = net(x)
        nodes = {type(t.grad_fn).__name__ for t in fused.intermediates}
    assert nodes == {"FusedDenseBackward"}
    assert torch.equal(reference.logits, fused.logits)
    assert all(torch.equal(a, b) for a, b in zip(reference.intermediates, fused.intermediates, strict=True))
