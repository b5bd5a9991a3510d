r"""A generic battery over every zuko transformation and flow of zuko-lu.

Each lazy transformation (every conditioning mode, initialisation and diagonal) and
each flow (LU-Net, the hybrids, an interleaved zuko flow, a composed one) goes through
the same checks, at float32 and float64, on the ``--device`` of the run: inverse round
trip, log-det against autograd's Jacobian, ``call_and_ladj`` against separate calls,
batched contexts, gradients to every parameter, a state dict loaded into a fresh
instance, and, for flows, ``log_prob``, sampling shapes, ``rsample`` gradients and a
density that integrates to one.
"""

from collections.abc import Callable

import pytest
import torch
import torch.nn as nn
import zuko

from checks import roundtrip_state, tolerance

from zuko_lu import LUMAF, LUNSF, LeakySoftplus, LULinear, LUNet, LURealNVP, compose, interleave

D, C = 3, 2
DTYPES = [torch.float32, torch.float64]

TRANSFORMS: dict[str, Callable[[], nn.Module]] = {
    "lu": lambda: LULinear(D),
    "lu-orthogonal": lambda: LULinear(D, init="orthogonal"),
    "lu-softplus-nobias": lambda: LULinear(D, diagonal="softplus", bias=False),
    "lu-diag": lambda: LULinear(D, context=C, hidden_features=[8]),
    "lu-diag-orthogonal": lambda: LULinear(D, context=C, init="orthogonal", hidden_features=[8]),
    "lu-full": lambda: LULinear(D, context=C, conditioning="full", hidden_features=[8]),
    "lu-full-orthogonal": lambda: LULinear(
        D, context=C, conditioning="full", init="orthogonal", hidden_features=[8]
    ),
    "lu-full-softplus": lambda: LULinear(
        D, context=C, conditioning="full", diagonal="softplus", hidden_features=[8]
    ),
    "leaky-softplus": lambda: LeakySoftplus(D, alpha=0.2),
    "leaky-softplus-learnable": lambda: LeakySoftplus(D, learnable=True),
}

FLOWS: dict[str, Callable[[], nn.Module]] = {
    "lunet": lambda: LUNet(D, transforms=2),
    "lunet-learnable": lambda: LUNet(
        D, transforms=2, learnable_alpha=True, init="orthogonal", diagonal="softplus"
    ),
    "lunet-context": lambda: LUNet(D, context=C, transforms=2, hidden_features=[8]),
    "lunet-full": lambda: LUNet(
        D, context=C, transforms=1, conditioning="full", hidden_features=[8]
    ),
    "lumaf": lambda: LUMAF(D, context=C, transforms=2, hidden_features=[8]),
    "lunsf": lambda: LUNSF(D, transforms=2, hidden_features=[8]),
    "lurealnvp": lambda: LURealNVP(D, context=C, transforms=2, hidden_features=[8]),
    "interleave-maf": lambda: interleave(zuko.flows.MAF(D, C, transforms=2, hidden_features=[8])),
    "compose": lambda: compose(
        ["maf", "lu", "nsf", "lu"],
        D,
        C,
        maf={"hidden_features": [8]},
        nsf={"hidden_features": [8]},
    ),
}


def build(factory: Callable, dtype: torch.dtype, device: torch.device) -> nn.Module:
    module = factory().to(device=device, dtype=dtype)
    with torch.no_grad():  # away from the identity initialisation
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return module


def contexts(module: nn.Module, *shape: int, like: torch.Tensor) -> torch.Tensor | None:
    width = getattr(module, "context", None)
    if not isinstance(width, int):  # flows: the first transformation tells
        width = max(
            (getattr(t, "context", 0) for t in module.modules() if isinstance(t, LULinear)),
            default=0,
        )
    if not width:
        return None
    return torch.randn(*shape, width, dtype=like.dtype, device=like.device)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform(name, dtype, device):
    tol = tolerance(dtype)
    t = build(TRANSFORMS[name], dtype, device)
    x = torch.randn(5, D, dtype=dtype, device=device)
    c = contexts(t, 5, like=x)  # one context per row: a batch of transformations
    f = t(c)

    y = f(x)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert torch.allclose(f.inv(y), x, **tol)

    ladj = f.log_abs_det_jacobian(x, y)
    assert ladj.shape == (5,)
    y2, ladj2 = f.call_and_ladj(x)
    assert torch.allclose(y2, y, **tol) and torch.allclose(ladj2, ladj, **tol)
    assert torch.allclose(f.inv.log_abs_det_jacobian(y, x), -ladj, **tol)

    for i in range(3):  # the log-det against autograd's Jacobian, row by row
        fi = t(None if c is None else c[i])
        J = torch.autograd.functional.jacobian(fi, x[i])
        assert torch.allclose(torch.linalg.slogdet(J).logabsdet, ladj[i], **tol)

    # gradients reach the input and every parameter
    x.requires_grad_()
    y, ladj = f.call_and_ladj(x)
    (y.square().sum() + ladj.sum() + f.inv(x).sum()).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for n, p in t.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
        assert p.grad.abs().sum() > 0, n


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_batched_contexts(name, device):
    t = build(TRANSFORMS[name], torch.float64, device)
    x = torch.randn(4, 5, D, dtype=torch.float64, device=device)
    c = contexts(t, 4, 5, like=x)
    y, ladj = t(c).call_and_ladj(x)
    assert y.shape == (4, 5, D) and ladj.shape == (4, 5)
    if c is None:
        return
    # one context for all rows broadcasts; each row equals its own context's block
    y0, ladj0 = t(c[1, 2]).call_and_ladj(x)
    assert y0.shape == (4, 5, D) and ladj0.shape == (4, 5)
    assert torch.allclose(y0[1, 2], y[1, 2]) and torch.allclose(ladj0[1, 2], ladj[1, 2])
    assert torch.allclose(t(c).inv(y), x)

    # one input for all contexts: the batch of transformations broadcasts it
    y, ladj = t(c).call_and_ladj(x[0, 0])
    assert y.shape == (4, 5, D) and ladj.shape == (4, 5)
    assert torch.equal(t(c).log_abs_det_jacobian(x[0, 0], y), ladj)


