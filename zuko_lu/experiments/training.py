r"""Maximum-likelihood training with validation, early stopping, a time budget and,
under ``torchrun``, :class:`~torch.nn.parallel.DistributedDataParallel`.

Each step draws a global batch of :py:`batch_size` training examples from a permutation
seeded by :py:`(seed, epoch)`, dequantises it with noise from a generator seeded the same
way, and, with :math:`W` processes, gives process :math:`r` the examples
:math:`r, r + W, r + 2W, \dots` of it (a :class:`~torch.utils.data.DistributedSampler`'s
shard). The loss is the mean over the shard; DDP averages the gradients over the
processes, which gives exactly the gradient of the global batch's mean loss: a
:math:`W`-process run follows the single-process run up to floating-point rounding. The
last incomplete batch of each epoch is dropped (a tiny batch makes a noisy step). The
same seeding makes a resumed run continue as the uninterrupted one would have.
"""

from __future__ import annotations

__all__ = [
    "NLL",
    "TrainConfig",
    "TrainState",
    "fit",
]

import contextlib
import copy
import math
import sys
import time

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn

from torch import Tensor

from .metrics import evaluate_nll
from .preprocess import ImagePreprocess, TabularPreprocess

_STEP_SEED, _NOISE_SEED, _VAL_SEED = 0x5EED, 0x0153, 0x7A1


