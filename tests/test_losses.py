"""Distillation losses (mlkd.losses, METHODS.md §3) against their definitions and loop implementations."""

import math

import pytest
import torch
import torch.nn.functional as F

from mlkd import losses


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# -- logit losses ---------------------------------------------------------------------------------------
def explicit_bernoulli_kl(student, teacher, T):
    """Σ over all entries of KL(Bern(p) ‖ Bern(q)) = p log(p/q) + (1−p) log((1−p)/(1−q)), from probabilities."""
    p, q = torch.sigmoid(teacher / T), torch.sigmoid(student / T)
    return (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))).sum()


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_mld_is_the_bernoulli_kl_summed_over_labels_per_example(T):
    student, teacher = rand(8, 5, seed=1), rand(8, 5, seed=2) * 3
    expected = explicit_bernoulli_kl(student, teacher, T) / 8
    assert float(losses.mld(student, teacher, T)) == pytest.approx(float(expected), rel=1e-10)
    assert float(losses.binary_kd(student, teacher, T)) == pytest.approx(T * T * float(expected), rel=1e-10)


def test_mld_is_zero_with_zero_gradient_when_the_student_matches_the_teacher():
    logits = rand(6, 4, seed=3).requires_grad_()
    value = losses.mld(logits, logits.detach().clone())
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    assert float(logits.grad.abs().max()) < 1e-12
    assert losses.mld(logits, logits.detach() + 0.5).item() > 0


def test_mld_stays_finite_for_saturated_logits():
    student = torch.tensor([[-60.0, 60.0]], requires_grad=True)
    value = losses.mld(student, torch.tensor([[60.0, -60.0]]))
    value.backward()
    assert math.isfinite(value.item()) and value.item() > 50
    assert torch.isfinite(student.grad).all()


def test_teacher_side_is_a_target_without_gradient():
    student, teacher = rand(5, 3, seed=4).requires_grad_(), rand(5, 3, seed=5).requires_grad_()
    (losses.mld(student, teacher) + losses.mse_logits(student, teacher)).backward()
    assert teacher.grad is None and student.grad is not None


def test_mse_logits_is_the_squared_logit_gap_summed_over_labels_per_example():
    student, teacher = rand(7, 3, seed=6), rand(7, 3, seed=7)
    expected = ((student - teacher) ** 2).sum() / 7
    assert float(losses.mse_logits(student, teacher)) == pytest.approx(float(expected))
    assert float(losses.mse_logits(student, student.clone())) == 0.0


# -- relational losses on features ----------------------------------------------------------------------
def test_rkd_and_pkt_are_zero_for_identical_features_and_positive_otherwise():
    x = rand(10, 6, seed=8)
    for fn in (losses.rkd, losses.pkt, losses.rkd_distance, losses.rkd_angle):
        assert float(fn(x, x.clone())) == pytest.approx(0.0, abs=1e-9), fn.__name__
        assert float(fn(x, rand(10, 9, seed=9))) > 1e-4, fn.__name__  # widths may differ


def explicit_pkt(student, teacher):
    """PKT from its definition, entry by entry: KL(P_t ‖ P_s) averaged over the B×B kernel entries, with
    P = each row of the (cosine + 1)/2 similarity kernel divided by its sum."""

    def kernel(x):
        B = x.shape[0]
        k = torch.tensor([[(F.cosine_similarity(x[i], x[j], dim=0) + 1) / 2 for j in range(B)] for i in range(B)],
                         dtype=x.dtype)
        return k / k.sum(dim=1, keepdim=True)

    p_s, p_t = kernel(student), kernel(teacher)
    return (p_t * torch.log(p_t / p_s)).mean()


def test_pkt_is_the_teachers_kl_to_the_student_as_defined():
    s, t = rand(9, 6, seed=20), 3.0 * rand(9, 4, seed=21) + 1.0
    expected = explicit_pkt(s, t)
    assert float(losses.pkt(s, t)) == pytest.approx(float(expected), rel=1e-4)  # pkt adds eps = 1e-7 inside
    # KL is not symmetric: the opposite direction is a different number, which the line above rules out
    assert abs(float(explicit_pkt(t, s)) - float(expected)) > 1e-3 * float(expected)


