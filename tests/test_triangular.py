r"""Tests of the panel products, zuko_lu.triangular, and of the packing of parameters."""

import pytest
import torch

from checks import check_transform, tolerance

from zuko_lu import triangular
from zuko_lu.parameters import LUParameters
from zuko_lu.transforms import LUTransform

DTYPES = [torch.float32, torch.float64]


@pytest.fixture
def narrow(monkeypatch: pytest.MonkeyPatch) -> None:
    # panels of width 3: small matrices take the panel path, with uneven panels
    monkeypatch.setattr(triangular, "PANEL_PRODUCT", 3)
    monkeypatch.setattr(triangular, "PANEL_APPLY", 3)


def dense(LU: torch.Tensor) -> torch.Tensor:
    L = LU.tril(-1) + torch.eye(LU.shape[-1], dtype=LU.dtype, device=LU.device)
    return L @ LU.triu()


def test_panels():
    assert triangular.panels(100, 192) == [(0, 100)]
    bounds = triangular.panels(784, 192)
    assert bounds[0][0] == 0 and bounds[-1][1] == 784 and len(bounds) == 4
    assert all(e == s for (_, e), (s, _) in zip(bounds[:-1], bounds[1:], strict=True))


@pytest.mark.parametrize("apart", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [7, 10])
def test_product_and_apply(D, dtype, apart, device, narrow):
    # values and gradients against the dense products under autograd, with U's diagonal
    # in LU or kept apart
    assert len(triangular.panels(D, 3)) > 1
    tol = tolerance(dtype)
    LU = torch.randn(D, D, dtype=dtype, device=device, requires_grad=True)
    d = torch.randn(D, dtype=dtype, device=device, requires_grad=True) if apart else None
    x = torch.randn(5, D, dtype=dtype, device=device, requires_grad=True)
    inputs = (LU, d) if apart else (LU,)
    W = lambda: dense(triangular.pack(LU, d))  # noqa: E731

    G = torch.randn(D, D, dtype=dtype, device=device)
    assert torch.allclose(triangular.lu_product(LU, d), W(), **tol)
    got = torch.autograd.grad(triangular.lu_product(LU, d), inputs, G)
    want = torch.autograd.grad(W(), inputs, G)
    assert all(torch.allclose(a, b, **tol) for a, b in zip(got, want, strict=True))
    if apart:  # LU's own diagonal is not read
        assert (got[0].diagonal() == 0).all()

    g = torch.randn(5, D, dtype=dtype, device=device)
    y = triangular.lu_apply(x, LU, d)
    assert torch.allclose(y, x @ W().T, **tol)
    got = torch.autograd.grad(y, (x, *inputs), g)
    want = torch.autograd.grad(x @ W().T, (x, *inputs), g)
    assert all(torch.allclose(a, b, **tol) for a, b in zip(got, want, strict=True))

    # one input wanting a gradient at a time
    gx = torch.autograd.grad(
        triangular.lu_apply(x, LU.detach(), None if d is None else d.detach()), x, g
    )
    assert torch.allclose(gx[0], want[0], **tol)
    gLU = torch.autograd.grad(triangular.lu_apply(x.detach(), LU, d), inputs, g)
    assert all(torch.allclose(a, b, **tol) for a, b in zip(gLU, want[1:], strict=True))


def test_gradcheck(device, narrow):
    LU = torch.randn(8, 8, dtype=torch.float64, device=device, requires_grad=True)
    d = torch.randn(8, dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(3, 8, dtype=torch.float64, device=device, requires_grad=True)
    for diag in (None, d):
        assert torch.autograd.gradcheck(triangular.LUProduct.apply, (LU, diag))
        assert torch.autograd.gradcheck(triangular.LUApply.apply, (x, LU, diag))


def test_func_transforms(device, narrow):
    # torch.func cannot batch the writes into views: the plain products run instead
    LU = torch.randn(9, 9, dtype=torch.float64, device=device)
    x = torch.randn(4, 9, dtype=torch.float64, device=device)
    J = torch.func.jacrev(lambda v: triangular.lu_apply(v, LU))(x)
    assert torch.allclose(J[0, :, 0], dense(LU))
    y = torch.func.vmap(lambda v: triangular.lu_apply(v[None], LU)[0])(x)
    assert torch.allclose(y, x @ dense(LU).T)


@pytest.mark.parametrize("dtype", DTYPES)
def test_lu_transform_panels(dtype, device, narrow):
    # the block on both paths: two products (fewer rows than features) and W = L U
    D = 10
    LU = torch.randn(D, D, dtype=dtype, device=device) / D**0.5
    LU.diagonal().add_(2.0)
    b = torch.randn(D, dtype=dtype, device=device)
    for N in (4, 32):
        check_transform(LUTransform(LU, b), torch.randn(N, D, dtype=dtype, device=device))


@pytest.mark.parametrize("N", [3, 32])
@pytest.mark.parametrize("diagonal", ["exp", "softplus"])
def test_parameters_diag_apart(diagonal, N, device, narrow):
    # the block with U's diagonal kept apart equals the block of its packed factors
    params = LUParameters(10, diagonal=diagonal, init="orthogonal").to(device)
    with torch.no_grad():
        params.R.add_(0.1 * torch.randn(10, 10, device=device))
    x = torch.randn(N, 10, device=device)

    y, ladj = params().call_and_ladj(x)
    (grad,) = torch.autograd.grad((y.square().sum() + ladj.sum()), params.R)
    t0 = LUTransform(params.pack(), params.bias, perm=params.perm)
    y0, ladj0 = t0.call_and_ladj(x)
    (grad0,) = torch.autograd.grad((y0.square().sum() + ladj0.sum()), params.R)
    assert torch.allclose(y, y0, atol=1e-5) and torch.allclose(ladj, ladj0, atol=1e-5)
    assert torch.allclose(grad, grad0, atol=1e-4)
