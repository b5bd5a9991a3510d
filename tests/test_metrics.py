r"""Tests for the zuko_lu.experiments.metrics module."""

import math

import pytest
import torch

from torch.func import jacrev

from zuko_lu.experiments.metrics import bits_per_dim, evaluate_nll
from zuko_lu.experiments.preprocess import ImagePreprocess, TabularPreprocess


def images(levels, n=64, D=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n, D), generator=g).double()


def test_gaussian_uses_log_2pi():
    z = torch.linspace(-3, 3, 13, dtype=torch.float64)
    by_hand = -0.5 * (z**2 + math.log(2 * math.pi))
    assert torch.allclose(torch.distributions.Normal(0.0, 1.0).log_prob(z), by_hand)

    stats = pytest.importorskip("scipy.stats")
    assert torch.allclose(torch.as_tensor(stats.norm.logpdf(z.numpy())), by_hand)

    # the reference code's 1/2 log(pi) is 1/2 bit per dimension too optimistic
    wrong = -0.5 * (z**2 + math.log(math.pi))
    assert torch.allclose((wrong - by_hand) / math.log(2), torch.tensor(0.5, dtype=z.dtype))


@pytest.mark.parametrize("levels", [17, 256])
@pytest.mark.parametrize("fitted", [False, True])
def test_uniform_cells_give_log2_levels(levels, fitted):
    x = images(levels)
    pre = ImagePreprocess(levels)
    if fitted:
        pre.fit(x, generator=torch.Generator().manual_seed(1))
    lam, mu, sigma = pre.lam, pre.mean.double(), pre.std.double()

    def log_prob(y):
        # pushforward of U[0, L)^D through y(u), derived by hand:
        # u = L (sigmoid(l) - lam) / (1 - 2 lam), l = sigma y + mu,
        # du/dy = L sigma sigmoid(l) (1 - sigmoid(l)) / (1 - 2 lam)
        l = sigma * y + mu
        log_du_dy = (
            math.log(levels) + torch.log(sigma) + torch.nn.functional.logsigmoid(l)
            + torch.nn.functional.logsigmoid(-l) - math.log(1 - 2 * lam)
        )  # fmt: skip
        return (log_du_dy - math.log(levels)).sum(-1)

    g = torch.Generator().manual_seed(2)
    mean, std = evaluate_nll(log_prob, x, pre, draws=3, generator=g, batch_size=10)
    assert mean == pytest.approx(math.log2(levels), abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)

    y, ladj = pre(x, generator=g)
    assert torch.allclose(
        bits_per_dim(log_prob(y), ladj, x.shape[-1]),
        torch.tensor(math.log2(levels), dtype=torch.float64),
    )


@pytest.mark.parametrize("fitted", [False, True])
def test_ladj_against_autograd(fitted):
    levels, x = 256, images(256, n=5, D=6)
    pre = ImagePreprocess(levels, lam=0.05)
    if fitted:
        pre.fit(images(256, n=50, D=6, seed=3))
        assert pre.std.shape == (6,) and not torch.allclose(
            pre.std, torch.ones(6, dtype=pre.std.dtype)
        )
    u = pre.dequantize(x, torch.Generator().manual_seed(0))
    _, ladj = pre.transform(u)
    for ui, li in zip(u, ladj, strict=True):
        J = jacrev(lambda v: pre.transform(v)[0])(ui)
        assert torch.allclose(torch.linalg.slogdet(J).logabsdet, li)


def test_round_trip():
    for levels in (17, 256):
        x = images(levels, n=200, D=20)
        pre = ImagePreprocess(levels).fit(x)
        y, _ = pre(x, generator=torch.Generator().manual_seed(0))
        u = pre.inverse(y)
        assert ((u >= x) & (u < x + 1)).all()
        assert torch.equal(pre.to_levels(y), x)
        assert torch.equal(
            pre.to_levels(torch.tensor([[-1e3], [1e3]]).expand(2, 20)),
            torch.tensor([[0.0], [levels - 1.0]]).expand(2, 20).double(),
        )


def test_state_dict_restores():
    x = images(17)
    pre = ImagePreprocess(17, lam=1e-3).fit(x)
    state = pre.state_dict()
    assert set(state) == {"mean", "std", "_extra_state"}

    new = ImagePreprocess(256)
    new.load_state_dict(state)
    assert (new.levels, new.lam) == (17, 1e-3)
    assert torch.equal(new.mean, pre.mean) and torch.equal(new.std, pre.std)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    assert torch.equal(new(x, generator=g1)[0], pre(x, generator=g2)[0])

    tab = TabularPreprocess().fit(torch.randn(10, 3))
    other = TabularPreprocess()
    other.load_state_dict(tab.state_dict())
    assert torch.equal(other.std, tab.std)


def test_tabular_nll_in_original_units():
    g = torch.Generator().manual_seed(0)
    x = torch.tensor([5.0, -2.0, 0.1]) + torch.tensor([3.0, 0.5, 0.01]) * torch.randn(
        500, 3, generator=g
    )
    x = x.double()
    pre = TabularPreprocess(dtype=torch.float64).fit(x)
    y, ladj = pre(x)
    assert torch.allclose(ladj, -pre.std.log().sum().expand(500))
    assert torch.allclose(pre.inverse(y), x)

    normal = torch.distributions.Normal(0.0, 1.0)
    mean, std = evaluate_nll(lambda y: normal.log_prob(y).sum(-1), x, pre, draws=2)
    direct = -torch.distributions.Normal(pre.mean, pre.std).log_prob(x).sum(-1).mean()
    assert mean == pytest.approx(direct.item(), rel=1e-12) and std == 0.0


def test_evaluate_nll_spread():
    x = images(256, n=100, D=16).float()
    pre = ImagePreprocess(256).fit(x)
    normal = torch.distributions.Normal(0.0, 1.0)
    log_prob = lambda y: normal.log_prob(y).sum(-1)

    mean, std = evaluate_nll(log_prob, x, pre, draws=4, generator=torch.Generator().manual_seed(0))
    assert std > 0 and math.isfinite(mean)
    mean1, std1 = evaluate_nll(log_prob, x, pre, draws=1, batch_size=7)
    assert std1 == 0.0 and abs(mean1 - mean) < 0.1
