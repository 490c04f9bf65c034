"""Each method's inner and outer loss against values computed by hand (plain Python math)."""
import math

import pytest
import torch

from rslad_tune.trial.methods import METHODS, Batch

S_CLEAN = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
S_ADV = [[1.0, 1.0, -0.5], [0.5, -0.5, 1.5]]
T = [[3.0, 0.0, 0.0], [-1.0, 2.0, 1.0]]
T_ADV = [[1.0, 0.5, 0.0], [0.0, 0.2, 2.0]]  # the teacher on x' (IAD): trusts row 0 more than row 1
Y = [0, 1]


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):  # KL(p || q)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def ce(row, y, tau=1.0):
    return -math.log(softmax(row, tau)[y])


def mean(values):
    values = list(values)
    return sum(values) / len(values)


def tensors(labels=Y):
    batch = Batch(torch.zeros(2, 1, 2, 2), torch.tensor(labels), torch.tensor(T),
                  student_clean_logits=torch.tensor(S_CLEAN), teacher_adv_logits=torch.tensor(T_ADV))
    return torch.tensor(S_CLEAN), torch.tensor(S_ADV), batch


@pytest.mark.parametrize("alpha", [5 / 6, 0.5, 1.0])
def test_rslad_outer_loss_is_eq3(alpha):
    s, a, batch = tensors()
    got = METHODS["rslad"](alpha=alpha).outer_loss(s, a, batch).item()
    want = sum((1 - alpha) * kl(softmax(t), softmax(sc)) + alpha * kl(softmax(t), softmax(sa))
               for t, sc, sa in zip(T, S_CLEAN, S_ADV)) / 2
    assert got == pytest.approx(want, rel=1e-5)


def test_rslad_inner_loss_is_summed_kl_to_teacher():
    _, a, batch = tensors()
    got = METHODS["rslad"]().inner_loss(batch)(a).item()
    want = sum(kl(softmax(t), softmax(sa)) for t, sa in zip(T, S_ADV))
    assert got == pytest.approx(want, rel=1e-5)


def test_rslad_temperature_softens_teacher_only():
    _, a, batch = tensors()
    got = METHODS["rslad"](temperature=2.0).inner_loss(batch)(a).item()
    want = sum(kl(softmax(t, 2.0), softmax(sa)) for t, sa in zip(T, S_ADV))
    assert got == pytest.approx(want, rel=1e-5)


def test_sat_losses_are_ce_on_adversarial():
    s, a, batch = tensors()
    m = METHODS["sat"]()
    assert m.inner_loss(batch)(a).item() == pytest.approx(sum(ce(r, y) for r, y in zip(S_ADV, Y)), rel=1e-5)
    assert m.outer_loss(s, a, batch).item() == pytest.approx(sum(ce(r, y) for r, y in zip(S_ADV, Y)) / 2, rel=1e-5)


def test_natural_is_ce_on_clean():
    s, a, batch = tensors()
    assert METHODS["natural"]().outer_loss(s, None, batch).item() == pytest.approx(
        sum(ce(r, y) for r, y in zip(S_CLEAN, Y)) / 2, rel=1e-5)


def test_every_method_of_table_1_is_registered():
    assert set(METHODS) == {"natural", "sat", "trades", "mart", "ard", "iad", "rslad"}


# ----------------------------------------------------------------------------------------- TRADES

def test_trades_inner_loss_is_summed_kl_to_students_clean_prediction():
    _, a, batch = tensors()
    got = METHODS["trades"]().inner_loss(batch)(a).item()
    want = sum(kl(softmax(sc), softmax(sa)) for sc, sa in zip(S_CLEAN, S_ADV))
    assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("lam", [6.0, 1.0])
def test_trades_outer_loss_is_ce_clean_plus_lambda_kl(lam):
    s, a, batch = tensors()
    got = METHODS["trades"](lam=lam).outer_loss(s, a, batch).item()
    want = mean(ce(sc, y) + lam * kl(softmax(sc), softmax(sa)) for sc, sa, y in zip(S_CLEAN, S_ADV, Y))
    assert got == pytest.approx(want, rel=1e-5)


def test_trades_outer_kl_trains_the_clean_view_too():
    """Official TRADES: softmax(f(x)) in the KL is not detached. d/dz_j KL(p||q) = p_j (log p_j - log q_j - KL)."""
    s, a, batch = tensors()
    s.requires_grad_(True)
    METHODS["trades"](lam=6.0).outer_loss(s, a, batch).backward()
    for i, (sc, sa, y) in enumerate(zip(S_CLEAN, S_ADV, Y)):
        p, q = softmax(sc), softmax(sa)
        d = kl(p, q)
        want = [(p[j] - (j == y) + 6.0 * p[j] * (math.log(p[j] / q[j]) - d)) / 2 for j in range(3)]
        assert s.grad[i].tolist() == pytest.approx(want, rel=1e-4, abs=1e-6)


# ----------------------------------------------------------------------------------------- MART

def test_mart_inner_loss_is_summed_ce_on_adversarial():
    _, a, batch = tensors()
    got = METHODS["mart"]().inner_loss(batch)(a).item()
    assert got == pytest.approx(sum(ce(r, y) for r, y in zip(S_ADV, Y)), rel=1e-5)


