r"""Pictures of runs, drawn with matplotlib's object-oriented API (no pyplot, no GUI
backend: safe in scripts, servers and notebooks alike).

Each picture has a builder that returns the matplotlib ``Figure`` (for tests
and notebooks: :py:`loss_figure`, :py:`density_figure`, :py:`scatter_figure`,
:py:`images_figure`) and a function that saves it and returns the path. Every picture
says what it shows: :py:`caption` (e.g. "lunet on moons, epoch 12") is its title.
Samples are drawn on axes that hold both the data and the samples, so that a model with
wild samples cannot look good; the few samples beyond the axes, if any, are counted in
the picture.
"""

from __future__ import annotations

__all__ = [
    "available",
    "density",
    "density_figure",
    "image_grid",
    "image_panels",
    "images_figure",
    "loss_curve",
    "loss_figure",
    "run_pictures",
    "scatter",
    "scatter_figure",
    "tile",
]

import importlib.util
import math

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

from .config import TEMPERATURES

_PAIRS = 4  # the pair grid shows the first 4 columns at most
_DATA, _SAMPLES = "tab:blue", "tab:orange"


def available() -> bool:
    r"""Returns whether matplotlib is installed."""

    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float, caption: str = ""):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    if caption:
        fig.suptitle(caption, fontsize=10)
    return fig


def _save(fig, path: str | Path) -> str:
    fig.savefig(path)
    return str(path)


def tile(images: Tensor, cols: int | None = None, pad: int = 1) -> Tensor:
    r"""Returns images :math:`(N, H, W)` tiled in :math:`R` rows and :math:`C` columns
    into one :math:`(R (H + p) - p, C (W + p) - p)` array, padded with NaN.

    Example:
        >>> tile(torch.zeros(6, 2, 2), cols=3).shape
        torch.Size([5, 8])
    """

    n, h, w = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = torch.full((rows * (h + pad) - pad, cols * (w + pad) - pad), math.nan)
    for i, image in enumerate(images.float()):
        r, c = divmod(i, cols)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return grid


def _show(ax, images: Tensor, levels: int, title: str, per_row: int | None = None) -> None:
    ax.imshow(
        tile(images, per_row).numpy(),
        cmap="gray",
        vmin=0,
        vmax=levels - 1,
        interpolation="nearest",
    )
    bad = int((~torch.isfinite(images.flatten(1))).any(-1).sum())
    ax.set_title(title + (f" ({bad} non-finite)" if bad else ""), fontsize=9)
    ax.set_axis_off()


def images_figure(
    panels: Sequence[tuple[str, Tensor]],
    levels: int,
    cols: int = 4,
    *,
    caption: str = "",
    per_row: int | None = None,
):
    r"""Returns a figure of image grids side by side, one per (title, images) pair with
    images :math:`(N, H, W)` in :math:`[0, L - 1]`, at most `cols` per row, each grid
    with `per_row` images per row (about square by default)."""

    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    size = 6 if len(panels) == 1 else 3.2
    fig = _figure(size * cols, size * rows + 0.2 * bool(caption), caption)
    for i, (title, images) in enumerate(panels):
        _show(fig.add_subplot(rows, cols, i + 1), images, levels, title, per_row)
    return fig


def image_grid(
    images: Tensor,
    levels: int,
    path: str | Path,
    title: str = "",
    *,
    caption: str = "",
    cols: int | None = None,
) -> str:
    r"""Draws images :math:`(N, H, W)` with values in :math:`[0, L - 1]` as a grid of
    `cols` columns (about square by default).

    Returns:
        The path written.
    """

    figure = images_figure([(title, images)], levels, caption=caption, per_row=cols)
    return _save(figure, path)


def image_panels(
    panels: Sequence[tuple[str, Tensor]],
    levels: int,
    path: str | Path,
    cols: int = 4,
    *,
    caption: str = "",
) -> str:
    r"""Draws grids of images side by side, one per (title, images) pair, at most
    `cols` per row; returns the path written."""

    return _save(images_figure(panels, levels, cols, caption=caption), path)


def _finite(x: Tensor) -> Tensor:
    x = x.detach().cpu().double()
    return x[torch.isfinite(x).all(-1)]


def _limits(data: Tensor, others: Sequence[Tensor] = (), margin: float = 0.05) -> list[tuple]:
    r"""Per column, the range of the data joined to the central 99% of each other set
    (so that one sample at :math:`10^{30}` does not squash the picture), widened by a
    margin of the span on each side."""

    lo, hi = data.min(0).values, data.max(0).values
    for x in others:
        if len(x):
            q = torch.tensor([0.005, 0.995], dtype=x.dtype)
            q = torch.quantile(x, q, dim=0, interpolation="nearest")
            lo, hi = torch.minimum(lo, q[0]), torch.maximum(hi, q[1])
    span = (hi - lo).clamp_min(1e-12 * hi.abs().clamp_min(1.0))
    return list(zip((lo - margin * span).tolist(), (hi + margin * span).tolist(), strict=True))