@pytest.mark.parametrize("name", ["leaky-softplus", "leaky-softplus-learnable"])
def test_activation_ignores_context(name, device):
    t = build(TRANSFORMS[name], torch.float64, device)
    x = 3 * torch.randn(5, D, dtype=torch.float64, device=device)
    c = torch.randn(5, C, dtype=torch.float64, device=device)
    y, ladj = t(c).call_and_ladj(x)
    y0, ladj0 = t().call_and_ladj(x)
    assert torch.equal(y, y0) and torch.equal(ladj, ladj0)
    assert torch.allclose(t(c).inv(y), x)


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_transform_state_dict(name, device):
    t = build(TRANSFORMS[name], torch.float32, device)
    fresh = roundtrip_state(t, TRANSFORMS[name]().to(device))
    x = torch.randn(4, D, device=device)
    c = contexts(t, 4, like=x)
    assert torch.equal(fresh(c)(x), t(c)(x))
    assert torch.equal(fresh(c).inv(x), t(c).inv(x))


def flow_case(name: str, dtype: torch.dtype, device: torch.device):
    flow = build(FLOWS[name], dtype, device)
    x = torch.randn(6, D, dtype=dtype, device=device)
    return flow, x, contexts(flow, 6, like=x)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(FLOWS))
def test_flow(name, dtype, device):
    tol = tolerance(dtype)
    flow, x, c = flow_case(name, dtype, device)
    d = flow(c)

    log_p = d.log_prob(x)
    assert log_p.shape == (6,) and log_p.dtype == dtype and torch.isfinite(log_p).all()

    # the round trip, and log p against the base and autograd's Jacobian
    z, ladj = d.transform.call_and_ladj(x)
    assert torch.allclose(d.transform.inv(z), x, **tol)
    assert torch.allclose(d.base.log_prob(z) + ladj, log_p, **tol)
    for i in range(2):
        di = flow(None if c is None else c[i])
        J = torch.autograd.functional.jacobian(di.transform, x[i])
        logdet = torch.linalg.slogdet(J).logabsdet
        assert torch.allclose(di.base.log_prob(di.transform(x[i])) + logdet, log_p[i], **tol)

    # sampling: one context, a batch of contexts, and rsample's gradients
    c0 = None if c is None else c[0]
    assert flow(c0).sample((5,)).shape == (5, D)
    if c is not None:
        assert flow(c).sample((5,)).shape == (5, 6, D)
        assert flow(c).log_prob(flow(c).sample((5,))).shape == (5, 6)
    s = flow(c0).rsample((4,))
    assert s.shape == (4, D) and s.dtype == dtype
    s.square().sum().backward()
    grads = [p.grad for p in flow.parameters()]
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    lu_grads = [p.grad for m in flow.modules() if isinstance(m, LULinear) for p in m.parameters()]
    assert lu_grads and all(g is not None and g.abs().sum() > 0 for g in lu_grads)


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_training_gradients(name, device):
    # log_prob's gradient reaches every parameter of the flow
    flow, x, c = flow_case(name, torch.float32, device)
    flow(c).log_prob(x).mean().backward()
    for n, p in flow.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", list(FLOWS))
def test_flow_state_dict(name, device):
    flow, x, c = flow_case(name, torch.float32, device)
    fresh = roundtrip_state(flow, FLOWS[name]().to(device))
    assert torch.equal(fresh(c).log_prob(x), flow(c).log_prob(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_flow_normalised_1d(dtype, device):
    # a 1-D LU-Net integrates to one on a grid x = sinh(u) (heavy left tails: the
    # activation's inverse stretches negative values by 1 / alpha per block)
    flow = build(lambda: LUNet(1, transforms=2, alpha=0.3), dtype, device)
    u = torch.linspace(-9, 9, 20001, dtype=dtype, device=device)
    with torch.no_grad():
        p = flow().log_prob(torch.sinh(u)[:, None]).exp() * torch.cosh(u)
    assert torch.trapezoid(p, u).item() == pytest.approx(1.0, abs=1e-3)


FLOWS_2D: dict[str, Callable[[], nn.Module]] = {
    "lunet-context": lambda: LUNet(2, context=C, transforms=2, alpha=0.3, hidden_features=[8]),
    "compose": lambda: compose(["maf", "lu", "nsf", "lu"], 2, C, nsf={"hidden_features": [8]}),
}


@pytest.mark.parametrize("name", list(FLOWS_2D))
def test_flow_normalised_2d(name, device):
    # two features, for one context: a conditional LU-Net and a composed flow
    flow = build(FLOWS_2D[name], torch.float64, device)
    u = torch.linspace(-9, 9, 241, dtype=torch.float64, device=device)
    grid = torch.cartesian_prod(torch.sinh(u), torch.sinh(u))
    jac = torch.cartesian_prod(torch.cosh(u), torch.cosh(u)).prod(-1)
    c = torch.randn(C, dtype=torch.float64, device=device)
    with torch.no_grad():
        p = flow(c).log_prob(grid).exp() * jac
    h = (u[1] - u[0]).item()
    assert (p.sum() * h * h).item() == pytest.approx(1.0, abs=5e-3)
