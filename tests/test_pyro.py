r"""Tests of the Pyro face, zuko_lu.pyro."""

from __future__ import annotations

import copy
import subprocess
import sys

from functools import partial

import pyro
import pyro.distributions as dist
import pytest
import torch

from checks import check_transform, gaussian_nll
from pyro.distributions.transforms import affine_autoregressive
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoNormal, AutoNormalizingFlow
from torch.distributions import IndependentTransform

from zuko_lu.pyro import (
    ConditionalLULinear,
    LeakySoftplus,
    LULinear,
    conditional_lu_linear,
    conditional_lu_net,
    from_zuko,
    leaky_softplus,
    lu_linear,
    lu_net,
    to_zuko,
)


def normal(D: int, device: str | torch.device = "cpu") -> dist.Distribution:
    return dist.Normal(torch.zeros(D, device=device), 1.0).to_event(1)


def perturb(module: torch.nn.Module, scale: float = 0.3) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def on(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    module = module.to(device)
    for t in (*module.parameters(), *module.buffers()):
        assert t.device.type == device.type
    return module


@pytest.mark.parametrize("init", ["identity", "orthogonal"])
@pytest.mark.parametrize("diagonal", ["exp", "softplus"])
@pytest.mark.parametrize("bias", [True, False])
def test_lu_linear(device: torch.device, init: str, diagonal: str, bias: bool) -> None:
    t = perturb(lu_linear(5, bias=bias, init=init, diagonal=diagonal, cache_size=0))
    t = on(t, device)
    check_transform(t, torch.randn(16, 5, device=device))

    x = torch.randn(5, device=device)  # one vector
    assert torch.allclose(t.inv(t(x)), x, atol=1e-5)
    assert t.log_abs_det_jacobian(x, t(x)).shape == ()

    x = torch.randn(2, 3, 5, device=device)
    assert t(x).shape == (2, 3, 5)
    assert t.log_abs_det_jacobian(x, t(x)).shape == (2, 3)
    assert torch.allclose(t.inv(t(x)), x, atol=1e-5)


@pytest.mark.parametrize("learnable", [False, True])
def test_leaky_softplus(device: torch.device, learnable: bool) -> None:
    t = on(perturb(leaky_softplus(4, alpha=0.2, learnable=learnable, cache_size=0)), device)
    check_transform(IndependentTransform(t, 1), 3 * torch.randn(16, 4, device=device))

    x = torch.randn(2, 3, 4, device=device)
    y = t(x)
    assert t.log_abs_det_jacobian(x, y).shape == (2, 3, 4)  # elementwise, event_dim 0
    assert torch.allclose(t.inv(y), x, atol=1e-5)
    assert t.domain.event_dim == 0 and t.codomain.event_dim == 0


@pytest.mark.parametrize("conditioning", ["diag", "full"])
def test_conditional_lu_linear(device: torch.device, conditioning: str) -> None:
    t = conditional_lu_linear(4, 3, [8], conditioning=conditioning, cache_size=0)
    t = on(perturb(t), device)

    # a batch of contexts, one per row: Pyro's own conditional LU fails here
    c = torch.randn(16, 3, device=device)
    check_transform(t.condition(c), torch.randn(16, 4, device=device))

    # one context for one vector or a batch, and batch dims
    x, c = torch.randn(4, device=device), torch.randn(3, device=device)
    assert torch.allclose(t.condition(c).inv(t.condition(c)(x)), x, atol=1e-5)
    x = torch.randn(2, 5, 4, device=device)
    for c in (torch.randn(3, device=device), torch.randn(2, 5, 3, device=device)):
        tc = t.condition(c)
        assert tc(x).shape == x.shape
        assert tc.log_abs_det_jacobian(x, tc(x)).shape == (2, 5)
        assert torch.allclose(tc.inv(tc(x)), x, atol=1e-5)


def test_lu_net(device: torch.device) -> None:
    t = on(perturb(lu_net(3, transforms=2, learnable_alpha=True, cache_size=0), 0.2), device)
    assert len(t) == 5 and isinstance(t[1], LeakySoftplus)
    check_transform(t, torch.randn(16, 3, device=device))

    # density direction: as zuko's LUNet, log_prob evaluates the paper's map
    x = torch.randn(2, 7, 3, device=device)
    d = dist.TransformedDistribution(normal(3, device), [t.inv])
    assert d.log_prob(x).shape == (2, 7)
    assert d.sample((2, 7)).shape == (2, 7, 3)
    ladj = t.log_abs_det_jacobian(x, t(x))
    assert torch.allclose(d.log_prob(x), normal(3, device).log_prob(t(x)) + ladj, atol=1e-5)

    ct = conditional_lu_net(3, 2, transforms=2, hidden_dims=[8], cache_size=0)
    ct = on(perturb(ct, 0.1), device)
    c = torch.randn(16, 2, device=device)
    check_transform(ct.condition(c), torch.randn(16, 3, device=device))
    cd = dist.ConditionalTransformedDistribution(normal(3, device), [ct.inv])
    assert cd.condition(c[:7]).log_prob(x).shape == (2, 7)


def test_cache() -> None:
    t = lu_net(3, transforms=1)
    x = torch.randn(8, 3)
    y = t(x)
    assert t.inv(y) is x  # sampling then scoring in a guide: no inversion

    # the cache follows the parameters and the grad mode, not only the input
    lu = t[0]
    y = lu(x)
    with torch.no_grad():
        lu.params.R.add_(0.1)
    assert not torch.equal(lu(x), y)
    lu.clear_cache()
    with torch.no_grad():
        y = lu(x)
    assert lu(x).requires_grad and not y.requires_grad

    # copies leave the cache out
    y = t(x)
    assert torch.allclose(copy.deepcopy(t)(x), y)

    # full-batch training on one tensor: every step sees the new parameters
    d = dist.TransformedDistribution(normal(3), [t.inv])
    optimizer = torch.optim.Adam(t.parameters(), lr=0.1)
    losses = []
    for _ in range(3):
        loss = -d.log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[2] < losses[1] < losses[0]


def test_errors() -> None:
    for make, name in [
        (lambda: LULinear(0), "input_dim"),
        (lambda: lu_net(0), "input_dim"),
        (lambda: lu_net(2, transforms=0), "transforms"),
        (lambda: ConditionalLULinear(2, 0), "context_dim"),
        (lambda: conditional_lu_linear(2, 2, []), "hidden_dims"),
        (lambda: LeakySoftplus(alpha=1.0), "alpha"),
        (lambda: leaky_softplus(alpha=0.0), "alpha"),
        (lambda: lu_net(2, alpha=1.5), "alpha"),
        (lambda: LeakySoftplus(learnable=True), "input_dim"),
        (lambda: lu_linear(2, diagonal="abs"), "diagonal"),
        (lambda: conditional_lu_linear(2, 3).condition(torch.zeros(4, 2)), "context"),
        (lambda: conditional_lu_net(2, 3).condition(torch.zeros(4, 2)), "context"),
        (lambda: LULinear(3)(torch.zeros(4, 2)), "x"),
    ]:
        with pytest.raises(ValueError, match=name):
            make()


def test_no_zuko_import() -> None:
    code = (
        "import sys, torch, pyro\n"
        "before = torch.distributions.Distribution._validate_args\n"
        "import zuko_lu, zuko_lu.pyro\n"
        "assert torch.distributions.Distribution._validate_args == before\n"
        "assert 'zuko' not in sys.modules, 'zuko imported'\n"
        "try:\n"
        "    pyro.distributions.Normal(0.0, -1.0)\n"
        "except ValueError:\n"
        "    print('validated')\n"
    )
    run = partial(subprocess.run, capture_output=True, text=True, timeout=120)
    result = run([sys.executable, "-c", code])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "validated"


def banana() -> None:
    z1 = pyro.sample("z1", dist.Normal(0.0, 1.0))
    pyro.sample("z2", dist.Normal(z1**2 - 1, 0.5))


def fit(guide: object, steps: int = 300, lr: float = 1e-2) -> tuple[float, float]:
    # Returns the ELBO (the true log-evidence is 0) before and after SVI.
    def elbo() -> float:
        pyro.set_rng_seed(1)
        loss = Trace_ELBO(num_particles=2000, vectorize_particles=True).loss
        return -loss(banana, guide)

    before = elbo()
    pyro.set_rng_seed(0)
    svi = SVI(banana, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO(8, vectorize_particles=True))
    for _ in range(steps):
        svi.step()
    return before, elbo()


def test_svi() -> None:
    # a guide interleaving LU blocks with affine autoregressive layers
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    flow = pyro.distributions.transforms.ComposeTransformModule(
        [lu_linear(2), affine_autoregressive(2, [32]), lu_linear(2)]
        + [affine_autoregressive(2, [32]), lu_linear(2)]
    )

    def guide() -> None:
        pyro.module("flow", flow)
        z = pyro.sample(
            "z", dist.TransformedDistribution(normal(2), [flow]), infer={"is_auxiliary": True}
        )
        pyro.sample("z1", dist.Delta(z[..., 0]))
        pyro.sample("z2", dist.Delta(z[..., 1]))

    _, elbo_flow = fit(guide)
    store = pyro.get_param_store()
    for i in (0, 2, 4):
        for name, p in flow[i].named_parameters():
            assert store[f"flow$$${i}.{name}"] is p

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    _, elbo_normal = fit(AutoNormal(banana))

    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    guide = AutoNormalizingFlow(banana, partial(lu_net, transforms=1))
    elbo_init, elbo_lunet = fit(guide, lr=3e-2)
    store = pyro.get_param_store()
    for name, p in guide.transform.named_parameters():
        assert store[f"AutoNormalizingFlow.transform$$${name}"] is p

    print(f"ELBO: LU+AR {elbo_flow:.3f}, AutoNormal {elbo_normal:.3f}, ", end="")
    print(f"AutoNormalizingFlow(lu_net) {elbo_init:.3f} -> {elbo_lunet:.3f}")
    assert elbo_flow > elbo_normal + 0.1
    assert elbo_lunet > elbo_init + 0.5


def test_density_estimation() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    x, _ = datasets.make_blobs(n_samples=10000, centers=4, cluster_std=0.2, random_state=1)
    x = torch.as_tensor(x, dtype=torch.float32)
    train, test = x[:9000], x[9000:]

    t = lu_net(2, transforms=3)
    # data standardised, the scaling's log-Jacobian counted
    scale = dist.transforms.AffineTransform(train.mean(0), train.std(0), event_dim=1)
    d = dist.TransformedDistribution(normal(2), [t.inv, scale])
    optimizer = torch.optim.Adam(t.parameters(), lr=3e-2)
    for _ in range(300):
        loss = -d.log_prob(train[torch.randint(0, len(train), (512,))]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        nll = -d.log_prob(test).mean().item()
    print(f"test NLL: LU-Net {nll:.3f}, Gaussian {gaussian_nll(train, test):.3f}")
    assert nll < gaussian_nll(train, test) - 0.2


def test_conditional_density() -> None:
    def truth(c: torch.Tensor) -> dist.Distribution:
        loc = torch.cat((c, -2 * c), dim=-1)
        scale = torch.cat((0.5 * (0.5 * c).exp(), 0.3 * (-0.5 * c).exp()), dim=-1)
        return dist.Normal(loc, scale).to_event(1)

    c = 2 * torch.rand(4000, 1) - 1
    x = truth(c).sample()
    c_test = 2 * torch.rand(1000, 1) - 1
    x_test = truth(c_test).sample()

    t = conditional_lu_net(2, 1, transforms=1, hidden_dims=[16])
    d = dist.ConditionalTransformedDistribution(normal(2), [t.inv])
    optimizer = torch.optim.Adam(t.parameters(), lr=1e-2)
    for _ in range(300):
        i = torch.randint(0, len(x), (256,))
        loss = -d.condition(c[i]).log_prob(x[i]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    with torch.no_grad():
        nll = -d.condition(c_test).log_prob(x_test).mean().item()
        true_nll = -truth(c_test).log_prob(x_test).mean().item()
        print(f"conditional test NLL: LU-Net {nll:.3f}, truth {true_nll:.3f}")
        assert nll < true_nll + 0.1 < gaussian_nll(x, x_test)

        for value in (-0.8, 0.8):
            context = torch.tensor([value])
            samples = d.condition(context).sample((4000,))
            true = truth(context)
            assert torch.allclose(samples.mean(0), true.mean, atol=0.2)
            assert torch.allclose(samples.std(0), true.stddev, rtol=0.25)


@pytest.mark.parametrize("context", [0, 2])
def test_zuko_conversion(context: int) -> None:
    from zuko_lu import LUNet  # imports zuko

    flow = LUNet(2, context, transforms=2, learnable_alpha=True, init="orthogonal")
    perturb(flow, 0.1)
    x, c = torch.randn(512, 2), torch.randn(512, context)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(20):  # a little training, so that every parameter moves
        loss = -flow(c if context else None).log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def pyro_log_prob(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        if context:
            d = dist.ConditionalTransformedDistribution(normal(2), [module.inv])
            return d.condition(c[: len(x)]).log_prob(x)
        return dist.TransformedDistribution(normal(2), [module.inv]).log_prob(x)

    x_test = 2 * torch.randn(64, 2)
    module = from_zuko(flow)
    if not context:
        keys = {k.removeprefix("transform.transforms.") for k in flow.state_dict()}
        assert set(module.state_dict()) == keys - {"base._0", "base._1"}
    with torch.no_grad():
        expected = flow(c[:64] if context else None).log_prob(x_test)
        assert torch.allclose(pyro_log_prob(module, x_test), expected, atol=1e-5)

    # and back, after training in the Pyro face
    perturb(module, 0.05)
    back = to_zuko(module)
    with torch.no_grad():
        expected = pyro_log_prob(module, x_test)
        assert torch.allclose(
            back(c[:64] if context else None).log_prob(x_test), expected, atol=1e-5
        )

    with pytest.raises(ValueError, match="module"):
        to_zuko(torch.nn.ModuleList([lu_linear(2), lu_linear(2)]))


def test_conversion_type_errors() -> None:
    from zuko_lu import LUNet  # imports zuko

    with pytest.raises(TypeError, match=r"flow: expected a zuko_lu\.LUNet.*got Linear"):
        from_zuko(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="got ComposeTransformModule"):
        from_zuko(from_zuko(LUNet(2)))  # a Pyro LU-Net is no zuko flow
    with pytest.raises(TypeError, match=r"module: expected a Pyro LU-Net.*got Linear"):
        to_zuko(torch.nn.Linear(2, 2))


def test_conversion_without_zuko() -> None:
    # the lazy names load zuko_lu.convert, which does not import zuko until to_zuko runs
    code = (
        "import sys, torch\n"
        "from zuko_lu.pyro import from_zuko, lu_net, to_zuko\n"
        "assert from_zuko.__module__ == 'zuko_lu.convert'\n"
        "try:\n"
        "    from_zuko(torch.nn.Linear(2, 2))\n"
        "except TypeError:\n"
        "    pass\n"
        "assert 'zuko' not in sys.modules, 'zuko imported'\n"
        "to_zuko(lu_net(2))\n"
        "print('zuko' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


def test_import_cost() -> None:
    # importing the package, the maths core or the Pyro face imports neither zuko nor
    # torch._dynamo (which pulls in sympy: seconds); each import in a clean interpreter
    for module in ("zuko_lu", "zuko_lu.transforms", "zuko_lu.parameters", "zuko_lu.pyro"):
        code = (
            f"import sys, {module}\n"
            "print(sorted(m for m in ('zuko', 'torch._dynamo', 'sympy') if m in sys.modules))"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "[]", f"import {module}: {result.stdout.strip()}"
