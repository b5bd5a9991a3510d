r"""Tests of zuko_lu.sbi against the real sbi: NPE and NLE with LU estimators, end to end.

The problem is small (theta ~ U(-1, 1)^2, x = theta + 0.1 noise, a few hundred
simulations), the networks tiny and the trainings a few epochs, with fixed seeds.
"""

from __future__ import annotations

import io
import pickle
import warnings

from collections.abc import Iterator

import pytest
import torch
import torch.nn as nn

from sbi.inference import NLE, NPE
from sbi.neural_nets.net_builders import build_zuko_nsf
from sbi.utils import BoxUniform
from zuko.transforms import ComposedTransform

from zuko_lu import LUNSF, LULinear
from zuko_lu.sbi import EstimatorBuilder, build_estimator, likelihood_nn, posterior_nn

SMALL = {"hidden_features": 16, "num_transforms": 2}
TRAIN = {"max_num_epochs": 3, "training_batch_size": 50, "learning_rate": 3e-3}


@pytest.fixture(scope="module", autouse=True)
def _in_tmp_path(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # sbi's trainers write TensorBoard logs into ./sbi-logs
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("sbi"))
        yield


def prior() -> BoxUniform:
    return BoxUniform(-torch.ones(2), torch.ones(2))


def simulate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=generator) * 2 - 1
    return theta, theta + 0.1 * torch.randn(n, 2, generator=generator)


def inside(theta: torch.Tensor) -> bool:
    return bool(((theta > -1) & (theta < 1)).all())


def train(inference, n: int = 300, seed: int = 0, **kwargs):
    theta, x = simulate(n, seed)
    with warnings.catch_warnings():  # "not yet fully converged" after a few epochs
        warnings.simplefilter("ignore", UserWarning)
        return inference.append_simulations(theta, x).train(**{**TRAIN, **kwargs})


def types(estimator) -> list[str]:
    return [type(t).__name__ for t in estimator.net.transform.transforms]


MODELS = {
    "lunsf": posterior_nn("lunsf", **SMALL),
    "lumaf": posterior_nn("lumaf", **SMALL),
    "lurealnvp": posterior_nn("lurealnvp", **SMALL),
    "zuko_nsf+lu": posterior_nn("zuko_nsf", lu={"init": "orthogonal"}, **SMALL),
}


@pytest.fixture(scope="module")
def trained() -> dict:
    found = {}
    for name, build in MODELS.items():
        torch.manual_seed(0)
        npe = NPE(prior(), density_estimator=build, show_progress_bars=False)
        found[name] = (npe, train(npe))
    return found


@pytest.mark.parametrize("name", list(MODELS))
def test_npe_end_to_end(trained: dict, name: str):
    npe, estimator = trained[name]
    assert sum(isinstance(t, LULinear) for t in estimator.net.transform.transforms) == 1

    posterior = npe.build_posterior()
    x0 = torch.tensor([0.3, -0.5])
    torch.manual_seed(1)
    theta = posterior.sample((200,), x=x0, show_progress_bars=False)
    assert theta.shape == (200, 2) and inside(theta)
    log_prob = posterior.log_prob(theta, x=x0)
    assert log_prob.shape == (200,) and torch.isfinite(log_prob).all()
    # the posterior concentrates near x0 (x = theta + 0.1 noise)
    assert (theta.mean(0) - x0).abs().max() < 0.3


def test_npe_rejection_and_map(trained: dict):
    npe, estimator = trained["lunsf"]
    x0 = torch.tensor([0.3, -0.5])
    torch.manual_seed(2)
    rejection = npe.build_posterior(estimator, sample_with="rejection")
    theta = rejection.sample((100,), x=x0, show_progress_bars=False)
    assert theta.shape == (100, 2) and inside(theta)

    posterior = npe.build_posterior(estimator)
    posterior.set_default_x(x0)
    theta_map = posterior.map(num_iter=20, num_to_optimize=5, num_init_samples=50)
    assert theta_map.shape == (1, 2) and inside(theta_map)
    assert (theta_map - x0).abs().max() < 0.4
    # MAP's log-density is at least that of the posterior's own samples, mostly
    samples = posterior.sample((50,), x=x0, show_progress_bars=False)
    assert posterior.log_prob(theta_map, x=x0) >= posterior.log_prob(samples, x=x0).median()


