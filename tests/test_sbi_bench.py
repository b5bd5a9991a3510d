r"""A smoke test of the SBI benchmark (benchmarks/sbi_bench.py, sbi_lampe.py,
sbi_report.py): one tiny run of an sbi model and of a lampe model, their raw rows, and
the report. Seeded; seconds, not a measurement."""

from __future__ import annotations

import argparse
import importlib
import math

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))
    return importlib.import_module("benchmarks.sbi_bench")


def test_runs_rows_and_report(bench, tmp_path):
    args = argparse.Namespace(
        max_epochs=1, test=200, observations=2, samples=100, coverage_pairs=20
    )
    raw = tmp_path / "sbi.jsonl"
    cache: dict = {}
    for model in ("zuko_maf", "zuko_maf+lu", "lampe_maf", "lampe_lumaf"):
        row = bench.run("gaussian_mixture", 300, model, 0, args, cache)
        assert math.isfinite(row["nll"]) and 0.0 <= row["c2st"] <= 1.0
        assert 0.0 <= row["cov68"] <= row["cov95"] <= 1.0
        bench.save(raw, row)
    bench.save(raw, row)  # a rerun replaces its row
    rows = bench.load(raw)
    assert len(rows) == 4

    floors = {("gaussian_mixture", 200): bench.floor("gaussian_mixture", 200)}
    report = bench.render(rows, floors)
    assert report.count("| gaussian_mixture | 300 |") == 4 + 1  # the rows and the summary
    assert "zuko_maf+lu - zuko_maf: NLL" in report and "lampe_lumaf - lampe_maf" in report
    assert "Not run (of the default grid): two_moons at 5,000" in report


def test_lampe_estimator_density_is_standardised_correctly(bench):
    # the log-density of theta includes the standardisation's log-determinant
    from benchmarks.sbi_lampe import LampeEstimator

    torch.manual_seed(0)
    theta, x = 5 * torch.randn(500, 2) + 3, torch.randn(500, 1)
    estimator = LampeEstimator("lampe_maf", theta, x)
    grid = torch.linspace(-40, 46, 400)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = estimator.log_prob(points[None], torch.zeros(len(points), 1)).exp()
    area = (grid[1] - grid[0]) ** 2
    assert abs((density.sum() * area).item() - 1) < 0.02


def test_lampe_posterior_draws_stay_in_the_prior(bench):
    # with torch's argument validation on, as a user who has not imported zuko has it
    from benchmarks.sbi_lampe import LampeEstimator
    from benchmarks.sbi_tasks import TASKS

    task = TASKS["two_moons"]
    g = torch.Generator().manual_seed(0)
    theta = task.sample_prior(200, g)
    estimator = LampeEstimator("lampe_maf", 3 * theta, task.simulate(theta, g))  # too wide
    before = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)
    try:
        with torch.no_grad():
            draws = estimator.posterior_sample(300, torch.zeros(2), task.prior)
    finally:
        torch.distributions.Distribution.set_default_validate_args(before)
    assert draws.shape == (300, 2) and task.prior.support.check(draws).all()


def test_diagnosis_splits_the_excess_over_the_floor(bench):
    # the true posterior loses nothing; log q = log p - log 4 loses log 4 on every pair,
    # split between the pairs the square cuts and the rest by their share
    diagnose = importlib.import_module("benchmarks.sbi_diagnose")
    task = bench.TASKS["two_moons"]
    theta, x = bench.simulations(task, 500, bench.TEST_SEED)
    log_p = task.log_posterior(theta, x, torch.Generator().manual_seed(bench.TEST_SEED + 1))
    exact = diagnose.lost(task, log_p, theta, x)
    assert exact["above_floor"] == 0.0 and exact["floor"] == round(-log_p.mean().item(), 3)
    assert 0.05 < exact["cut_pairs"] < 0.3 and 0.0 < exact["arcs_exact"] < 0.3
    wide = diagnose.lost(task, log_p - math.log(4), theta, x)
    assert wide["above_floor"] == round(math.log(4), 3)
    parts = wide["above_floor_cut_pairs"] + wide["above_floor_other_pairs"]
    assert abs(parts - math.log(4)) < 2e-3
    assert abs(wide["above_floor_cut_pairs"] - wide["cut_pairs"] * math.log(4)) < 2e-3
