r"""torch.jit.trace records the LU blocks and the activation with their gradients.

A trace is recorded on one set of inputs and replayed on new inputs of the same shape:
its values and its gradients (with respect to the inputs and the parameters) must equal
eager execution there. Pyro's JitTrace_ELBO traces a whole guide this way.
"""

import math

from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

from pyro.distributions.torch_transform import ComposeTransformModule
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormalizingFlow
from pyro.optim import Adam

from zuko_lu.pyro import conditional_lu_linear, leaky_softplus, lu_linear, lu_net
from zuko_lu.transforms import LeakySoftplusTransform, LUTransform

ATOL = 1e-5


def perturb(module: nn.Module, scale: float = 0.1) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def replay(fn: Callable, make: Callable[[], tuple]) -> tuple[list, list]:
    r"""Traces `fn` on inputs from `make`, and returns the traced and eager outputs and
    gradients on new inputs from `make` (gradients of a fixed projection of the output
    with respect to the inputs that require one)."""

    traced = torch.jit.trace(fn, make())
    inputs = make()
    wrt = [t for t in inputs if t.requires_grad]

    results = []
    for f in (traced, fn):
        out = f(*inputs)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        grads = torch.autograd.grad((w * out).sum(), wrt, allow_unused=True)
        results.append([out.detach(), *grads])
    return results[0], results[1]


def assert_same(traced: list, eager: list) -> None:
    assert len(traced) == len(eager)
    assert any(g is not None for g in eager[1:]), "no gradient reaches anything"
    for a, b in zip(traced, eager, strict=True):
        assert (a is None) == (b is None), "the trace lost or made up a gradient"
        if a is None:  # e.g. the log-det of a linear map does not depend on x
            continue
        assert a.shape == b.shape
        assert torch.isfinite(a).all()
        assert torch.allclose(a, b, atol=ATOL, rtol=1e-4), (a - b).abs().max()


def lu_factors(D: int, batch: tuple = ()) -> Callable[[], tuple]:
    def make() -> tuple:
        LU = torch.eye(D) + 0.2 * torch.randn(*batch, D, D)
        b = torch.randn(*batch, D)
        x = torch.randn(6, *batch, D)
        return LU.requires_grad_(), b.requires_grad_(), x.requires_grad_()

    return make


LU_CASES = {
    "plain": lambda LU, b: LUTransform(LU, bias=b),
    "perm": lambda LU, b: LUTransform(LU, bias=b, perm=torch.tensor([2, 0, 3, 1])),
    "log_scale": lambda LU, b: LUTransform(LU, bias=b, log_scale=0.5 * b),
}


@pytest.mark.parametrize("case", list(LU_CASES))
@pytest.mark.parametrize("batch", [(), (3,)])
@pytest.mark.parametrize("direction", ["forward", "inverse", "ladj"])
def test_lu_transform(case, batch, direction):
    make_t = LU_CASES[case]

    def fn(LU, b, x):
        t = make_t(LU, b)
        if direction == "forward":
            return t(x)
        if direction == "inverse":
            return t.inv(x)
        return t.log_abs_det_jacobian(x, t(x))

    assert_same(*replay(fn, lu_factors(4, batch)))


