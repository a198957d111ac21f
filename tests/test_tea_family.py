"""The TEA baselines of METHODS.md §2: C2AE, MPVAE and KD-TEA behave as specified."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Normal, kl_divergence
from torch.special import ndtr

from mlkd.estimator import C2AEClassifier, KDTEAClassifier, MPVAEClassifier
from mlkd.io import load_model
from mlkd.methods import REGISTRY, build_method, make_config
from mlkd.methods.c2ae import alignment_terms, c2ae_official_train_config, exp_ranking_loss
from mlkd.methods.kdtea import KDTEA
from mlkd.methods.mpvae import gaussian_kl, probit_probabilities, sample_nll
from mlkd.metrics import mean_average_precision
from mlkd.stages import run_stages
from mlkd.trainer import TrainConfig, Trainer, predict_logits

from .helpers import batch_of, ctx, linear_problem


def grad_norm(module):
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_registered_with_estimator_classes():
    assert {"c2ae", "mpvae", "kdtea"} <= set(REGISTRY)
    assert C2AEClassifier().get_params()["alpha"] == 0.5
    assert MPVAEClassifier().get_params()["n_samples"] == 100
    params = KDTEAClassifier().get_params()
    assert (params["hidden"], params["teacher_hidden"], params["beta"]) == (128, 1024, 1.0)


# -- C2AE ---------------------------------------------------------------------------------------------
def c2ae(**params):
    return build_method("c2ae", 6, 4, {"hidden": 16, **params}, seed=0)


def test_c2ae_ranking_loss_reaches_only_target_encoder_and_decoder():
    m = c2ae()
    m.step(batch_of(mixed_first_row=True), ctx()).losses["ranking"].backward()
    assert grad_norm(m.feature_encoder) == 0
    assert grad_norm(m.target_encoder) > 0 and grad_norm(m.decoder) > 0


def test_c2ae_alignment_reaches_both_encoders_never_the_decoder():
    m = c2ae()
    out = m.step(batch_of(mixed_first_row=True), ctx())
    (out.losses["alignment"] + out.losses["orthogonality"]).backward()
    assert grad_norm(m.decoder) == 0
    assert grad_norm(m.feature_encoder) > 0 and grad_norm(m.target_encoder) > 0


def test_c2ae_feature_encoder_learns_from_the_alignment_alone():
    m, b = c2ae(), batch_of(mixed_first_row=True)
    sum(m.step(b, ctx()).losses.values()).backward()
    total = [p.grad.clone() for p in m.feature_encoder.parameters()]
    m.zero_grad()
    out = m.step(b, ctx())
    (out.losses["alignment"] + out.losses["orthogonality"]).backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(total, m.feature_encoder.parameters(), strict=True))


def test_c2ae_alignment_and_orthogonality_vanish_for_equal_orthonormal_codes():
    q, _ = torch.linalg.qr(torch.randn(10, 4, generator=torch.Generator().manual_seed(0)))
    align, ortho = alignment_terms(q, q)
    assert float(align) == pytest.approx(0.0, abs=1e-10) and float(ortho) == pytest.approx(0.0, abs=1e-10)
    align, ortho = alignment_terms(q, 2 * q)
    assert float(align) == pytest.approx(4.0, rel=1e-5)  # ‖q − 2q‖²_F = ‖q‖²_F = 4 orthonormal columns
    assert float(ortho) == pytest.approx(4 * 3**2, rel=1e-5)  # ‖4I − I‖²_F over 4 dimensions


def test_exp_ranking_loss_matches_hand_computation():
    scores = torch.tensor([[0.8, 0.3, 0.5], [0.2, 0.9, 0.6], [0.1, 0.2, 0.3]])
    y = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # row 0: pairs (0,1), (0,2): [exp(−5·0.5) + exp(−5·0.3)] / (5·1·2)
    # row 1: pairs (0,2), (1,2): [exp(−5·(−0.4)) + exp(−5·0.3)] / (5·2·1)
    # row 2: no positive label, so no pair: 0
    expected = torch.tensor([(math.exp(-2.5) + math.exp(-1.5)) / 10, (math.exp(2.0) + math.exp(-1.5)) / 10, 0.0])
    assert torch.allclose(exp_ranking_loss(scores, y), expected)


def test_exp_ranking_loss_equals_masked_pairwise_sum_with_sample_dimension():
    g = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 5, 7, generator=g)  # (B, S, L)
    y = (torch.rand(3, 7, generator=g) < 0.4).float()
    pairs = y.unsqueeze(-1) * (1 - y).unsqueeze(-2)  # (B, L, L): p positive, q negative
    diff = scores.unsqueeze(-1) - scores.unsqueeze(-2)  # (B, S, L, L): a_p − a_q
    dense = (torch.exp(-5 * diff) * pairs.unsqueeze(1)).sum((-1, -2)) / (5 * pairs.sum((-1, -2))).unsqueeze(1)
    assert torch.allclose(exp_ranking_loss(scores, y.unsqueeze(1)), dense, rtol=1e-5)


def test_c2ae_latent_activation_is_shifted_sigmoid():
    m = c2ae()
    x = 100 * torch.randn(64, 6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        z = m.feature_encoder(x)
        assert torch.allclose(z, torch.sigmoid(m.feature_encoder[0](x)) - 0.5)
    assert float(z.min()) >= -0.5 and float(z.max()) <= 0.5 and float(z.min()) < -0.45 and float(z.max()) > 0.45
    assert torch.all(m.target_encoder(torch.ones(3, 4)).abs() < 0.5)


def test_c2ae_architecture_is_the_official_one():
    m = build_method("c2ae", 103, 14)
    assert m.latent_dim == 11  # round(0.8·14)
    widths = [lin.out_features for lin in m.feature_encoder[0] if isinstance(lin, torch.nn.Linear)]
    assert widths == [512, 512, 11]
    assert [lin.out_features for lin in m.target_encoder[0] if isinstance(lin, torch.nn.Linear)] == [512, 11]
    assert isinstance(m.feature_encoder[0][1], torch.nn.LeakyReLU) and m.feature_encoder[0][1].negative_slope == 0.1


def test_c2ae_refuses_a_fit_whose_decoder_would_never_train(tmp_path):
    # its decoder learns from the ranking loss alone: one label (no positive/negative pairs) or alpha=0 fitted a
    # decoder left at its random weights, near-constant scores, without a word
    X, Y = linear_problem(n=60, d=6, L=4)
    with pytest.raises(ValueError, match="needs at least 2 labels"):
        C2AEClassifier(hidden=8, max_epochs=1).fit(X, Y[:, 0])
    with pytest.raises(ValueError, match="'alpha'=0.0 turns off the ranking loss"):
        C2AEClassifier(hidden=8, max_epochs=1, alpha=0.0).fit(X, Y)
    clf = C2AEClassifier(hidden=8, max_epochs=1).fit(X, Y[:, :2])  # two labels: pairs exist
    assert load_model(clf.save(tmp_path / "m")).n_labels_ == 2


def test_official_optimiser_preset_is_rmsprop_with_exponential_decay(monkeypatch):
    import mlkd.trainer as trainer

    preset = c2ae_official_train_config()
    made = []
    original = trainer._make_optimizer
    monkeypatch.setattr(trainer, "_make_optimizer", lambda p, cfg: made.append(original(p, cfg)) or made[-1])
    X, Y = linear_problem(n=60, d=6, L=4)
    cfg = TrainConfig(**{**preset, "max_epochs": 3})
    Trainer(cfg).fit(c2ae(), X, Y)
    opt = made[0]
    assert isinstance(opt, torch.optim.RMSprop)
    assert opt.defaults["momentum"] == 0.99 and opt.defaults["alpha"] == 0.9
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4 * 0.98**2)  # lr at the last epoch (e = 2)
    assert preset["batch_size"] == 500 and preset["max_epochs"] == 50
    assert TrainConfig().lr_decay == 1.0  # the default changes nothing


# -- MPVAE --------------------------------------------------------------------------------------------
def test_mpvae_likelihood_is_the_monte_carlo_estimate():
    g = torch.Generator().manual_seed(0)
    B, S, L = 2, 4, 3
    mu, R, xi = torch.randn(B, L, generator=g), torch.randn(L, L, generator=g), torch.randn(B, S, L, generator=g)
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    expected = []
    for b in range(B):
        likelihoods = []
        for s in range(S):
            p = ndtr(R @ xi[b, s] + mu[b]) * (1 - 1e-6) + 0.5e-6
            likelihoods.append(float(torch.prod(torch.where(y[b] == 1, p, 1 - p))))
        expected.append(-math.log(sum(likelihoods) / S))
    assert torch.allclose(sample_nll(probit_probabilities(mu, R, xi), y), torch.tensor(expected), rtol=1e-5)


def test_mpvae_step_uses_one_eps_and_one_xi_for_both_branches():
    m = build_method("mpvae", 6, 4, {"dropout": 0.0, "n_samples": 5, "latent": 3}, seed=0)
    b = batch_of(mixed_first_row=True)
    out = m.step(b, ctx(seed=7))
    g = torch.Generator().manual_seed(7)
    eps = torch.randn(16, 3, generator=g)
    xi = torch.randn(16, 5, 4, generator=g)
    mu_e, lv_e = m.label_encoder(torch.cat([b.x, b.y], 1)).chunk(2, 1)
    mu_x, lv_x = m.feature_encoder(b.x).chunk(2, 1)
    R = m.covariance_root
    p_e = probit_probabilities(m.decode(b.x, mu_e + eps * (0.5 * lv_e).exp(), m.label_head), R, xi)
    p_x = probit_probabilities(m.decode(b.x, mu_x + eps * (0.5 * lv_x).exp(), m.feature_head), R, xi)
    assert torch.allclose(out.losses["nll_label"], 0.1 * sample_nll(p_e, b.y).mean())
    assert torch.allclose(out.losses["nll_feature"], 0.1 * sample_nll(p_x, b.y).mean())
    assert torch.allclose(out.losses["ranking_feature"], m.config.c * exp_ranking_loss(p_x, b.y.unsqueeze(1)).mean())
    assert torch.allclose(out.losses["kl"], 1.1 * gaussian_kl(mu_e, lv_e, mu_x, lv_x).mean())


def test_mpvae_kl_is_the_closed_form_gaussian_kl():
    g = torch.Generator().manual_seed(0)
    mu_q, lv_q, mu_p, lv_p = (torch.randn(5, 3, generator=g) for _ in range(4))
    reference = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_p, lv_p), reference, rtol=1e-5)
    assert torch.allclose(gaussian_kl(mu_q, lv_q, mu_q, lv_q), torch.zeros(5), atol=1e-6)


def test_mpvae_covariance_is_positive_definite():
    m = build_method("mpvae", 6, 5, seed=0)
    sigma = m.covariance().detach()
    assert torch.allclose(sigma, sigma.T)
    assert float(torch.linalg.eigvalsh(sigma).min()) >= 1 - 1e-5  # RRᵀ ⪰ 0, so every eigenvalue ≥ 1
    torch.linalg.cholesky(sigma)


def test_mpvae_prediction_is_the_closed_form_marginal_of_the_feature_branch():
    m = build_method("mpvae", 6, 4, seed=0).eval()
    x = batch_of(mixed_first_row=True).x
    probs = torch.sigmoid(m(x))
    assert torch.all((probs >= 0) & (probs <= 1)) and torch.equal(m(x), m(x))  # deterministic in eval
    with torch.no_grad():
        mu = m.decode(x, m.feature_encoder(x).chunk(2, 1)[0], m.feature_head)
        xi = torch.randn(x.shape[0], 20000, 4, generator=torch.Generator().manual_seed(0))
        monte_carlo = probit_probabilities(mu, m.covariance_root, xi).mean(1)
    assert torch.allclose(probs, monte_carlo, atol=0.01)  # mean of Φ(Rξ + μ) over ξ → Φ(μ/√Σ_kk)


# -- KD-TEA -------------------------------------------------------------------------------------------
def test_kdtea_declares_a_wide_teacher_and_a_smaller_student():
    cfg = make_config("kdtea")
    teacher, student = KDTEA.stages(cfg)
    assert (teacher.method, student.method, student.teacher) == ("tea", "kdtea", teacher.name)
    t = build_method(teacher.method, 10, 5, teacher.params)
    s = build_method(student.method, 10, 5, student.params)
    n_params = [sum(p.numel() for p in m.parameters()) for m in (t, s)]
    assert n_params[1] < n_params[0] / 20
    assert t.feature_encoder[0].out_features == 1024 and s.feature_encoder[0].out_features == 128


def test_kdtea_distillation_vanishes_when_the_student_copies_the_teacher():
    params = {"hidden": 16, "teacher_hidden": 16, "dropout": 0.0}
    teacher = build_method("tea", 6, 4, {"hidden": 16, "dropout": 0.0}, seed=1)
    student = build_method("kdtea", 6, 4, params, seed=0)
    student.attach_teacher(teacher)
    assert student.step(batch_of(mixed_first_row=True), ctx()).losses["distillation"].item() > 1e-6
    student.load_state_dict(teacher.state_dict())
    assert student.step(batch_of(mixed_first_row=True), ctx()).losses["distillation"].item() == 0.0


def test_kdtea_student_loss_bce_is_the_literal_formula_and_the_default_keeps_its_identity():
    from mlkd.methods.base import config_identity

    teacher = build_method("tea", 6, 4, {"hidden": 16, "dropout": 0.0}, seed=1)
    params = {"hidden": 16, "teacher_hidden": 16, "dropout": 0.0}
    whole, literal = (build_method("kdtea", 6, 4, {**params, "student_loss": loss}, seed=0) for loss in ("tea", "bce"))
    for m in (whole, literal):
        m.attach_teacher(teacher)
    b = batch_of(mixed_first_row=True)
    assert set(whole.step(b, ctx()).losses) == {"student", "reconstruction", "alignment", "distillation"}
    out = literal.step(b, ctx())
    assert set(out.losses) == {"student", "distillation"}  # METHODS.md: L = BCE(s, y) + β·MSE(σ(s), σ(t))
    expected = F.binary_cross_entropy_with_logits(out.logits, b.y) + F.mse_loss(
        torch.sigmoid(out.logits), torch.sigmoid(teacher(b.x)))
    assert torch.allclose(sum(out.losses.values()), expected)
    # the published KD-TEA cells used the whole TEA loss: that default keeps their keys
    assert "student_loss" not in config_identity(make_config("kdtea"))
    assert config_identity(make_config("kdtea", {"student_loss": "bce"}))["student_loss"] == "bce"


def test_kdtea_student_loss_bce_refuses_alpha_whose_label_branch_never_trains():
    # with alpha > 0 the "literal" student trained on (1−α)·y + α·σ(t/τ) from an untrained label branch, not BCE(s, y)
    with pytest.raises(ValueError, match="student_loss='bce'.*never trains that branch"):
        build_method("kdtea", 6, 4, {"hidden": 8, "student_loss": "bce", "alpha": 0.5})
    X, Y = linear_problem(n=60, d=6, L=4)
    with pytest.raises(ValueError, match="expected alpha=0 with student_loss='bce'"):
        KDTEAClassifier(hidden=8, teacher_hidden=8, max_epochs=1, student_loss="bce", alpha=0.5).fit(X, Y)
    build_method("kdtea", 6, 4, {"hidden": 8, "alpha": 0.5})  # the whole TEA loss trains the branch: accepted


def test_kdtea_teacher_is_frozen_in_eval_mode_and_not_saved():
    teacher = build_method("tea", 6, 4, {"hidden": 16}, seed=1)
    student = build_method("kdtea", 6, 4, {"hidden": 8}, seed=0)
    keys = set(student.state_dict())
    n_params = len(list(student.parameters()))
    student.attach_teacher(teacher)
    student.train()
    assert student.training and not teacher.training
    assert set(student.state_dict()) == keys and len(list(student.parameters())) == n_params
    sum(student.step(batch_of(mixed_first_row=True), ctx()).losses.values()).backward()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert grad_norm(student.feature_encoder) > 0


def test_kdtea_without_a_teacher_is_a_clear_error():
    with pytest.raises(ValueError, match="needs a trained teacher"):
        build_method("kdtea", 6, 4, {"hidden": 8}).step(batch_of(mixed_first_row=True), ctx())


def test_kdtea_teacher_stays_frozen_during_staged_training(monkeypatch):
    seen = []
    step = KDTEA.step

    def spy(self, batch, ctx):
        seen.append((self.training, self.teacher.training, any(p.requires_grad for p in self.teacher.parameters())))
        return step(self, batch, ctx)

    monkeypatch.setattr(KDTEA, "step", spy)
    X, Y = linear_problem(n=80, d=6, L=4)
    stages = KDTEA.stages(make_config("kdtea", {"hidden": 8, "teacher_hidden": 16}))
    out = run_stages(stages, X, Y, config=TrainConfig(max_epochs=2, batch_size=32))
    assert seen and all(s == (True, False, False) for s in seen)
    assert out["student"].model.teacher is None  # detached after training: a plain predictor


def test_kdtea_estimator_round_trip(tmp_path):
    X, Y = linear_problem(n=120, d=6, L=4, seed=2)
    clf = KDTEAClassifier(hidden=8, teacher_hidden=16, max_epochs=3, random_state=0).fit(X[:100], Y[:100])
    assert list(clf.stage_results_) == ["teacher", "student"]
    clf.save(tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    assert type(loaded) is KDTEAClassifier and loaded.model_.teacher is None
    assert np.array_equal(loaded.predict_proba(X[100:]), clf.predict_proba(X[100:]))
    assert np.array_equal(loaded.predict(X[100:]), clf.predict(X[100:]))


# -- every method learns ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params", "epochs"),
    [
        ("c2ae", {"hidden": 64}, 25),
        ("mpvae", {"n_samples": 10}, 25),
        ("kdtea", {"hidden": 32, "teacher_hidden": 64}, 40),
    ],
)
def test_each_method_learns_a_learnable_problem(name, params, epochs):
    X, Y = linear_problem(n=400, d=10, L=4, seed=3)
    cfg = TrainConfig(max_epochs=epochs, seed=0)
    stages = REGISTRY[name].stages(make_config(name, params))
    if stages:
        model = run_stages(stages, X[:300], Y[:300], config=cfg)[stages[-1].name].model
    else:
        model = build_method(name, 10, 4, params, seed=0)
        Trainer(cfg).fit(model, X[:300], Y[:300])
    probs = torch.sigmoid(predict_logits(model, X[300:])).numpy()
    # chance mAP is the positive rate (≈0.3); a trained model must be far above it
    assert mean_average_precision(Y[300:], probs) > 0.75
