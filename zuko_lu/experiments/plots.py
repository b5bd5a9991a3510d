r"""Pictures of runs, drawn with matplotlib's object-oriented API (no pyplot, no GUI
backend: safe in scripts, servers and notebooks alike)."""

from __future__ import annotations

__all__ = [
    "available",
    "density",
    "image_grid",
    "image_panels",
    "loss_curve",
    "run_pictures",
    "scatter",
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


def available() -> bool:
    r"""Returns whether matplotlib is installed."""

    return importlib.util.find_spec("matplotlib") is not None


def _figure(width: float, height: float):  # noqa: ANN202
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path: str | Path) -> str:  # noqa: ANN001
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


def _show(ax, images: Tensor, levels: int, title: str) -> None:  # noqa: ANN001
    ax.imshow(tile(images).numpy(), cmap="gray", vmin=0, vmax=levels - 1, interpolation="nearest")
    bad = int((~torch.isfinite(images.flatten(1))).any(-1).sum())
    ax.set_title(title + (f" ({bad} non-finite)" if bad else ""), fontsize=9)
    ax.set_axis_off()


def image_grid(images: Tensor, levels: int, path: str | Path, title: str = "") -> str:
    r"""Draws images :math:`(N, H, W)` with values in :math:`[0, L - 1]` as a grid.

    Returns:
        The path written.
    """

    fig = _figure(6, 6)
    _show(fig.add_subplot(), images, levels, title)
    return _save(fig, path)


def image_panels(
    panels: Sequence[tuple[str, Tensor]], levels: int, path: str | Path, cols: int = 4
) -> str:
    r"""Draws grids of images side by side, one per (title, images) pair, at most
    `cols` per row."""

    cols = min(cols, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig = _figure(3.2 * cols, 3.4 * rows)
    for i, (title, images) in enumerate(panels):
        _show(fig.add_subplot(rows, cols, i + 1), images, levels, title)
    return _save(fig, path)


def _limits(points: Tensor, margin: float = 0.25) -> list[tuple[float, float]]:
    lo, hi = points.min(0).values, points.max(0).values
    span = (hi - lo).clamp_min(1e-6)
    return [
        (a - margin * s, b + margin * s)
        for a, b, s in zip(lo.tolist(), hi.tolist(), span.tolist(), strict=True)
    ]


def density(
    log_prob: Callable[[Tensor], Tensor] | Sequence[Callable[[Tensor], Tensor]],
    data: Tensor,
    samples: Tensor | Sequence[Tensor],
    path: str | Path,
    titles: Sequence[str] = ("learned density and samples",),
    resolution: int = 200,
) -> str:
    r"""Draws 2-D densities as heat maps over the data's range, with samples over them:
    one panel per log-density function (and its samples)."""

    fns = [log_prob] if callable(log_prob) else list(log_prob)
    samples = [samples] if isinstance(samples, Tensor) else list(samples)
    (x0, x1), (y0, y1) = _limits(data)
    gx, gy = torch.linspace(x0, x1, resolution), torch.linspace(y0, y1, resolution)
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).reshape(-1, 2)

    fig = _figure(4.2 * len(fns), 4)
    for i, (fn, s, title) in enumerate(zip(fns, samples, titles, strict=True)):
        ax = fig.add_subplot(1, len(fns), i + 1)
        p = fn(grid).exp().reshape(resolution, resolution)
        ax.imshow(
            p.nan_to_num(0.0).numpy(),
            origin="lower",
            extent=(x0, x1, y0, y1),
            cmap="viridis",
            aspect="auto",
        )
        s = s[torch.isfinite(s).all(-1)]
        ax.scatter(s[:, 0], s[:, 1], s=1.5, c="white", alpha=0.5, linewidths=0)
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_title(title, fontsize=9)
    return _save(fig, path)


def scatter(panels: Sequence[tuple[str, Tensor]], path: str | Path) -> str:
    r"""Draws the first two columns of point sets side by side, one per (title, points)
    pair, on the first set's scale."""

    fig = _figure(4 * len(panels), 4)
    limits = _limits(panels[0][1][:, :2])
    for i, (title, x) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        x = x[torch.isfinite(x).all(-1)]
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.5, linewidths=0)
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
        ax.set_title(f"{title} (columns 0 and 1)", fontsize=9)
    return _save(fig, path)


def loss_curve(history: dict[str, list[float]], unit: str, path: str | Path) -> str:
    r"""Draws the training and validation losses per epoch."""

    fig = _figure(6, 4)
    ax = fig.add_subplot()
    epochs = range(1, len(history["train"]) + 1)
    ax.plot(epochs, history["train"], marker=".", label="train (mean over the epoch)")
    ax.plot(epochs, history["val"], marker=".", label="validation")
    finite = [v for v in history["train"] + history["val"] if math.isfinite(v)]
    if finite:  # the first epochs' losses can dwarf the rest
        low, high = min(finite), sorted(finite)[int(0.9 * (len(finite) - 1))]
        ax.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.3 * (high - low + 1e-9))
    ax.set_xlabel("epoch")
    ax.set_ylabel(unit)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def run_pictures(
    flow: nn.Module,
    pre: nn.Module,
    data: Any,  # noqa: ANN401
    history: dict[str, list[float]],
    unit: str,
    out: Path,
    samples: Tensor | None = None,
    *,
    caption: str = "",  # issue 13 B draws it; 13 A passes it
) -> list[str]:
    r"""Draws a run's pictures (samples drawn with seed 0 unless given); returns their
    file names (none without matplotlib)."""

    from .sampling import draw, log_prob_fn

    if not available():
        return []
    files = [loss_curve(history, unit, out / "loss.png")]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if data.kind == "image":
            x = draw(flow, pre, 64).cpu() if samples is None else samples
            files.append(
                image_grid(
                    x.reshape(-1, *data.shape),
                    data.levels,
                    out / "samples.png",
                    title="samples (T = 1)",
                )
            )
        elif data.features == 2:
            x = draw(flow, pre, 1000).cpu() if samples is None else samples
            files.append(density(log_prob_fn(flow, pre), data.test, x, out / "density.png"))
        else:
            x = draw(flow, pre, 1000).cpu() if samples is None else samples
            files.append(scatter([("test data", data.test), ("samples", x)], out / "samples.png"))
    return [Path(f).name for f in files]
