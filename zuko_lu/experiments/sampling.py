r"""What a trained flow is used for besides its likelihood: samples in data units, with
a temperature, and the log-density of a tabular model in the data's own units."""

from __future__ import annotations

__all__ = [
    "draw",
    "log_prob_fn",
]

from collections.abc import Callable

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


def log_prob_fn(flow: nn.Module, pre: nn.Module) -> Callable[[Tensor], Tensor]:
    r"""The log-density of a tabular model in the original units."""

    device = pre.std.device

    @torch.no_grad()
    def log_prob(x: Tensor) -> Tensor:
        y, ladj = pre(x.to(device))
        return (flow().log_prob(y) + ladj).cpu()

    return log_prob