# labels [0, 1]: the most likely wrong class is also the top class (row 1) or tied with y (row 0);
# labels [1, 2]: y is the strict top class of row 1, so the margin term must take the runner-up
@pytest.mark.parametrize("labels", [[0, 1], [1, 2]])
@pytest.mark.parametrize("lam", [6.0, 1.0])
def test_mart_outer_loss_is_official_bce_plus_weighted_kl(labels, lam):
    s, a, batch = tensors(labels)
    got = METHODS["mart"](lam=lam).outer_loss(s, a, batch).item()

    def per_sample(sc, sa, y):
        p_adv, p_nat = softmax(sa), softmax(sc)
        top_wrong = max(v for k, v in enumerate(p_adv) if k != y)
        bce = ce(sa, y) - math.log(1.0001 - top_wrong + 1e-12)
        kl_nat_adv = sum(pn * math.log(pn / (pa + 1e-12)) for pn, pa in zip(p_nat, p_adv))
        return bce + lam * kl_nat_adv * (1.0000001 - p_nat[y])

    want = mean(per_sample(sc, sa, y) for sc, sa, y in zip(S_CLEAN, S_ADV, labels))
    assert got == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------------------- ARD

def test_ard_inner_loss_is_summed_ce_on_adversarial():
    _, a, batch = tensors()
    got = METHODS["ard"](temperature=3.0).inner_loss(batch)(a).item()  # no temperature in the attack
    assert got == pytest.approx(sum(ce(r, y) for r, y in zip(S_ADV, Y)), rel=1e-5)


@pytest.mark.parametrize("alpha,tau", [(5 / 6, 1.0), (0.5, 2.0), (0.9, 4.0)])
def test_ard_outer_loss_is_table_1(alpha, tau):
    s, a, batch = tensors()
    got = METHODS["ard"](alpha=alpha, temperature=tau).outer_loss(s, a, batch).item()
    want = mean((1 - alpha) * ce(sc, y, tau) + alpha * tau ** 2 * kl(softmax(t, tau), softmax(sa, tau))
                for sc, sa, t, y in zip(S_CLEAN, S_ADV, T, Y))
    assert got == pytest.approx(want, rel=1e-5)


# ----------------------------------------------------------------------------------------- IAD

def test_iad_inner_loss_is_summed_ce_on_adversarial():
    _, a, batch = tensors()
    got = METHODS["iad"](temperature=2.0).inner_loss(batch)(a).item()
    assert got == pytest.approx(sum(ce(r, y) for r, y in zip(S_ADV, Y)), rel=1e-5)


@pytest.mark.parametrize("beta,tau", [(0.1, 1.0), (1.0, 1.0), (0.5, 2.0), (0.0, 1.0)])
def test_iad_outer_loss_weighs_teacher_by_its_trust_on_adversarial(beta, tau):
    s, a, batch = tensors()
    got = METHODS["iad"](iad_beta=beta, temperature=tau).outer_loss(s, a, batch).item()

    def per_sample(sc, sa, t, ta, y):
        w = softmax(ta)[y] ** beta  # the teacher's true-label probability on x', at temperature 1
        return w * kl(softmax(t, tau), softmax(sa, tau)) + (1 - w) * kl(softmax(sc, tau), softmax(sa, tau))

    want = mean(per_sample(*row) for row in zip(S_CLEAN, S_ADV, T, T_ADV, Y))
    assert got == pytest.approx(want, rel=1e-5)


def _authors_rslad_loss(student_adv_logits, student_nat_logits, teacher_logits):
    """The RSLAD authors' training loss (resnet18_rslad_cifar10.py), written out by hand."""
    import torch.nn.functional as F

    def kl_loss(a, b):
        return -a * b + torch.log(b + 1e-5) * b

    t = F.softmax(teacher_logits, dim=1)
    kl1 = torch.mean(kl_loss(F.log_softmax(student_adv_logits, dim=1), t))
    kl2 = torch.mean(kl_loss(F.log_softmax(student_nat_logits, dim=1), t))
    return 5 / 6.0 * kl1 + 1 / 6.0 * kl2


def test_rslad_paper_kl_reduction_is_the_authors_loss_line():
    torch.manual_seed(3)
    adv, nat, teacher = torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10)
    batch = Batch(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long), teacher_logits=teacher)
    paper = METHODS["rslad"](alpha=5 / 6, kl_reduction="paper").outer_loss(nat, adv, batch)
    assert paper.item() == pytest.approx(_authors_rslad_loss(adv, nat, teacher).item(), abs=1e-7)
    per_sample = METHODS["rslad"](alpha=5 / 6).outer_loss(nat, adv, batch)
    assert per_sample.item() == pytest.approx(10 * paper.item(), rel=1e-3)  # batchmean = num_classes x paper


def test_ard_paper_kl_reduction_is_nn_kldivloss_default():
    import torch.nn.functional as F

    torch.manual_seed(4)
    adv, nat, teacher = torch.randn(4, 10), torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    batch = Batch(torch.zeros(4, 1, 2, 2), y, teacher_logits=teacher)
    got = METHODS["ard"](alpha=0.9, kl_reduction="paper").outer_loss(nat, adv, batch)
    want = 0.1 * F.cross_entropy(nat, y) + 0.9 * torch.nn.KLDivLoss()(F.log_softmax(adv, dim=1), F.softmax(teacher, dim=1))
    assert got.item() == pytest.approx(want.item(), abs=1e-7)
