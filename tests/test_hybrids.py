r"""Tests of LU blocks inside zuko flows: interleave, the hybrid builders, compose, Pyro."""

from __future__ import annotations

import pytest
import torch
import zuko

from checks import check_flow_normalised, check_transform, gaussian_nll, roundtrip_state
from zuko.lazy import Flow, LazyDistribution, UnconditionalTransform
from zuko.transforms import SoftclipTransform

from zuko_lu import LUMAF, LUNSF, LULinear, LUNet, LURealNVP, compose, interleave

F32, F64 = torch.float32, torch.float64

# name -> (builder(D, C), dtypes)
BUILDERS = {
    "maf": (lambda D, C: interleave(zuko.flows.MAF(D, C), init="orthogonal"), (F32, F64)),
    "nsf": (lambda D, C: interleave(zuko.flows.NSF(D, C, bins=4)), (F32, F64)),
    "realnvp": (lambda D, C: interleave(zuko.flows.RealNVP(D, C), init="orthogonal"), (F32, F64)),
    "nice": (lambda D, C: interleave(zuko.flows.NICE(D, C, randmask=True)), (F32, F64)),
    "lunet": (lambda D, C: interleave(LUNet(D, C, transforms=1)), (F32, F64)),
    "lumaf": (lambda D, C: LUMAF(D, C, lu={"init": "orthogonal"}), (F32, F64)),
    "lunsf": (lambda D, C: LUNSF(D, C, bins=4, transforms=3), (F32, F64)),
    "lurealnvp": (lambda D, C: LURealNVP(D, C, lu={"conditioning": "full"}), (F32, F64)),
    "compose": (lambda D, C: compose(["maf", "lu", "nsf", "leaky_softplus", "lu"], D, C), (F32,)),
    "compose64": (lambda D, C: compose(["coupling", "lu", "maf"], D, C), (F64,)),
}  # fmt: skip

CASES = [(n, d) for n, (_, dtypes) in BUILDERS.items() for d in dtypes]


def lu_blocks(flow: Flow) -> list[LULinear]:
    return [t for t in flow.transform.transforms if isinstance(t, LULinear)]


@pytest.mark.parametrize("name, dtype", CASES)
@pytest.mark.parametrize("D, C", [(2, 0), (5, 3)])
def test_flow_checks(name: str, dtype: torch.dtype, D: int, C: int, device: torch.device):
    flow = BUILDERS[name][0](D, C).to(device, dtype)
    assert isinstance(flow, Flow)
    assert all(t.context == C and t.features == D for t in lu_blocks(flow))

    x = torch.randn(16, D, dtype=dtype, device=device)
    c = torch.randn(16, C, dtype=dtype, device=device) if C else None  # a batch of contexts

    check_transform(flow(c).transform, x)

    log_p = flow(c).log_prob(x)
    assert log_p.shape == (16,) and log_p.isfinite().all()
    y = flow(c).sample((2,))
    assert y.shape == (2, *x.shape[: 1 if C else 0], D)
    assert y.dtype == dtype and y.device == x.device


# zuko's flows with numerical inverses (bisection, to ~1e-5): a looser round trip, and
# no Jacobian check (the autograd.Function of UNAF and SOSPF breaks torch.func.jacrev)
OTHERS = {
    "naf": lambda: zuko.flows.NAF(3, 2, transforms=2, signal=4),
    "unaf": lambda: zuko.flows.UNAF(3, 2, transforms=2, signal=4),
    "sospf": lambda: zuko.flows.SOSPF(3, 2, transforms=2, degree=2, polynomials=2),
    "bpf": lambda: zuko.flows.BPF(3, 2, transforms=2, degree=4),
    "gf": lambda: zuko.flows.GF(3, 2, transforms=2, components=2),
}


@pytest.mark.parametrize("name", OTHERS)
def test_other_zuko_flows(name: str):
    flow = interleave(OTHERS[name](), init="orthogonal")
    assert all(t.context == 2 for t in lu_blocks(flow))
    n = len(flow.transform.transforms)
    assert len(lu_blocks(flow)) == (n - 1) // 2

    x, c = torch.randn(8, 3), torch.randn(8, 2)
    t = flow(c).transform
    y, ladj = t.call_and_ladj(x)
    assert torch.allclose(t.inv(y), x, atol=1e-3)
    assert torch.allclose(t.inv.log_abs_det_jacobian(y, x), -ladj, atol=1e-3)
    assert flow(c).log_prob(x).isfinite().all()


