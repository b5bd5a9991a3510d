r"""Training runs end to end: data, preprocessing, model, checkpoints, test evaluation,
pictures and :py:`metrics.json`; and the evaluation of a checkpoint afterwards.

A run reads top to bottom in :func:`train_run`: a start (fresh, or resumed from a
:py:`last.pt`), the fit (:func:`zuko_lu.experiments.training.fit`), and a finish (the best
parameters reloaded, the test evaluation, :py:`metrics.json` and the pictures).

A run folder holds :py:`checkpoint.pt` (the best validation epoch), :py:`last.pt` (the
last epoch, with the optimizer's state, for :py:`--resume`), :py:`metrics.json`,
:py:`loss.png`, and :py:`samples.png` (images, or tables with more than two columns) or
:py:`density.png` (2-D tables). A folder that holds any of the first three is never
overwritten by a fresh run.
"""

from __future__ import annotations

__all__ = [
    "classes_of",
    "contexts",
    "data_for",
    "data_spec",
    "describe",
    "evaluate",
    "headline",
    "load_data",
    "train_run",
]

import shutil
import statistics

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

from . import checkpoint as ckpt
from . import data as datasets
from .config import DATA, DRAWS, TEMPERATURES, VAL_FRACTION, TrainConfig
from .distributed import setup_distributed
from .metrics import evaluate_nll
from .models import accepts, build, count_parameters, nsf_bound
from .preprocess import ImagePreprocess, TabularPreprocess
from .training import DivergedError, TrainState, fit

_RUN_FILES = ("checkpoint.pt", "last.pt", "metrics.json")


