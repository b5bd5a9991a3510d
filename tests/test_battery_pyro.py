r"""A generic battery over every Pyro helper and module of zuko-lu.

Every helper of :mod:`zuko_lu.pyro` (and its class), conditional ones through
``.condition(context)``, goes through the same checks at float32 and float64: log-det
against a finite-difference Jacobian, inverse round trip, ``event_dim`` and the shapes
of outputs and log-dets for batch shapes, gradients to every parameter, and use inside
a (conditional) transformed distribution, on the ``--device`` of the run.
"""

from collections.abc import Callable

import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

from pyro.distributions.transforms import iterated

from zuko_lu.pyro import (
    ConditionalLULinear,
    LeakySoftplus,
    LULinear,
    conditional_lu_linear,
    conditional_lu_net,
    leaky_softplus,
    lu_linear,
    lu_net,
)

D, C = 3, 2
DTYPES = [torch.float32, torch.float64]

# name -> (factory, event_dim)
MODULES: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "lu_linear": (lambda: lu_linear(D), 1),
    "lu_linear-orthogonal-softplus": (
        lambda: lu_linear(D, init="orthogonal", diagonal="softplus"),
        1,
    ),
    "lu_linear-nobias": (lambda: lu_linear(D, bias=False), 1),
    "LULinear": (lambda: LULinear(D, init="orthogonal", cache_size=0), 1),
    "leaky_softplus": (lambda: leaky_softplus(D, alpha=0.2), 0),
    "leaky_softplus-learnable": (lambda: leaky_softplus(D, learnable=True), 0),
    "LeakySoftplus": (lambda: LeakySoftplus(0.3, D, learnable=True, cache_size=0), 0),
    "lu_net": (lambda: lu_net(D, transforms=2), 1),
    "lu_net-learnable": (lambda: lu_net(D, 1, learnable_alpha=True, init="orthogonal"), 1),
}

CONDITIONAL: dict[str, Callable[[], nn.Module]] = {
    "conditional_lu_linear": lambda: conditional_lu_linear(D, C, [8]),
    "conditional_lu_linear-full": lambda: conditional_lu_linear(D, C, [8], conditioning="full"),
    "ConditionalLULinear": lambda: ConditionalLULinear(D, C, [8, 8], init="orthogonal"),
    "conditional_lu_net": lambda: conditional_lu_net(D, C, [8], transforms=2),
    "conditional_lu_net-full": lambda: conditional_lu_net(
        D, C, [8], transforms=1, conditioning="full", learnable_alpha=True
    ),
}


def perturb(module: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    module = module.to(dtype=dtype, device=device)
    with torch.no_grad():  # away from the identity initialisation
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def fd_jacobian(f: Callable, x: torch.Tensor, eps: float) -> torch.Tensor:
    r"""The Jacobian of `f` at a vector `x` by central differences."""

    columns = []
    for j in range(len(x)):
        e = torch.zeros_like(x)
        e[j] = eps
        columns.append((f(x + e) - f(x - e)) / (2 * eps))
    return torch.stack(columns, dim=-1)


def check_transform(t, x: torch.Tensor, event_dim: int) -> None:
    r"""The battery for one (conditioned) transformation and inputs of shape (*, D)."""

    dtype = x.dtype
    tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-8, rtol=1e-8)
    assert t.event_dim == event_dim and t.bijective

    y = t(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.allclose(t.inv(y.clone()), x, **tol)  # clone: past any cache

    ladj = t.log_abs_det_jacobian(x, y)
    assert ladj.shape == x.shape[: x.dim() - event_dim]
    assert torch.allclose(t.inv.log_abs_det_jacobian(y, x), -ladj, **tol)

    # the log-det against a finite-difference Jacobian, for a few rows
    eps, fd_tol = (1e-2, 5e-3) if dtype == torch.float32 else (1e-5, 1e-7)
    rows, ladj_rows = x.reshape(-1, D), ladj.reshape(-1, D) if event_dim == 0 else ladj.reshape(-1)
    ys = y.reshape(-1, D)
    for i in range(min(2, len(rows))):

        def row(v: torch.Tensor, i: int = i) -> torch.Tensor:  # row i of t(x), v for x_i
            return t(torch.cat((rows[:i], v[None], rows[i + 1 :])).view(x.shape)).reshape(-1, D)

        J = fd_jacobian(lambda v, i=i: row(v, i)[i], rows[i], eps)
        expected = ladj_rows[i].sum() if event_dim == 0 else ladj_rows[i]
        assert torch.allclose(torch.linalg.slogdet(J).logabsdet, expected, atol=fd_tol)
        assert torch.allclose(ys[i], row(rows[i], i)[i], **tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(MODULES))
def test_module(name, dtype, device):
    factory, event_dim = MODULES[name]
    t = perturb(factory(), dtype, device)
    for shape in [(5, D), (2, 4, D), (D,)]:
        check_transform(t, torch.randn(shape, dtype=dtype, device=device), event_dim)


@pytest.mark.parametrize("name", list(MODULES))
def test_module_gradients(name, device):
    factory, event_dim = MODULES[name]
    t = perturb(factory(), torch.float64, device)
    x = torch.randn(6, D, dtype=torch.float64, device=device, requires_grad=True)
    y = t(x)
    (y.square().sum() + t.log_abs_det_jacobian(x, y).sum() + t.inv(x).sum()).backward()
    assert torch.isfinite(x.grad).all()
    for n, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), n


