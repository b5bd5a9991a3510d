r"""Tests of the ``zuko-lu`` command line with image flows on the 8x8 digits: model
options, per-model training defaults, sample grids at two temperatures and compare rows
of one model with two option sets, and class-conditional models."""

from __future__ import annotations

import json
import os

from pathlib import Path

import numpy as np
import pytest

from test_cli import run

from zuko_lu.experiments.cli import main
from zuko_lu.experiments.config import MODEL_CONFIG

TINY = ["--option", "levels=1", "--option", "steps=1", "--option", "hidden_channels=8"]
FAST = ["--data", "digits", "--epochs", "1", "--batch-size", "256", "--draws", "1"]


@pytest.fixture(scope="module")
def glow_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("glow") / "run"
    args = ["train", *FAST, "--model", "glow", *TINY, "--option", "mixing=reverse"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    return out


def test_glow_train(glow_run: Path, capsys: pytest.CaptureFixture) -> None:
    files = {"checkpoint.pt", "metrics.json", "loss.png", "samples.png", "samples-T0.7.png"}
    assert files <= set(os.listdir(glow_run))

    metrics = json.loads((glow_run / "metrics.json").read_text())
    kwargs = metrics["model"]["kwargs"]
    assert kwargs["levels"] == 1 and kwargs["hidden_channels"] == 8
    assert kwargs["mixing"] == "reverse"
    assert metrics["config"]["time_limit"] == MODEL_CONFIG["glow"]["time_limit"]

    code, out, _ = run(capsys, "evaluate", glow_run, "--draws", 1)
    assert code == 0 and f"bits/dim {metrics['test']['mean']:.3f}" in out


def test_given_option_beats_model_default(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", *FAST, "--model", "glow", *TINY, "--time-limit", 50, "--no-pictures"]
    code, _, _ = run(capsys, *args, "--out", tmp_path / "run", "--no-progress")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert code == 0 and metrics["config"]["time_limit"] == 50


@pytest.mark.parametrize(
    "args, named",
    [
        (["--option", "levels"], "KEY=VALUE"),
        (["--option", "bogus=1"], "bogus"),
        (["--option", "mixing=shuffle"], "mixing"),
        (["--option", "transforms=2", "--transforms", "2"], "--transforms"),
    ],
)
def test_bad_option(
    capsys: pytest.CaptureFixture, tmp_path: Path, args: list[str], named: str
) -> None:
    model = ["--model", "glow"] if "--transforms" not in args else []
    code, _, err = run(capsys, "train", *FAST, *model, *args, "--out", tmp_path / "r")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and named in lines[0], err
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_resume_refuses_option(
    capsys: pytest.CaptureFixture, glow_run: Path, tmp_path: Path
) -> None:
    code, _, err = run(capsys, "train", "--resume", glow_run, "--option", "steps=2")
    assert code == 2 and "--option" in err


def test_compare_option_sets(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    tiny = "glow:levels=1,steps=1,hidden_channels=8"
    models = [tiny, f"{tiny},mixing=permute"]
    args = ["compare", *FAST, "--models", *models, "--out", tmp_path, "--no-progress"]
    code, _, err = run(capsys, *args)
    assert code == 0, err

    rows = json.loads((tmp_path / "compare.json").read_text())["rows"]
    assert [r["model"] for r in rows] == models
    assert "mixing" not in rows[0]["kwargs"]  # the builder's default, "lu"
    assert rows[1]["kwargs"]["mixing"] == "permute"
    assert rows[0]["parameters"] > rows[1]["parameters"]  # the LU 1x1 convolutions' weights
    for folder in (
        "glow-levels-1-steps-1-hidden_channels-8",
        "glow-levels-1-steps-1-hidden_channels-8-mixing-permute",
    ):
        assert (tmp_path / folder / "checkpoint.pt").is_file()
    text = (tmp_path / "compare.md").read_text()
    assert f"| {models[1]} |" in text and "No hidden widths to match" in text


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r"""A class-conditional MAF on the digits, trained enough to draw its classes."""

    out = tmp_path_factory.mktemp("conditional") / "run"
    args = [*FAST, "--epochs", "20", "--batch-size", "64", "--model", "maf", "--conditional"]
    assert main(["train", *args, "--out", str(out), "--no-progress"]) == 0
    return out


def test_conditional_draws_its_classes(conditional_run: Path, capsys) -> None:
    metrics = json.loads((conditional_run / "metrics.json").read_text())
    assert metrics["model"]["classes"] == 10 and metrics["model"]["kwargs"]["context"] == 10
    assert metrics["test"]["given"] == "the class label"
    shares = metrics["samples_of_their_class"]
    assert shares["test data"] > 0.9 and shares["T0.7"] > 0.8 and shares["T1"] > 0.6, shares
    assert {"samples.png", "samples-T0.7.png"} <= set(os.listdir(conditional_run))

    code, out, _ = run(capsys, "evaluate", conditional_run, "--draws", 1)
    assert code == 0 and "given the class label" in out

    prefix = conditional_run / "three"
    code, out, _ = run(capsys, "sample", conditional_run, "--class", 3, "-n", 5, "--out", prefix)
    assert code == 0 and (prefix.parent / "three.npy").is_file()


@pytest.mark.parametrize(
    "args, named",
    [
        (["sample", "{run}"], "--class K"),
        (["sample", "{run}", "--class", "10"], "0..9"),
        (["train", "--resume", "{run}", "--conditional", "--epochs", "30"], "--conditional"),
        (["train", "--data", "digits", "--class", "3", "--conditional"], "--class"),
        (["train", "--data", "npy", "--path", "{table}", "--conditional"], "labels"),
    ],
)
def test_conditional_bad_input(
    capsys: pytest.CaptureFixture,
    conditional_run: Path,
    tmp_path: Path,
    args: list[str],
    named: str,
) -> None:
    table = tmp_path / "table.npy"
    np.save(table, np.random.default_rng(0).normal(size=(50, 2)))
    args = [a.format(run=conditional_run, table=table) for a in args]
    code, _, err = run(capsys, *args, *(["--out", tmp_path / "r"] if "train" in args else []))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and named in lines[0], err


def test_unconditional_refuses_class(capsys: pytest.CaptureFixture, glow_run: Path) -> None:
    code, _, err = run(capsys, "sample", glow_run, "--class", 1)
    assert code == 2 and "not class-conditional" in err


def test_conditional_glow_pictures(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["train", *FAST, "--model", "glow", *TINY, "--conditional", "--no-progress"]
    code, _, err = run(capsys, *args, "--out", tmp_path)
    assert code == 0, err
    assert {"samples.png", "samples-T0.7.png"} <= set(os.listdir(tmp_path))