@pytest.mark.parametrize("how", ["torch", "pickle"])
def test_save_and_load(trained: dict, tmp_path, how: str):
    npe, estimator = trained["zuko_nsf+lu"]
    posterior = npe.build_posterior(estimator)
    theta, x = simulate(20, seed=5)

    if how == "torch":
        path = tmp_path / "posterior.pt"
        torch.save(posterior, path)
        loaded = torch.load(path, weights_only=False)
    else:
        loaded = pickle.loads(pickle.dumps(posterior))

    # (unnormalised: sbi's normalisation for the prior's bounds is a Monte Carlo estimate)
    for t, xi in zip(theta[:3], x[:3], strict=True):
        a = loaded.log_prob(t[None], x=xi, norm_posterior=False)
        assert torch.equal(a, posterior.log_prob(t[None], x=xi, norm_posterior=False))
        assert torch.isfinite(a).all()
    torch.manual_seed(6)
    a = loaded.sample((5,), x=x[0], show_progress_bars=False)
    torch.manual_seed(6)
    assert torch.equal(a, posterior.sample((5,), x=x[0], show_progress_bars=False))

    # the estimator alone, and its state dict into a fresh one
    buffer = io.BytesIO()
    torch.save(estimator, buffer)
    buffer.seek(0)
    again = torch.load(buffer, weights_only=False)
    expected = estimator.log_prob(theta.unsqueeze(0), x)
    assert torch.equal(again.log_prob(theta.unsqueeze(0), x), expected)
    fresh = MODELS["zuko_nsf+lu"](*simulate(300, 0))
    fresh.load_state_dict(estimator.state_dict())
    assert torch.equal(fresh.log_prob(theta.unsqueeze(0), x), expected)


def test_learns():
    # held-out NLL of the same estimator before and after a few epochs
    theta, x = simulate(300, seed=0)
    test_theta, test_x = simulate(200, seed=9)
    torch.manual_seed(0)
    npe = NPE(prior(), density_estimator=posterior_nn("lunsf", **SMALL), show_progress_bars=False)
    npe.append_simulations(theta, x)
    torch.manual_seed(3)
    before = npe._build_neural_net(theta, x)  # what train() builds, untrained
    with torch.no_grad():
        nll_before = -before.log_prob(test_theta.unsqueeze(0), test_x).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        estimator = npe.train(**{**TRAIN, "max_num_epochs": 5})
    with torch.no_grad():
        nll_after = -estimator.log_prob(test_theta.unsqueeze(0), test_x).mean()
    assert torch.isfinite(nll_before) and nll_after < nll_before - 0.5


def test_nle():
    torch.manual_seed(0)
    nle = NLE(prior(), density_estimator=likelihood_nn("lumaf", **SMALL), show_progress_bars=False)
    estimator = train(nle)
    assert estimator.input_shape == (2,) and estimator.condition_shape == (2,)
    assert any(isinstance(t, LULinear) for t in estimator.net.transform.transforms)

    theta, x = simulate(10, seed=4)
    log_prob = estimator.log_prob(x.unsqueeze(0), theta)
    assert log_prob.shape == (1, 10) and torch.isfinite(log_prob).all()

    torch.manual_seed(5)
    posterior = nle.build_posterior(sample_with="rejection")
    samples = posterior.sample((50,), x=torch.tensor([0.2, 0.1]), show_progress_bars=False)
    assert samples.shape == (50, 2) and inside(samples)


