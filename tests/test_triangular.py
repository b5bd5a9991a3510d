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


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", [7, 10])
def test_product_and_apply(D, dtype, device, narrow):
    assert len(triangular.panels(D, 3)) > 1
    tol = tolerance(dtype)
    LU = torch.randn(D, D, dtype=dtype, device=device, requires_grad=True)
    x = torch.randn(5, D, dtype=dtype, device=device, requires_grad=True)
    W = dense(LU)

    # values and gradients against the dense products under autograd
    G = torch.randn(D, D, dtype=dtype, device=device)
    assert torch.allclose(triangular.lu_product(LU), W, **tol)
    got = torch.autograd.grad(triangular.lu_product(LU), LU, G)[0]
    assert torch.allclose(got, torch.autograd.grad(dense(LU), LU, G)[0], **tol)

    g = torch.randn(5, D, dtype=dtype, device=device)
    y = triangular.lu_apply(x, LU)
    assert torch.allclose(y, x @ W.T, **tol)
    got = torch.autograd.grad(y, (x, LU), g)
    want = torch.autograd.grad(x @ dense(LU).T, (x, LU), g)
    assert all(torch.allclose(a, b, **tol) for a, b in zip(got, want, strict=True))

    # one input wanting a gradient at a time
    gx = torch.autograd.grad(triangular.lu_apply(x, LU.detach()), x, g)[0]
    assert torch.allclose(gx, want[0], **tol)
    gLU = torch.autograd.grad(triangular.lu_apply(x.detach(), LU), LU, g)[0]
    assert torch.allclose(gLU, want[1], **tol)


def test_gradcheck(device, narrow):
    LU = torch.randn(8, 8, dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(3, 8, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(triangular.LUProduct.apply, (LU,))
    assert torch.autograd.gradcheck(triangular.LUApply.apply, (x, LU))


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


@pytest.mark.parametrize("diagonal", ["exp", "softplus"])
def test_pack(diagonal, device):
    # log|U_ii| handed to the transform equals the one read off LU, with its gradient
    params = LUParameters(4, diagonal=diagonal).to(device)
    with torch.no_grad():
        params.R.add_(0.1 * torch.randn(4, 4, device=device))
    LU, log_diag = params.pack(params.R)
    assert torch.allclose(log_diag, LU.diagonal().abs().log())

    x = torch.randn(5, 4, device=device)
    ladj = params().call_and_ladj(x)[1]
    (grad,) = torch.autograd.grad(ladj.sum(), params.R)
    ladj0 = LUTransform(params.pack(params.R)[0]).call_and_ladj(x)[1]
    (grad0,) = torch.autograd.grad(ladj0.sum(), params.R)
    assert torch.allclose(ladj, ladj0) and torch.allclose(grad, grad0)
