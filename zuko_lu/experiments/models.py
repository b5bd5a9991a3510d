r"""The flows that the command line builds by name: LU-Net, zuko's baselines, the LU
hybrids and any flow builder registered under the ``zuko.flows`` entry-point group.

A model is described by plain data, :py:`{"name": ..., "features": ..., "kwargs": {...}}`,
so that a checkpoint can rebuild it (see :mod:`zuko_lu.experiments.checkpoint`).
"""

from __future__ import annotations

__all__ = [
    "accepts",
    "available",
    "build",
    "count_parameters",
    "defaults",
    "match_hidden",
    "nsf_bound",
]

import importlib
import importlib.util
import inspect
import math

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

# zuko builders whose MLPs take `hidden_features`; their defaults are zuko's
_BASELINES = ("realnvp", "maf", "nsf")
_HYBRIDS = {"lumaf": "LUMAF", "lunsf": "LUNSF", "lurealnvp": "LURealNVP"}


def _lunet(features: int, context: int = 0, **kwargs) -> nn.Module:
    from ..flows import LUNet

    if "hidden_features" in kwargs and context == 0:
        raise ValueError("model 'lunet' has no hidden layers: drop --hidden")
    return LUNet(features, context, **kwargs)


def _realnvp(features: int, context: int = 0, **kwargs) -> nn.Module:
    from zuko.flows import RealNVP

    return RealNVP(features, context, **kwargs)


def _maf(features: int, context: int = 0, **kwargs) -> nn.Module:
    from zuko.flows import MAF

    return MAF(features, context, **kwargs)


def _nsf(
    features: int,
    context: int = 0,
    bins: int = 8,
    bound: float = 5.0,
    slope: float = 1e-3,
    **kwargs,
) -> nn.Module:
    r"""zuko's NSF (a MAF of monotonic rational-quadratic splines) with a settable
    :py:`bound`: the splines are the identity outside :math:`[-B, B]`."""

    from zuko.flows import MAF
    from zuko.transforms import MonotonicRQSTransform

    spline = partial(MonotonicRQSTransform, bound=float(bound), slope=slope)
    shapes = [(bins,), (bins,), (bins - 1,)]
    return MAF(features, context, univariate=spline, shapes=shapes, **kwargs)


def _lunsf(
    features: int,
    context: int = 0,
    bins: int = 8,
    bound: float = 5.0,
    slope: float = 1e-3,
    lu: dict[str, Any] | None = None,
    **kwargs,
) -> nn.Module:
    r""":class:`zuko_lu.LUNSF` with a settable spline :py:`bound` (the same modules, so
    the same state dict)."""

    from ..hybrids import interleave

    flow = _nsf(features, context, bins=bins, bound=bound, slope=slope, **kwargs)
    return interleave(flow, features, context, inplace=True, **(lu or {}))


_BUILTIN: dict[str, Callable[..., nn.Module]] = {
    "lunet": _lunet,
    "realnvp": _realnvp,
    "maf": _maf,
    "nsf": _nsf,
}


def _hybrids() -> dict[str, Callable[..., nn.Module]]:
    if importlib.util.find_spec("zuko_lu.hybrids") is None:
        return {}
    module = importlib.import_module("zuko_lu.hybrids")
    return {k: getattr(module, v) for k, v in _HYBRIDS.items() if hasattr(module, v)}


def _registered() -> list[str]:
    try:
        from ..registry import names

        return names("zuko.flows")
    except Exception:  # a broken third-party entry point must not break the CLI
        return []


def available() -> list[str]:
    r"""Returns the names of the models that :func:`build` knows.

    Example:
        >>> {"lunet", "realnvp", "maf", "nsf"} <= set(available())
        True
    """

    return sorted({*_BUILTIN, *_hybrids(), *_registered()})


def _builder(name: str) -> Callable[..., nn.Module]:
    if name in _BUILTIN:
        return _BUILTIN[name]
    hybrids = _hybrids()
    if name == "lunsf" and "lunsf" in hybrids:
        return _lunsf
    if name in hybrids:
        return hybrids[name]
    if name in _registered():
        from ..registry import load

        return load("zuko.flows", name)
    raise ValueError(f"unknown model '{name}', known: {', '.join(available())}")


