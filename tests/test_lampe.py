r"""Tests of zuko-lu's flows as lampe's ``build=``, against the real lampe package."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from lampe.inference import NPE, NPELoss

import zuko_lu

from zuko_lu import LUMAF, LUNSF, LUNet, LURealNVP, builder

SPEC = ["maf", "lu", ("nsf", {"bins": 4}), "lu", "maf"]

# name -> (build, keyword arguments that lampe's NPE passes on)
BUILDS = {
    "LUNet": (LUNet, {"transforms": 2}),
    "LUMAF": (LUMAF, {"transforms": 2, "hidden_features": (16, 16)}),
    "LUNSF": (LUNSF, {"transforms": 2, "hidden_features": (16, 16), "bins": 4}),
    "LURealNVP": (LURealNVP, {"transforms": 2, "hidden_features": (16, 16)}),
    "builder": (builder(SPEC, maf={"hidden_features": (16, 16)}), {}),
    "builder+options": (builder(SPEC), {"nsf": {"hidden_features": (8,)}}),
}


def simulate(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    theta = torch.rand(n, 2, generator=generator) * 2 - 1
    x = torch.cat([theta, theta.prod(-1, keepdim=True)], -1)
    return theta, x + 0.1 * torch.randn(n, 3, generator=generator)


@pytest.mark.parametrize("name", list(BUILDS))
def test_npe_trains_samples_and_saves(name: str):
    build, kwargs = BUILDS[name]
    torch.manual_seed(0)
    estimator = NPE(2, 3, build=build, **kwargs)
    loss = NPELoss(estimator)
    theta, x = simulate(512, seed=0)
    test_theta, test_x = simulate(256, seed=1)

    with torch.no_grad():
        before = loss(test_theta, test_x)
    optimizer = torch.optim.Adam(estimator.parameters(), lr=3e-3)
    for _ in range(4):
        for idx in torch.randperm(512).split(64):
            optimizer.zero_grad()
            loss(theta[idx], x[idx]).backward()
            optimizer.step()
    with torch.no_grad():
        after = loss(test_theta, test_x)
    assert torch.isfinite(before) and after < before - 0.3

    estimator.eval()
    with torch.no_grad():
        samples = estimator.flow(test_x[:3]).sample((5,))
        assert samples.shape == (5, 3, 2)
        log_p = estimator(test_theta, test_x)
        assert log_p.shape == (256,) and torch.isfinite(log_p).all()

        buffer = io.BytesIO()
        torch.save(estimator, buffer)
        buffer.seek(0)
        for loaded in (
            torch.load(buffer, weights_only=False),
            pickle.loads(pickle.dumps(estimator)),
        ):
            assert torch.equal(loaded(test_theta, test_x), log_p)


def test_builder():
    build = builder(SPEC, maf={"hidden_features": (8,)})
    flow = build(2, 3, maf={"activation": torch.nn.Tanh})
    mafs = [
        t for t in flow.transform.transforms if type(t).__name__ == "MaskedAutoregressiveTransform"
    ]
    assert len(mafs) == 3 and any(isinstance(m, torch.nn.Tanh) for m in mafs[0].hyper)
    assert sum(isinstance(m, torch.nn.Linear) for m in mafs[0].hyper) == 2  # (8,) kept
    assert pickle.loads(pickle.dumps(build)).spec == build.spec
    assert zuko_lu.builder is builder
    assert build(2).base().event_shape == (2,)  # context defaults to 0
    with pytest.raises(ValueError, match="options given for names not in spec: nsff"):
        builder(SPEC, nsff={})
    with pytest.raises(ValueError, match="spec: expected a non-empty sequence"):
        builder("maf")
