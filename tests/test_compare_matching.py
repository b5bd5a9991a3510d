r"""Tests for what ``compare.md`` says about matched parameter counts (defect 9)."""

from __future__ import annotations

import torch

from zuko_lu.experiments.compare import markdown, sizes
from zuko_lu.experiments.models import build, count_parameters

CONFIG = {"lr": 1e-3, "decay": 3, "batch_size": 64, "clip": 10.0, "epochs": 1}
META = {
    "data": {"name": "moons"},
    "metric": "NLL",
    "unit": "nats",
    "config": {**CONFIG, "patience": 10, "seed": 0, "time_limit": None},
    "machine": "cpu",
    "device": "cpu",
    "versions": {"torch": "2", "zuko": "1"},
    "date": "today",
    "command": "zuko-lu compare",
}


def rows_for(models: list[str], features: int, match: bool) -> list[dict]:
    rows = []
    for name, kwargs in sizes(models, features, match=match).items():
        kwargs = {k: v for k, v in kwargs.items() if k != "bound"}
        with torch.random.fork_rng():
            n = count_parameters(build(name, features, **kwargs))
        row = {"model": name, "kwargs": kwargs, "parameters": n, "test": 1.0, "test_std": 0.0}
        rows.append({**row, "epoch_s": 1.0, "sample_ms": 1.0, "density_ms": 1.0})
        rows[-1].update({"epochs": 1, "best_epoch": 1})
    return rows


def test_unmatchable_counts_are_said():
    # moons: LU-Net has 24 parameters, RealNVP's smallest width already gives 1,352
    rows = rows_for(["lunet", "realnvp"], 2, match=True)
    text = markdown(rows, {**META, "match": True})
    assert "Parameters matched to LU-Net's: yes" not in text
    lunet, realnvp = (r["parameters"] for r in rows)
    assert lunet == 24 and realnvp == 1352
    assert (
        "Parameter counts against LU-Net's 24: realnvp 1,352 (56.3x, not matched: its "
        "smallest width 16 gives 1,352 > 24)."
    ) in text


def test_matched_counts_are_said():
    rows = rows_for(["lunet", "maf"], 64, match=True)
    (h,) = set(rows[1]["kwargs"]["hidden_features"])
    ratio = rows[1]["parameters"] / rows[0]["parameters"]
    assert 0.8 < ratio < 1.25
    text = markdown(rows, {**META, "match": True})
    assert f"maf {rows[1]['parameters']:,} ({ratio:.3g}x, matched by hidden width {h})" in text

    text = markdown(rows_for(["lunet", "maf"], 64, match=False), {**META, "match": False})
    assert "Parameter counts not matched (--no-match)" in text
