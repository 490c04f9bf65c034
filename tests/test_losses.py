"""Each method's inner and outer loss against values computed by hand (plain Python math)."""
import math

import pytest
import torch

from rslad_tune.methods import METHODS, Batch

S_CLEAN = [[2.0, 0.5, -1.0], [0.0, 1.0, 0.0]]
S_ADV = [[1.0, 1.0, -0.5], [0.5, -0.5, 1.5]]
T = [[3.0, 0.0, 0.0], [-1.0, 2.0, 1.0]]
Y = [0, 1]


def softmax(row, tau=1.0):
    e = [math.exp(v / tau) for v in row]
    return [v / sum(e) for v in e]


def kl(p, q):  # KL(p || q)
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def ce(row, y):
    return -math.log(softmax(row)[y])


def tensors():
    return torch.tensor(S_CLEAN), torch.tensor(S_ADV), Batch(torch.zeros(2, 1, 2, 2), torch.tensor(Y), torch.tensor(T))


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
