r"""Tests of the Pyro face's variational-guide options: `init_scale`, :func:`lu_guide`
and the LU + autoregressive hybrid :func:`lu_autoregressive`."""

from __future__ import annotations

import argparse
import importlib.util
import math

from pathlib import Path

import pyro
import pytest
import torch

from pyro.distributions.transforms import AffineAutoregressive
from pyro.infer.autoguide import AutoNormal, AutoNormalizingFlow

from zuko_lu.parameters import LUParameters
from zuko_lu.pyro import LULinear, lu_autoregressive, lu_guide, lu_net

# the benchmark's eight schools (non-centred, as in Pyro's examples/eight_schools); the
# benchmarks folder is scripts, not a package: load the module from its file
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "pyro_guides.py"
_SPEC = importlib.util.spec_from_file_location("pyro_guides", _PATH)
pyro_guides = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(pyro_guides)
eight_schools = pyro_guides.eight_schools


def elbo(make, steps: int) -> float:
    r"""Trains a guide on eight schools as the benchmark does (seed 0, lr 1e-2 decaying to
    1e-3, 8 particles) and returns its ELBO estimate over 2000 draws."""

    args = argparse.Namespace(steps=steps, particles=8, draws=2000)
    return pyro_guides.run(pyro_guides.EIGHT, make, 0, args)["elbo"]


@pytest.mark.parametrize("init", ["identity", "orthogonal"])
def test_init_scale(device: torch.device, init: str) -> None:
    t = LULinear(4, init=init, init_scale=0.1).to(device)
    x = torch.randn(3, 4, device=device)
    W = t.params().weight
    assert torch.allclose(W @ W.T, 0.01 * torch.eye(4, device=device), atol=1e-6)
    ladj = t.log_abs_det_jacobian(x, t(x))
    assert torch.allclose(ladj, torch.full_like(ladj, 4 * math.log(0.1)), atol=1e-5)


def test_lu_net_scales_the_last_block_only(device: torch.device) -> None:
    t = lu_net(3, transforms=2, init_scale=0.1).to(device)
    blocks = [p for p in t.parts if isinstance(p, LULinear)]
    eye = torch.eye(3, device=device)
    for block in blocks[:-1]:
        assert torch.allclose(block.params().weight, eye)
    assert torch.allclose(blocks[-1].params().weight, 0.1 * eye)


def test_lu_guide_starts_no_wider_than_autonormal() -> None:
    pyro.clear_param_store()
    widths = {}
    for name, guide in [("old", AutoNormalizingFlow(eight_schools, lu_net)),
                        ("new", lu_guide(eight_schools))]:  # fmt: skip
        pyro.set_rng_seed(0)
        guide()  # builds the flow
        with torch.no_grad():
            z = guide.get_posterior().sample((4000,))  # unconstrained latents
        widths[name] = z.std(0).mean().item()
    # AutoNormal starts with scale 0.1; lu_guide a little narrower (the activations
    # contract N(0, 1) to a width of about 0.34), lu_net's defaults ten times wider
    assert 0.02 < widths["new"] < 0.1 < widths["old"]
    assert math.isclose(widths["old"], 10 * widths["new"], rel_tol=1e-4)


def test_lu_guide_matches_autonormal_on_eight_schools() -> None:
    normal = elbo(AutoNormal, steps=600)
    ours = elbo(lu_guide, steps=600)
    assert ours > normal - 0.5, (ours, normal)


def test_lu_autoregressive_layout_and_guide() -> None:
    t = lu_autoregressive(3, transforms=2, init_scale=0.1)
    kinds = [type(p) for p in t.parts]
    assert kinds == [LULinear, AffineAutoregressive] * 2 + [LULinear]
    assert torch.allclose(t.parts[-1].params().weight, 0.1 * torch.eye(3))

    def guide(model):
        return AutoNormalizingFlow(model, lambda D: lu_autoregressive(D, init_scale=0.1))

    assert math.isfinite(elbo(guide, steps=5))


@pytest.mark.parametrize("bad", [0, -1.0, math.inf, math.nan, True, "0.1"])
def test_init_scale_errors_name_the_argument(bad) -> None:
    makers = [
        lambda: LUParameters(2, init_scale=bad),
        lambda: LULinear(2, init_scale=bad),
        lambda: lu_net(2, init_scale=bad),
        lambda: lu_autoregressive(2, init_scale=bad),
        lambda: lu_guide(eight_schools, init_scale=bad),
    ]
    for make in makers:
        with pytest.raises(ValueError, match="init_scale"):
            make()


def test_transforms_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match="transforms"):
        lu_autoregressive(2, transforms=0)
    with pytest.raises(ValueError, match="transforms"):
        lu_guide(eight_schools, transforms=0)


def test_init_scale_in_the_zuko_face(device: torch.device) -> None:
    from zuko_lu import LULinear as ZukoLULinear
    from zuko_lu.convert import to_zuko

    t = ZukoLULinear(3, init_scale=0.1).to(device)
    assert torch.allclose(t().weight, 0.1 * torch.eye(3, device=device))
    with pytest.raises(ValueError, match="init_scale"):
        ZukoLULinear(3, init_scale=0.0)
    # the Pyro face's scaled guide flow converts with its weights
    flow = to_zuko(lu_net(3, transforms=1, init_scale=0.1)).to(device)
    x = torch.randn(4, 3, device=device)
    assert torch.isfinite(flow().log_prob(x)).all()
