"""Each method's loss terms behave as METHODS.md specifies."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlkd.methods import REGISTRY, build_method, config_fields, make_config
from mlkd.methods.skdtea import orthogonality_penalty
from mlkd.trainer import TrainConfig, Trainer, predict_logits

from .helpers import batch_of, ctx, linear_problem


def test_registry_has_foundation_methods():
    assert {"bce", "ls", "tea", "skdtea"} <= set(REGISTRY)


def test_unknown_method_and_parameter_are_clear_errors():
    with pytest.raises(ValueError, match="unknown method 'nope'; expected one of: .*skdtea"):
        build_method("nope", 3, 2)
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) 'alhpa' for method 'skdtea'; expected some of: "):
        build_method("skdtea", 3, 2, {"alhpa": 0.1})
    with pytest.raises(ValueError, match=r"'alpha'=1.5 is out of range; expected a value in \[0.0, 1.0\]"):
        build_method("skdtea", 3, 2, {"alpha": 1.5})
    with pytest.raises(ValueError, match="'alignment'='dot' is not valid"):
        build_method("skdtea", 3, 2, {"alignment": "dot"})
    with pytest.raises(ValueError, match="'hidden'='wide' is not a valid int"):
        build_method("bce", 3, 2, {"hidden": "wide"})


def test_string_parameters_are_coerced_to_declared_types():
    cfg = make_config("skdtea", {"alpha": "0.25", "detach_teacher": "false", "alignment": "none", "warmup": "3"})
    assert cfg.alpha == 0.25 and cfg.detach_teacher is False and cfg.alignment is None and cfg.warmup == 3
    assert config_fields("skdtea")["alpha"] == 0.5


def test_label_smoothing_targets():
    m = build_method("ls", 6, 4, {"epsilon": 0.2})
    y = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(m.targets(y), torch.tensor([[0.9, 0.1]]))


def test_bce_loss_is_plain_bce_on_hard_labels():
    m = build_method("bce", 6, 4, {"dropout": 0.0}, seed=0)
    b = batch_of()
    out = m.step(b, ctx())
    assert set(out.losses) == {"bce"}
    assert torch.allclose(out.losses["bce"], F.binary_cross_entropy_with_logits(m(b.x), b.y))


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_skdtea_soft_targets_lie_between_labels_and_teacher(alpha):
    m = build_method("skdtea", 6, 4, {"alpha": alpha, "tau": 2.0, "hidden": 16, "dropout": 0.0}, seed=0)
    b = batch_of()
    out = m.step(b, ctx())
    q, p = out.extras["soft_targets"], out.extras["teacher_probs"]
    assert torch.allclose(q, (1 - alpha) * b.y + alpha * p)
    lo, hi = torch.minimum(b.y, p), torch.maximum(b.y, p)
    assert torch.all(q >= lo - 1e-7) and torch.all(q <= hi + 1e-7)
    assert torch.all((p > 0) & (p < 1))


def test_skdtea_teacher_probs_use_temperature_on_reconstruction_logits():
    m = build_method("skdtea", 6, 4, {"tau": 3.0, "label_noise": 0.0, "hidden": 16, "dropout": 0.0}, seed=0)
    b = batch_of()
    out = m.step(b, ctx())
    t, _ = m.teacher_logits(b.x, b.y)
    assert torch.allclose(out.extras["teacher_probs"], torch.sigmoid(t / 3.0))
    assert torch.allclose(out.losses["reconstruction"], F.binary_cross_entropy_with_logits(t, b.y))


def test_skdtea_with_alpha_zero_reduces_to_bce():
    m = build_method("skdtea", 6, 4, {"alpha": 0.0, "hidden": 16, "dropout": 0.0}, seed=0)
    b = batch_of()
    out = m.step(b, ctx())
    assert torch.allclose(out.losses["student"], F.binary_cross_entropy_with_logits(m(b.x), b.y))
    assert "alignment" not in out.losses  # no latent alignment by default


def _grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


@pytest.mark.parametrize("detach", [True, False])
def test_skdtea_detach_teacher_controls_gradient_from_student_loss(detach):
    m = build_method("skdtea", 6, 4, {"detach_teacher": detach, "hidden": 16, "dropout": 0.0}, seed=0)
    m.step(batch_of(), ctx()).losses["student"].backward()
    assert (_grad_norm(m.target_encoder) > 0) == (not detach)
    assert _grad_norm(m.feature_encoder) > 0


def test_skdtea_separate_decoder_is_not_trained_by_student_loss():
    shared = build_method("skdtea", 6, 4, {"hidden": 16}, seed=0)
    assert shared.teacher_decoder is shared.decoder
    m = build_method("skdtea", 6, 4, {"shared_decoder": False, "hidden": 16, "dropout": 0.0}, seed=0)
    assert m.teacher_decoder is not m.decoder
    m.step(batch_of(), ctx()).losses["student"].backward()
    assert _grad_norm(m.teacher_decoder) == 0 and _grad_norm(m.decoder) > 0


def test_skdtea_refuses_alpha_from_a_label_branch_that_nothing_trains():
    # with lambda_rec=0 and a detached teacher only the alignment into a shared decoder trains the label branch;
    # without it, q = (1−α)·y + α·σ(t/τ) mixed the outputs of an untrained F_e (or teacher head) into the targets
    for params in ({}, {"shared_decoder": False}, {"alignment": "l2", "shared_decoder": False},
                   {"alignment": "l2", "lambda_align": 0.0}):
        with pytest.raises(ValueError, match=r"^parameter 'alpha'=0.5 mixes the label branch's outputs into the "
                                             r"targets, but with lambda_rec=0.0 .*; expected lambda_rec > 0"):
            build_method("skdtea", 6, 4, {"hidden": 8, "lambda_rec": 0.0, **params})
    with pytest.raises(ValueError, match="with lambda_rec=0.0"):  # KD-TEA's student with its whole TEA loss too
        build_method("kdtea", 6, 4, {"hidden": 8, "lambda_rec": 0.0, "alpha": 0.5, "alignment": None})
    build_method("kdtea", 6, 4, {"hidden": 8, "lambda_rec": 0.0, "alpha": 0.5})  # its L2 alignment trains F_e
    with pytest.raises(ValueError, match="student_loss='bce'"):  # not "expected lambda_rec > 0", which cannot help
        build_method("kdtea", 6, 4, {"hidden": 8, "lambda_rec": 0.0, "alpha": 0.5, "alignment": None,
                                     "student_loss": "bce"})
    for params in ({"alpha": 0.0}, {"detach_teacher": False}, {"alignment": "l2"}, {"alignment": "cca"}):
        build_method("skdtea", 6, 4, {"hidden": 8, "lambda_rec": 0.0, **params})  # the branch trains, or is unused
    build_method("tea", 6, 4, {"hidden": 8, "lambda_rec": 0.0})  # TEA's alpha is 0
    assert build_method("skdtea", 6, 4, {"lambda_rec": 0.0}, derived=True).config.lambda_rec == 0  # a saved model


def test_skdtea_teacher_input_x_plus_y_feeds_features_to_target_encoder():
    m = build_method("skdtea", 6, 4, {"teacher_input": "x+y", "hidden": 16}, seed=0)
    assert m.target_encoder[0].in_features == 6 + 4
    assert build_method("skdtea", 6, 4, {"hidden": 16}).target_encoder[0].in_features == 4


def test_skdtea_default_latent_is_c2ae_choice():
    assert build_method("skdtea", 6, 20).latent_dim == 16  # round(0.8·20)
    assert build_method("skdtea", 6, 2).latent_dim == 4  # at least 4


def test_alignment_terms():
    b = batch_of()
    m = build_method("skdtea", 6, 4, {"alignment": "l2", "label_noise": 0.0, "hidden": 16, "dropout": 0.0}, seed=0)
    out = m.step(b, ctx())
    z_x, z_e = m.feature_encoder(b.x), m.target_encoder(b.y)
    assert torch.allclose(out.losses["alignment"], (z_x - z_e).pow(2).sum(1).mean())
    m2 = build_method("skdtea", 6, 4, {"alignment": "cca", "label_noise": 0.0, "hidden": 16, "dropout": 0.0}, seed=0)
    out2 = m2.step(b, ctx())
    expected = (z_x - z_e).pow(2).sum(1).mean() + 0.5 * (orthogonality_penalty(z_x) + orthogonality_penalty(z_e)) / 16
    assert torch.allclose(out2.losses["alignment"], expected)


def test_orthogonality_penalty_is_zero_for_orthonormal_latents():
    q, _ = torch.linalg.qr(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)))
    assert float(orthogonality_penalty(q)) == pytest.approx(0.0, abs=1e-10)
    assert float(orthogonality_penalty(2 * q)) > 1


def test_label_noise_flips_at_requested_rate_only_in_training():
    m = build_method("skdtea", 6, 50, {"label_noise": 0.2}, seed=0)
    y = (torch.rand(400, 50, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    flipped = (m.corrupt_labels(y, torch.Generator().manual_seed(0)) != y).float().mean()
    # 20 000 Bernoulli(0.2) draws: std ≈ 0.0028, so ±0.015 is > 5 std
    assert abs(float(flipped) - 0.2) < 0.015
    m.eval()
    assert torch.equal(m.corrupt_labels(y, torch.Generator().manual_seed(0)), y)


def test_warmup_ramps_alpha_from_zero():
    m = build_method("skdtea", 6, 4, {"alpha": 0.6, "warmup": 4})
    assert [m.distillation_weight(e) for e in (0, 2, 4, 10)] == pytest.approx([0.0, 0.3, 0.6, 0.6])
    assert build_method("skdtea", 6, 4, {"alpha": 0.6}).distillation_weight(0) == 0.6


def test_tea_is_aligned_and_undistilled_by_default():
    cfg = make_config("tea")
    assert cfg.alignment == "l2" and cfg.alpha == 0.0
    out = build_method("tea", 6, 4, {"hidden": 16}).step(batch_of(), ctx())
    assert set(out.losses) == {"student", "reconstruction", "alignment"}


@pytest.mark.parametrize("name", ["bce", "ls", "tea", "skdtea"])
def test_every_method_learns_a_learnable_problem(name):
    X, Y = linear_problem(n=400, d=10, L=4, seed=3)
    m = build_method(name, 10, 4, {"hidden": 32}, seed=0)
    Trainer(TrainConfig(max_epochs=25, seed=0)).fit(m, X[:300], Y[:300])
    from mlkd.metrics import mean_average_precision

    probs = torch.sigmoid(predict_logits(m, X[300:])).numpy()
    # chance mAP is the positive rate (≈0.3); a trained model must be far above it
    assert mean_average_precision(Y[300:], probs) > 0.75


def test_configs_are_dataclasses_with_defaults_in_one_place():
    for cls in REGISTRY.values():
        fields = dataclasses.fields(cls.Config)
        assert all(f.default is not dataclasses.MISSING for f in fields), cls.name
    assert np.isclose(config_fields("ls")["epsilon"], 0.1)


def _with_teacher(teacher_name, teacher_params):
    def attach(m):
        m.attach_teacher(build_method(teacher_name, 6, 4, {"dropout": 0.0, **teacher_params}, seed=1))
    return attach


# (method, extra parameters, weight, the loss terms it multiplies, teacher to attach or None). Every weight is
# exposed and documented; each is tested at a value other than its default, where dropping it would show.
LOSS_WEIGHTS = [
    ("skdtea", {}, "lambda_rec", {"reconstruction"}, None),
    ("skdtea", {"alignment": "l2"}, "lambda_align", {"alignment"}, None),
    ("raskd", {}, "lambda_aux", {"auxiliary"}, None),
    ("raskd_plus", {}, "lambda_inst", {"instance"}, None),
    ("cskd", {}, "lambda_kd", {"distillation"}, None),
    ("ban", {"generations": 3}, "lambda_kd", {"distillation"}, _with_teacher("ban", {"hidden": 8, "generations": 2})),
    ("distill", {"embed_dim": 4}, "lambda_logits", {"mld"}, _with_teacher("labelwise", {"hidden": 16, "embed_dim": 6})),
    ("distill", {"embed_dim": 4}, "lambda_feature", {"cd", "id"},
     _with_teacher("labelwise", {"hidden": 16, "embed_dim": 6})),
    ("distill", {"embed_dim": 4}, "lambda_cd", {"cd"}, _with_teacher("labelwise", {"hidden": 16, "embed_dim": 6})),
    ("distill", {"embed_dim": 4}, "lambda_id", {"id"}, _with_teacher("labelwise", {"hidden": 16, "embed_dim": 6})),
    ("distill", {"embed_dim": 4, "extra_feature_loss": "rkd"}, "lambda_extra", {"rkd_extra"},
     _with_teacher("labelwise", {"hidden": 16, "embed_dim": 6})),
    ("mpvae", {}, "c", {"ranking_label", "ranking_feature"}, None),
    ("c2ae", {}, "lambda_ortho", {"orthogonality"}, None),
]


@pytest.mark.parametrize(("name", "params", "weight", "terms", "teacher"), LOSS_WEIGHTS,
                         ids=[f"{row[0]}-{row[2]}" for row in LOSS_WEIGHTS])
def test_each_loss_weight_scales_exactly_its_own_terms(name, params, weight, terms, teacher):
    batch = batch_of(positive_rate=0.5, mixed_first_row=True)
    outs = []
    for value in (1.0, 2.5):
        small = {} if name == "mpvae" else {"hidden": 8}  # MPVAE's widths are fixed by its paper
        m = build_method(name, 6, 4, {**small, "dropout": 0.0, **params, weight: value}, seed=0)
        if teacher is not None:
            teacher(m)
        outs.append(m.step(batch, ctx(seed=3)).losses)
    one, scaled = outs
    assert terms <= set(one) and set(one) == set(scaled)
    for term in one:
        assert float(one[term].detach()) > 0 or term not in terms  # a zero term would scale trivially
        factor = 2.5 if term in terms else 1.0
        torch.testing.assert_close(scaled[term], factor * one[term], rtol=1e-5, atol=0.0)