def test_lu_transform_panels():
    # D large enough for the panel products in eager mode; the trace takes plain ones
    make = lu_factors(300)
    assert_same(*replay(lambda LU, b, x: LUTransform(LU, bias=b)(x[:2]), make))
    assert_same(*replay(lambda LU, b, x: LUTransform(LU, bias=b)(x), make))


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize("direction", ["forward", "inverse", "ladj"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_leaky_softplus_transform(learnable, direction, dtype):
    def make():
        y = 5 * torch.randn(7, 3, dtype=dtype)
        a = torch.rand(3, dtype=dtype) * 0.5 + 0.05
        return y.requires_grad_(), a.requires_grad_(learnable)

    def fn(y, a):
        t = LeakySoftplusTransform(a if learnable else 0.1)
        if direction == "forward":
            return t(y)
        if direction == "inverse":
            return t.inv(y)
        return t.log_abs_det_jacobian(y, t(y))

    assert_same(*replay(fn, make))


def test_leaky_softplus_inverse_gradient_recorded():
    # traced on an input that wants no gradient, replayed on one that does: the trace
    # still holds the implicit-function gradient 1 / phi'(x)
    t = LeakySoftplusTransform(0.1)
    traced = torch.jit.trace(lambda y: t.inv(y), torch.randn(5))
    y = torch.randn(5, requires_grad=True)
    x = traced(y)
    (g,) = torch.autograd.grad(x.sum(), y)
    assert torch.allclose(x, t.inv(y.detach()), atol=ATOL)
    assert torch.allclose(g, t.log_abs_det_jacobian(x, y).neg().exp(), atol=ATOL)


@pytest.mark.parametrize("context", [0, 2])
def test_zuko_flow(context):
    # the zuko face traces too: log-density and sampling of LU-Net (parameters frozen,
    # as a trace of a function keeps them as constants)
    from zuko_lu import LUNet

    flow = LUNet(3, context, transforms=2, learnable_alpha=True, init="orthogonal")
    flow = perturb(flow).requires_grad_(False)

    def make():
        return torch.randn(5, 3, requires_grad=True), torch.randn(5, max(context, 1))

    c = lambda c: c if context else None
    assert_same(*replay(lambda x, ctx: flow(c(ctx)).log_prob(x), make))
    assert_same(*replay(lambda z, ctx: flow(c(ctx)).transform.inv(z), make))


class Wrap(nn.Module):
    r"""A module around a Pyro transform module and a function of it."""

    def __init__(self, module: nn.Module, fn: Callable) -> None:
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.fn(self.module, *args)


def replay_module(module: nn.Module, fn: Callable, make: Callable[[], tuple]) -> tuple:
    r"""As :func:`replay`, with the module's parameters as inputs of the trace, as Pyro's
    JitTrace_ELBO passes them (torch.jit.trace of the module itself stumbles on
    ``Transform.sign``, which raises for Pyro's own transform modules too)."""

    wrap = Wrap(module, fn)
    named = [p for m in wrap.modules() for p in m._parameters.values() if p is not None]
    n = len(named)

    def call(*args):
        # the parameters swapped for the inputs for the call (torch.func.functional_call
        # refuses to run under the tracer)
        slots = [(m, k) for m in wrap.modules() for k, v in m._parameters.items() if v is not None]
        saved = [m._parameters[k] for m, k in slots]
        try:
            for (m, k), t in zip(slots, args[:n], strict=True):
                m._parameters[k] = t
            return wrap(*args[n:])
        finally:
            for (m, k), t in zip(slots, saved, strict=True):
                m._parameters[k] = t

    params = [p.detach().clone().requires_grad_() for p in named]
    traced = torch.jit.trace(call, (*params, *make()))
    inputs = make()
    results = []
    for f in (traced, call):
        out = f(*params, *inputs)
        w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)
        wrt = [*params, *(t for t in inputs if t.requires_grad)]
        grads = torch.autograd.grad((w * out).sum(), wrt, allow_unused=True)
        results.append([out.detach(), *grads])
    return results[0], results[1]


DIRECTIONS = {
    "forward": lambda t, x: t(x),
    "inverse": lambda t, x: t.inv(x),
    "ladj": lambda t, x: t.log_abs_det_jacobian(x, t(x)),
}

PYRO_MODULES = {
    "lu_linear": lambda: lu_linear(4, init="orthogonal", cache_size=0),
    "lu_linear_softplus": lambda: lu_linear(4, diagonal="softplus", cache_size=0),
    "leaky_softplus": lambda: leaky_softplus(4, learnable=True, cache_size=0),
    "lu_net": lambda: lu_net(4, transforms=2, learnable_alpha=True, cache_size=0),
    "lu_net_cached": lambda: lu_net(4, transforms=2),
}


@pytest.mark.parametrize("name", list(PYRO_MODULES))
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_pyro_module(name, direction):
    module = perturb(PYRO_MODULES[name]())
    make = lambda: (torch.randn(5, 4, requires_grad=True),)
    assert_same(*replay_module(module, DIRECTIONS[direction], make))


@pytest.mark.parametrize("conditioning", ["diag", "full"])
@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_pyro_conditional(conditioning, direction):
    module = conditional_lu_linear(4, 3, [8], conditioning=conditioning, cache_size=0)
    module = perturb(module)
    f = DIRECTIONS[direction]
    make = lambda: (torch.randn(5, 4, requires_grad=True), torch.randn(5, 3))
    assert_same(*replay_module(module, lambda m, x, c: f(m.condition(c), x), make))


def model(data: torch.Tensor) -> None:
    z = pyro.sample("z", dist.Normal(torch.zeros(3), 1.0).to_event(1))
    with pyro.plate("data", len(data)):
        pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=data)


