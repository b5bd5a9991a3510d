r"""Training runs end to end: data, preprocessing, model, checkpoints, test evaluation,
pictures and :py:`metrics.json`; and what a checkpoint is used for afterwards
(evaluation, sampling with a temperature).

A run folder holds :py:`checkpoint.pt` (the best validation epoch), :py:`last.pt` (the
last epoch, with the optimizer's state, for :py:`--resume`), :py:`metrics.json`,
:py:`loss.png`, and :py:`samples.png` (images, or tables with more than two columns) or
:py:`density.png` (2-D tables).
"""

from __future__ import annotations

__all__ = [
    "data_spec",
    "describe",
    "draw",
    "evaluate",
    "headline",
    "load_data",
    "log_prob_fn",
    "train_run",
]

import json
import shutil
import statistics

from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

from . import checkpoint as ckpt
from . import data as datasets
from .distributed import setup_distributed
from .metrics import evaluate_nll
from .models import accepts, build, count_parameters, defaults, nsf_bound
from .preprocess import ImagePreprocess, TabularPreprocess
from .training import TrainConfig, TrainState, fit


def data_spec(
    name: str,
    data_dir: str | None = None,
    path: str | None = None,
    class_: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> dict[str, Any]:
    r"""Returns the plain description of a dataset that a checkpoint stores (paths made
    absolute)."""

    absolute = lambda p: None if p is None else str(Path(p).expanduser().resolve())
    return {
        "name": name,
        "data_dir": absolute(data_dir),
        "path": absolute(path),
        "class_": class_,
        "seed": seed,
        "val_fraction": val_fraction,
    }


def load_data(spec: dict[str, Any]) -> datasets.Data:
    r"""Loads the dataset that :func:`data_spec` describes."""

    return datasets.load(spec["name"], **{k: v for k, v in spec.items() if k != "name"})


def describe(data: datasets.Data) -> tuple[str, str]:
    r"""Returns the name and the unit of the headline metric of a dataset."""

    return ("bits/dim", "bits/dim") if data.kind == "image" else ("NLL", "nats")


def _preprocess(data: datasets.Data, seed: int) -> ImagePreprocess | TabularPreprocess:
    if data.kind == "image":
        generator = torch.Generator().manual_seed(seed)
        return ImagePreprocess(data.levels).fit(data.train, generator)
    return TabularPreprocess().fit(data.train)


@torch.no_grad()
def draw(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    n: int,
    temperature: float = 1.0,
) -> Tensor:
    r"""Draws samples in data units (integer levels for images) with a temperature.

    As in Glow, the latent is drawn from the base scaled by :math:`T` about its mean,
    :math:`z \sim \mathcal{N}(0, T^2 I)` for a standard normal base, and mapped back
    through the flow: :math:`T < 1` trades diversity for typical-looking samples.
    Samples that the inverse sends to non-finite values stay non-finite.

    Arguments:
        flow: A lazy flow whose distribution has :py:`base` and :py:`transform`.
        preprocess: The preprocessing the flow was trained behind.
        n: The number of samples.
        temperature: The temperature :math:`T > 0`.
    """

    d = flow()
    z = d.base.sample((n,))
    if temperature != 1.0:
        mean = d.base.mean
        z = mean + temperature * (z - mean)
    y = d.transform.inv(z)
    if isinstance(preprocess, ImagePreprocess):
        return torch.where(torch.isfinite(y), preprocess.to_levels(y), torch.nan)
    return preprocess.inverse(y)


def evaluate(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    x: Tensor,
    draws: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    r"""Returns the mean NLL of data :math:`x` and its spread across dequantisation
    draws (seeded), in bits/dim for images and nats for tables."""

    flow.eval()
    generator = torch.Generator().manual_seed(seed)
    draws = draws if isinstance(preprocess, ImagePreprocess) else 1
    return evaluate_nll(lambda y: flow().log_prob(y), x, preprocess, draws, generator)


def _resolve_kwargs(name: str, kwargs: dict, y_train: Callable[[], Tensor]) -> dict[str, Any]:
    kwargs = {**defaults(name), **{k: v for k, v in kwargs.items() if v is not None}}
    if "hidden_features" in kwargs:
        kwargs["hidden_features"] = [int(h) for h in kwargs["hidden_features"]]
    if kwargs.get("bound", "auto") == "auto":
        kwargs.pop("bound", None)
        if accepts(name, "bound"):  # splines: widen the bound to hold the inputs
            kwargs["bound"] = nsf_bound(y_train())
    return kwargs


def train_run(
    spec: dict[str, Any],
    model: str,
    kwargs: dict[str, Any],
    config: TrainConfig,
    out: str | Path,
    device: str = "auto",
    resume: dict[str, Any] | None = None,
    draws: int = 5,
    progress: bool = True,
    pictures: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    r"""Trains a model on a dataset and writes a run folder.

    Arguments:
        spec: The dataset (see :func:`data_spec`); ignored when resuming.
        model: The model's name; ignored when resuming.
        kwargs: The model's options (:py:`bound="auto"` fits a spline bound to the data).
        config: The training configuration.
        out: The run folder.
        device: The device (:py:`"auto"` takes CUDA when available).
        resume: A :py:`last.pt` checkpoint to continue.
        draws: The dequantisation draws of the test evaluation.
        progress: Whether to show a progress bar.
        pictures: Whether to draw the pictures.
        log: Where messages go.

    Returns:
        The metrics (also written to :py:`metrics.json`), on rank 0; :py:`None` elsewhere.
    """

    rank, world, device = setup_distributed(device)
    out = Path(out)
    if resume is not None:
        spec, model, kwargs = resume["data"], resume["model"]["name"], resume["model"]["kwargs"]
    elif (out / "checkpoint.pt").exists():
        raise ValueError(f"'{out}' already holds a run: choose another --out, or --resume it")

    data = load_data(spec)
    if resume is not None:
        pre = ckpt.preprocess_from(resume["preprocess"])
    else:
        pre = _preprocess(data, spec["seed"])
    state, optimizer_state = None, None
    if resume is None:
        y_train = lambda: pre(data.train, torch.Generator().manual_seed(spec["seed"]))[0]
        kwargs = _resolve_kwargs(model, kwargs, y_train)
        torch.manual_seed(config.seed)
        flow = build(model, data.features, **kwargs)
    else:
        flow, _ = ckpt.restore(resume)
        state = TrainState(**resume["state"])
        optimizer_state = resume.get("optimizer")
        if optimizer_state is None:
            raise ckpt.CheckpointError(f"{resume['path']} has no optimizer state: resume last.pt")
        if state.epoch >= config.epochs:
            raise ValueError(
                f"the checkpoint has trained {state.epoch} epochs already: pass --epochs N "
                f"with N > {state.epoch} to train more"
            )
        best_file = Path(resume["path"]).with_name("checkpoint.pt")
        if (
            rank == 0
            and best_file.is_file()
            and best_file.resolve() != (out / "checkpoint.pt").resolve()
        ):
            out.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(best_file, out / "checkpoint.pt")
    flow, pre = flow.to(device), pre.to(device)
    parameters = count_parameters(flow)
    model_spec = {"name": model, "features": data.features, "kwargs": kwargs}
    name, unit = describe(data)

    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        what = f"{model} ({parameters:,} parameters) on {data.name}, {len(data.train):,} examples"
        log(f"training {what}, {world} process(es) on {device}; files in {out}")

    def save(kind: str, state: TrainState, optimizer: torch.optim.Optimizer) -> None:
        payload = {
            "model": model_spec,
            "state_dict": flow.state_dict(),
            "preprocess": {"kind": data.kind, "state": pre.state_dict()},
            "data": spec,
            "shape": list(data.shape) if data.shape else None,
            "config": asdict(config),
            "state": state.to_dict(),
            "versions": ckpt.versions(),
        }
        if kind == "last":
            payload["optimizer"] = optimizer.state_dict()
        ckpt.save(payload, out / ("checkpoint.pt" if kind == "best" else "last.pt"))

    try:
        state, best = fit(
            flow, pre, data.train, data.val, config, state, optimizer_state, save, progress
        )
    except KeyboardInterrupt:
        if rank == 0:
            where = out / "checkpoint.pt"
            note = f"the best checkpoint is {where}" if where.exists() else "no checkpoint yet"
            log(f"interrupted: {note}")
        raise

    if rank != 0:
        return None

    why = {
        "time limit": f"time limit of {config.time_limit:g} s reached; --time-limit 0 lifts it",
        "early stopping": f"early stopping: {config.patience} epochs without improvement",
        "diverged": "diverged: 100 steps in a row with non-finite gradients",
        "epochs": "all epochs done",
    }.get(state.stopped, state.stopped)
    log(
        f"trained {state.epoch} epochs in {state.train_time:.0f} s ({why}); best validation "
        f"{name} {state.best_val:.4g} at epoch {state.best_epoch}"
    )

    if resume is not None and state.best_epoch <= resume["state"]["best_epoch"]:
        best = ckpt.load(out / "checkpoint.pt")["state_dict"]  # the best is older
    flow.load_state_dict(best)
    test, spread = evaluate(flow, pre, data.test.to(device), draws, config.seed)

    metrics = {
        "data": spec,
        "kind": data.kind,
        "model": {**model_spec, "parameters": parameters},
        "config": asdict(config),
        "device": str(device),
        "processes": world,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped": state.stopped,
        "skipped_steps": state.skipped,
        "train_time_s": state.train_time,
        "epoch_time_s": statistics.median(state.history["time"]),
        "val": state.best_val,
        "test": {
            "mean": test,
            "std": spread,
            "unit": unit,
            "metric": name,
            "draws": draws if data.kind == "image" else 1,
            "examples": len(data.test),
        },
        "history": state.history,
        "versions": ckpt.versions(),
    }
    if pictures:
        from .plots import run_pictures

        metrics["pictures"] = run_pictures(flow, pre, data, state.history, unit, out)
    with open(out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=2, default=str, allow_nan=True)
    metrics["out"] = str(out)
    return metrics


def log_prob_fn(flow: nn.Module, pre: nn.Module) -> Callable[[Tensor], Tensor]:
    r"""The log-density of a tabular model in the original units."""

    device = pre.std.device

    @torch.no_grad()
    def log_prob(x: Tensor) -> Tensor:
        y, ladj = pre(x.to(device))
        return (flow().log_prob(y) + ladj).cpu()

    return log_prob


def headline(metrics: dict[str, Any]) -> str:
    r"""Returns the final line of a run: the test metric and where the results went."""

    test = metrics["test"]
    if test["metric"] == "bits/dim":
        value = f"test bits/dim {test['mean']:.3f} ± {test['std']:.4f} ({test['draws']} "
        value += "dequantisation draws)"
    else:
        value = f"test NLL {test['mean']:.3f} nats ({test['examples']:,} examples)"
    return f"{value}; results in {metrics['out']}"
