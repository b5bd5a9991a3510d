r"""Tests of the SBI benchmark's task definitions (benchmarks/sbi_tasks.py): shapes, prior
support, the reference posteriors where they can be checked, and C2ST at its two ends.
Seeded and small; no training.
"""

from __future__ import annotations

import importlib.util
import math

from pathlib import Path

import pytest
import torch

# benchmarks/ is a folder of scripts, not a package: load the module from its file
_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "sbi_tasks.py"
_SPEC = importlib.util.spec_from_file_location("sbi_tasks", _PATH)
sbi_tasks = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(sbi_tasks)
TASKS, GaussianLinear, TwoMoons = sbi_tasks.TASKS, sbi_tasks.GaussianLinear, sbi_tasks.TwoMoons
c2st, coverage_levels = sbi_tasks.c2st, sbi_tasks.coverage_levels


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name", list(TASKS))
def test_shapes_and_support(name: str):
    task = TASKS[name]
    g = gen()
    theta = task.sample_prior(50, g)
    x = task.simulate(theta, g)
    assert theta.shape == (50, task.dim_theta) and x.shape == (50, task.dim_x)
    assert torch.isfinite(x).all()
    assert torch.isfinite(task.prior.log_prob(theta)).all()
    ref = task.reference(x[0], 200, g)
    assert ref.shape == (200, task.dim_theta)
    assert torch.isfinite(task.prior.log_prob(ref)).all()  # inside the prior's support
    # deterministic under a seed
    assert torch.equal(task.reference(x[0], 5, gen(1)), task.reference(x[0], 5, gen(1)))


def test_gaussian_linear_reference_is_analytic():
    task = GaussianLinear()
    x_o = task.simulate(task.sample_prior(1, gen()), gen(1))[0]
    mean, cov = task.posterior(x_o)
    # conjugate update: precisions 1/0.1 + 1/0.1, mean cov @ x / 0.1
    assert torch.allclose(cov, 0.05 * torch.eye(10))
    assert torch.allclose(mean, x_o / 2)
    ref = task.reference(x_o, 20_000, gen(2))
    assert torch.allclose(ref.mean(0), mean, atol=0.01)
    assert torch.allclose(torch.cov(ref.T), cov, atol=0.004)


def test_two_moons_reference_reproduces_x():
    task = TwoMoons()
    x_o = task.simulate(torch.tensor([[0.3, -0.4]]), gen())[0]
    ref = task.reference(x_o, 2000, gen(1))
    # x - mean(theta) is the noise p = (r cos a + 0.25, r sin a), r ~ N(0.1, 0.01^2)
    p = x_o - task.mean(ref)
    radius = (p - torch.tensor([0.25, 0.0])).norm(dim=-1)
    assert (p[:, 0] >= 0.25 - 1e-6).all()  # cos a >= 0
    assert (radius - 0.1).abs().max() < 0.06  # within 6 sd of the noise's radius
    assert abs(radius.mean().item() - 0.1) < 0.002
    # both moons (signs of theta_1 + theta_2) are present when both are in the prior
    s = ref.sum(-1)
    assert (s > 0).float().mean() > 0.3 and (s < 0).float().mean() > 0.3


def test_slcp_likelihood_is_the_simulators():
    task = TASKS["slcp"]
    theta = torch.tensor([[0.5, -1.0, 1.2, -0.8, 0.7]])
    x = task.simulate(theta.expand(20_000, 5), gen())
    pts = x.view(-1, 2)
    s1, s2, rho = 1.2**2, 0.8**2, math.tanh(0.7)
    assert torch.allclose(pts.mean(0), torch.tensor([0.5, -1.0]), atol=0.03)
    cov = torch.tensor([[s1**2, rho * s1 * s2], [rho * s1 * s2, s2**2]])
    assert torch.allclose(torch.cov(pts.T), cov, atol=0.05)
    expected = torch.distributions.MultivariateNormal(theta[0, :2], cov).log_prob(x[0].view(4, 2))
    assert torch.allclose(task.log_likelihood(theta, x[0]), expected.sum(), atol=1e-4)