GUIDES = {
    "lu_linear": lambda: lu_linear(3),
    "lu_linear_orthogonal": lambda: lu_linear(3, init="orthogonal", diagonal="softplus"),
    "leaky_softplus": lambda: ComposeTransformModule(
        [lu_linear(3), leaky_softplus(3, learnable=True), lu_linear(3)]
    ),
    "lu_net": lambda: lu_net(3, transforms=2),
    "lu_net_learnable": lambda: lu_net(3, transforms=1, learnable_alpha=True),
    "lu_net.inv": lambda: lu_net(3, transforms=2).inv,
}


@pytest.mark.parametrize("name", list(GUIDES))
def test_jit_trace_elbo(name):
    # a guide built as Pyro's flows are used in one (pyro.module, TransformedDistribution)
    transform = GUIDES[name]()
    module = transform._inv if name.endswith(".inv") else transform
    base = dist.Normal(torch.zeros(3), 1.0).to_event(1)

    def guide(data):
        pyro.module("flow", module)
        pyro.sample("z", dist.TransformedDistribution(base, [transform]))

    pyro.clear_param_store()
    data = torch.randn(10, 3) + 1.0
    before = [p.detach().clone() for p in module.parameters()]
    elbo = JitTrace_ELBO()
    svi = SVI(model, guide, Adam({"lr": 1e-2}), elbo)
    losses = [svi.step(data) for _ in range(4)]
    assert all(map(math.isfinite, losses))
    after = list(module.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(after, before, strict=True))

    # the compiled loss is the eager loss, on the same draws
    pyro.set_rng_seed(1)
    compiled = elbo.loss(model, guide, data)
    pyro.set_rng_seed(1)
    eager = Trace_ELBO().loss(model, guide, data)
    assert compiled == pytest.approx(eager, rel=1e-4)


def test_autoguide_jit_trace_elbo():
    # AutoNormalizingFlow: the LU helpers run where Pyro's own flows do (under torch 2.13
    # and Pyro 1.9 JitTrace_ELBO refuses any AutoNormalizingFlow, Householder included,
    # so the autoguide is checked with Trace_ELBO and its guide traced here)
    pyro.clear_param_store()
    guide = AutoNormalizingFlow(model, lambda D: lu_net(D, transforms=1))
    data = torch.randn(10, 3) + 1.0
    svi = SVI(model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(data) for _ in range(3)]
    assert all(map(math.isfinite, losses))
    make = lambda: (torch.randn(4, 3, requires_grad=True),)
    assert_same(*replay_module(guide.transform, lambda m, z: m(z), make))


def test_pyro_cache_stays_out_of_traces():
    # a pair cached by an eager call is not replayed as a constant by a trace of the
    # same call; a pair cached inside the trace (sample, then log-density) is used there
    t = perturb(lu_linear(3, init="orthogonal")).requires_grad_(False)  # cache_size=1
    x = torch.randn(4, 3)
    t(x)  # caches (x, t(x))
    traced = torch.jit.trace(lambda x: torch.cat((t(x), t.inv(t(x)))), x)
    y = torch.randn(4, 3)  # a constant from the eager cache would ignore the new input
    assert torch.allclose(traced(y), torch.cat((t(y), y)), atol=ATOL)
    graph = str(traced.graph)
    assert "linear" in graph and "solve_triangular" not in graph


@pytest.mark.parametrize("alpha", [0.1, 0.01, 1e-4, "tensor"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_traced_inverse_whole_line(alpha, dtype):
    # the trace's out-of-place inverse reaches the working precision over the real line,
    # as the eager one does
    if alpha == "tensor":
        alpha = torch.tensor([0.5, 0.05, 2e-4], dtype=dtype)
    t = LeakySoftplusTransform(alpha)
    x = torch.cat((-torch.logspace(-6, 4, 200), torch.logspace(-6, 4, 200))).to(dtype)
    x = x[:, None].expand(-1, 3)
    y = t(x)
    traced = torch.jit.trace(lambda y: t.inv(y), y)
    eps = torch.finfo(dtype).eps
    assert torch.allclose(traced(y), x, rtol=8 * eps, atol=8 * eps)
    assert torch.allclose(traced(y), t.inv(y), rtol=4 * eps, atol=4 * eps)
