r"""Tests for the zuko_lu.experiments.plots module: what the pictures contain."""

from __future__ import annotations

import json
import math

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("matplotlib")

from zuko_lu.experiments import plots  # noqa: E402
from zuko_lu.experiments.cli import main  # noqa: E402
from zuko_lu.experiments.data import Data  # noqa: E402
from zuko_lu.experiments.preprocess import TabularPreprocess  # noqa: E402
from zuko_lu.flows import LUNet  # noqa: E402


def normal(seed: int, n: int, d: int, scale: float = 1.0) -> torch.Tensor:
    return scale * torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def standard_log_prob(x: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Normal(0.0, 1.0).log_prob(x).sum(-1)


def suptitle(fig) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def inside(values: torch.Tensor, limits: tuple[float, float]) -> torch.Tensor:
    return (values >= limits[0]) & (values <= limits[1])


def test_samples_share_axes_with_the_data():
    # a poor model: samples 10 times wider than the data, 0.4% of them far away
    data, samples = normal(0, 500, 3), normal(1, 1000, 3, scale=10.0)
    samples[:4] = 1e6
    fig = plots.scatter_figure([("test data", data), ("samples", samples)], caption="m on d")
    assert suptitle(fig) == "m on d"

    pairs = [ax for ax in fig.axes if ax.collections]  # the scatter panels, below the diagonal
    assert len(pairs) == 3 and len(fig.axes) == 6
    for ax in pairs:
        spec = ax.get_subplotspec()
        i, j = spec.rowspan.start, spec.colspan.start  # column j against column i
        assert np.allclose(ax.collections[0].get_offsets(), data[:, [j, i]].numpy())
        x, y = ax.get_xlim(), ax.get_ylim()
        assert inside(data[:, j], x).all() and inside(data[:, i], y).all()
        both = inside(samples[:, j], x) & inside(samples[:, i], y)
        assert both[4:].float().mean() > 0.97 and not both[:4].any()

    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels[0] == "test data (500)"
    assert labels[1].startswith("samples (1,000, ") and "% outside the axes" in labels[1]
    assert {ax.get_xlabel() for ax in fig.axes} >= {"column 0", "column 1", "column 2"}
    assert {ax.get_ylabel() for ax in fig.axes} >= {"density", "column 1", "column 2"}


def test_samples_many_columns_show_the_first_four():
    fig = plots.scatter_figure([("data", normal(0, 100, 7))], caption="c")
    assert len(fig.axes) == 10 and suptitle(fig) == "c (columns 0-3 of 7)"


def test_density_2d_has_labels_and_colour_bar():
    data, samples = normal(0, 300, 2), normal(1, 200, 2, scale=3.0)
    fig = plots.density_figure(standard_log_prob, data, samples, caption="lunet on moons, epoch 3")
    assert suptitle(fig) == "lunet on moons, epoch 3"
    main_axes = [ax for ax in fig.axes if ax.images]
    assert len(main_axes) == 1
    (ax,) = main_axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("column 0", "column 1")
    bar = ax.images[0].colorbar
    assert bar is not None and bar.ax.get_ylabel() == "density"
    assert inside(data[:, 0], ax.get_xlim()).all() and inside(data[:, 1], ax.get_ylim()).all()

    outside = ~(inside(samples[:, 0], ax.get_xlim()) & inside(samples[:, 1], ax.get_ylim()))
    assert outside.any()
    assert f"{100 * outside.float().mean().item():.3g}% outside the axes" in ax.get_title()


@pytest.mark.parametrize("D", [1, 2])
def test_density_spread_panel_holds_wild_samples(D):
    data, samples = normal(0, 300, D), normal(1, 500, D, scale=20.0)
    fig = plots.density_figure(standard_log_prob, data, samples, spread=True)
    (ax,) = [a for a in fig.axes if a.get_title() == "data and samples on shared axes"]
    assert inside(samples[:, 0], ax.get_xlim()).float().mean() > 0.99
    assert inside(data[:, 0], ax.get_xlim()).all()
    if D == 2:
        assert inside(samples[:, 1], ax.get_ylim()).float().mean() > 0.99
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("column 0", "column 1")
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "test data (300)" and labels[1].startswith("samples (500")


def test_density_1d_curve_over_histograms():
    data, samples = normal(0, 300, 1).double(), normal(1, 400, 1).double()
    fig = plots.density_figure(standard_log_prob, data, samples, caption="c")
    (ax,) = fig.axes
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("column 0", "density")
    (curve,) = ax.lines
    x, y = curve.get_data()
    assert np.allclose(y, np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi))
    assert len(ax.patches) >= 2  # the data's bars and the samples' outline
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["test data", "samples", "model density"]


