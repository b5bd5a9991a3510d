r"""Tests of the maths core, zuko_lu.transforms and zuko_lu.parameters."""

import subprocess
import sys

import pytest
import torch

from checks import check_transform

from zuko_lu.parameters import LUParameters
from zuko_lu.transforms import LeakySoftplusTransform, LUTransform

DTYPES = [torch.float32, torch.float64]
FEATURES = [1, 2, 5, 64]


def random_lu(*shape: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    D = shape[-1]
    LU = torch.randn(*shape, dtype=dtype, device=device) / D**0.5
    d = LU.diagonal(dim1=-2, dim2=-1)
    d.copy_(d.sign() * (1 + d.abs()))  # |U_ii| >= 1, either sign
    return LU


def test_core_does_not_import_zuko():
    code = (
        "import zuko_lu.transforms, zuko_lu.parameters, zuko_lu, sys; print('zuko' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", FEATURES)
def test_lu_transform(D, dtype, device):
    LU = random_lu(D, D, dtype=dtype, device=device)
    b = torch.randn(D, dtype=dtype, device=device)
    x = torch.randn(16, D, dtype=dtype, device=device)

    check_transform(LUTransform(LU, b), x)
    check_transform(LUTransform(LU), x)
    check_transform(LUTransform(LU, b, perm=torch.randperm(D, device=device)), x)

    # batch of parameters (one per row), with an output scale
    LUs = random_lu(16, D, D, dtype=dtype, device=device)
    s = 0.1 * torch.randn(16, D, dtype=dtype, device=device)
    check_transform(LUTransform(LUs, b, log_scale=s), x)

    # a single vector, and extra batch dims
    t = LUTransform(LU, b)
    assert torch.allclose(t.inv(t(x[0])), x[0], atol=1e-4)
    y = t(x.reshape(4, 4, D))
    assert y.shape == (4, 4, D) and t.log_abs_det_jacobian(x, y).shape == (16,)
    assert t.call_and_ladj(x.reshape(4, 4, D))[1].shape == (4, 4)


def test_lu_transform_reads_only_its_triangles(device):
    # the packed layout: L's unit diagonal is implied, U's diagonal is LU's
    LU = random_lu(6, 6, dtype=torch.float64, device=device)
    L = LU.tril(-1) + torch.eye(6, dtype=torch.float64, device=device)
    U = LU.triu()
    x = torch.randn(3, 6, dtype=torch.float64, device=device)
    t = LUTransform(LU)
    assert torch.allclose(t(x), x @ (L @ U).T)
    assert torch.allclose(t.inv(x), torch.linalg.solve(L @ U, x.T).T)
    assert torch.allclose(t.log_abs_det_jacobian(x, x), torch.linalg.slogdet(L @ U).logabsdet)


def test_lu_transform_gradients(device):
    LU = random_lu(4, 4, dtype=torch.float64, device=device).requires_grad_()
    b = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64, device=device)

    def f(LU, b):
        y = LUTransform(LU, b).inv(x)
        return y.square().sum()

    assert torch.autograd.gradcheck(f, (LU, b))


def test_lu_transform_bad_input():
    with pytest.raises(ValueError, match="LU: expected a square"):
        LUTransform(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="bias: expected shape"):
        LUTransform(torch.eye(3), torch.zeros(2))
    with pytest.raises(ValueError, match="x: expected a last dimension of size 3"):
        LUTransform(torch.eye(3))(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="y: expected a last dimension of size 3"):
        LUTransform(torch.eye(3)).inv(torch.zeros(4, 2))