def accepts(name: str, option: str) -> bool:
    r"""Returns whether the builder of a model takes an option explicitly, or forwards
    it to zuko's MLPs (:py:`hidden_features`, :py:`transforms` for zuko flows)."""

    params = inspect.signature(_builder(name)).parameters
    if option in params:
        return True
    forwards = any(p.kind is p.VAR_KEYWORD for p in params.values())
    return forwards and option in ("hidden_features", "transforms") and name != "lunet"


def build(name: str, features: int, **kwargs) -> nn.Module:
    r"""Builds a flow by name.

    Arguments:
        name: One of :func:`available`.
        features: The number of features :math:`D`.
        kwargs: The builder's keyword arguments (e.g. :py:`transforms`,
            :py:`hidden_features`; :py:`bound` and :py:`bins` for :py:`nsf`).

    Returns:
        The flow, a :class:`zuko.lazy.Flow` (or any lazy distribution module).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = build("maf", 2, transforms=1, hidden_features=[8])
        >>> flow().log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    builder = _builder(name)
    try:
        return builder(features, **kwargs)
    except TypeError as e:
        options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no options"
        raise ValueError(f"model '{name}' cannot be built with {options}: {e}") from e


def count_parameters(module: nn.Module) -> int:
    r"""Returns the number of trainable parameters of a module (dense storage counted
    as stored, masked entries included, as the literature counts them)."""

    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def match_hidden(
    name: str,
    features: int,
    target: int,
    depth: int = 2,
    minimum: int = 16,
    **kwargs,
) -> tuple[int, int]:
    r"""Returns the hidden width :math:`h` (in :py:`hidden_features = [h] * depth`) whose
    parameter count is closest to a target, and that count.

    For MLP-based flows the count is a quadratic in :math:`h`; it is fitted exactly from
    three builds and checked by a fourth. Widths below `minimum` are not considered: when
    even the minimum exceeds the target (2-D data), the minimum is returned.

    Arguments:
        name: A model that takes :py:`hidden_features`.
        features: The number of features :math:`D`.
        target: The parameter count to match.
        depth: The number of hidden layers.
        minimum: The smallest width considered.
        kwargs: The builder's other keyword arguments.

    Example:
        >>> match_hidden("realnvp", 8, 12_345, transforms=2)
        (72, 12400)
    """

    def count(h: int) -> int:
        with torch.random.fork_rng():  # leave the caller's seeded RNG untouched
            return count_parameters(build(name, features, hidden_features=[h] * depth, **kwargs))

    hs = (minimum, minimum + 8, minimum + 16)
    a, b, c = torch.linalg.solve(
        torch.tensor([[h * h, h, 1.0] for h in hs], dtype=torch.float64),
        torch.tensor([float(count(h)) for h in hs], dtype=torch.float64),
    ).tolist()

    if a > 1e-9:
        h = (-b + math.sqrt(max(b * b - 4 * a * (c - target), 0.0))) / (2 * a)
    else:
        h = (target - c) / b if b > 0 else minimum

    fit = lambda h: a * h * h + b * h + c
    h = max(minimum, min(round(h), 1 << 16))
    h = min((h - 1, h, h + 1), key=lambda h: (abs(fit(h) - target), h)) if h > minimum else h
    return h, count(h)


def nsf_bound(y: Tensor, margin: float = 1.1) -> float:
    r"""Returns a spline bound for inputs :math:`y`: :math:`\max(5, \lceil 1.1 \max |y|
    \rceil)`, zuko's default widened so that every training input lies inside the splines.

    Example:
        >>> nsf_bound(torch.tensor([0.5, -12.3]))
        14.0
    """

    return float(max(5, math.ceil(margin * y.abs().max().item())))


def defaults(name: str) -> dict[str, Any]:
    r"""Returns the keyword arguments that :func:`build` is given by default for a model
    (LU-Net's 3 + 1 blocks; zuko's own defaults otherwise)."""

    return {"transforms": 3} if name == "lunet" else {}
