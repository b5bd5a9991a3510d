r"""What a trained flow is used for besides its likelihood: samples in data units, with
a temperature, and the log-density of a tabular model in the data's own units."""

from __future__ import annotations

__all__ = [
    "class_accuracy",
    "draw",
    "log_prob_fn",
]

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

from .preprocess import ImagePreprocess, TabularPreprocess


@torch.no_grad()
def draw(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    n: int,
    temperature: float = 1.0,
    context: Tensor | None = None,
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
        context: One context (e.g. a one-hot class label) for a conditional flow.
    """

    d = flow(context)
    z = d.base.sample((n,))
    if temperature != 1.0:
        mean = d.base.mean
        z = mean + temperature * (z - mean)
    y = d.transform.inv(z)
    if isinstance(preprocess, ImagePreprocess):
        return torch.where(torch.isfinite(y), preprocess.to_levels(y), torch.nan)
    return preprocess.inverse(y)


def log_prob_fn(flow: nn.Module, pre: nn.Module) -> Callable[[Tensor], Tensor]:
    r"""The log-density of a tabular model in the original units."""

    device = pre.std.device

    @torch.no_grad()
    def log_prob(x: Tensor) -> Tensor:
        y, ladj = pre(x.to(device))
        return (flow().log_prob(y) + ladj).cpu()

    return log_prob


def class_accuracy(
    flow: nn.Module,
    preprocess: ImagePreprocess | TabularPreprocess,
    data: Any,
    classes: int,
    *,
    n: int = 100,
    temperatures: Sequence[float] = (1.0,),
) -> dict[str, float]:
    r"""Returns the share of a class-conditional flow's samples that a classifier
    assigns to the class they were drawn for, at each temperature (keys :py:`"T1"`,
    :py:`"T0.7"`, ...), and the classifier's accuracy on the test data (key
    :py:`"test data"`, the ceiling). The classifier is a logistic regression fitted on
    the training data (needs scikit-learn); :math:`n` samples are drawn per class, with
    seed 0.

    Arguments:
        flow: A flow whose context is a one-hot class label.
        preprocess: The preprocessing the flow was trained behind.
        data: The dataset (:class:`zuko_lu.experiments.data.Data`, with labels).
        classes: The number of classes.
        n: The samples per class.
        temperatures: The sampling temperatures.
    """

    from sklearn.linear_model import LogisticRegression

    scale = data.train.abs().max().clamp(min=1).item()  # pixels in [0, 1]: a well-posed fit
    classifier = LogisticRegression(max_iter=500).fit(data.train.numpy() / scale, data.labels[0])
    predict = lambda x: classifier.predict(torch.nan_to_num(x).numpy() / scale)
    shares = {}
    eye = torch.eye(classes, device=preprocess.std.device)
    with torch.random.fork_rng():
        for t in temperatures:
            torch.manual_seed(0)
            right = sum(
                int((predict(draw(flow, preprocess, n, t, context=eye[k]).cpu()) == k).sum())
                for k in range(classes)
            )
            shares[f"T{t:g}"] = right / (n * classes)
    shares["test data"] = float((predict(data.test) == data.labels[2].numpy()).mean())
    return shares