def data_spec(
    name: str = DATA,
    *,
    data_dir: str | None = None,
    path: str | None = None,
    class_: int | None = None,
    seed: int = TrainConfig.seed,
    val_fraction: float = VAL_FRACTION,
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


def data_for(
    payload: dict[str, Any], *, data_dir: str | None = None, path: str | None = None
) -> datasets.Data:
    r"""Loads the dataset of a checkpoint, from where its files are now (`data_dir`,
    `path`) if given, and checks that the checkpoint's model takes it.

    Raises:
        ValueError: If the data have another number of columns or another kind than the
            model was trained on (another file, or an edited checkpoint).
    """

    spec, moved = dict(payload["data"]), data_spec(data_dir=data_dir, path=path)
    spec.update({k: moved[k] for k in ("data_dir", "path") if moved[k]})
    data = load_data(spec)

    features, kind = int(payload["model"]["features"]), payload["preprocess"]["kind"]
    if data.features != features or (data.kind == "image") != (kind == "image"):
        what = f"'{spec['path']}'" if spec.get("path") else f"dataset '{data.name}'"
        raise ValueError(
            f"{what} has {data.features} columns ({data.kind}) but the model of "
            f"'{payload.get('path', 'the checkpoint')}' takes {features} ({kind}): another "
            "file, or an edited checkpoint?"
        )
    return data


def describe(data: datasets.Data) -> tuple[str, str]:
    r"""Returns the name and the unit of the headline metric of a dataset."""

    return ("bits/dim", "bits/dim") if data.kind == "image" else ("NLL", "nats")


def contexts(data: datasets.Data, classes: int) -> tuple[Tensor, Tensor, Tensor] | None:
    r"""Returns the contexts of a class-conditional model for the train, validation and
    test sets: one-hot labels over `classes` classes; :py:`None` for :py:`classes = 0`.

    Example:
        >>> data = datasets.load("moons")
        >>> [tuple(c.shape) for c in contexts(data, 2)]
        [(8100, 2), (900, 2), (1000, 2)]
    """

    if not classes:
        return None
    one_hot = lambda y: nn.functional.one_hot(y, classes).to(torch.float32)
    return tuple(one_hot(y) for y in _labels(data))


def classes_of(data: datasets.Data) -> int:
    r"""Returns the number of classes of a labelled dataset (its largest label + 1)."""

    return int(max(y.max() for y in _labels(data) if len(y))) + 1


def _labels(data: datasets.Data) -> tuple[Tensor, Tensor, Tensor]:
    if data.labels is None:
        raise ValueError(f"'{data.name}' has no labels: a class-conditional model needs them")
    return data.labels


def evaluate(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    x: Tensor,
    *,
    draws: int = DRAWS,
    seed: int = 0,
    context: Tensor | None = None,
) -> tuple[float, float]:
    r"""Returns the mean NLL of data :math:`x` (given its contexts, for a conditional
    flow) and its spread across dequantisation draws (seeded), in bits/dim for images
    and nats for tables."""

    flow.eval()
    generator = torch.Generator().manual_seed(seed)
    draws = draws if isinstance(preprocess, ImagePreprocess) else 1
    log_prob = lambda y, c=None: flow(c).log_prob(y)
    return evaluate_nll(log_prob, x, preprocess, draws, generator, context=context)


@dataclass
class _Run:
    r"""What a run's steps share."""

    out: Path
    spec: dict[str, Any]
    model: dict[str, Any]  # {"name", "features", "kwargs", "classes"}
    data: datasets.Data
    pre: ImagePreprocess | TabularPreprocess
    flow: nn.Module
    state: TrainState | None = None
    optimizer_state: dict | None = None
    resumed_best: int = -1  # the best epoch of the resumed checkpoint; -1 if fresh
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")


def train_run(
    spec: dict[str, Any],
    model: str,
    kwargs: dict[str, Any],
    config: TrainConfig,
    out: str | Path,
    *,
    device: str = "auto",
    resume: dict[str, Any] | None = None,
    draws: int = DRAWS,
    progress: bool = True,
    pictures: bool = True,
    conditional: bool = False,
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
        conditional: Whether the model is class-conditional, :math:`p(x \mid y)` with the
            one-hot label :math:`y` as context (labelled datasets; ignored when resuming).
        log: Where messages go.

    Returns:
        The metrics (also written to :py:`metrics.json`), on rank 0; :py:`None` elsewhere.

    Raises:
        DivergedError: After writing :py:`metrics.json`, if training stopped on a
            non-finite loss.
    """

    rank, world, device = setup_distributed(device)
    if resume is None:
        run = _start_fresh(
            spec, model, kwargs, config=config, out=Path(out), conditional=conditional
        )
    else:
        run = _start_resumed(resume, config, Path(out), rank=rank)
    run.rank, run.world, run.device = rank, world, device
    run.flow, run.pre = run.flow.to(device), run.pre.to(device)
    if rank == 0:
        run.out.mkdir(parents=True, exist_ok=True)
        ckpt.remove_stale(run.out)
        what = f"{run.model['name']} ({count_parameters(run.flow):,} parameters) on "
        what += f"{run.data.name}, {len(run.data.train):,} examples"
        log(f"training {what}, {world} process(es) on {device}; files in {run.out}")

    state, best = _fit(run, config, progress=progress, log=log)
    if rank != 0:
        return None
    return _finish(run, config, state, best, draws=draws, pictures=pictures, log=log)


def _refuse_run_folder(out: Path) -> None:
    found = [name for name in _RUN_FILES if (out / name).exists()]
    if found:
        raise ValueError(
            f"'{out}' already holds a run ({', '.join(found)}): choose another --out, "
            "or --resume it"
        )


def _resolve_kwargs(name: str, kwargs: dict, y_train: Callable[[], Tensor]) -> dict[str, Any]:
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if "hidden_features" in kwargs:
        kwargs["hidden_features"] = [int(h) for h in kwargs["hidden_features"]]
    if kwargs.get("bound", "auto") == "auto":
        kwargs.pop("bound", None)
        if accepts(name, "bound", 5.0):  # splines: widen the bound to hold the inputs
            kwargs["bound"] = nsf_bound(y_train())
    return kwargs


def _start_fresh(
    spec: dict[str, Any],
    model: str,
    kwargs: dict[str, Any],
    *,
    config: TrainConfig,
    out: Path,
    conditional: bool,
) -> _Run:
    _refuse_run_folder(out)
    data = load_data(spec)
    classes = classes_of(data) if conditional else 0
    if classes:
        if spec.get("class_") is not None:
            raise ValueError("a class-conditional model needs every class: drop --class")
        kwargs = {**kwargs, "context": classes}
    if data.kind == "image":
        generator = torch.Generator().manual_seed(spec["seed"])
        pre = ImagePreprocess(data.levels).fit(data.train, generator)
    else:
        pre = TabularPreprocess().fit(data.train)
    y_train = lambda: pre(data.train, torch.Generator().manual_seed(spec["seed"]))[0]
    kwargs = _resolve_kwargs(model, kwargs, y_train)
    torch.manual_seed(config.seed)
    flow = build(model, data.features, **kwargs)
    described = {"name": model, "features": data.features, "kwargs": kwargs, "classes": classes}
    return _Run(out, spec, described, data, pre, flow)


def _start_resumed(resume: dict[str, Any], config: TrainConfig, out: Path, *, rank: int) -> _Run:
    state = TrainState(**resume["state"])
    if resume.get("optimizer") is None:
        raise ckpt.CheckpointError(f"{resume['path']} has no optimizer state: resume last.pt")
    if state.epoch >= config.epochs:
        raise ValueError(
            f"the checkpoint has trained {state.epoch} epochs already: pass --epochs N "
            f"with N > {state.epoch} to train more"
        )
    best_file = Path(resume["path"]).with_name("checkpoint.pt")
    elsewhere = best_file.resolve() != (out / "checkpoint.pt").resolve()
    if elsewhere:
        _refuse_run_folder(out)
    data = data_for(resume)
    flow, pre = ckpt.restore(resume)
    if rank == 0 and elsewhere and best_file.is_file():  # the best checkpoint comes along
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(best_file, out / "checkpoint.pt")
    run = _Run(out, resume["data"], dict(resume["model"]), data, pre.train(), flow)
    run.state, run.optimizer_state = state, resume["optimizer"]
    run.resumed_best = state.best_epoch
    return run


def _class_shares(run: _Run, log: Callable[[str], None]) -> dict[str, float]:
    r"""The share of a class-conditional model's samples that a classifier puts in their
    class (see :func:`zuko_lu.experiments.sampling.class_accuracy`)."""

    from .sampling import class_accuracy

    classes = run.model["classes"]
    shares = class_accuracy(run.flow, run.pre, run.data, classes, temperatures=TEMPERATURES)
    log(
        "samples put in their class by a logistic regression: "
        + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
    )
    return shares


def _contexts(run: _Run) -> tuple[Tensor, Tensor, Tensor] | None:
    return contexts(run.data, run.model.get("classes", 0))


def _payload(run: _Run, config: TrainConfig, state: TrainState) -> dict[str, Any]:
    data = run.data
    return {
        "model": run.model,
        "state_dict": run.flow.state_dict(),
        "preprocess": {"kind": data.kind, "state": run.pre.state_dict()},
        "data": run.spec,
        "shape": list(data.shape) if data.shape else None,
        "config": asdict(config),
        "state": state.to_dict(),
        "versions": ckpt.versions(),
    }


def _fit(
    run: _Run, config: TrainConfig, *, progress: bool, log: Callable[[str], None]
) -> tuple[TrainState, dict[str, Tensor]]:
    def save(kind: str, state: TrainState, optimizer: torch.optim.Optimizer) -> None:
        payload = _payload(run, config, state)
        if kind == "last":
            payload["optimizer"] = optimizer.state_dict()
        ckpt.save(payload, run.out / ("checkpoint.pt" if kind == "best" else "last.pt"))

    data = run.data
    try:
        return fit(
            run.flow,
            run.pre,
            data.train,
            data.val,
            config,
            state=run.state,
            optimizer_state=run.optimizer_state,
            save=save,
            progress=progress,
            log=log,
            contexts=_contexts(run)[:2] if run.model.get("classes") else None,
        )
    except KeyboardInterrupt:
        if run.rank != 0:
            raise
        where = run.out / "checkpoint.pt"
        note = f"the best checkpoint is {where}" if where.exists() else "no checkpoint yet"
        raise KeyboardInterrupt(note) from None


def _finish(
    run: _Run,
    config: TrainConfig,
    state: TrainState,
    best: dict[str, Tensor],
    *,
    draws: int,
    pictures: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    name, unit = describe(run.data)
    log(_summary(state, config, name))

    test = {"mean": None, "std": None}
    if state.best_epoch > 0:
        if state.best_epoch <= run.resumed_best:  # the best is older than this session
            best = ckpt.load(run.out / "checkpoint.pt")["state_dict"]
        run.flow.load_state_dict(best)
        x, c = run.data.test.to(run.device), _contexts(run)
        c = None if c is None else c[2]
        mean, std = evaluate(run.flow, run.pre, x, draws=draws, seed=config.seed, context=c)
        test = {"mean": mean, "std": std}

    metrics = _metrics(run, config, state, draws=draws)
    metrics["test"].update(test)
    if run.model.get("classes") and state.best_epoch > 0:
        metrics["samples_of_their_class"] = _class_shares(run, log)
    ckpt.write_json(run.out / "metrics.json", metrics)  # kept if the pictures fail
    if pictures and state.best_epoch > 0:
        from .plots import run_pictures

        caption = f"{run.model['name']} on {run.data.name}, epoch {state.best_epoch}"
        metrics["pictures"] = run_pictures(
            run.flow,
            run.pre,
            run.data,
            state.history,
            unit,
            run.out,
            caption=caption,
            classes=run.model.get("classes", 0),
        )
        ckpt.write_json(run.out / "metrics.json", metrics)
    if state.stopped in ("diverged", "non-finite validation"):
        raise DivergedError(_advice(run, state, config))
    metrics["out"] = str(run.out)
    return metrics


def _summary(state: TrainState, config: TrainConfig, name: str) -> str:
    epochs = f"{state.epoch} epoch{'s' if state.epoch != 1 else ''}"
    if state.stopped == "time limit":
        why = f"stopped by --time-limit {config.time_limit:g} s after {epochs}; 0 lifts it"
    elif state.stopped == "early stopping":
        why = f"early stopping: {config.patience} epochs without improvement"
    elif state.stopped == "epochs":
        why = "all epochs done"
    else:
        why = state.stopped
    if state.best_epoch > 0:
        best = f"best validation {name} {state.best_val:.4g} at epoch {state.best_epoch}"
    else:
        best = "no finite validation loss"
    seconds = state.history["epoch_seconds"]
    median = statistics.median(seconds) if seconds else 0.0
    return f"trained {epochs} in {state.train_time:.0f} s, {median:.2f} s/epoch ({why}); {best}"


def _advice(run: _Run, state: TrainState, config: TrainConfig) -> str:
    if state.stopped == "diverged":
        what = f"training diverged in epoch {state.epoch} (a non-finite loss or gradient)"
    else:
        what = f"the validation loss was not finite after epoch {state.epoch}"
    if state.best_epoch > 0:
        kept = f"; the best checkpoint (epoch {state.best_epoch}) is kept and evaluated"
    else:
        kept = "; no checkpoint.pt was written"
    return (
        f"{what}{kept}. Try a lower --lr (this run: {config.lr:g}), a --clip, or data with "
        f"fewer outliers (standardise the columns); details in {run.out / 'metrics.json'}"
    )


def _metrics(run: _Run, config: TrainConfig, state: TrainState, *, draws: int) -> dict[str, Any]:
    data = run.data
    name, unit = describe(data)
    seconds = state.history["epoch_seconds"]
    return {
        "data": run.spec,
        "kind": data.kind,
        "rows": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "model": {**run.model, "parameters": count_parameters(run.flow)},
        "config": asdict(config),
        "device": str(run.device),
        "processes": run.world,
        "epochs": state.epoch,
        "best_epoch": state.best_epoch,
        "stopped": state.stopped,
        "lr": state.lr,
        "skipped_steps": state.skipped,
        "train_time_s": state.train_time,
        "epoch_time_s": statistics.median(seconds) if seconds else None,
        "val": state.best_val,
        "test": {
            "unit": unit,
            "metric": name,
            "draws": draws if data.kind == "image" else 1,
            "examples": len(data.test),
            "given": "the class label" if run.model.get("classes") else None,
        },
        "history": state.history,
        "versions": ckpt.versions(),
    }


def headline(metrics: dict[str, Any]) -> str:
    r"""Returns the final line of a run: the test metric and where the results went."""

    test = metrics["test"]
    if test["metric"] == "bits/dim":
        value = f"test bits/dim {test['mean']:.3f} ± {test['std']:.4f} ({test['draws']} "
        value += "dequantisation draws)"
    else:
        value = f"test NLL {test['mean']:.3f} nats ({test['examples']:,} examples)"
    if test.get("given"):
        value = value.replace("test", f"test (given {test['given']})", 1)
    return f"{value}; results in {metrics['out']}"