def test_rkd_is_distance_plus_twice_angle_by_default():
    s, t = rand(8, 5, seed=22), rand(8, 7, seed=23)
    distance, angle = losses.rkd_distance(s, t), losses.rkd_angle(s, t)
    assert float(distance) > 1e-3 and float(angle) > 1e-3  # both terms matter
    torch.testing.assert_close(losses.rkd(s, t), distance + 2.0 * angle)  # Park et al. 2019: 1 and 2
    torch.testing.assert_close(losses.rkd(s, t, distance_weight=0.5, angle_weight=3.0), 0.5 * distance + 3.0 * angle)


def test_rkd_is_invariant_to_the_scale_of_either_side():
    x = rand(10, 6, seed=10)
    assert float(losses.rkd(x, 5.0 * x)) == pytest.approx(0.0, abs=1e-9)


# -- CD / ID: the vectorised form equals a loop over classes / images -----------------------------------
def loop_distance_loss(student, teacher):
    """RKD-distance on one group of n rows, written plainly: Σ_ij SmoothL1(ψ_s − ψ_t)_ij / n."""

    def psi(x):
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1).clamp(min=1e-12).sqrt()
        d = d * (1 - torch.eye(len(x), dtype=x.dtype))
        return d / d[d > 0].mean()

    return F.smooth_l1_loss(psi(student), psi(teacher.detach()), reduction="sum") / len(student)


def loop_cd(student, teacher, targets):
    total = torch.zeros((), dtype=student.dtype)
    for k in range(targets.shape[1]):
        rows = targets[:, k] > 0
        if rows.sum() >= 2:
            total = total + loop_distance_loss(student[rows, k], teacher[rows, k])
    return total


def loop_id(student, teacher, targets):
    total = torch.zeros((), dtype=student.dtype)
    for i in range(targets.shape[0]):
        labels = targets[i] > 0
        if labels.sum() >= 2:
            total = total + loop_distance_loss(student[i, labels], teacher[i, labels])
    return total


def random_case(seed, B=12, L=7):
    g = torch.Generator().manual_seed(seed)
    student = torch.randn(B, L, 5, generator=g, dtype=torch.float64)
    teacher = torch.randn(B, L, 8, generator=g, dtype=torch.float64)  # a wider teacher embedding
    targets = (torch.rand(B, L, generator=g) < 0.4).double()
    targets[:, 0] = 0  # a class with no positive
    targets[:, 1] = 0
    targets[seed % B, 1] = 1  # a class with a single positive
    targets[2] = 0  # an image with no positive label
    targets[3] = 0
    targets[3, 4] = 1  # an image with a single positive label
    return student, teacher, targets


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("name", ["cd", "id"])
def test_vectorised_cd_and_id_equal_the_loops_in_value_and_gradient(seed, name):
    student, teacher, targets = random_case(seed)
    fast, slow = (losses.cd_loss, loop_cd) if name == "cd" else (losses.id_loss, loop_id)
    s1, s2 = student.clone().requires_grad_(), student.clone().requires_grad_()
    v_fast, v_slow = fast(s1, teacher, targets), slow(s2, teacher, targets)
    v_fast.backward()
    v_slow.backward()
    assert v_slow.item() > 0
    assert v_fast.item() == pytest.approx(v_slow.item(), rel=1e-9)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-7, atol=1e-10)


def test_groups_with_fewer_than_two_positives_contribute_nothing():
    student, teacher, targets = random_case(0)
    sparse = torch.zeros_like(targets)
    sparse[0, :3] = 1  # one image with three positives, each class with one positive
    assert float(losses.cd_loss(student, teacher, sparse)) == 0.0
    assert float(losses.id_loss(student, teacher, sparse)) == pytest.approx(
        float(loop_distance_loss(student[0, :3], teacher[0, :3])))
    assert float(losses.led(student, teacher, torch.zeros_like(targets))) == 0.0


def test_led_is_zero_when_the_student_copies_the_teacher_up_to_scale():
    _, teacher, targets = random_case(1)
    assert float(losses.led(3.0 * teacher, teacher, targets)) == pytest.approx(0.0, abs=1e-9)


def test_led_weights_cd_and_id():
    student, teacher, targets = random_case(2)
    cd, id_ = losses.cd_loss(student, teacher, targets), losses.id_loss(student, teacher, targets)
    assert float(losses.led(student, teacher, targets)) == pytest.approx(float(100 * cd + 1000 * id_))
    assert float(losses.led(student, teacher, targets, lambda_cd=2.0, lambda_id=0.0)) == pytest.approx(float(2 * cd))