def test_loss_curve_integer_epochs_and_first_point():
    history = {
        "train": [523.0, 3.1, 2.6, 2.4, 2.35, 2.3],
        "val": [40.0, 2.9, 2.5, 2.45, 2.4, 2.41],
        "time": [1.0] * 6,
        "epoch_seconds": [1.0] * 6,  # unknown keys are ignored
    }
    fig = plots.loss_figure(history, "nats", caption="c")
    ax = fig.axes[0]
    assert suptitle(fig) == "c" and (ax.get_xlabel(), ax.get_ylabel()) == ("epoch", "nats")
    ticks = ax.get_xticks()
    assert len(ticks) and np.allclose(ticks, np.round(ticks))
    assert inside(torch.tensor(history["val"][1:]), ax.get_ylim()).all()

    # the first epoch, off the main axes' scale, is in an inset that shows every epoch
    (inset,) = ax.child_axes
    assert inside(torch.tensor(history["train"] + history["val"]), inset.get_ylim()).all()
    assert np.allclose(inset.get_xticks(), np.round(inset.get_xticks()))

    calm = {"train": [3.0, 2.8, 2.7], "val": [2.9, 2.75, 2.72]}
    ax = plots.loss_figure(calm, "bits/dim").axes[0]
    assert not ax.child_axes and suptitle(ax.figure) == ""
    assert inside(torch.tensor(calm["train"] + calm["val"]), ax.get_ylim()).all()
    assert np.allclose(ax.get_xticks(), np.round(ax.get_xticks()))

    ax = plots.loss_figure({"train": [3.0], "val": [2.9]}, "nats").axes[0]  # one epoch
    ticks = [t for t in ax.get_xticks() if inside(torch.tensor(t), ax.get_xlim())]
    assert ticks == [1.0] and inside(torch.tensor([3.0, 2.9]), ax.get_ylim()).all()


def test_every_picture_takes_a_caption(tmp_path: Path):
    images = torch.randint(0, 17, (4, 8, 8)).float()
    paths = [
        plots.image_grid(images, 17, tmp_path / "a.png", "t", caption="c1"),
        plots.image_panels([("a", images), ("b", images)], 17, tmp_path / "b.png", caption="c2"),
        plots.loss_curve({"train": [1.0], "val": [1.0]}, "nats", tmp_path / "c.png", caption="c3"),
        plots.scatter([("x", normal(0, 50, 2))], tmp_path / "d.png", caption="c4"),
        plots.density(
            standard_log_prob, normal(0, 50, 2), normal(1, 50, 2), tmp_path / "e.png", caption="c5"
        ),
    ]
    assert all(Path(p).stat().st_size > 0 for p in paths)
    fig = plots.images_figure([("a", images)], 17, caption="c6")
    assert suptitle(fig) == "c6" and fig.axes[0].get_title() == "a"


def test_run_pictures_one_column(tmp_path: Path):
    x = torch.cat([normal(0, 200, 1) - 2, normal(1, 200, 1) + 2]).double()
    data = Data(x[:300], x[300:350], x[350:], kind="tabular", name="bumps")
    torch.manual_seed(0)
    flow, pre = LUNet(1), TabularPreprocess().fit(data.train)
    history = {"train": [2.0, 1.9], "val": [2.1, 2.0]}
    files = plots.run_pictures(flow, pre, data, history, "nats", tmp_path, caption="lunet")
    assert files == ["loss.png", "density.png"]
    assert all((tmp_path / f).stat().st_size > 0 for f in files)


def test_train_single_column_keeps_metrics_and_pictures(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    path = tmp_path / "one.csv"
    np.savetxt(path, rng.normal(size=(120, 1)), header="x", comments="")
    out = tmp_path / "run"
    args = ["train", "--data", "csv", "--path", path, "--epochs", 1, "--batch-size", 32]
    code = main([str(a) for a in [*args, "--no-progress", "--out", out]])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"loss.png", "density.png"} <= set(metrics["pictures"])
    assert all((out / f).is_file() for f in metrics["pictures"])