def test_interleave_structure():
    maf = zuko.flows.MAF(3, 2, transforms=3)
    before = {k: v.clone() for k, v in maf.state_dict().items()}

    flow = interleave(maf)
    assert type(flow) is zuko.flows.MAF and flow is not maf
    names = [type(t).__name__ for t in flow.transform.transforms]
    assert names == ["MaskedAutoregressiveTransform", "LULinear"] * 2 + names[-1:]
    assert len(maf.transform.transforms) == 3  # the input is untouched
    assert all(torch.equal(v, maf.state_dict()[k]) for k, v in before.items())

    assert interleave(maf, inplace=True) is maf and len(maf.transform.transforms) == 5

    # first=True: one more block, before the first transformation (on the data side)
    first = interleave(zuko.flows.MAF(3, 2, transforms=2), first=True)
    names = [type(t).__name__ for t in first.transform.transforms]
    assert names == ["LULinear", "MaskedAutoregressiveTransform"] * 2
    assert first.transform.transforms[0].context == 2
    with pytest.raises(ValueError, match="first: expected a bool"):
        interleave(zuko.flows.MAF(3, transforms=2), first=1)

    # zuko's own fixed transformations (NAF's soft clips) are kept, with LU on both sides
    naf = interleave(zuko.flows.NAF(2, transforms=2, signal=4))
    names = [type(t).__name__ for t in naf.transform.transforms]
    assert names[1:4] == ["LULinear", "UnconditionalTransform", "LULinear"]


def test_interleave_keeps_trained_density():
    flow = zuko.flows.MAF(3, transforms=2)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    x = torch.randn(64, 3) * torch.tensor([1.0, 2.0, 0.5])
    for _ in range(5):
        loss = -flow().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    # identity LU blocks: the same density at interleaving, then trainable
    lu = interleave(flow)
    assert torch.allclose(lu().log_prob(x), flow().log_prob(x), atol=1e-6)
    first = interleave(flow, first=True)
    assert torch.allclose(first().log_prob(x), flow().log_prob(x), atol=1e-6)
    assert all(p.requires_grad for p in lu.parameters())


def test_interleave_dtype_and_errors():
    flow = interleave(zuko.flows.RealNVP(3).to(F64))
    assert all(p.dtype == F64 for p in flow.parameters())

    with pytest.raises(TypeError, match="LazyComposedTransform"):
        interleave(zuko.flows.CNF(2))

    class Base(LazyDistribution):  # a conditional base: D cannot be read from it
        def forward(self, c=None):
            return zuko.distributions.DiagNormal(c, torch.ones_like(c))

    clip = lambda: UnconditionalTransform(SoftclipTransform, bound=5.0)
    odd = Flow([clip(), clip()], Base())
    with pytest.raises(ValueError, match="features"):
        interleave(odd)
    with pytest.raises(ValueError, match="context"):
        interleave(odd, features=2)
    flow = interleave(odd, features=2, context=2)
    c = torch.randn(4, 2)
    assert flow(c).log_prob(torch.randn(4, 2)).shape == (4,)


@pytest.mark.parametrize("name", ["lumaf", "lunsf", "lurealnvp", "nice", "compose"])
def test_save_load(name: str, device: torch.device):
    build = BUILDERS[name][0]
    flow = build(3, 2).to(device)
    torch.manual_seed(1)
    fresh = roundtrip_state(flow, build(3, 2).to(device))

    x, c = torch.randn(8, 3, device=device), torch.randn(8, 2, device=device)
    assert torch.allclose(fresh(c).log_prob(x), flow(c).log_prob(x), atol=1e-5)
    flow.eval(), fresh.eval()
    with torch.no_grad():
        z = torch.randn(8, 3, device=device)
        assert torch.allclose(fresh(c).transform.inv(z), flow(c).transform.inv(z), atol=1e-5)


def two_moons(n: int) -> torch.Tensor:
    t = torch.rand(n) * torch.pi
    side = torch.randint(2, (n,))
    x = torch.stack((t.cos() + side * 1.0, t.sin() * (1 - 2 * side) + 0.5 * side), dim=-1)
    x = x + 0.1 * torch.randn(n, 2)
    return (x - x.mean(0)) / x.std(0)


