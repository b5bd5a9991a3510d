r"""zuko's lazy transformations under short names, for :func:`zuko_lu.compose`.

These constructors put zuko's transformations in the ``zuko.transforms`` entry-point
group with the signature :py:`(features, context=0, index=0, **kwargs)` that
:func:`zuko_lu.compose` calls (see there for `index`).
"""

from __future__ import annotations

__all__ = [
    "coupling",
    "maf",
    "naf",
    "nsf",
    "softclip",
]

from functools import partial

import torch

from zuko.flows import GeneralCouplingTransform, MaskedAutoregressiveTransform
from zuko.flows.neural import MNN
from zuko.lazy import LazyTransform, UnconditionalTransform
from zuko.transforms import MonotonicRQSTransform, SoftclipTransform


def _masked(features: int, context: int, index: int, **kwargs) -> LazyTransform:
    if "order" not in kwargs and "adjacency" not in kwargs:
        kwargs["order"] = torch.arange(features).flip(0) if index % 2 else torch.arange(features)
    return MaskedAutoregressiveTransform(features, context, **kwargs)


def maf(features: int, context: int = 0, index: int = 0, **kwargs) -> LazyTransform:
    r"""Creates a masked autoregressive affine transformation (MAF's), its order
    ascending, or descending for an odd `index`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        index: The position among ordered layers (see :func:`compose`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.MaskedAutoregressiveTransform`.

    Example:
        >>> maf(3, index=1).order.tolist()
        [2, 1, 0]
    """

    return _masked(features, context, index, **kwargs)


def nsf(
    features: int, context: int = 0, index: int = 0, bins: int = 8, slope: float = 1e-3, **kwargs
) -> LazyTransform:
    r"""Creates a masked autoregressive rational-quadratic spline transformation (NSF's),
    the identity outside :math:`[-5, 5]`; its order alternates as in :func:`maf`.

    Arguments:
        bins: The number of bins :math:`K`.
        slope: The minimum slope of the splines.
        kwargs: The arguments of :func:`maf`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = nsf(2, bins=4)
        >>> t()(torch.tensor([6.0, -7.0]))
        tensor([ 6., -7.], grad_fn=<WhereBackward0>)
    """

    univariate = partial(MonotonicRQSTransform, slope=slope)
    shapes = [(bins,), (bins,), (bins - 1,)]
    return _masked(features, context, index, univariate=univariate, shapes=shapes, **kwargs)


def naf(
    features: int, context: int = 0, index: int = 0, signal: int = 16, **kwargs
) -> LazyTransform:
    r"""Creates a masked autoregressive monotonic-network transformation (NAF's); its
    order alternates as in :func:`maf`. zuko's NAF puts a :func:`softclip` between two.

    Arguments:
        signal: The number of signal features of the monotonic network.
        kwargs: The arguments of :func:`maf`; `network`, a dict, goes to ``MNN``.

    Example:
        >>> type(naf(3)).__name__
        'MaskedAutoregressiveTransform'
    """

    univariate = MNN(signal=signal, stack=features, **kwargs.pop("network", {}))
    shapes = [(signal,)]
    return _masked(features, context, index, univariate=univariate, shapes=shapes, **kwargs)


def coupling(features: int, context: int = 0, index: int = 0, **kwargs) -> LazyTransform:
    r"""Creates an affine coupling transformation (RealNVP's), its checkered mask
    flipped for an odd `index`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        index: The position among ordered layers (see :func:`compose`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.GeneralCouplingTransform`.

    Example:
        >>> coupling(4, index=1).mask.tolist()
        [False, True, False, True]
    """

    kwargs.setdefault("mask", torch.arange(features) % 2 == index % 2)
    return GeneralCouplingTransform(features, context, **kwargs)


def softclip(features: int, bound: float = 11.0) -> LazyTransform:
    r"""Creates an elementwise soft clip :math:`x / (1 + |x / B|)` onto :math:`(-B, B)`,
    which zuko's NAF and SOSPF put between their transformations.

    Arguments:
        features: The number of features (unused: the map is elementwise).
        bound: The bound :math:`B`.

    Example:
        >>> softclip(3, bound=1.0)()(torch.tensor([1.0, -3.0]))
        tensor([ 0.5000, -0.7500])
    """

    return UnconditionalTransform(SoftclipTransform, bound=bound)
