"""The self-distillation family of METHODS.md §4–6: RAS-KD, multi-round SD, PLL student, TF-KD, PS-KD, CS-KD, BAN."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mlkd import MultiLabelClassifier, load_model
from mlkd.methods import REGISTRY, Batch, build_method, make_config
from mlkd.methods._kd import bernoulli_kl, binary_gce, binary_kl
from mlkd.methods.ban import BAN
from mlkd.methods.base import config_identity
from mlkd.methods.cskd import ClassWisePartners, draw_partners
from mlkd.methods.multiround import MultiRound
from mlkd.methods.pll import PLL, pll_targets
from mlkd.methods.pskd import pskd_alpha
from mlkd.methods.raskd import relation_matrix, relation_smoothed_targets
from mlkd.methods.tfkd import TFKDSelf, virtual_teacher_logits
from mlkd.metrics import mean_average_precision
from mlkd.stages import run_stages
from mlkd.trainer import TrainConfig, predict_logits

from .helpers import batch_of, ctx, linear_problem

NEW = ["raskd", "raskd_plus", "multiround", "pll", "tfkd_self", "tfkd_reg", "pskd", "cskd", "ban"]
SMALL = {"hidden": 16, "dropout": 0.0}


def test_registered_with_the_specified_defaults():
    assert set(NEW) <= set(REGISTRY)
    r = make_config("raskd")
    assert (r.epsilon, r.epsilon_pos, r.tau, r.lambda_aux, r.lambda_inst, r.temperature) == (0.1, 0.0, 0.1, 1, 1, 2)
    assert (r.instance, r.representatives, r.reduce) == (False, "head", "max")
    assert make_config("raskd_plus").instance is True
    assert make_config("multiround").rounds == 4
    p = make_config("pll")
    assert (p.loss, p.gce_q) == ("bce", 0.7)
    assert (make_config("tfkd_self").alpha, make_config("tfkd_self").temperature) == (0.9, 4.0)
    assert make_config("tfkd_reg").a == 0.99 and make_config("pskd").alpha_T == 0.8
    assert (make_config("cskd").temperature, make_config("cskd").lambda_kd) == (4.0, 1.0)
    assert (make_config("ban").generations, make_config("ban").ensemble) == (3, False)


KD_METHODS = ["tfkd_self", "tfkd_reg", "cskd", "ban", "raskd_plus"]


@pytest.mark.parametrize("name", KD_METHODS)
def test_kd_term_is_summed_over_labels_by_default_and_the_earlier_mean_keeps_its_identity(name):
    default, earlier = make_config(name), make_config(name, {"kd_reduction": "mean"})
    assert default.kd_reduction == "sum"  # METHODS.md: binKL_T = Σ_k KL(...)
    # cells and checkpoints written before the parameter existed used "mean": that setting keeps their hash
    assert config_identity(default)["kd_reduction"] == "sum" and "kd_reduction" not in config_identity(earlier)
    with pytest.raises(ValueError, match=r"'kd_reduction'='batchmean' is not valid; expected one of \['sum', 'mean'\]"):
        build_method(name, 6, 4, {**SMALL, "kd_reduction": "batchmean"})


def test_kd_reduction_is_no_part_of_a_config_whose_kd_term_is_off():
    # plain RAS-KD has no instance term: its published cells stay its cells whatever kd_reduction says
    assert "kd_reduction" not in config_identity(make_config("raskd"))
    assert "kd_reduction" not in config_identity(make_config("cskd", {"lambda_kd": 0.0}))
    assert "kd_reduction" in config_identity(make_config("raskd", {"instance": True}))


def test_a_model_saved_before_kd_reduction_and_t2_scaling_existed_loads_with_the_settings_it_was_trained_with(
        tmp_path):
    X, Y = linear_problem(n=120, d=6, L=4, seed=0)
    clf = MultiLabelClassifier("cskd", hidden=8, max_epochs=2, random_state=0).fit(X, Y)
    clf.save(tmp_path / "m")
    config_path = tmp_path / "m" / "config.json"
    config = json.loads(config_path.read_text())
    del config["method_params"]["kd_reduction"]  # what an mlkd before 2026-12-03 wrote
    del config["method_params"]["t2_scaling"]  # ... and until 2026-12-03
    config_path.write_text(json.dumps(config))
    old = load_model(tmp_path / "m")
    assert (old.get_params()["kd_reduction"], old.get_params()["t2_scaling"]) == ("mean", True)
    np.testing.assert_array_equal(old.predict_proba(X), clf.predict_proba(X))
    clf.save(tmp_path / "new")  # a model saved now records the defaults it was trained with
    assert (load_model(tmp_path / "new").get_params()["kd_reduction"],
            load_model(tmp_path / "new").get_params()["t2_scaling"]) == ("sum", False)


@pytest.mark.parametrize("name", ["cskd", "ban", "tfkd_reg"])
def test_kd_term_carries_no_t2_factor_by_default_and_the_earlier_t2_keeps_its_identity(name):
    # METHODS.md §6 writes CS-KD's, BAN's and TF-KD reg's term as plain binKL_T (TF-KD self's has T²)
    default, earlier = make_config(name), make_config(name, {"t2_scaling": True})
    assert default.t2_scaling is False and "t2_scaling" not in dataclasses.asdict(make_config("tfkd_self"))
    assert "t2_scaling" not in config_identity(earlier)  # the cells and checkpoints written before it existed
    # T² = 1 at T = 1 (BAN's and TF-KD reg's default): the setting is inert there and keeps their cells' keys
    at_t1 = make_config(name, {"temperature": 1.0})
    assert config_identity(at_t1) == config_identity(make_config(name, {"temperature": 1.0, "t2_scaling": True}))
    at_t2 = make_config(name, {"temperature": 2.0})
    assert config_identity(at_t2)["t2_scaling"] is False
    weight = {"cskd": "lambda_kd", "ban": "lambda_kd", "tfkd_reg": "alpha"}[name]
    assert "t2_scaling" not in config_identity(make_config(name, {"temperature": 2.0, weight: 0.0}))


# -- shared losses -------------------------------------------------------------------------------------
def test_bernoulli_kl_matches_hand_computation_and_vanishes_on_agreement():
    t, s = torch.tensor([[0.0, 2.0]]), torch.tensor([[math.log(3.0), 2.0]])  # σ(log 3) = 0.75
    expected = 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25)
    assert torch.allclose(bernoulli_kl(t, s), torch.tensor([[expected, 0.0]]), atol=1e-7)
    # binKL(t ‖ s) = BCE(s, σ(t)) − H(σ(t)), with temperature applied to both logits
    g = torch.Generator().manual_seed(0)
    t, s = 3 * torch.randn(5, 4, generator=g), 3 * torch.randn(5, 4, generator=g)
    p = torch.sigmoid(t / 4)
    entropy = F.binary_cross_entropy(p, p, reduction="none")
    bce = F.binary_cross_entropy_with_logits(s / 4, p, reduction="none")
    assert torch.allclose(bernoulli_kl(t, s, 4.0), bce - entropy, atol=1e-6)
    # METHODS.md's binKL_T sums over labels and averages over samples; "mean" also averages over labels
    kl = bce - entropy
    assert torch.allclose(binary_kl(t, s, 4.0), kl.sum(1).mean(), atol=1e-6)
    assert torch.allclose(binary_kl(t, s, 4.0, reduction="mean"), kl.sum(1).mean() / 4, atol=1e-6)
    mask = torch.zeros(5, 4)
    mask[0, 1] = 1
    assert torch.allclose(binary_kl(t, s, 4.0, mask), kl[0, 1] / 5, atol=1e-6)
    assert torch.allclose(binary_kl(t, s, 4.0, mask, reduction="mean"), kl[0, 1] / 20, atol=1e-6)
    with pytest.raises(ValueError, match="reduction 'batchmean' is not valid"):
        binary_kl(t, s, reduction="batchmean")


def test_binary_gce_formula():
    z, q = torch.tensor([[0.0, math.log(3.0)]]), 0.7
    targets = torch.tensor([[1.0, 0.5]])
    # label 0: p = ½, target 1 → (1 − ½^q)/q; label 1: p = ¾, target ½ → ½(1 − ¾^q)/q + ½(1 − ¼^q)/q
    expected = ((1 - 0.5**q) / q + 0.5 * (1 - 0.75**q) / q + 0.5 * (1 - 0.25**q) / q) / 2
    assert float(binary_gce(z, targets, q)) == pytest.approx(expected, rel=1e-6)
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 3, generator=g), torch.rand(8, 3, generator=g)
    assert float(binary_gce(z, y, 1e-5)) == pytest.approx(float(F.binary_cross_entropy_with_logits(z, y)), rel=1e-3)


# -- RAS-KD ---------------------------------------------------------------------------------------------
def test_relation_matrix_has_zero_diagonal_rows_summing_to_one_and_follows_cosines():
    v = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])  # cos(0,1) = 0, cos(0,2) = cos(1,2) = 1/√2
    R = relation_matrix(v, tau=1.0)
    assert torch.equal(torch.diagonal(R), torch.zeros(3))
    assert torch.allclose(R.sum(1), torch.ones(3))
    c = 1 / math.sqrt(2)
    assert float(R[0, 2]) == pytest.approx(math.exp(c) / (1 + math.exp(c)), rel=1e-6)
    assert float(R[2, 0]) == pytest.approx(0.5, rel=1e-6)
    sharp = relation_matrix(torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), tau=0.1)
    assert torch.equal(torch.diagonal(sharp), torch.zeros(6)) and torch.allclose(sharp.sum(1), torch.ones(6))
    assert torch.equal(relation_matrix(torch.ones(1, 3), 0.1), torch.zeros(1, 1))


def test_relation_smoothed_targets_take_max_or_mean_over_positives():
    R = torch.tensor([[0.0, 0.2, 0.8, 0.0], [0.5, 0.0, 0.4, 0.1], [0.9, 0.1, 0.0, 0.0], [0.3, 0.3, 0.4, 0.0]])
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
    eps, eps_pos = 0.1, 0.05
    q_max = relation_smoothed_targets(y, R, eps, eps_pos, "max")
    q_mean = relation_smoothed_targets(y, R, eps, eps_pos, "mean")
    assert torch.allclose(q_max[0], torch.tensor([0.95, 0.95, eps * 0.8, eps * 0.1]))  # max(R02, R12), max(R03, R13)
    assert torch.allclose(q_mean[0], torch.tensor([0.95, 0.95, eps * 0.6, eps * 0.05]))
    assert torch.equal(q_max[1], torch.zeros(4)) and torch.equal(q_mean[1], torch.zeros(4))  # no positive: 0
    assert torch.allclose(q_max[2], torch.tensor([eps * 0.9, eps * 0.1, 0.95, 0.0]))


@pytest.mark.parametrize("n_labels, density", [(7, 0.3), (40, 0.05), (5, 1.0), (6, 0.0)])
def test_max_over_positives_equals_the_dense_masked_max_bit_for_bit(n_labels, density):
    """The compacted (B, P, L) form must give the dense (B, L, L) form's targets exactly: the published
    RAS-KD cells were computed with the dense one."""
    g = torch.Generator().manual_seed(n_labels)
    R = relation_matrix(torch.randn(n_labels, 8, generator=g), tau=0.1)
    y = (torch.rand(32, n_labels, generator=g) < density).float()
    y[0] = 0.0  # a row with no positive
    dense = (y.unsqueeze(2) * R.unsqueeze(0)).amax(dim=1)
    q = relation_smoothed_targets(y, R, 0.1, 0.0, "max")
    assert torch.equal(q, torch.where(y > 0, torch.ones_like(y), 0.1 * dense))


def test_raskd_relations_come_from_the_detached_auxiliary_head():
    m = build_method("raskd", 6, 4, SMALL, seed=0)
    out = m.step(batch_of(), ctx())
    assert set(out.losses) == {"bce", "auxiliary"}
    assert torch.allclose(out.extras["relations"], relation_matrix(m.aux_head.weight.detach(), 0.1))
    out.losses["bce"].backward()
    assert m.aux_head.weight.grad is None  # the smoothing targets carry no gradient
    plus = build_method("raskd_plus", 6, 4, SMALL, seed=0)
    b = batch_of()
    out = plus.step(b, ctx())
    h = plus.penultimate(b.x)
    expected = binary_kl(plus.aux_head(h), out.logits, 2.0)
    assert set(out.losses) == {"bce", "auxiliary", "instance"}
    assert torch.allclose(out.losses["instance"], expected)


def test_raskd_ema_prototypes_are_class_means_and_not_saved():
    # momentum 0.9 (the default), not 0.5: only an asymmetric momentum tells m*old + (1-m)*new from its swap
    m = build_method("raskd", 6, 3, {**SMALL, "representatives": "ema", "ema_momentum": 0.9}, seed=0)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    m.step(Batch(x, y, torch.arange(4)), ctx())
    h = m.penultimate(x).detach()
    assert torch.allclose(m.prototypes[0], h[:2].mean(0)) and torch.allclose(m.prototypes[1], h[1:3].mean(0))
    assert torch.equal(m.prototypes[2], torch.zeros(h.shape[1])) and m.prototype_seen.tolist() == [True, True, False]
    m.step(Batch(x[:1], y[:1], torch.arange(1)), ctx())
    second = m.penultimate(x[:1]).detach()[0]
    assert torch.allclose(m.prototypes[0], 0.9 * h[:2].mean(0) + 0.1 * second)  # the long-run mean dominates
    assert torch.allclose(m.prototypes[1], h[1:3].mean(0))  # absent from the second batch: unchanged
    assert "prototypes" not in m.state_dict()


# -- PS-KD ----------------------------------------------------------------------------------------------
def test_pskd_alpha_schedule_and_buffer_update():
    assert [pskd_alpha(0.8, t, 4) for t in range(6)] == [0.0, 0.2, 0.4, pytest.approx(0.6), 0.8, 0.8]
    ramped = build_method("pskd", 6, 4, {**SMALL, "ramp_epochs": 2}, seed=0)
    b = batch_of(n=4)
    assert float(ramped.step(b, ctx(epoch=1, max_epochs=100)).extras["alpha"]) == pytest.approx(0.4)
    m = build_method("pskd", 6, 4, SMALL, seed=0)
    b = batch_of(n=8)
    first = m.step(Batch(b.x, b.y, torch.arange(10, 18)), ctx(epoch=0, max_epochs=4))
    assert torch.equal(first.extras["soft_targets"], b.y)  # α_0 = 0: the labels
    assert m.previous_probs.shape == (18, 4) and m.visited.tolist() == [False] * 10 + [True] * 8
    assert torch.allclose(m.previous_probs[10:], torch.sigmoid(first.logits).detach())
    second = m.step(Batch(b.x, b.y, torch.arange(10, 18)), ctx(epoch=2, max_epochs=4))
    expected = 0.6 * b.y + 0.4 * torch.sigmoid(first.logits).detach()
    assert torch.allclose(second.extras["soft_targets"], expected)
    unvisited = m.step(Batch(b.x[:2], b.y[:2], torch.tensor([0, 1])), ctx(epoch=3, max_epochs=4))
    assert torch.equal(unvisited.extras["soft_targets"], b.y[:2])  # never seen: falls back to the label
    assert set(m.state_dict()) == set(build_method("bce", 6, 4, SMALL).state_dict())  # the table is not saved


# -- PLL student ----------------------------------------------------------------------------------------
def test_pll_targets_keep_agreeing_labels_and_halve_disagreements():
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0, 0.0]])
    teacher = torch.tensor([[2.0, -1.0, 0.5, -3.0, 0.0]])  # σ ≥ 0.5 ⇔ logit ≥ 0
    assert torch.equal(pll_targets(y, teacher), torch.tensor([[1.0, 0.5, 0.5, 0.0, 0.5]]))


@pytest.mark.parametrize("loss", ["bce", "gce"])
def test_pll_loss_and_stages(loss):
    teacher = build_method("bce", 6, 4, SMALL, seed=1)
    m = build_method("pll", 6, 4, {**SMALL, "loss": loss}, seed=0)
    m.attach_teacher(teacher)
    b = batch_of()
    out = m.step(b, ctx())
    q = pll_targets(b.y, teacher(b.x).detach())
    expected = binary_gce(out.logits, q, 0.7) if loss == "gce" else F.binary_cross_entropy_with_logits(out.logits, q)
    assert torch.allclose(out.losses[loss], expected)
    t, s = PLL.stages(make_config("pll"))
    assert (t.method, s.method, s.teacher, s.init_from) == ("bce", "pll", "teacher", "teacher")


# -- TF-KD ----------------------------------------------------------------------------------------------
def test_tfkd_reg_virtual_teacher_and_its_label_smoothing_equivalent():
    y = torch.tensor([[1.0, 0.0, 1.0]])
    assert torch.allclose(torch.sigmoid(virtual_teacher_logits(y, 0.99)), torch.tensor([[0.99, 0.01, 0.99]]))
    b = batch_of()
    p = torch.sigmoid(virtual_teacher_logits(b.y, 0.99))
    entropy = F.binary_cross_entropy(p, p)  # mean over samples and labels
    # METHODS.md: (1−α)·BCE(z, y) + α·binKL(p ‖ z), binKL summed over the L = 4 labels = L·(BCE(z, p) − H(p))
    m = build_method("tfkd_reg", 6, 4, SMALL, seed=0)
    out = m.step(b, ctx())
    hard, soft = F.binary_cross_entropy_with_logits(out.logits, b.y), F.binary_cross_entropy_with_logits(out.logits, p)
    expected = float((0.1 * hard + 0.9 * 4 * (soft - entropy)).detach())
    assert float(sum(out.losses.values()).detach()) == pytest.approx(expected, rel=1e-5)
    # averaged over labels (kd_reduction="mean") it is label smoothing: BCE(z, (1−α)y + αp) − α·H(p)
    m = build_method("tfkd_reg", 6, 4, {**SMALL, "kd_reduction": "mean"}, seed=0)
    out = m.step(b, ctx())
    smoothed = F.binary_cross_entropy_with_logits(out.logits, 0.1 * b.y + 0.9 * p)
    expected = float((smoothed - 0.9 * entropy).detach())
    assert float(sum(out.losses.values()).detach()) == pytest.approx(expected, rel=1e-5)


def test_tfkd_self_distils_a_fresh_copy_at_temperature():
    t, s = TFKDSelf.stages(make_config("tfkd_self"))
    assert (t.method, s.method, s.teacher, s.init_from) == ("bce", "tfkd_self", "teacher", None)
    teacher = build_method("bce", 6, 4, SMALL, seed=1)
    m = build_method("tfkd_self", 6, 4, SMALL, seed=0)
    m.attach_teacher(teacher)
    b = batch_of()
    out = m.step(b, ctx())
    assert torch.allclose(out.losses["bce"], 0.1 * F.binary_cross_entropy_with_logits(out.logits, b.y))
    assert torch.allclose(out.losses["distillation"], 0.9 * 16 * binary_kl(teacher(b.x).detach(), out.logits, 4.0))


# -- CS-KD ----------------------------------------------------------------------------------------------
CSKD_Y = torch.tensor(
    [[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]],
    dtype=torch.float32,
)


def test_cskd_pairs_only_examples_sharing_a_positive_label():
    chosen_for_row1 = set()
    for seed in range(30):
        partner, has = draw_partners(CSKD_Y, torch.Generator().manual_seed(seed))
        assert has.tolist() == [True, True, True, False, False, True, True]
        rows = torch.arange(7)[has]
        assert torch.all(partner[rows] != rows)
        assert torch.all((CSKD_Y[rows] * CSKD_Y[partner[rows]]).sum(1) > 0)
        assert partner[0] == 1 and partner[2] == 1 and partner[5] == 6 and partner[6] == 5
        chosen_for_row1.add(int(partner[1]))
    assert chosen_for_row1 == {0, 2}  # drawn at random among the eligible partners


def test_cskd_distillation_covers_only_shared_labels():
    m = build_method("cskd", 6, 4, SMALL, seed=0)
    x = torch.randn(7, 6, generator=torch.Generator().manual_seed(3))
    out = m.step(Batch(x, CSKD_Y, torch.arange(7)), ctx(seed=4))
    partner, shared = out.extras["partner"], out.extras["shared_labels"]
    assert torch.equal(shared, CSKD_Y * CSKD_Y[partner] * out.extras["has_partner"][:, None])
    assert shared[3].sum() == 0 and shared[4].sum() == 0 and shared[0].tolist() == [1, 0, 0, 0]
    kl = bernoulli_kl(out.logits[partner].detach(), out.logits, 4.0)
    # METHODS.md: λ·binKL_T summed over the shared labels, averaged over the batch (rows without a partner: 0)
    assert torch.allclose(out.losses["distillation"], (kl * shared).sum() / 7)
    # t2_scaling: × T² = 16, the official code's KDLoss (and the cells published until 2026-12-03)
    t2 = build_method("cskd", 6, 4, {**SMALL, "t2_scaling": True}, seed=0)
    out_t2 = t2.step(Batch(x, CSKD_Y, torch.arange(7)), ctx(seed=4))
    assert torch.allclose(out_t2.losses["distillation"], 16 * out.losses["distillation"])
    mean = build_method("cskd", 6, 4, {**SMALL, "kd_reduction": "mean"}, seed=0)
    out_mean = mean.step(Batch(x, CSKD_Y, torch.arange(7)), ctx(seed=4))
    assert torch.allclose(out_mean.losses["distillation"], out.losses["distillation"] / 4)
    # only the shared entries' logits receive gradient from the KD term (the partner side is detached)
    logits = out.logits.detach().requires_grad_(True)
    binary_kl(logits[partner].detach(), logits, 4.0, mask=shared).backward()
    assert torch.all((logits.grad != 0) <= (shared > 0))


def test_cskd_pair_batches_give_each_row_a_partner_training_row_sharing_a_label():
    # METHODS.md §6 "batch of pairs that share a positive label c" (partners="train"): the partner comes from the
    # whole training set, so every row with a label another row has gets one, not only those lucky in their batch
    sampler = ClassWisePartners(CSKD_Y)
    idx = torch.arange(7)
    seen = {i: set() for i in range(7)}
    for seed in range(60):
        partner = sampler.draw(idx, torch.Generator().manual_seed(seed))
        for i, j in enumerate(partner.tolist()):
            seen[i].add(j)
    # row 3's only label and row 4 (no label) have no other row: themselves, as the placeholder
    assert seen == {0: {1}, 1: {0, 2}, 2: {1}, 3: {3}, 4: {4}, 5: {6}, 6: {5}}
    # a larger draw is uniform over the label's other rows: label 0 of row 0 in a 1 + 3-row label
    Y = torch.zeros(400, 2)
    Y[:4, 0] = 1
    Y[4:, 1] = 1
    counts = torch.bincount(ClassWisePartners(Y).draw(torch.zeros(3000, dtype=torch.long),
                                                       torch.Generator().manual_seed(0)), minlength=4)
    assert counts[0] == 0 and counts[1:4].min() > 900 and counts[4:].sum() == 0
    assert torch.equal(ClassWisePartners(torch.zeros(5, 3)).draw(idx[:5], torch.Generator()), idx[:5])


def test_cskd_with_pair_batches_distils_from_the_partners_forward_without_gradient():
    m = build_method("cskd", 6, 4, {**SMALL, "partners": "train"}, seed=0)
    assert m.pair_batches and not build_method("cskd", 6, 4, SMALL).pair_batches
    x = torch.randn(14, 6, generator=torch.Generator().manual_seed(3))
    rows = torch.cat([torch.arange(7), ClassWisePartners(CSKD_Y).draw(torch.arange(7), torch.Generator())])
    y = CSKD_Y[rows]
    out = m.step(Batch(x[rows], y, rows), ctx(seed=4))
    assert out.logits.shape == (7, 4)  # the loss and logits are the B rows'; the partners only teach
    shared = y[:7] * y[7:] * (rows[7:] != rows[:7])[:, None]
    assert torch.equal(out.extras["shared_labels"], shared) and shared[3].sum() == 0 and shared[4].sum() == 0
    m.eval()  # SMALL has no dropout: the partners' logits recomputed are the step's
    with torch.no_grad():
        partner_logits = m.net(x[rows][7:])
    kl = bernoulli_kl(partner_logits, out.logits.detach(), 4.0)
    assert torch.allclose(out.losses["distillation"], (kl * shared).sum() / 7, atol=1e-6)
    assert torch.allclose(out.losses["bce"], F.binary_cross_entropy_with_logits(out.logits, y[:7]))
    m.train()
    out = m.step(Batch(x[rows], y, rows), ctx(seed=4))
    out.losses["distillation"].backward()  # reaches the parameters through the B rows only
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_cskd_pair_batches_train_end_to_end_and_keep_the_default_cells_keys():
    X, Y = linear_problem(n=80, d=6, L=4)
    clf = MultiLabelClassifier("cskd", partners="train", hidden=8, max_epochs=3, random_state=0).fit(X, Y)
    again = MultiLabelClassifier("cskd", partners="train", hidden=8, max_epochs=3, random_state=0).fit(X, Y)
    assert np.array_equal(clf.predict_proba(X), again.predict_proba(X))  # deterministic
    plain = MultiLabelClassifier("cskd", hidden=8, max_epochs=3, random_state=0).fit(X, Y)
    assert not np.array_equal(clf.predict_proba(X), plain.predict_proba(X))
    assert "partners" not in config_identity(make_config("cskd"))  # the published cells keep their keys
    assert config_identity(make_config("cskd", {"partners": "train"}))["partners"] == "train"
    with pytest.raises(ValueError, match="partners"):
        make_config("cskd", {"partners": "dataset"}).validate(6, 4)


# -- multi-round SD -------------------------------------------------------------------------------------
def test_multiround_round_targets_are_the_previous_rounds_probabilities(monkeypatch):
    seen = []
    step = MultiRound.step

    def spy(self, batch, ctx):
        out = step(self, batch, ctx)
        seen.append((self.teacher, batch.x.clone(), out.extras["soft_targets"].clone()))
        return out

    monkeypatch.setattr(MultiRound, "step", spy)
    stages = MultiRound.stages(make_config("multiround", {**SMALL, "rounds": 3}))
    assert [s.name for s in stages] == ["round0", "round1", "round2", "round3"]
    assert [s.teacher for s in stages] == [None, "round0", "round1", "round2"]
    assert all(s.init_from is None for s in stages)
    X, Y = linear_problem(n=80, d=6, L=4, seed=5)
    out = run_stages(stages, X, Y, config=TrainConfig(max_epochs=2, batch_size=32))
    models = [out[s.name].model for s in stages]
    assert len(seen) == 3 * 2 * 3  # rounds × epochs × batches
    for teacher, x, targets in seen:
        r = next(i for i, m in enumerate(models) if m is teacher)
        assert r < 3
        assert torch.allclose(targets, torch.sigmoid(predict_logits(models[r], x)), atol=1e-6)
    assert {id(t) for t, _, _ in seen} == {id(m) for m in models[:3]}
    weights = [m.net[0].weight for m in models]
    assert all(not torch.equal(a, b) for a, b in zip(weights, weights[1:], strict=False))  # fresh every round


def test_multiround_loss_is_bce_on_the_teachers_probabilities_only():
    teacher = build_method("bce", 6, 4, SMALL, seed=1)
    m = build_method("multiround", 6, 4, SMALL, seed=0)
    m.attach_teacher(teacher)
    b = batch_of()
    out = m.step(b, ctx())
    assert set(out.losses) == {"distillation"}
    expected = F.binary_cross_entropy_with_logits(out.logits, torch.sigmoid(teacher(b.x)).detach())
    assert torch.allclose(out.losses["distillation"], expected)


# -- BAN ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("generations", [2, 4])
def test_ban_trains_the_requested_number_of_generations(generations):
    stages = BAN.stages(make_config("ban", {"generations": generations}))
    assert [s.name for s in stages] == [f"gen{k}" for k in range(1, generations + 1)]
    assert [s.method for s in stages] == ["bce"] + ["ban"] * (generations - 1)
    assert [s.params.get("generations") for s in stages[1:]] == list(range(2, generations + 1))
    assert [s.teacher for s in stages[1:]] == [f"gen{k}" for k in range(1, generations)]


def test_ban_ensemble_averages_every_generations_probabilities():
    X, Y = linear_problem(n=80, d=6, L=4, seed=5)
    stages = BAN.stages(make_config("ban", {**SMALL, "generations": 3, "ensemble": True}))
    out = run_stages(stages, X, Y, config=TrainConfig(max_epochs=2, batch_size=32))
    final = out["gen3"].model
    assert len(final.ancestors) == 2 and not any(p.requires_grad for p in final.ancestors.parameters())
    # gen 2 taught gen 3 and got its gradients back, but not for its own frozen ancestor
    assert not any(p.requires_grad for p in out["gen2"].model.ancestors.parameters())
    assert all(p.requires_grad for p in out["gen2"].model.net.parameters())
    gens = [out["gen1"].model.net, out["gen2"].model.net, final.net]
    for ancestor, gen in zip(final.ancestors, gens[:2], strict=True):
        pairs = zip(ancestor.state_dict().values(), gen.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    x = torch.as_tensor(X[:10])
    with torch.no_grad():
        mean_probs = torch.stack([torch.sigmoid(g(x)) for g in gens]).mean(0)
    assert torch.allclose(torch.sigmoid(predict_logits(final, x)), mean_probs, atol=1e-6)
    assert {"ancestors.0.0.weight", "ancestors.1.0.weight"} <= set(final.state_dict())  # saved with the model


def test_ban_distils_from_the_previous_generation_alone():
    teacher = build_method("ban", 6, 4, {**SMALL, "generations": 2, "ensemble": True}, seed=1)
    m = build_method("ban", 6, 4, {**SMALL, "generations": 3, "ensemble": True}, seed=0)
    m.attach_teacher(teacher)
    b = batch_of()
    out = m.step(b, ctx())
    assert torch.allclose(out.losses["distillation"], binary_kl(teacher.net(b.x).detach(), out.logits))
    with pytest.raises(ValueError, match="needs a teacher holding 2 generation"):
        m.attach_teacher(build_method("ban", 6, 4, {**SMALL, "generations": 2}, seed=1))


# -- every method learns through the estimator and round-trips through a model file -----------------
@pytest.mark.parametrize(
    ("name", "params", "epochs"),
    [
        ("raskd", {}, 30),
        ("raskd_plus", {}, 30),
        ("raskd", {"representatives": "ema", "reduce": "mean"}, 30),
        ("multiround", {"rounds": 2}, 60),
        ("pll", {"loss": "gce"}, 30),
        ("tfkd_self", {}, 60),
        ("tfkd_reg", {}, 30),
        ("pskd", {}, 30),
        ("cskd", {}, 30),
        ("ban", {"generations": 2, "ensemble": True}, 30),
    ],
)
def test_each_method_learns_and_round_trips_through_the_estimator(name, params, epochs, tmp_path):
    X, Y = linear_problem(n=400, d=10, L=4, seed=3)
    clf = MultiLabelClassifier(name, hidden=32, max_epochs=epochs, patience=10, random_state=0, **params)
    clf.fit(X[:300], Y[:300])
    stages = REGISTRY[name].stages(clf.model_.config)
    assert list(clf.stage_models_) == ([s.name for s in stages] if stages else [name])
    assert clf.stage_models_[list(clf.stage_models_)[-1]] is clf.model_
    probs = clf.predict_proba(X[300:])
    # chance mAP is the positive rate (≈0.3); a trained model must be far above it
    assert mean_average_precision(Y[300:], probs) > 0.75
    loaded = load_model(clf.save(tmp_path / "m"))
    assert np.array_equal(loaded.predict_proba(X[300:]), probs)
    assert np.array_equal(loaded.predict(X[300:]), clf.predict(X[300:]))


def test_cskd_pair_batches_are_refused_where_rows_are_split_or_stacked():
    from mlkd.batched import check_batchable
    from mlkd.distributed import check_distributable

    m = build_method("cskd", 6, 4, {**SMALL, "partners": "train"})
    with pytest.raises(ValueError, match="pairs of training rows"):
        check_batchable(m)
    with pytest.raises(ValueError, match="training rows"):
        check_distributable(m)


def test_the_bench_diagnostic_runs_a_pair_batch_step_without_a_spurious_warning():
    import warnings

    from mlkd.bench.runner import soft_target_examples

    X, Y = linear_problem(n=90, d=5, L=3)
    clf = MultiLabelClassifier("cskd", partners="train", hidden=8, max_epochs=2).fit(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an odd row count had split the pair batch wrongly and warned
        assert soft_target_examples(clf, X[:7], Y[:7]) is None  # CS-KD makes no soft targets