# 2-D flows whose mass lies well inside the grids below (a leaky softplus near the latent
# end gives heavy tails, so it is left out here: its integral is 1.005 +- 0.006 by
# importance sampling after training)
NORMALISED = {
    "lumaf": lambda: LUMAF(2, lu={"init": "orthogonal"}),
    "lunsf": lambda: LUNSF(2, bins=4, transforms=2),
    "lurealnvp": lambda: LURealNVP(2, transforms=4),
    "compose": lambda: compose(["coupling", "lu", "nsf", "lu", "coupling"], 2, nsf={"bins": 4}),
}


@pytest.mark.parametrize("name", NORMALISED)
def test_normalised(name: str):
    flow = NORMALISED[name]().to(F64)
    assert abs(check_flow_normalised(flow, lim=8.0, n=161) - 1) < 1e-2

    x = two_moons(128).to(F64)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    for _ in range(20):
        loss = -flow().log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(check_flow_normalised(flow, lim=6.0, n=201) - 1) < 1e-2


def test_compose_options_and_orders():
    flow = compose(
        ["maf", "maf", "leaky_softplus", "nsf", ("lu", {"init": "orthogonal"}), "lu"],
        3,
        context=2,
        lu={"bias": False},
        maf={"hidden_features": (8,)},
    )
    t = flow.transform.transforms
    assert [s.order.tolist() for s in (t[0], t[1], t[3])] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
    assert t[0].hyper[0].out_features == 8 and t[3].hyper[0].out_features == 64
    assert t[4].params.perm is not None and t[5].params.perm is None  # per-layer options
    assert t[4].params.bias is None and t[5].params.bias is None  # per-name options
    assert t[4].context == 2 and t[2].features == 3  # leaky_softplus takes no context

    x, c = torch.randn(8, 3), torch.randn(8, 2)
    check_transform(flow(c).transform, x)

    # an explicit index or order wins
    t = compose([("maf", {"index": 1}), ("coupling", {"mask": [1, 1, 0]})], 3).transform
    assert t.transforms[0].order.tolist() == [2, 1, 0]
    assert t.transforms[1].mask.tolist() == [True, True, False]


def test_compose_errors():
    with pytest.raises(LookupError, match=r"'nope'.*zuko\.transforms.*'lu'"):
        compose(["maf", "nope"], 2)
    with pytest.raises(ValueError, match="not in spec: nsf"):
        compose(["maf"], 2, nsf={"bins": 4})
    with pytest.raises(ValueError, match="mapping"):
        compose(["maf"], 2, maf=3)
    with pytest.raises(ValueError, match="spec"):
        compose([], 2)
    with pytest.raises(ValueError, match="spec"):
        compose("maf", 2)
    with pytest.raises(ValueError, match="spec"):
        compose([("lu", 3)], 2)
    with pytest.raises(ValueError, match="context"):
        compose(["lu"], 2, context=-1)
    with pytest.raises(ValueError, match="features"):
        compose(["lu"], 0)


def test_zuko_to_pyro():
    pyro = pytest.importorskip("pyro")
    from pyro.contrib.zuko import ZukoToPyro

    # a banana: x2 | x1 is normal around x1^2 / 2, far from any Gaussian
    x1 = torch.randn(768)
    data = torch.stack((x1, 0.5 * x1**2 + 0.3 * torch.randn(768) - 0.5), dim=-1)
    train, test = data[:512], data[512:]

    flow = LUMAF(2, transforms=2, hidden_features=(32, 32), lu={"init": "orthogonal"})

    def model(x: torch.Tensor) -> None:
        pyro.module("flow", flow)
        with pyro.plate("data", len(x)):
            pyro.sample("obs", ZukoToPyro(flow()), obs=x)

    def guide(x: torch.Tensor) -> None:
        pass

    pyro.clear_param_store()
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 2e-2}), pyro.infer.Trace_ELBO())
    losses = [svi.step(train) / len(train) for _ in range(100)]
    pyro.clear_param_store()

    # the ELBO of a guide-less model is minus the log-likelihood: maximum likelihood
    assert sum(losses[-10:]) / 10 < losses[0] - 0.5
    with torch.no_grad():
        nll = -flow().log_prob(test).mean().item()
    # beats the best Gaussian (2.6-2.8 nats) by far, near the true entropy (1.63 nats)
    assert nll < gaussian_nll(train, test) - 0.5
    assert nll < 1.63 + 0.25
