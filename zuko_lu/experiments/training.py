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
    "DivergedError",
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

from .config import TrainConfig
from .metrics import evaluate_nll
from .preprocess import ImagePreprocess, TabularPreprocess

_STEP_SEED, _NOISE_SEED, _VAL_SEED = 0x5EED, 0x0153, 0x7A1


class DivergedError(RuntimeError):
    r"""Raised when training stopped on a non-finite loss: the message says what happened
    and what to try."""


@dataclass
class TrainState:
    r"""Creates the state of a training run: what :func:`fit` needs to resume it.

    Losses are in the reporting unit: bits/dim in pixel space for images, nats per
    example in the original units for tables. :py:`stopped` says why training stopped:
    :py:`"epochs"`, :py:`"early stopping"`, :py:`"time limit"`, :py:`"diverged"` (a
    non-finite training loss or gradient) or :py:`"non-finite validation"`.
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
        default_factory=lambda: {"train": [], "val": [], "epoch_seconds": []}
    )

    def __post_init__(self) -> None:
        if "time" in self.history:  # written by zuko-lu 0.1
            self.history["epoch_seconds"] = self.history.pop("time")

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

    def forward(self, y: Tensor, c: Tensor | None = None) -> Tensor:
        return -self.flow(c).log_prob(y)


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


def _progress(total: int, *, enabled: bool) -> Any:
    if enabled:
        try:
            from tqdm.auto import tqdm

            return tqdm(total=total, unit="step", dynamic_ncols=True, file=sys.stderr)
        except ImportError:
            pass
    return contextlib.nullcontext()


class _Trainer:
    r"""The state of one :func:`fit` call: the data, the model, the optimizer and the
    bookkeeping of epochs (each method does one step of an epoch)."""

    def __init__(
        self,
        flow: nn.Module,
        preprocess: ImagePreprocess | TabularPreprocess,
        train: Tensor,
        val: Tensor,
        *,
        config: TrainConfig,
        state: TrainState | None,
        optimizer_state: dict | None,
        contexts: tuple[Tensor, Tensor] | None,
    ) -> None:
        self.flow, self.preprocess, self.train, self.val = flow, preprocess, train, val
        self.contexts = contexts
        self.config, self.state = config, state or TrainState()
        self.state.stopped = ""
        self.rank, self.world = _world()
        self.device = next(flow.parameters()).device
        self.image = isinstance(preprocess, ImagePreprocess)
        self.unit = 1 / (train.shape[-1] * math.log(2)) if self.image else 1.0  # from nats
        self.name = "bits/dim" if self.image else "nats"

        # the global batch, a multiple of the number of processes, no larger than the data
        self.batch = min(config.batch_size, len(train)) // self.world * self.world
        if self.batch < self.world:
            raise ValueError(f"{len(train)} training examples cannot feed {self.world} processes")
        self.steps = len(train) // self.batch
        self.todo = (config.epochs - self.state.epoch) * self.steps

        self.model = NLL(flow)
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer = self._optimizer(optimizer_state)
        self.best = copy.deepcopy(flow.state_dict())
        self.start = time.perf_counter()

    def _optimizer(self, saved: dict | None) -> torch.optim.Optimizer:
        self.state.lr = self.state.lr or self.config.lr  # the current rate, decayed on plateaus
        optimizer = torch.optim.Adam(self.flow.parameters(), lr=self.state.lr)
        if saved is not None:
            optimizer.load_state_dict(saved)
        self._set_lr(optimizer, self.state.lr)
        return optimizer

    @staticmethod
    def _set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = lr

    def train_epoch(self, bar: Any) -> tuple[float, int]:
        r"""Trains one epoch (or until a stop); returns the mean loss and the steps."""

        seed, epoch = self.config.seed, self.state.epoch
        order = torch.randperm(len(self.train), generator=_generator(seed, _STEP_SEED, epoch))
        noise = _generator(seed, _NOISE_SEED, epoch)
        self.flow.train()
        total, count = 0.0, 0
        for k in range(self.steps):
            loss = self._step(order[k * self.batch : (k + 1) * self.batch], noise)
            if loss is None:  # identical on every rank: the gradients are synchronised
                self.state.stopped = "diverged"
                break
            total, count = total + loss, count + 1
            self._tick(bar, total / count, k)
            if self._out_of_time():
                self.state.stopped = "time limit"
                break
        return self._mean(total, count), count

    def _step(self, index: Tensor, noise: torch.Generator) -> float | None:
        r"""One optimizer step; :py:`None` (and no step) if the gradient is not finite."""

        x = self.train[index]
        if self.image:
            x = x + torch.rand(x.shape, generator=noise, dtype=x.dtype)
        x = x[self.rank :: self.world].to(self.device)
        y, ladj = self.preprocess.transform(x) if self.image else self.preprocess(x)
        c = None
        if self.contexts is not None:
            c = self.contexts[0][index][self.rank :: self.world].to(self.device)

        loss = (self.model(y, c) - ladj).mean()  # nats per example
        self.optimizer.zero_grad(set_to_none=True)
        (loss / self.train.shape[-1]).backward()  # the clip is per dimension, whatever D
        clip = self.config.clip or math.inf
        norm = nn.utils.clip_grad_norm_(self.flow.parameters(), clip)
        if not torch.isfinite(norm):
            self.state.skipped += 1
            return None
        self.optimizer.step()
        return loss.item()

    def _tick(self, bar: Any, mean: float, k: int) -> None:
        if hasattr(bar, "update"):
            bar.update()
            if k % 5 == 0:
                epoch = self.state.epoch + 1
                bar.set_postfix_str(f"epoch {epoch}, loss {mean * self.unit:.4g} {self.name}")

    def _out_of_time(self) -> bool:
        if self.config.time_limit is None:
            return False
        late = time.perf_counter() - self.start > self.config.time_limit
        (late,) = _broadcast([float(late)], self.device)  # rank 0's clock decides
        return late > 0

    def _mean(self, total: float, count: int) -> float:
        if self.world > 1:
            t = torch.tensor([total, float(count)], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            total, count = t[0].item(), int(t[1].item())
        return total / count * self.unit if count else math.nan

    def validate(self) -> float:
        r"""Returns the validation loss (rank 0's, on every rank); NaN after divergence."""

        val_loss = math.nan
        if self.rank == 0 and self.state.stopped != "diverged":
            self.flow.eval()
            generator = _generator(self.config.seed, _VAL_SEED)
            log_prob = lambda y, c=None: self.flow(c).log_prob(y)
            context = None if self.contexts is None else self.contexts[1]
            val_loss, _ = evaluate_nll(
                log_prob, self.val, self.preprocess, 1, generator, context=context
            )
        (val_loss,) = _broadcast([val_loss], self.device)
        return val_loss

    def record(self, train: float, val: float, *, seconds: float, save: Callable | None) -> str:
        r"""Ends an epoch: history, best parameters, decay, stopping and checkpoints;
        returns the epoch's line."""

        state, config = self.state, self.config
        state.epoch += 1
        state.train_time += seconds
        for key, value in (("train", train), ("val", val), ("epoch_seconds", seconds)):
            state.history[key].append(value)

        if not state.stopped and not math.isfinite(val):
            state.stopped = "non-finite validation"
        if val < state.best_val:
            state.best_val, state.best_epoch, state.stale = val, state.epoch, 0
            self.best = copy.deepcopy(self.flow.state_dict())
            if save is not None and self.rank == 0:
                save("best", state, self.optimizer)
        elif not state.stopped:
            state.stale += 1
            if config.decay is not None and state.stale % config.decay == 0:
                state.lr /= 2
                self._set_lr(self.optimizer, state.lr)

        if not state.stopped:
            if config.patience is not None and state.stale >= config.patience:
                state.stopped = "early stopping"
            elif state.epoch >= config.epochs:
                state.stopped = "epochs"
        if save is not None and self.rank == 0:
            save("last", state, self.optimizer)
        return (
            f"epoch {state.epoch}/{config.epochs}: train {train:.4g}, val {val:.4g} "
            f"{self.name}, {seconds:.2f} s"
        )


def fit(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    train: Tensor,
    val: Tensor,
    config: TrainConfig,
    *,
    state: TrainState | None = None,
    optimizer_state: dict | None = None,
    save: Callable[[str, TrainState, torch.optim.Optimizer], None] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    contexts: tuple[Tensor, Tensor] | None = None,
) -> tuple[TrainState, dict[str, Tensor]]:
    r"""Trains a flow by maximum likelihood behind a fitted preprocessing.

    After each epoch the validation loss (one dequantisation draw with a fixed seed) is
    computed; :py:`save("best", ...)` is called when it improves and
    :py:`save("last", ...)` after every epoch, on rank 0 only. Training stops after
    :py:`config.epochs` epochs, :py:`config.patience` epochs without improvement, after
    :py:`config.time_limit` seconds (mid-epoch: the partial epoch is validated), at the
    first step whose gradient is not finite (not taken: :py:`state.stopped` is
    :py:`"diverged"`), or after a non-finite validation loss.
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
        log: Where each epoch's line (losses and seconds) goes, on rank 0.
        contexts: The contexts of the training and validation examples, for a
            conditional flow :math:`p(x \mid c)` (e.g. one-hot class labels).

    Returns:
        The final state and the best parameters (a state dict of the flow).

    Example:
        >>> from zuko_lu.flows import LUNet
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(256, 2) * 3 + 1
        >>> pre = TabularPreprocess().fit(x)
        >>> config = TrainConfig(epochs=2, batch_size=32)
        >>> state, best = fit(LUNet(2), pre, x, x[:64], config, progress=False)
        >>> state.epoch, state.stopped, len(state.history["epoch_seconds"])
        (2, 'epochs', 2)
    """

    trainer = _Trainer(
        flow,
        preprocess,
        train,
        val,
        config=config,
        state=state,
        optimizer_state=optimizer_state,
        contexts=contexts,
    )
    with _progress(trainer.todo, enabled=progress and trainer.rank == 0) as bar:
        while trainer.state.epoch < config.epochs and not trainer.state.stopped:
            start = time.perf_counter()
            mean, _ = trainer.train_epoch(bar)
            val_loss = trainer.validate()
            line = trainer.record(mean, val_loss, seconds=time.perf_counter() - start, save=save)
            if hasattr(bar, "set_postfix_str"):
                bar.set_postfix_str(line.split(": ", 1)[1])
            if log is not None and trainer.rank == 0:
                (bar.write if hasattr(bar, "write") else log)(line)

    flow.eval()
    return trainer.state, trainer.best
