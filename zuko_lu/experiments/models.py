r"""The flows that the command line builds by name: every flow builder of the
``zuko.flows`` registry (see :mod:`zuko_lu.registry`): LU-Net, the LU hybrids, zuko's
flows and any installed plugin's.

A model is described by plain data, :py:`{"name": ..., "features": ..., "kwargs": {...}}`,
so that a checkpoint can rebuild it (see :mod:`zuko_lu.experiments.checkpoint`). The
command line adds nothing of its own per model: a builder's defaults are its own, and an
option it does not take is refused by the builder.
"""

from __future__ import annotations

__all__ = [
    "accepts",
    "available",
    "build",
    "count_parameters",
    "match_hidden",
    "nsf_bound",
    "parse_model",
    "parse_value",
]

import ast
import math
import re

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor

from .. import registry


def available() -> list[str]:
    r"""Returns the names of the models that :func:`build` knows: those of the
    ``zuko.flows`` registry.

    Example:
        >>> {"lunet", "realnvp", "maf", "nsf", "lunsf"} <= set(available())
        True
    """

    return registry.names("zuko.flows")


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return registry.load("zuko.flows", name)
    except LookupError:
        raise ValueError(f"unknown model '{name}', known: {', '.join(available())}") from None


def build(name: str, features: int, **kwargs) -> nn.Module:
    r"""Builds a flow by name, as :py:`registry.load("zuko.flows", name)(features, **kwargs)`.

    Arguments:
        name: One of :func:`available`.
        features: The number of features :math:`D`.
        kwargs: The builder's keyword arguments (e.g. :py:`transforms`,
            :py:`hidden_features`; :py:`bound` for :py:`nsf` and :py:`lunsf`).

    Returns:
        The flow, a :class:`zuko.lazy.Flow` (or any lazy distribution module).

    Raises:
        ValueError: For an unknown model, or options that its builder refuses (the
            message names the model and the options).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = build("maf", 2, transforms=1, hidden_features=[8])
        >>> flow().log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    builder = _builder(name)
    try:
        return builder(features, **kwargs)
    except (TypeError, ValueError) as e:
        options = ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) or "no options"
        raise ValueError(f"model '{name}' cannot be built with {options}: {e}") from e


def accepts(name: str, option: str, value: Any) -> bool:
    r"""Returns whether a model's builder takes an option with a value, by building a
    small one (2 features) with it."""

    with torch.random.fork_rng():
        try:
            build(name, 2, **{option: value})
        except ValueError:
            return False
    return True


def parse_value(text: str) -> Any:
    r"""Returns an option's value from the command line: a Python literal (number, list,
    :py:`None`, :py:`True`, ...), else the text itself.

    Example:
        >>> parse_value("4"), parse_value("[32, 32]"), parse_value("permute")
        (4, [32, 32], 'permute')
    """

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_model(text: str) -> tuple[str, dict[str, Any]]:
    r"""Returns the name and options of a model written :py:`NAME` or
    :py:`NAME:KEY=VALUE,KEY=VALUE` (as ``zuko-lu compare --models`` takes them).

    Example:
        >>> parse_model("glow:mixing=permute,steps=4")
        ('glow', {'mixing': 'permute', 'steps': 4})
        >>> parse_model("maf:hidden_features=[32, 32],transforms=2")
        ('maf', {'hidden_features': [32, 32], 'transforms': 2})
    """

    name, _, rest = text.partition(":")
    options = {}
    for item in filter(None, re.split(r",(?=\s*\w+=)", rest)):  # keeps "[32, 32]" whole
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"model '{text}': expected NAME:KEY=VALUE,..., got {item!r}")
        options[key] = parse_value(value)
    return name, options


def count_parameters(module: nn.Module) -> int:
    r"""Returns the number of trainable parameters of a module (dense storage counted
    as stored, masked entries included, as the literature counts them)."""

    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def match_hidden(
    name: str,
    features: int,
    target: int,
    *,
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