def _outside(x: Tensor, limits: Sequence[tuple], total: int) -> str:
    r"""Returns ", N% outside the axes" for the points of x (of `total`, non-finite ones
    included) beyond the limits of their first columns ("" when none is)."""

    lo = torch.tensor([a for a, _ in limits], dtype=x.dtype)
    hi = torch.tensor([b for _, b in limits], dtype=x.dtype)
    inside = ((x[:, : len(limits)] >= lo) & (x[:, : len(limits)] <= hi)).all(-1).sum().item()
    out = total - inside
    return f", {100 * out / max(total, 1):.3g}% outside the axes" if out else ""


def _sets(panels: Sequence[tuple[str, Tensor]], k: int) -> tuple[list, list[tuple]]:
    r"""Returns (title, finite points, count) per set and the shared limits of their first
    `k` columns."""

    sets = [(title, _finite(x), len(x)) for title, x in panels]
    return sets, _limits(sets[0][1][:, :k], [x[:, :k] for _, x, _ in sets[1:]])


def _pair(ax, sets: list, limits: list[tuple], i: int, j: int) -> None:
    r"""Draws column j against column i of every set (histograms when i = j) on the
    shared limits, the data on top; labels say how many points lie beyond the axes."""

    colours = [_DATA, _SAMPLES, "tab:green", "tab:red", "tab:purple"]
    for z, ((title, x, total), colour) in enumerate(zip(sets, colours, strict=False)):
        label = f"{title} ({total:,}{_outside(x[:, : len(limits)], limits, total)})"
        if i == j:
            style = {"histtype": "step", "color": colour, "label": label}
            _histogram(ax, x[:, i], total, limits[i], 40, **style)
        else:
            style = {"s": 2, "alpha": 0.4, "linewidths": 0, "zorder": len(sets) - z}
            ax.scatter(x[:, j], x[:, i], color=colour, label=label, **style)
    ax.set_xlim(*limits[j])
    if i != j:
        ax.set_ylim(*limits[i])
    ax.tick_params(labelsize=7)


def scatter_figure(panels: Sequence[tuple[str, Tensor]], *, caption: str = ""):
    r"""Returns a pair grid of point sets :math:`(N, D)` drawn over one another, one
    colour per (title, points) pair: histograms on the diagonal, every pair of columns
    below it, for the first four columns. The axes hold the first set (the data) and the
    central 99% of the others; the legend says what fraction of each set lies beyond."""

    D = panels[0][1].shape[-1]
    k = min(D, _PAIRS)
    sets, limits = _sets(panels, k)
    note = f" (columns 0-{k - 1} of {D})" if D > k else ""
    fig = _figure(2.6 * k + 1.2, 2.6 * k + 0.3, caption + note if caption else note.strip())

    for i in range(k):
        for j in range(i + 1):
            ax = fig.add_subplot(k, k, i * k + j + 1)
            _pair(ax, sets, limits, i, j)
            if i == k - 1:
                ax.set_xlabel(f"column {j}")
            if j == 0:
                ax.set_ylabel(f"column {i}" if i else "density")

    handles, labels = fig.axes[min(1, len(fig.axes) - 1)].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", fontsize=8, markerscale=4)
    return fig


def scatter(panels: Sequence[tuple[str, Tensor]], path: str | Path, *, caption: str = "") -> str:
    r"""Draws point sets over one another as a pair grid (see :func:`scatter_figure`);
    returns the path written."""

    return _save(scatter_figure(panels, caption=caption), path)