@pytest.mark.parametrize("name", list(MODULES))
def test_module_distribution(name, device):
    factory, event_dim = MODULES[name]
    t = perturb(factory(), torch.float32, device)
    base = dist.Normal(torch.zeros(D, device=device), 1.0).to_event(1)
    for transforms in ([t], [t.inv]):
        d = dist.TransformedDistribution(base, transforms)
        x = d.rsample((4, 5))
        assert x.shape == (4, 5, D)
        log_p = d.log_prob(x)
        assert log_p.shape == (4, 5) and torch.isfinite(log_p).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_conditional(name, dtype, device):
    module = perturb(CONDITIONAL[name](), dtype, device)
    new = dict(dtype=dtype, device=device)
    # a batch of contexts, one per row, and one context for all rows
    for xs, cs in [((2, 4, D), (2, 4, C)), ((5, D), (5, C)), ((5, D), (C,))]:
        x, c = torch.randn(xs, **new), torch.randn(cs, **new)
        check_transform(module.condition(c), x, 1)

    # each row of a batched condition is the row's own block
    x, c = torch.randn(4, D, **new), torch.randn(4, C, **new)
    y = module.condition(c)(x)
    y1 = module.condition(c[1])(x[1])
    assert torch.allclose(y[1], y1, atol=1e-6)


@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_conditional_broadcasts(name, device):
    # inputs and contexts of different batch shapes broadcast, log-dets included
    module = perturb(CONDITIONAL[name](), torch.float64, device)
    t = module.condition(torch.randn(4, C, dtype=torch.float64, device=device))
    for shape, batch in [((5, 1, D), (5, 4)), ((D,), (4,))]:
        x = torch.randn(shape, dtype=torch.float64, device=device)
        y = t(x)
        assert y.shape == (*batch, D)
        assert t.log_abs_det_jacobian(x, y).shape == batch
        assert torch.allclose(t.inv(y.clone()), x.expand_as(y))


@pytest.mark.parametrize("name", list(CONDITIONAL))
def test_conditional_gradients_and_distribution(name, device):
    module = perturb(CONDITIONAL[name](), torch.float32, device)
    base = dist.Normal(torch.zeros(D, device=device), 1.0).to_event(1)
    d = dist.ConditionalTransformedDistribution(base, [module.inv])
    c = torch.randn(6, C, device=device)
    x = torch.randn(6, D, device=device)
    log_p = d.condition(c).log_prob(x)
    assert log_p.shape == (6,) and torch.isfinite(log_p).all()
    sample = d.condition(c).rsample((2, 6))  # the base has no batch shape
    assert sample.shape == (2, 6, D)
    (log_p.sum() + sample.square().sum()).backward()
    for n, p in module.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.any(), n


def test_conditional_helpers_follow_pyro():
    # Pyro's convention: (input_dim, context_dim, hidden_dims=None, ...)
    import inspect

    for helper in (conditional_lu_linear, conditional_lu_net):
        names = list(inspect.signature(helper).parameters)[:3]
        assert names == ["input_dim", "context_dim", "hidden_dims"], helper
    t = conditional_lu_net(D, C, [16, 16])
    assert [m.weight.shape[0] for m in t[0].hyper.layers[:-1]] == [16, 16]
    for helper in (lu_linear, lu_net, leaky_softplus):
        assert next(iter(inspect.signature(helper).parameters)) == "input_dim", helper

    # and they compose with Pyro's own helper for stacks
    for helper in (lu_linear, lu_net):
        t = iterated(2, helper, D)
        x = torch.randn(4, D)
        assert len(t) == 2 and torch.allclose(t.inv(t(x).clone()), x, atol=1e-5)
