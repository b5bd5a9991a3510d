r"""Tests of the image flows: zuko_lu.image_core, zuko_lu.glow and zuko_lu.pyro_images."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from checks import check_transform, roundtrip_state
from zuko.distributions import DiagNormal
from zuko.lazy import Flow, UnconditionalDistribution

from zuko_lu.glow import (
    ActNorm,
    ChannelPermutation,
    ConvCoupling,
    Glow,
    LUConv1x1,
    MultiScaleSplit,
    Squeeze,
)
from zuko_lu.image_core import (
    ActNormParameters,
    ActNormTransform,
    AffineCouplingTransform,
    ChannelPermuteTransform,
    ConvNet,
    LUConv1x1Transform,
    MultiScaleTransform,
    SqueezeTransform,
)

DTYPES = [torch.float32, torch.float64]
SHAPE = (2, 4, 4)
D = 32


def perturb(module: torch.nn.Module, scale: float = 0.2) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def on(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    return module.to(device=device, dtype=dtype)


def core_transforms(device: torch.device, dtype: torch.dtype) -> dict:
    # Transformations of the core on flat vectors of SHAPE, away from the identity.
    kw = dict(device=device, dtype=dtype)
    LU = torch.eye(2, **kw) + 0.3 * torch.randn(2, 2, **kw)
    net = on(perturb(ConvNet(1, 2, hidden_channels=4)), device, dtype)
    prior = on(perturb(ConvNet(1, 2, hidden_channels=0)), device, dtype)
    inner = SqueezeTransform((1, 4, 4))
    return {
        "lu": LUConv1x1Transform(
            LU, bias=torch.randn(2, **kw), perm=torch.tensor([1, 0], device=device), shape=SHAPE
        ),
        "lu-batched": LUConv1x1Transform(
            torch.eye(2, **kw) + 0.3 * torch.randn(4, 2, 2, **kw),
            bias=torch.randn(4, 2, **kw),
            shape=SHAPE,
        ),
        "permute": ChannelPermuteTransform(torch.tensor([1, 0], device=device), shape=SHAPE),
        "squeeze": SqueezeTransform(SHAPE),
        "actnorm": ActNormTransform(torch.randn(2, **kw), torch.randn(2, **kw), shape=SHAPE),
        "actnorm-batched": ActNormTransform(
            torch.randn(4, 2, **kw), torch.randn(4, 2, **kw), shape=SHAPE
        ),
        "coupling": AffineCouplingTransform(net, shape=SHAPE),
        "split": MultiScaleTransform(inner, prior, shape=SHAPE),
        "split-no-prior": MultiScaleTransform(None, None, shape=SHAPE),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    [
        "lu",
        "lu-batched",
        "permute",
        "squeeze",
        "actnorm",
        "actnorm-batched",
        "coupling",
        "split",
        "split-no-prior",
    ],
)
def test_core_transform(device: torch.device, dtype: torch.dtype, name: str) -> None:
    t = core_transforms(device, dtype)[name]
    check_transform(t, torch.randn(4, D, device=device, dtype=dtype))


@pytest.mark.parametrize("name", ["lu", "permute", "squeeze", "actnorm", "coupling"])
def test_images_and_flat_vectors_agree(name: str) -> None:
    # The same transformation on images (event dim 3) and on flat vectors (event dim 1).
    flat = core_transforms(torch.device("cpu"), torch.float64)[name]
    image = type(flat).__new__(type(flat))
    image.__dict__.update(flat.__dict__)
    image.shape = None
    image.domain = image.codomain = torch.distributions.constraints.independent(
        torch.distributions.constraints.real, 3
    )
    assert flat.domain.event_dim == 1 and image.domain.event_dim == 3

    x = torch.randn(3, 5, *SHAPE, dtype=torch.float64)
    y, ladj = image.call_and_ladj(x)
    y_flat, ladj_flat = flat.call_and_ladj(x.flatten(-3))
    assert torch.allclose(y.flatten(-3), y_flat) and torch.allclose(ladj, ladj_flat)
    assert ladj.shape == (3, 5)
    assert torch.allclose(image.inv(y), x)


def test_lu_conv_is_a_1x1_convolution() -> None:
    LU = torch.eye(3) + 0.3 * torch.randn(3, 3)
    t = LUConv1x1Transform(LU, bias=torch.randn(3), perm=torch.tensor([2, 0, 1]))
    x = torch.randn(2, 3, 5, 6)
    W = t.lu.weight
    expected = F.conv2d(x, W[:, :, None, None], t.lu.bias)
    assert torch.allclose(t(x), expected, atol=1e-5)
    ladj = 30 * torch.linalg.slogdet(W).logabsdet
    assert torch.allclose(t.log_abs_det_jacobian(x, t(x)), ladj.expand(2), atol=1e-4)


def test_squeeze_layout() -> None:
    x = torch.arange(2 * 4 * 6.0).reshape(2, 4, 6)
    y = SqueezeTransform()(x)
    assert y.shape == (8, 2, 3)
    for c in range(2):
        for i in range(2):
            for j in range(2):
                assert torch.equal(y[4 * c + 2 * i + j], x[c, i::2, j::2])
    t = SqueezeTransform((2, 4, 6))
    assert torch.equal(t(x.flatten()), y.flatten())
    assert SqueezeTransform().forward_shape(torch.Size([7, 2, 4, 6])) == (7, 8, 2, 3)
    with pytest.raises(ValueError, match="shape"):
        SqueezeTransform((1, 3, 4))


def test_actnorm_data_dependent_init() -> None:
    params = ActNormParameters(3)
    x = torch.tensor([1.0, -2.0, 5.0])[:, None, None] + torch.rand(64, 3, 4, 4) * 3
    y = params()(x)
    assert bool(params.initialized)
    assert torch.allclose(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std(dim=(0, 2, 3), correction=0), torch.ones(3), atol=1e-4)

    # no second initialisation, nor one in eval mode
    before = params.shift.detach().clone()
    params()(x + 10)
    assert torch.equal(params.shift, before)
    fresh = ActNormParameters(3).eval()
    fresh()(x)
    assert not fresh.initialized and torch.equal(fresh.shift, torch.zeros(3))


def tiny_glow(context: int = 0, mixing: str = "lu") -> Glow:
    return Glow((1, 4, 4), levels=2, steps=1, hidden_channels=4, context=context, mixing=mixing)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mixing", ["lu", "permute", "reverse"])
def test_glow_transform(device: torch.device, dtype: torch.dtype, mixing: str) -> None:
    flow = on(perturb(tiny_glow(context=3, mixing=mixing)), device, dtype)
    c = torch.randn(4, 3, device=device, dtype=dtype)
    check_transform(flow.transform(c), torch.randn(4, 16, device=device, dtype=dtype))


@pytest.mark.parametrize(
    "module",
    [
        lambda: LUConv1x1(SHAPE, context=3, hidden_features=[8]),
        lambda: LUConv1x1(SHAPE, context=3, hidden_features=[8], conditioning="full"),
        lambda: ConvCoupling(SHAPE, context=3, hidden_channels=4),
        lambda: MultiScaleSplit(SHAPE, [ActNorm((1, 4, 4)), Squeeze((1, 4, 4))], context=3),
    ],
)
def test_conditional_blocks(device: torch.device, module) -> None:
    t = on(perturb(module()), device, torch.float64)
    c = torch.randn(4, 3, device=device, dtype=torch.float64)
    check_transform(t(c), torch.randn(4, D, device=device, dtype=torch.float64))


def test_shapes_with_batches_and_contexts() -> None:
    flow = perturb(tiny_glow(context=3))
    c = torch.randn(5, 3)
    x = torch.randn(2, 5, 16)
    assert flow(c).log_prob(x).shape == (2, 5)
    assert flow(c).sample((4,)).shape == (4, 5, 16)
    assert flow(c[0]).sample((4,)).shape == (4, 16)
    assert flow(c[0]).log_prob(x).shape == (2, 5)
    z, ladj = flow(c).transform.call_and_ladj(x)
    assert z.shape == (2, 5, 16) and ladj.shape == (2, 5)

    flow = tiny_glow()
    assert flow().log_prob(torch.randn(3, 2, 16)).shape == (3, 2)
    assert flow().sample((2, 3)).shape == (2, 3, 16)


@pytest.mark.parametrize("dtype", DTYPES)
def test_save_and_load(device: torch.device, dtype: torch.dtype) -> None:
    flow = on(perturb(tiny_glow(context=3)), device, dtype)
    x = torch.randn(8, 16, device=device, dtype=dtype)
    c = torch.randn(8, 3, device=device, dtype=dtype)
    flow(c).log_prob(x)  # the ActNorms initialise on this batch
    expected = flow(c).log_prob(x)

    torch.manual_seed(1)
    fresh = on(tiny_glow(context=3), device, dtype)
    fresh = roundtrip_state(flow, fresh)
    assert torch.allclose(fresh(c).log_prob(x), expected)
    assert all(bool(m.params.initialized) for m in fresh.modules() if isinstance(m, ActNorm))

    # the eval-mode cache of the LU convolutions follows the loaded weights
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh(c).log_prob(x), expected)
        z = torch.randn(8, 16, device=device, dtype=dtype)
        # a stale cache is off by O(1); float32 round trips of this random flow by 1e-4
        tol = dict(atol=1e-3) if dtype == torch.float32 else {}
        assert torch.allclose(fresh(c).transform(fresh(c).transform.inv(z)), z, **tol)


def test_eval_inverse_uses_the_cache() -> None:
    flow = perturb(tiny_glow()).eval()
    lu = next(m for m in flow.modules() if isinstance(m, LUConv1x1))
    with torch.no_grad():
        t1, t2 = lu(), lu()
        assert t1.lu is t2.lu  # one cached LUTransform, W^-1 formed once
        z = torch.randn(4, 16)
        x = flow().transform.inv(z)
    flow.train()
    assert torch.allclose(flow().transform.inv(z), x, atol=1e-5)


def split_flow() -> Flow:
    # A multi-scale flow on 1x2x2 images: squeeze to 4x1x1, a step, a split with a
    # learned prior, and a step on the kept half.
    s, k = (4, 1, 1), (2, 1, 1)
    inner = [ActNorm(k), LUConv1x1(k), ConvCoupling(k, hidden_channels=4)]
    transforms = [
        Squeeze((1, 2, 2)),
        ActNorm(s),
        LUConv1x1(s),
        ConvCoupling(s, hidden_channels=4),
        MultiScaleSplit(s, inner),
    ]
    base = UnconditionalDistribution(DiagNormal, torch.zeros(4), torch.ones(4), buffer=True)
    return Flow(transforms, base)


def test_multiscale_density_normalises() -> None:
    # Importance sampling: the integral of p is E_q[p / q] for any proposal q that covers
    # p. Here q is heavy-tailed (Student's t, 3 degrees of freedom, independent per
    # coordinate) around the mean and a wide covariance of the flow's samples, so that
    # p / q stays bounded; q's density is exact, so a wrong log|det| anywhere shows.
    flow = perturb(split_flow(), 0.3).double().eval()
    with torch.no_grad():
        s = flow().sample((4096,))
        m, A = s.mean(0), 1.5 * torch.linalg.cholesky(torch.cov(s.T))
        t = torch.distributions.StudentT(3.0)
        u = t.sample((2**17, 4)).double()
        log_q = t.log_prob(u).sum(-1) - torch.linalg.slogdet(A).logabsdet
        w = (flow().log_prob(m + u @ A.T) - log_q).exp()
    integral, error = w.mean().item(), (w.std() / math.sqrt(len(w))).item()
    assert error < 0.01, error
    assert abs(integral - 1) < 4 * error, (integral, error)


def test_gradients_reach_every_parameter() -> None:
    flow = perturb(tiny_glow(context=3))
    x, c = torch.randn(8, 16), torch.randn(8, 3)
    flow(c).log_prob(x).mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mixing_variants() -> None:
    kinds = {m: tiny_glow(mixing=m) for m in ("lu", "permute", "reverse")}
    lus = [m for m in kinds["lu"].modules() if isinstance(m, LUConv1x1)]
    assert lus and all(abs(m.params.condition_number() - 1) < 1e-6 for m in lus)
    for mixing in ("permute", "reverse"):
        modules = list(kinds[mixing].modules())
        assert not any(isinstance(m, LUConv1x1) for m in modules)
        perms = [m for m in modules if isinstance(m, ChannelPermutation)]
        assert perms and all(m.mode == mixing for m in perms)
    assert torch.equal(ChannelPermutation((4, 2, 2), "reverse").perm, torch.tensor([3, 2, 1, 0]))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(shape=(1, 6, 8)), "shape"),  # 6 is not divisible by 2**2
        (dict(shape=(1, 8, 8), levels=4), "shape"),
        (dict(shape=(1, 8)), "shape"),
        (dict(shape=50), "shape"),
        (dict(shape=(1, 8, 8), mixing="shuffle"), "mixing"),
        (dict(shape=(1, 8, 8), levels=0), "levels"),
        (dict(shape=(1, 8, 8), steps=-1), "steps"),
        (dict(shape=(1, 8, 8), hidden_channels=0), "hidden_channels"),
        (dict(shape=(1, 8, 8), context=-2), "context"),
        (dict(shape=(1, 8, 8), init="random"), "init"),
    ],
)
def test_bad_arguments(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        Glow(**kwargs)


def test_glow_from_a_number_of_features() -> None:
    flow = Glow(64, levels=2, steps=1, hidden_channels=4)
    assert flow.image_shape == (1, 8, 8)
    assert flow().sample((2,)).shape == (2, 64)


def digits() -> torch.Tensor:
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.as_tensor(data.data, dtype=torch.float32)
    return x, torch.as_tensor(data.target)


def dequantise(x: torch.Tensor) -> torch.Tensor:
    # 17 levels to [-0.5, 0.5], uniform noise within each level
    return (x + torch.rand_like(x)) / 17 - 0.5


def test_learns_digits() -> None:
    x, _ = digits()
    flow = Glow((1, 8, 8), levels=2, steps=2, hidden_channels=16)
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    test = dequantise(x[:256])
    train = x[256:]

    def nll() -> float:
        with torch.no_grad():
            return -flow().log_prob(test).mean().item() / 64

    losses = []
    for step in range(60):
        batch = dequantise(train[torch.randint(len(train), (64,))])
        loss = -flow().log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step == 0:
            losses.append(nll())
    losses.append(nll())
    # nats per dimension, measured 0.2-0.3 after the first step and -0.38 to -0.44 after
    # 60 (seeds 0-3)
    assert losses[1] < losses[0] - 0.45, losses


def test_class_conditional_samples_depend_on_the_class() -> None:
    x, y = digits()
    x, y = x[y <= 1], y[y <= 1]
    onehot = F.one_hot(y, 2).float()
    flow = Glow((1, 8, 8), levels=2, steps=2, hidden_channels=16, context=2)
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(40):
        i = torch.randint(len(x), (64,))
        loss = -flow(onehot[i]).log_prob(dequantise(x[i])).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    flow.eval()
    with torch.no_grad():
        z = 0.7 * torch.randn(200, 64)
        samples = {k: flow(torch.eye(2)[k]).transform.inv(z) for k in (0, 1)}
        means = {k: dequantise(x[y == k]).mean(0) for k in (0, 1)}
        for k in (0, 1):
            near = (samples[k] - means[k]).square().sum(-1).mean()
            far = (samples[k] - means[1 - k]).square().sum(-1).mean()
            assert near < far, (k, near, far)
        # the model knows the class: a digit is likelier under its own label
        data = dequantise(x[:200])
        own = flow(F.one_hot(y[:200], 2).float()).log_prob(data)
        other = flow(F.one_hot(1 - y[:200], 2).float()).log_prob(data)
        assert (own > other).float().mean() > 0.9


# The Pyro face


def pyro_parts(device: torch.device, dtype: torch.dtype) -> dict:
    from pyro.distributions.torch_transform import ComposeTransformModule

    from zuko_lu import pyro_images as P

    c = torch.randn(4, 3, device=device, dtype=dtype)
    inner = P.ImageChain([P.squeeze((1, 4, 4)), P.actnorm(4, shape=(4, 2, 2))])
    modules = {
        "lu": P.lu_conv1x1(2, shape=SHAPE),
        "actnorm": P.actnorm(2, shape=SHAPE),
        "coupling": P.conv_affine_coupling(2, 4, shape=SHAPE),
        "split": P.MultiScaleSplit(SHAPE, inner),
        "split-compose": P.MultiScaleSplit(
            SHAPE,
            ComposeTransformModule(
                [P.actnorm(1, shape=(1, 4, 4)), P.lu_conv1x1(1, shape=(1, 4, 4))]
            ),
        ),
        "glow": P.glow((1, 4, 4), steps=1, hidden_channels=4, mixing="permute"),
        "conditional-lu": P.conditional_lu_conv1x1(2, 3, [8], shape=SHAPE),
        "conditional-coupling": P.conditional_conv_affine_coupling(2, 3, 4, shape=SHAPE),
        "conditional-split": P.ConditionalMultiScaleSplit(SHAPE, 3, inner),
        "conditional-glow": P.conditional_glow((1, 4, 4), 3, steps=1, hidden_channels=4),
    }
    module = modules  # perturbed, on the device, in eval mode (no ActNorm initialisation)
    out = {}
    for name, m in module.items():
        m = on(perturb(m), device, dtype).eval()
        out[name] = m.condition(c) if name.startswith("conditional") else m
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "name",
    [
        "lu",
        "actnorm",
        "coupling",
        "split",
        "split-compose",
        "glow",
        "conditional-lu",
        "conditional-coupling",
        "conditional-split",
        "conditional-glow",
    ],
)
def test_pyro_module(device: torch.device, dtype: torch.dtype, name: str) -> None:
    t = pyro_parts(device, dtype)[name]
    n = 16 if "glow" in name else D
    check_transform(t, torch.randn(4, n, device=device, dtype=dtype))


def test_pyro_images_on_images() -> None:
    from zuko_lu import pyro_images as P

    x, c = torch.randn(2, 5, 2, 4, 4), torch.randn(5, 3)
    for t in (
        perturb(P.lu_conv1x1(2)),
        P.conditional_lu_conv1x1(2, 3, [8]).condition(c),
        perturb(P.conditional_conv_affine_coupling(2, 3, 4)).condition(c),
        P.squeeze(),
    ):
        y = t(x)
        assert torch.allclose(t.inv(y), x, atol=1e-5)
        assert t.log_abs_det_jacobian(x, y).shape == (2, 5)


def test_pyro_glow_is_the_zuko_glow() -> None:
    # Same layout, same parameters in the same order: the same density.
    import pyro.distributions as dist

    from zuko_lu.pyro_images import glow

    flow = perturb(Glow((1, 4, 4), levels=2, steps=2, hidden_channels=4)).double().eval()
    module = glow((1, 4, 4), levels=2, steps=2, hidden_channels=4).double().eval()
    source, target = flow.transform.state_dict(), module.state_dict()
    assert [v.shape for v in source.values()] == [v.shape for v in target.values()]
    module.load_state_dict(dict(zip(target, source.values(), strict=True)))

    base = dist.Normal(torch.zeros(16, dtype=torch.float64), 1.0).to_event(1)
    d = dist.TransformedDistribution(base, [module.inv])
    x = torch.randn(8, 16, dtype=torch.float64)
    assert torch.allclose(d.log_prob(x), flow().log_prob(x))
    z = torch.randn(8, 16, dtype=torch.float64)
    assert torch.allclose(module.inv(z), flow().transform.inv(z))


def test_pyro_log_prob_runs_each_network_once() -> None:
    import pyro.distributions as dist

    from zuko_lu.pyro_images import conditional_glow, glow

    module = glow((1, 4, 4), steps=2, hidden_channels=4)
    nets = [m for m in module.modules() if isinstance(m, ConvNet)]
    calls = []
    for net in nets:
        net.register_forward_hook(lambda *args: calls.append(1))
    base = dist.Normal(torch.zeros(16), 1.0).to_event(1)
    dist.TransformedDistribution(base, [module.inv]).log_prob(torch.randn(8, 16))
    assert len(calls) == len(nets)  # the couplings' and the split prior's

    module = conditional_glow((1, 4, 4), 3, steps=2, hidden_channels=4)
    nets = [m for m in module.modules() if isinstance(m, ConvNet)]
    calls.clear()
    for net in nets:
        net.register_forward_hook(lambda *args: calls.append(1))
    d = dist.ConditionalTransformedDistribution(base, [module.inv])
    assert d.condition(torch.randn(8, 3)).log_prob(torch.randn(2, 8, 16)).shape == (2, 8)
    assert len(calls) == len(nets)


def test_pyro_save_and_load() -> None:
    from zuko_lu.pyro_images import conditional_glow

    module = perturb(conditional_glow((1, 4, 4), 3, steps=1, hidden_channels=4, mixing="permute"))
    x, c = torch.randn(8, 16), torch.randn(8, 3)
    module.condition(c)(x)  # the ActNorms initialise on this batch
    expected = module.condition(c)(x)
    torch.manual_seed(1)
    fresh = roundtrip_state(
        module, conditional_glow((1, 4, 4), 3, steps=1, hidden_channels=4, mixing="permute")
    )
    assert torch.allclose(fresh.condition(c)(x), expected)


def test_pyro_modules_copy_after_a_forward() -> None:
    import copy

    from zuko_lu.pyro_images import glow

    module = glow((1, 4, 4), steps=1, hidden_channels=4)
    x = torch.randn(8, 16)
    y = module(x)  # keeps a memo of log|det J| (with its graph), which copies leave out
    twin = copy.deepcopy(module)
    assert torch.allclose(twin(x), y)
    assert torch.allclose(module.log_abs_det_jacobian(x, y), twin.log_abs_det_jacobian(x, y))


def test_pyro_face_imports_neither_zuko_nor_the_pyro_face() -> None:
    import subprocess
    import sys

    code = (
        "import sys, zuko_lu.pyro_images, torch;"
        "assert 'zuko' not in sys.modules and 'zuko_lu.pyro' not in sys.modules;"
        "assert torch.distributions.Distribution._validate_args is not False"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