def test_gaussian_mixture_reference():
    task = TASKS["gaussian_mixture"]
    x_o = torch.tensor([1.0, -2.0])
    ref = task.reference(x_o, 20_000, gen())
    assert torch.allclose(ref.mean(0), x_o, atol=0.03)
    assert abs(ref.var(0).mean().item() - 0.5 * (1 + 0.01)) < 0.03
    near = ((ref - x_o).norm(dim=-1) < 0.3).float().mean().item()
    assert 0.5 < near < 0.6  # about half the mass in the narrow component


def test_c2st_ends():
    a = torch.randn(500, 2, generator=gen(1))
    b = torch.randn(500, 2, generator=gen(2))
    assert abs(c2st(a, b) - 0.5) < 0.06
    assert c2st(a, b + 4) > 0.97


def test_coverage_levels():
    # the true point denser than every sample: level 0; sparser than all: level 1
    samples = torch.tensor([[0.0, -1.0, -2.0, -3.0]])
    assert coverage_levels(torch.tensor([1.0]), samples).item() == 0.0
    assert coverage_levels(torch.tensor([-5.0]), samples).item() == 1.0
    assert coverage_levels(torch.tensor([-1.5]), samples).item() == 0.5


def test_two_moons_evidence_is_the_prior_mean_of_the_likelihood():
    # p(x) = E_prior[p(x | theta)], by brute force over 2e6 prior draws
    task = TwoMoons()
    x_o = task.simulate(torch.tensor([[0.3, -0.4], [-0.8, -0.1]]), gen())
    theta = task.sample_prior(2_000_000, gen(1))
    for x in x_o:
        brute = task.log_likelihood(theta, x).exp().mean()
        estimate = task.log_evidence(x[None], gen(2)).exp()[0]
        assert torch.isclose(estimate, brute, rtol=0.05)


def test_two_moons_box_cut_is_the_likelihood_mass_outside_the_prior():
    # 1 - (mass of p(x | theta) on the square) / (its mass on the plane), by brute force
    # over uniform draws on [-2, 2]^2, which holds the whole arcs of these x
    task = TwoMoons()
    x_o = task.simulate(torch.tensor([[0.97, 0.97], [-0.98, 0.1], [0.3, -0.4]]), gen())
    cut = task.box_cut(x_o, gen(2))
    theta = (torch.rand(4_000_000, 2, generator=gen(1)) - 0.5) * 4
    for x, c in zip(x_o, cut, strict=True):
        density = task.log_likelihood(theta, x).exp()
        brute = 1 - (density * (theta.abs() <= 1).all(-1)).sum() / density.sum()
        assert abs(c - brute) < 0.02
    assert cut[0] > 0.1 and cut[1] > 0.5 and cut[2] == 0  # at a corner, an edge, inside


@pytest.mark.parametrize("name", ["two_moons", "gaussian_linear", "gaussian_mixture"])
def test_log_posterior_floor(name: str):
    # the true posterior scores better on its own pairs than a wider or shifted one would
    task = TASKS[name]
    g = gen()
    theta = task.sample_prior(2000, g)
    x = task.simulate(theta, g)
    log_p = task.log_posterior(theta, x, gen(1))
    assert log_p.dtype == torch.float64 and torch.isfinite(log_p).all()
    noisy = task.log_posterior(theta + 0.01 * torch.randn(theta.shape, generator=g), x, gen(1))
    assert log_p.mean() > noisy[noisy.isfinite()].mean()


def test_gaussian_mixture_posterior_normalises():
    # the box's area times the mean density over uniform draws is 1, near an edge too
    task = sbi_tasks.GaussianMixture()
    theta = task.sample_prior(4_000_000, gen())
    for x in (torch.tensor([0.5, -2.0]), torch.tensor([9.5, 0.0])):
        total = 400 * task.log_posterior(theta, x.expand(1, 2), gen()).exp().mean()
        assert abs(total.item() - 1) < 0.05


def test_no_exact_posterior_for_slcp():
    task = TASKS["slcp"]
    with pytest.raises(NotImplementedError):
        task.log_posterior(torch.zeros(1, 5), torch.zeros(1, 8), gen())
