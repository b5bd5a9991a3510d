r"""Generic checks of transformations and flows, shared by the test modules."""

from __future__ import annotations

import io

import torch

from torch import Tensor
from torch.distributions import Transform


def tolerance(dtype: torch.dtype) -> dict:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


def check_transform(t: Transform, x: Tensor) -> None:
    r"""Checks a vector transformation on a batch :math:`x` of shape (N, D): inverse round
    trip, `call_and_ladj` against separate calls, and log|det| against autograd's Jacobian
    (row by row, since a batch of contexts gives a batch of transforms)."""

    tol = tolerance(x.dtype)

    y = t(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert torch.allclose(t.inv(y), x, **tol), (t.inv(y) - x).abs().max()

    ladj = t.log_abs_det_jacobian(x, y)
    assert ladj.shape == x.shape[:-1]

    if hasattr(t, "call_and_ladj"):
        y2, ladj2 = t.call_and_ladj(x)
        assert torch.allclose(y2, y, **tol) and torch.allclose(ladj2, ladj, **tol)

    # the inverse's log|det| is minus the forward's
    assert torch.allclose(t.inv.log_abs_det_jacobian(y, x), -ladj, **tol)

    for i in range(min(len(x), 3)):
        J = torch.func.jacrev(lambda xi, i=i: _row(t, x, xi, i))(x[i])
        assert torch.allclose(torch.linalg.slogdet(J).logabsdet, ladj[i], **tol)


def _row(t: Transform, x: Tensor, xi: Tensor, i: int) -> Tensor:
    # the i-th row of t(x) as a function of the i-th input row alone
    x = torch.cat((x[:i], xi[None], x[i + 1 :]))
    return t(x)[i]


def check_flow_normalised(flow: object, lim: float = 8.0, n: int = 801) -> float:
    r"""Returns the integral of a 2-D flow's density, on the grid x = sinh(u) with u
    uniform in [-lim, lim]^2 (the warp reaches the heavy tails that LU-Net's activation
    inverse makes: it stretches negative values by 1 / alpha per block)."""

    u = torch.linspace(-lim, lim, n, dtype=torch.float64)
    x, dx = torch.sinh(u), torch.cosh(u)
    grid = torch.cartesian_prod(x, x)
    jac = torch.cartesian_prod(dx, dx).prod(dim=-1)
    with torch.no_grad():
        p = flow().log_prob(grid).exp() * jac
    h = (2 * lim / (n - 1)) ** 2
    return (p.sum() * h).item()


def roundtrip_state(module: torch.nn.Module, fresh: torch.nn.Module) -> torch.nn.Module:
    r"""Saves the state of `module` to bytes and loads it into `fresh`."""

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    return fresh


def gaussian_nll(train: Tensor, test: Tensor) -> float:
    r"""Returns the test NLL (nats) of the full-covariance Gaussian fitted to `train`."""

    mean = train.mean(0)
    cov = torch.cov(train.T) + 1e-9 * torch.eye(train.shape[-1], dtype=train.dtype)
    normal = torch.distributions.MultivariateNormal(mean, cov)
    return -normal.log_prob(test).mean().item()