def density_figure(
    log_prob: Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]],
    data: Tensor,
    samples: Tensor | Sequence[Tensor],
    titles: Sequence[str] = ("learned density and samples",),
    resolution: int = 200,
    *,
    caption: str = "",
    spread: bool = False,
):
    r"""Returns a figure of learned densities, one panel per log-density function (and
    its samples), for 1-D or 2-D data.

    In 2-D, a heat map with a colour bar and the samples over it; in 1-D, the density
    curve over histograms of the data and the samples. The axes span the data's range
    (widened by a quarter on each side), where the density's details are; the titles
    count the samples beyond them. With :py:`spread`, a last panel shows the data and
    the samples of the first model on shared axes that hold both (as
    :func:`scatter_figure`), so that wild samples are seen.

    Arguments:
        log_prob: Maps points :math:`(N, D)` (in the data's dtype) to log-densities.
        data: The data to show, :math:`(N, D)` with :math:`D \in \{1, 2\}`.
        samples: The samples of each model.
        titles: The title of each panel.
        resolution: The grid's points per axis.
        caption: The figure's title.
        spread: Whether to add the panel of data and samples on shared axes.
    """

    fns = [log_prob] if callable(log_prob) else list(log_prob)
    samples = [samples] if isinstance(samples, Tensor) else list(samples)
    data = _finite(data)
    finite = [_finite(s) for s in samples]
    D = data.shape[-1]
    if D not in (1, 2):
        raise ValueError(f"density pictures are for 1-D or 2-D data, got {D} columns")
    limits = _limits(data, margin=0.25)
    axes = [torch.linspace(*lim, resolution, dtype=data.dtype) for lim in limits]

    n = len(fns) + spread
    fig = _figure(4.6 * n, 4.2, caption)
    for i, (fn, s, raw, title) in enumerate(zip(fns, finite, samples, titles, strict=True)):
        ax = fig.add_subplot(1, n, i + 1)
        title = f"{title}\n{len(raw):,} samples{_outside(s, limits, len(raw))}"
        if D == 1:
            _density_1d(ax, fn, data, s, len(raw), axes[0], limits[0])
        else:
            _density_2d(fig, ax, fn, s, axes, limits)
        ax.set_title(title, fontsize=9)

    if spread:
        ax = fig.add_subplot(1, n, n)
        sets, shared = _sets([("test data", data), ("samples", samples[0])], D)
        _pair(ax, sets, shared, D - 1, 0)
        ax.set_xlabel("column 0")
        ax.set_ylabel("column 1" if D == 2 else "density")
        ax.legend(fontsize=8, markerscale=4)
        ax.set_title("data and samples on shared axes", fontsize=9)
    return fig


def _histogram(ax, x: Tensor, total: int, lim: tuple, bins: int, **style) -> None:
    r"""A histogram of :math:`x` in density units over all `total` points: the part
    beyond the axes is missing from its area, not spread over the rest."""

    width = (lim[1] - lim[0]) / bins
    weights = torch.full_like(x, 1 / (max(total, 1) * width)).numpy()
    ax.hist(x.numpy(), bins=bins, range=lim, weights=weights, **style)


def _density_1d(ax, fn, data: Tensor, s: Tensor, total: int, grid: Tensor, lim: tuple) -> None:
    p = fn(grid[:, None]).double().exp().nan_to_num(0.0)
    _histogram(ax, data[:, 0], len(data), lim, 50, color=_DATA, alpha=0.35, label="test data")
    _histogram(ax, s[:, 0], total, lim, 50, histtype="step", color=_SAMPLES, label="samples")
    ax.plot(grid.numpy(), p.numpy(), color="black", label="model density")
    ax.set_xlim(*lim)
    ax.set_xlabel("column 0")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)


def _density_2d(fig, ax, fn, s: Tensor, axes: list[Tensor], limits: list) -> None:
    (x0, x1), (y0, y1) = limits
    n = len(axes[0])
    grid = torch.stack(torch.meshgrid(*axes, indexing="xy"), dim=-1).reshape(-1, 2)
    p = fn(grid).double().exp().nan_to_num(0.0).reshape(n, n)
    image = ax.imshow(
        p.numpy(), origin="lower", extent=(x0, x1, y0, y1), cmap="viridis", aspect="auto"
    )
    ax.scatter(s[:, 0], s[:, 1], s=1.5, c="white", alpha=0.5, linewidths=0)
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("column 0")
    ax.set_ylabel("column 1")
    fig.colorbar(image, ax=ax, label="density", shrink=0.9)


def density(
    log_prob: Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]],
    data: Tensor,
    samples: Tensor | Sequence[Tensor],
    path: str | Path,
    titles: Sequence[str] = ("learned density and samples",),
    resolution: int = 200,
    *,
    caption: str = "",
    spread: bool = False,
) -> str:
    r"""Draws 1-D or 2-D densities with samples (see :func:`density_figure`); returns the
    path written."""

    fig = density_figure(
        log_prob, data, samples, titles, resolution, caption=caption, spread=spread
    )
    return _save(fig, path)