@pytest.mark.parametrize("alpha", [0.1, 0.9, 0.01, 1e-4, "tensor"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_leaky_softplus_roundtrip_whole_line(dtype, alpha, device):
    x = torch.cat(
        [
            torch.linspace(-1e4, 1e4, 100001, dtype=dtype, device=device),
            torch.linspace(-30, 30, 100001, dtype=dtype, device=device),
        ]
    )
    if alpha == "tensor":  # per-feature slopes, the smallest 1e-3
        alpha = torch.tensor([1e-3, 0.05, 0.3, 0.7], dtype=dtype, device=device)
        x = x[: len(x) // 4 * 4].reshape(-1, 4)
    t = LeakySoftplusTransform(alpha)
    err = (t.inv(t(x)) - x).abs() / x.abs().clamp(min=1)
    bound = 1e-12 if dtype == torch.float64 else 1e-5
    assert err.max() <= bound, err.max()
    assert torch.isfinite(t.log_abs_det_jacobian(x, t(x))).all()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("D", FEATURES)
def test_leaky_softplus(D, dtype, device):
    from torch.distributions.transforms import IndependentTransform

    x = 3 * torch.randn(16, D, dtype=dtype, device=device)
    check_transform(IndependentTransform(LeakySoftplusTransform(0.1), 1), x)
    alpha = torch.rand(D, dtype=dtype, device=device) * 0.9 + 0.05
    check_transform(IndependentTransform(LeakySoftplusTransform(alpha), 1), x)


def test_leaky_softplus_inverse_gradient():
    y = torch.randn(20, dtype=torch.float64, requires_grad=True)
    alpha = torch.full((20,), 0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda y, a: LeakySoftplusTransform(a).inv(y), (y, alpha))


@pytest.mark.parametrize("shape", [(), (7,), (0, 5), (37, 5), (3, 13, 5)])
@pytest.mark.parametrize("per_feature", [False, True])
def test_leaky_softplus_chunks(shape, per_feature, device, monkeypatch):
    # the in-place steps run over chunks of rows (or elements) on the CPU: the inverse
    # is the same whatever the chunking, for any shape
    import zuko_lu.transforms as core

    if per_feature and len(shape) < 2:
        return
    alpha = torch.linspace(0.05, 0.9, 5, device=device) if per_feature else 0.2
    t = LeakySoftplusTransform(alpha)
    x = 4 * torch.randn(shape, device=device)
    y = t(x)
    whole = t.inv(y)
    monkeypatch.setattr(core, "CHUNK", 16)  # rows of 5 features: 3 rows a chunk
    chunked = t.inv(y)
    assert chunked.shape == x.shape
    # equal to rounding: vector kernels and their scalar tails may differ by an ulp
    assert torch.allclose(chunked, whole, rtol=1e-6, atol=1e-6)
    assert torch.allclose(chunked, x, atol=1e-4, rtol=1e-5)
    if len(shape) >= 2:  # a strided view goes through as well
        assert torch.allclose(t.inv(y[::2]), whole[::2], rtol=1e-6, atol=1e-6)


def test_leaky_softplus_slopes_broadcast(device):
    # slopes of a larger shape than y broadcast it, as in the forward
    t = LeakySoftplusTransform(torch.rand(4, 3, device=device) * 0.8 + 0.1)
    y = torch.randn(3, device=device, requires_grad=True)
    x = t.inv(y)
    assert x.shape == (4, 3) and torch.allclose(t(x), y.expand(4, 3), atol=1e-5)
    x.sum().backward()
    assert y.grad.shape == (3,)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.5, 2.0, torch.tensor([0.5, 1.5])])
def test_leaky_softplus_bad_alpha(alpha):
    with pytest.raises(ValueError, match="alpha: expected"):
        LeakySoftplusTransform(alpha)


@pytest.mark.parametrize("init", ["identity", "orthogonal"])
@pytest.mark.parametrize("diagonal", ["exp", "softplus"])
def test_parameters_init_well_conditioned(init, diagonal):
    params = LUParameters(128, init=init, diagonal=diagonal)
    assert params.condition_number() < 1 + 1e-4
    assert abs(params().log_abs_det_jacobian(torch.zeros(1, 128), None).item()) < 1e-2


def test_parameters_diagonal_never_zero():
    params = LUParameters(3, diagonal="softplus")
    with torch.no_grad():
        params.R.fill_(-1e4)
    assert (params.pack().diagonal().abs() >= 1e-3).all()


@pytest.mark.parametrize("mode", ["diag", "full"])
def test_parameters_shift(mode, device):
    params = LUParameters(5, init="orthogonal").to(device).double()
    shift = 0.1 * torch.randn(8, params.context_features(mode), dtype=torch.float64, device=device)
    x = torch.randn(8, 5, dtype=torch.float64, device=device)
    check_transform(params(shift, mode), x)

    with pytest.raises(ValueError, match="shift: expected a last dimension"):
        params(shift[:, :-1], mode)


def test_parameters_bad_input():
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="features: expected an integer >= 1"):
            LUParameters(bad)
    with pytest.raises(ValueError, match="init: expected one of"):
        LUParameters(3, init="paper")
    with pytest.raises(ValueError, match="diagonal: expected one of"):
        LUParameters(3, diagonal="raw")