def test_structure_keeps_sbi_pieces():
    theta, x = simulate(100, seed=0)

    # lu=False is sbi's own estimator: the same modules as sbi's builder
    torch.manual_seed(0)
    ours = build_estimator("zuko_nsf", theta, x, lu=False, num_bins=6, **SMALL)
    torch.manual_seed(0)
    sbi = build_zuko_nsf(theta, x, num_bins=6, **SMALL)
    assert types(ours) == types(sbi)
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), sbi.parameters(), strict=True))

    # with LU blocks: sbi's z-scoring first, then a block between each pair
    lu = build_estimator("zuko_nsf", theta, x, num_transforms=3, hidden_features=8)
    assert types(lu) == [
        "UnconditionalTransform",
        "MaskedAutoregressiveTransform",
        "LULinear",
        "MaskedAutoregressiveTransform",
        "LULinear",
        "MaskedAutoregressiveTransform",
    ]
    # lu={"first": True}: also a block between the z-scoring and the first transformation
    # (so one transformation is enough), its whole matrix chosen by x with "full"
    first = build_estimator(
        "zuko_nsf", theta, x, num_transforms=1, lu={"first": True, "conditioning": "full"}
    )
    assert types(first) == [
        "UnconditionalTransform",
        "LULinear",
        "MaskedAutoregressiveTransform",
    ]
    assert first.net.transform.transforms[1].conditioning == "full"
    assert first.log_prob(theta[None, :5], x[:5]).isfinite().all()

    z_score = lu.net.transform.transforms[0]()
    assert isinstance(z_score, ComposedTransform) or hasattr(z_score, "loc")
    assert torch.allclose(z_score(theta).mean(0), torch.zeros(2), atol=1e-5)

    # no z-scoring: no first transformation
    bare = build_estimator("lumaf", theta, x, z_score_x="none", **SMALL)
    maf = "MaskedAutoregressiveTransform"
    assert types(bare) == [maf, "LULinear", maf]

    # sbi's map onto an unconstrained space (for a box prior) is first, likewise
    unconstrained = build_estimator(
        "lunsf", theta, x, z_score_x="transform_to_unconstrained", x_dist=prior(), **SMALL
    )
    assert types(unconstrained)[1:] == [maf, "LULinear", maf]
    assert (
        unconstrained.net.transform.transforms[0]().inv(torch.tensor([[9.0, -9.0]])).abs().max()
        < 1
    )

    # the embedding net is kept, after sbi's z-scoring of x; LU blocks take its output
    embedding = nn.Linear(2, 5)
    build = posterior_nn("lunsf", embedding_net=embedding, **SMALL)
    estimator = build(theta, x)
    assert isinstance(estimator.embedding_net, nn.Sequential)
    assert estimator.embedding_net[-1] is embedding
    blocks = [t for t in estimator.net.transform.transforms if isinstance(t, LULinear)]
    assert [b.context for b in blocks] == [5]
    assert estimator.sample((4,), x[:3]).shape == (4, 3, 2)

    # context-free LU blocks, LUNSF's bound, and sbi's meaning of hidden_features
    free = posterior_nn("lunsf", lu_context=False, bound=8.0, **SMALL)(theta, x)
    assert [b.context for b in free.net.transform.transforms if isinstance(b, LULinear)] == [0]
    assert free.net.transform.transforms[1].univariate.keywords["bound"] == 8.0
    hyper = estimator.net.transform.transforms[1].hyper
    assert sum(isinstance(m, nn.Linear) for m in hyper) == 3  # 2 hidden layers of 16


def test_builder_pickles_and_names():
    build = posterior_nn("lumaf", lu={"init": "orthogonal"}, randperm=True, **SMALL)
    again = pickle.loads(pickle.dumps(build))
    assert isinstance(again, EstimatorBuilder) and again.options == build.options
    assert repr(build).startswith("EstimatorBuilder('lumaf', role='posterior'")


@pytest.mark.parametrize(
    "model, kwargs, message",
    [
        ("lunsf", {"hiden_features": 3}, "hiden_features: unknown keyword argument"),
        ("zuko_nsf", {"foo": 1}, "foo: unknown keyword argument"),
        ("lumaf", {"lu": {"inti": "orthogonal"}}, "lu: unknown keyword argument 'inti'"),
        ("lunsf", {"tail_bound": 3.0}, "tail_bound: an option of sbi's nflows"),
        ("zuko_maf", {"num_components": 3}, "num_components: an option of sbi's mixture"),
        ("lunsf", {"lu": False}, "lu: 'lunsf' has LU blocks by definition"),
        ("lunsf", {"lu": "yes"}, "lu: expected a bool or a mapping"),
        ("lunsf", {"lu_context": 1}, "lu_context: expected a bool"),
        ("nsf", {}, "model: expected one of lumaf, lunsf, lurealnvp, zuko_bpf"),
        ("zuko_maf", {"num_transforms": 1}, "lu: 'zuko_maf' with num_transforms=1 has 1"),
        ("zuko_nsf", {"lu": {"first": 1}}, "first: expected a bool"),
        ("lumaf", {"lu_context": False, "lu": {"hidden_features": (8,)}}, None),
    ],
)
def test_errors(model: str, kwargs: dict, message: str | None):
    if message is None:  # hyper-network options for context-free blocks
        with pytest.raises(TypeError, match="hyper-network options without a context"):
            posterior_nn(model, **kwargs)
        return
    with pytest.raises(ValueError, match=message):
        build = posterior_nn(model, **kwargs)
        build(*simulate(50, seed=0))


def test_flow_class_as_density_estimator_says_what_to_do():
    npe = NPE(prior(), density_estimator=LUNSF, show_progress_bars=False)
    with pytest.raises(TypeError, match=r"zuko_lu\.sbi\.posterior_nn\('lunsf'\)"):
        train(npe, n=100)