@dataclass
class TrainConfig:
    r"""Creates a training configuration.

    Arguments:
        epochs: The maximum number of epochs.
        batch_size: The global batch size (over all processes).
        lr: Adam's learning rate.
        clip: The maximum norm of the gradient of the loss in nats per dimension
            (:py:`None` for no clipping). Typical norms at the start are 0.3 to 3 for
            LU-Net on MNIST; the default only cuts spikes.
        patience: Stop after this many epochs without a better validation loss
            (:py:`None` never stops early).
        decay: Halve the learning rate after every this many epochs without a better
            validation loss (:py:`None` keeps it constant).
        time_limit: Stop after this many seconds of training (:py:`None` for no limit).
        seed: The seed of the batches and of the dequantisation noise.
    """

    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    clip: float | None = 10.0
    patience: int | None = 10
    decay: int | None = 3
    time_limit: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("lr", "clip", "time_limit"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a positive number, got {value}")
        for name in ("patience", "decay"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")


@dataclass
class TrainState:
    r"""Creates the state of a training run: what :func:`fit` needs to resume it.

    Losses are in the reporting unit: bits/dim in pixel space for images, nats per
    example in the original units for tables.
    """

    epoch: int = 0
    best_epoch: int = 0
    best_val: float = math.inf
    stale: int = 0
    lr: float | None = None
    skipped: int = 0
    stopped: str = ""
    train_time: float = 0.0
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train": [], "val": [], "time": []}
    )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class NLL(nn.Module):
    r"""Creates the module whose forward is a flow's negative log-density, so that
    :class:`~torch.nn.parallel.DistributedDataParallel` sees the whole computation.

    Arguments:
        flow: A lazy distribution module (e.g. a :class:`zuko.lazy.Flow`).
    """

    def __init__(self, flow: nn.Module) -> None:
        super().__init__()

        self.flow = flow

    def forward(self, y: Tensor) -> Tensor:
        return -self.flow().log_prob(y)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _generator(seed: int, salt: int, epoch: int = 0) -> torch.Generator:
    value = (seed * 0x9E3779B1 + salt * 0x85EBCA6B + epoch) % (1 << 63)
    return torch.Generator().manual_seed(value)


def _broadcast(values: list[float], device: torch.device) -> list[float]:
    r"""Rank 0's values, on every rank."""

    _, world = _world()
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return t.tolist()


def _progress(total: int, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass
    return contextlib.nullcontext()


def fit(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    train: Tensor,
    val: Tensor,
    config: TrainConfig,
    state: TrainState | None = None,
    optimizer_state: dict | None = None,
    save: Callable[[str, TrainState, torch.optim.Optimizer], None] | None = None,
    progress: bool = True,
) -> tuple[TrainState, dict[str, Tensor]]:
    r"""Trains a flow by maximum likelihood behind a fitted preprocessing.

    After each epoch the validation loss (one dequantisation draw with a fixed seed) is
    computed; :py:`save("best", ...)` is called when it improves and
    :py:`save("last", ...)` after every epoch, on rank 0 only. Training stops after
    :py:`config.epochs` epochs, :py:`config.patience` epochs without improvement, after
    :py:`config.time_limit` seconds (mid-epoch: the partial epoch is validated), or after
    100 consecutive steps with non-finite gradients (which are skipped).
    A :class:`KeyboardInterrupt` propagates: the files saved so far are complete.

    Arguments:
        flow: The flow, on its device.
        preprocess: The fitted preprocessing, on the same device.
        train: The training data in original units, on the CPU.
        val: The validation data in original units.
        config: The training configuration.
        state: The state to resume from (a fresh one by default).
        optimizer_state: Adam's state dict to resume from.
        save: Called as :py:`save(kind, state, optimizer)` with kind :py:`"best"` or
            :py:`"last"`; the flow holds the parameters to save.
        progress: Whether to show a progress bar (rank 0 only).

    Returns:
        The final state and the best parameters (a state dict of the flow).

    Example:
        >>> from zuko_lu.flows import LUNet
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 2) * 3 + 1
        >>> pre = TabularPreprocess().fit(x)
        >>> config = TrainConfig(epochs=2, batch_size=32)
        >>> state, best = fit(LUNet(2), pre, x, x[:64], config, progress=False)
        >>> state.epoch, state.stopped, len(state.history["val"])
        (2, 'epochs', 2)
    """

    rank, world = _world()
    device = next(flow.parameters()).device
    image = isinstance(preprocess, ImagePreprocess)
    unit = 1 / (train.shape[-1] * math.log(2)) if image else 1.0  # nats -> reporting unit
    name = "bits/dim" if image else "nats"
    features = train.shape[-1]
    state = state or TrainState()
    state.stopped = ""

    # the global batch, a multiple of the number of processes, no larger than the data
    batch = min(config.batch_size, len(train)) // world * world
    if batch < world:
        raise ValueError(f"{len(train)} training examples cannot feed {world} processes")
    steps = len(train) // batch

    model = NLL(flow)
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    state.lr = state.lr or config.lr  # the current learning rate, decayed on plateaus
    optimizer = torch.optim.Adam(flow.parameters(), lr=state.lr)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
        for group in optimizer.param_groups:
            group["lr"] = state.lr

    best = copy.deepcopy(flow.state_dict())
    start = time.perf_counter()
    elapsed = lambda: time.perf_counter() - start
    bad = 0
    todo = (config.epochs - state.epoch) * steps

    with _progress(todo, progress and rank == 0) as bar:
        while state.epoch < config.epochs and not state.stopped:
            epoch_start, total, count = time.perf_counter(), 0.0, 0
            order = torch.randperm(
                len(train), generator=_generator(config.seed, _STEP_SEED, state.epoch)
            )
            noise = _generator(config.seed, _NOISE_SEED, state.epoch)
            flow.train()

            for k in range(steps):
                x = train[order[k * batch : (k + 1) * batch]]
                if image:
                    x = x + torch.rand(x.shape, generator=noise, dtype=x.dtype)
                x = x[rank::world].to(device)
                y, ladj = preprocess.transform(x) if image else preprocess(x)

                loss = (model(y) - ladj).mean()  # nats per example
                optimizer.zero_grad(set_to_none=True)
                (loss / features).backward()  # the clip is per dimension, whatever D
                norm = nn.utils.clip_grad_norm_(flow.parameters(), config.clip or math.inf)

                if torch.isfinite(norm):
                    optimizer.step()
                    total, count, bad = total + loss.item(), count + 1, 0
                else:  # identical on every rank: the gradients are synchronised
                    state.skipped, bad = state.skipped + 1, bad + 1

                out_of_time = False
                if config.time_limit is not None:  # rank 0's clock decides
                    (late,) = _broadcast([float(elapsed() > config.time_limit)], device)
                    out_of_time = late > 0
                if bar is not None and hasattr(bar, "update"):
                    bar.update()
                    if count and k % 5 == 0:
                        bar.set_postfix_str(
                            f"epoch {state.epoch + 1}, loss {total / count * unit:.4g} {name}"
                        )
                if bad >= 100 or out_of_time:
                    state.stopped = "diverged" if bad >= 100 else "time limit"
                    break

            # epoch (or partial epoch) done: synchronise the train loss, validate on rank 0
            mean = total / max(count, 1)
            if world > 1:
                t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
                dist.all_reduce(t)
                mean = (t[0] / t[1].clamp_min(1)).item()

            val_loss = math.nan
            if rank == 0:
                flow.eval()
                log_prob = lambda y: flow().log_prob(y)
                val_loss, _ = evaluate_nll(
                    log_prob,
                    val,
                    preprocess,
                    draws=1,
                    generator=_generator(config.seed, _VAL_SEED),
                )
            (val_loss,) = _broadcast([val_loss], device)

            state.epoch += 1
            state.train_time += time.perf_counter() - epoch_start
            state.history["train"].append(mean * unit if count else math.nan)
            state.history["val"].append(val_loss)
            state.history["time"].append(time.perf_counter() - epoch_start)

            if val_loss < state.best_val:
                state.best_val, state.best_epoch, state.stale = val_loss, state.epoch, 0
                best = copy.deepcopy(flow.state_dict())
                if save is not None and rank == 0:
                    save("best", state, optimizer)
            else:
                state.stale += 1
                if config.decay is not None and state.stale % config.decay == 0:
                    state.lr /= 2
                    for group in optimizer.param_groups:
                        group["lr"] = state.lr

            if not state.stopped:
                if config.patience is not None and state.stale >= config.patience:
                    state.stopped = "early stopping"
                elif state.epoch >= config.epochs:
                    state.stopped = "epochs"
            if save is not None and rank == 0:
                save("last", state, optimizer)
            if bar is not None and hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(
                    f"epoch {state.epoch}, loss {mean * unit:.4g}, val {val_loss:.4g} {name}"
                )

    flow.eval()
    return state, best