def loss_figure(history: dict[str, list[float]], unit: str, *, caption: str = ""):
    r"""Returns a figure of the training and validation losses per epoch (other keys of
    `history` are ignored), with integer epoch ticks.

    When the first epochs' losses would squash the rest (more than twice the range of
    the others above them), the axes are cut above the others and an inset shows every
    epoch."""

    from matplotlib.ticker import MaxNLocator

    curves = {
        "train (mean over the epoch)": history.get("train", []),
        "validation": history.get("val", []),
    }
    fig = _figure(6, 4, caption)
    ax = fig.add_subplot()
    for label, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker=".", label=label)
    epochs = max(map(len, curves.values()))
    ax.set_xlim(0.5, max(epochs, 1) + 0.5)  # with room for integer ticks at one epoch
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)

    values = [v for vs in curves.values() for v in vs if math.isfinite(v)]
    later = [v for vs in curves.values() for v in vs[1:] if math.isfinite(v)]
    if later and max(values) - max(later) > 2 * (max(later) - min(later) + 1e-9):
        low, high = min(later), max(later)
        pad = 0.1 * (high - low + 1e-9)
        ax.set_ylim(low - pad, high + pad)
        inset = ax.inset_axes((0.56, 0.5, 0.42, 0.45))
        for values in curves.values():
            inset.plot(range(1, len(values) + 1), values, marker=".", markersize=3)
        inset.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        inset.set_title("every epoch", fontsize=8)
        inset.tick_params(labelsize=7)
        ax.legend(loc="lower left", fontsize=8)
    else:
        ax.legend(fontsize=8)
    return fig


def loss_curve(
    history: dict[str, list[float]], unit: str, path: str | Path, *, caption: str = ""
) -> str:
    r"""Draws the training and validation losses per epoch (see :func:`loss_figure`);
    returns the path written."""

    return _save(loss_figure(history, unit, caption=caption), path)


def run_pictures(
    flow: nn.Module,
    pre: nn.Module,
    data: Any,
    history: dict[str, list[float]],
    unit: str,
    out: Path,
    samples: Tensor | None = None,
    *,
    caption: str = "",
    classes: int = 0,
) -> list[str]:
    r"""Draws a run's pictures and returns their file names (none without matplotlib):
    :py:`loss.png`, and :py:`samples.png` (images, with :py:`samples-T0.7.png` at the
    other temperatures of :data:`zuko_lu.experiments.config.TEMPERATURES`; or tables of
    3 columns or more: the data and the samples on shared axes, see
    :func:`scatter_figure`) or
    :py:`density.png` (tables of 1 or 2 columns: the density, and the data and the
    samples on shared axes, see :func:`density_figure`). Samples are drawn with seed 0
    unless given.

    Arguments:
        flow: The flow.
        pre: Its preprocessing.
        data: The dataset (:class:`zuko_lu.experiments.data.Data`).
        history: The losses per epoch (keys :py:`"train"` and :py:`"val"`).
        unit: The losses' unit.
        out: The folder to write to.
        samples: Samples in data units, drawn from the flow if not given.
        caption: What the pictures show (e.g. "lunet on moons, epoch 12"), their title.
        classes: The classes of a class-conditional flow: its samples are drawn per
            class (one row of 8 images per class, or one panel per class).
    """

    from .sampling import draw, log_prob_fn

    if not available():
        return []
    out = Path(out)
    files = [loss_curve(history, unit, out / "loss.png", caption=caption)]
    if classes:
        return [Path(f).name for f in files + _class_pictures(flow, pre, data, out, classes)]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        n = 64 if data.kind == "image" else 1000
        x = draw(flow, pre, n).cpu() if samples is None else samples
        if data.kind == "image":
            for t in TEMPERATURES:
                y = x if t == 1.0 else draw(flow, pre, n, t).cpu()
                path = out / ("samples.png" if t == 1.0 else f"samples-T{t:g}.png")
                images, title = y.reshape(-1, *data.shape), f"samples (T = {t:g})"
                files.append(image_grid(images, data.levels, path, title, caption=caption))
        elif data.features <= 2:
            fn, path = log_prob_fn(flow, pre), out / "density.png"
            files.append(density(fn, data.test, x, path, caption=caption, spread=True))
        else:
            panels = [("test data", data.test), ("samples", x)]
            files.append(scatter(panels, out / "samples.png", caption=caption))
    return [Path(f).name for f in files]


def _class_pictures(flow: nn.Module, pre: nn.Module, data: Any, out: Path, classes: int) -> list:
    r"""The samples of a class-conditional flow, drawn per class with seed 0: image
    grids at each temperature (row :math:`k` shows class :math:`k`), or one panel per
    class beside the test data."""

    from .sampling import draw

    def per_class(n: int, t: float = 1.0) -> list[Tensor]:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            eye = torch.eye(classes, device=pre.std.device)
            return [draw(flow, pre, n, t, context=eye[k]).cpu() for k in range(classes)]

    if data.kind != "image":
        panels = [("test data", data.test)]
        panels += [(f"class {k}", x) for k, x in enumerate(per_class(500))]
        return [scatter(panels, out / "samples.png", caption="samples per class")]
    files = []
    for t in TEMPERATURES:
        images = torch.cat(per_class(8, t)).reshape(-1, *data.shape)
        path = out / ("samples.png" if t == 1.0 else f"samples-T{t:g}.png")
        title = f"samples (T = {t:g}), row k: class k"
        files.append(image_grid(images, data.levels, path, title, cols=8))
    return files
