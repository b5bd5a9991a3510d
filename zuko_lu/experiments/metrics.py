r"""Likelihoods in the units of the original data.

Images are reported in bits per dimension in pixel space, the convention of the
literature (RealNVP 1.06, Glow 1.05, MAF 1.89 on MNIST): a uniform distribution over
the :math:`L` levels of every pixel gives exactly :math:`\log_2 L` bits/dim. Tables are
reported in nats per example, in the units of the original columns.
"""

from __future__ import annotations

__all__ = [
    "bits_per_dim",
    "evaluate_nll",
]

import math

from collections.abc import Callable
from itertools import repeat

import torch

from torch import Tensor

from .preprocess import ImagePreprocess, TabularPreprocess


def bits_per_dim(log_prob_y: Tensor, ladj: Tensor, D: int) -> Tensor:
    r"""Returns the bits per dimension of images in pixel space.

    With :math:`u \in [0, L)^D` the dequantised pixels in level units and :math:`y` the
    model space,

    .. math:: \text{bits/dim} = -\frac{\log p(y) + \log |\det \partial y / \partial u|}
        {D \ln 2} = -\frac{\log_2 p(u)}{D},

    an upper bound on :math:`-\log_2 P(x) / D` for the discrete pixels :math:`x`. It equals
    the common formula with pixels scaled to :math:`[0, 1]` plus :math:`\log_2 L`, so a
    uniform density on :math:`[0, L)^D` gives exactly :math:`\log_2 L` bits/dim.

    Arguments:
        log_prob_y: The model's log-density :math:`\log p(y)`, with shape :math:`(*,)`.
        ladj: The preprocessing's :math:`\log |\det \partial y / \partial u|`, :math:`(*,)`.
        D: The number of dimensions :math:`D`.

    Returns:
        The bits/dim, with shape :math:`(*,)`.

    Example:
        >>> D, L = 784, 256
        >>> bits_per_dim(torch.tensor(-D * math.log(L)), torch.tensor(0.0), D)
        tensor(8.)
    """

    return -(log_prob_y + ladj) / (D * math.log(2))


@torch.no_grad()
def evaluate_nll(
    log_prob_fn: Callable[..., Tensor],
    x: Tensor,
    preprocess: ImagePreprocess | TabularPreprocess,
    draws: int = 5,
    generator: torch.Generator | None = None,
    batch_size: int = 1024,
    context: Tensor | None = None,
) -> tuple[float, float]:
    r"""Returns the mean negative log-likelihood of a dataset and its spread across
    dequantisation draws: bits/dim for images (see :func:`bits_per_dim`), nats per example
    in the original units for tables.

    The mean is over draws of the mean over examples; the spread is the sample standard
    deviation of the per-draw means (:math:`0` for one draw, and for tables, which are not
    dequantised). Put the model in eval mode first.

    Arguments:
        log_prob_fn: Maps a batch of model-space values :math:`y`, :math:`(N, D)`, to their
            log-densities :math:`\log p(y)`, :math:`(N,)`.
        x: The data in original units (integer levels for images), :math:`(N, D)`.
        preprocess: The preprocessing the model was trained behind.
        draws: The number of dequantisation draws.
        generator: The random generator of the dequantisation noise.
        batch_size: The number of examples per call of :py:`log_prob_fn`.
        context: A context per example, :math:`(N, C)`: then :py:`log_prob_fn(y, c)`
            maps a batch and its contexts to :math:`\log p(y \mid c)`.

    Returns:
        The mean and the standard deviation across draws.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randint(0, 17, (100, 64)).float()
        >>> pre = ImagePreprocess(17).fit(x)
        >>> normal = torch.distributions.Normal(0.0, 1.0)
        >>> mean, std = evaluate_nll(lambda y: normal.log_prob(y).sum(-1), x, pre, draws=3)
        >>> round(mean, 1), std > 0
        (4.1, True)
    """

    device = preprocess.std.device
    image = isinstance(preprocess, ImagePreprocess)
    results = []

    for _ in range(draws):
        total = 0.0
        contexts = repeat(None) if context is None else context.to(device).split(batch_size)
        for batch, c in zip(x.split(batch_size), contexts, strict=False):
            y, ladj = preprocess(batch.to(device), generator=generator)
            lp = log_prob_fn(y) if c is None else log_prob_fn(y, c)
            nll = bits_per_dim(lp, ladj, x.shape[-1]) if image else -(lp + ladj)
            total += nll.double().sum().item()
        results.append(total / len(x))

    values = torch.tensor(results, dtype=torch.float64)
    std = values.std().item() if draws > 1 else 0.0
    return values.mean().item(), std