def test_lu_transform_log_det_broadcasts(device):
    # batched factors and an unbatched x: the log-det has the batch shape, as the
    # output and call_and_ladj have
    LU = random_lu(4, 3, 3, dtype=torch.float32, device=device)
    t = LUTransform(LU, bias=torch.randn(4, 3, device=device))
    x = torch.randn(3, device=device)
    y, ladj = t.call_and_ladj(x)
    assert y.shape == (4, 3)
    assert t.log_abs_det_jacobian(x, y).shape == (4,)
    assert torch.equal(t.log_abs_det_jacobian(x, y), ladj)
    # and a batch of x over the batch of factors
    x = torch.randn(2, 1, 3, device=device)
    assert t.log_abs_det_jacobian(x, t(x)).shape == (2, 4)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64, torch.float16])
def test_lu_transform_dtype(dtype):
    t = LUTransform(torch.eye(3), bias=torch.zeros(3))
    x = torch.ones(4, 3, dtype=dtype)
    message = f"x: expected dtype torch.float32, got {dtype}"
    with pytest.raises(ValueError, match=message):
        t(x)
    with pytest.raises(ValueError, match=message.replace("x:", "y:")):
        t.inv(x)
    with pytest.raises(ValueError, match=message):
        t.call_and_ladj(x)


def test_flows_dtype():
    from zuko_lu import LUNet
    from zuko_lu.pyro import conditional_lu_linear, lu_net

    with pytest.raises(ValueError, match="expected dtype torch.float32, got torch.float64"):
        LUNet(3, transforms=1)().log_prob(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected dtype torch.float64, got torch.int64"):
        LUNet(3, transforms=1).double()().log_prob(torch.zeros(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="expected dtype torch.float32, got torch.float64"):
        lu_net(3, transforms=1)(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="expected dtype torch.float32, got torch.int64"):
        conditional_lu_linear(3, 2).condition(torch.zeros(2)).inv(torch.ones(3, dtype=int))


def test_compat_functorch_active(monkeypatch):
    from zuko_lu import compat, triangular

    LU = torch.randn(9, 9, dtype=torch.float64)
    assert not compat.functorch_active() and triangular.use_panels(LU)
    seen = []
    torch.func.vmap(lambda v: seen.append(compat.functorch_active()) or v)(torch.zeros(2))
    assert seen == [True]

    # a torch without the private check: callers take the plain path, valid everywhere
    monkeypatch.delattr(torch._C._functorch, "peek_interpreter_stack")
    assert compat.functorch_active() and not triangular.use_panels(LU)
    monkeypatch.setattr(triangular, "PANEL_PRODUCT", 3)
    expected = LU.tril(-1) + torch.eye(9, dtype=LU.dtype)
    assert torch.allclose(triangular.lu_product(LU), expected @ LU.triu())


def test_compat_softplus_out(monkeypatch):
    from zuko_lu import compat

    x = torch.tensor([-50.0, -1.0, 0.0, 3.0, 39.0, 41.0], dtype=torch.float64)
    expected = torch.nn.functional.softplus(x, threshold=40.0)
    out = torch.empty_like(x)
    assert compat.softplus_out(x, 1.0, 40.0, out) is out and torch.equal(out, expected)

    # a torch without the out= overload: the same values through a temporary
    class Packet:  # an op packet without the out= overload
        pass

    monkeypatch.setattr(torch.ops.aten, "softplus", Packet())
    out = torch.zeros_like(x)
    assert compat.softplus_out(x, 1.0, 40.0, out) is out and torch.equal(out, expected)
    t = LeakySoftplusTransform(0.2)
    z = 3 * torch.randn(100)
    assert torch.allclose(t.inv(t(z)), z, atol=1e-5)


def test_private_torch_calls_in_compat_only():
    # a torch upgrade that drops a private name breaks zuko_lu.compat alone
    import ast
    import pathlib

    import zuko_lu

    def private(tree: ast.AST) -> list[int]:
        # attribute chains torch._x... or torch.ops..., in code (docstrings may name them)
        return [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
            and ((node.attr[:1] == "_" and node.attr[-2:] != "__") or node.attr == "ops")
        ]

    root = pathlib.Path(zuko_lu.__file__).parent
    found = [
        f"{path.relative_to(root)}:{n}"
        for path in root.rglob("*.py")
        if path.name != "compat.py"
        for n in private(ast.parse(path.read_text()))
    ]
    assert found == []
    assert private(ast.parse((root / "compat.py").read_text()))
