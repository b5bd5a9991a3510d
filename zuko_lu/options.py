r"""The options that zuko-lu's constructors accept, and the checks of their arguments.

Every string option has a named constant, and each set of choices a tuple of them, so
that the faces, the parameters and the error messages spell them once. This module
depends on nothing but the standard library.
"""

from __future__ import annotations

__all__ = [
    "CONDITIONINGS",
    "DIAG",
    "DIAGONALS",
    "EXP",
    "FULL",
    "IDENTITY",
    "INITS",
    "ORTHOGONAL",
    "SOFTPLUS",
    "check_alpha",
    "check_choice",
    "check_context",
    "check_features",
    "check_options",
    "check_scale",
]

import math

from collections.abc import Iterable, Mapping
from typing import Any

import torch

#: U's diagonal as :math:`\sigma_i e^{r_i}`.
EXP = "exp"
#: U's diagonal as :math:`\sigma_i (\operatorname{softplus}(r_i) + 10^{-3})`.
SOFTPLUS = "softplus"
#: The parameterisations of U's diagonal.
DIAGONALS = (EXP, SOFTPLUS)

#: An LU block that starts as the identity.
IDENTITY = "identity"
#: An LU block that starts as the PLU factors of a random orthogonal matrix.
ORTHOGONAL = "orthogonal"
#: The initialisations of an LU block.
INITS = (IDENTITY, ORTHOGONAL)

#: A context sets U's diagonal (as a scale of the output) and the bias.
DIAG = "diag"
#: A context sets every entry of L, U and the bias.
FULL = "full"
#: The conditioning modes of a conditional LU block.
CONDITIONINGS = (DIAG, FULL)


def check_features(features: int, name: str = "features") -> int:
    r"""Returns `features` if it is an integer :math:`\geq 1`; raises a
    :class:`ValueError` naming the argument otherwise.

    Example:
        >>> check_features(3)
        3
    """

    if isinstance(features, torch.Tensor):
        raise TypeError(
            f"{name}: expected an integer >= 1, got a tensor of shape {tuple(features.shape)}. "
            "sbi calls a density_estimator as builder(batch_theta, batch_x): pass "
            "zuko_lu.sbi.posterior_nn('lunsf') (or likelihood_nn) rather than a flow class"
        )
    if isinstance(features, bool) or not isinstance(features, int) or features < 1:
        raise ValueError(f"{name}: expected an integer >= 1, got {features!r}")
    return features


def check_context(context: int, name: str = "context") -> int:
    r"""Returns `context` if it is an integer :math:`\geq 0`; raises a
    :class:`ValueError` naming the argument otherwise.

    Example:
        >>> check_context(0)
        0
    """

    if isinstance(context, bool) or not isinstance(context, int) or context < 0:
        raise ValueError(f"{name}: expected an integer >= 0, got {context!r}")
    return context


def check_alpha(alpha: float) -> float:
    r"""Returns a slope :math:`\alpha \in (0, 1)` as a float; raises a
    :class:`ValueError` otherwise.

    Example:
        >>> check_alpha(0.1)
        0.1
    """

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number in the open interval (0, 1), got {alpha!r}")
    return float(alpha)


def check_scale(scale: float, name: str = "init_scale") -> float:
    r"""Returns a positive, finite scale as a float; raises a :class:`ValueError`
    naming the argument otherwise.

    Example:
        >>> check_scale(0.1)
        0.1
    """

    ok = isinstance(scale, (int, float)) and not isinstance(scale, bool)
    if not ok or not 0 < scale < math.inf:
        raise ValueError(f"{name}: expected a positive finite number, got {scale!r}")
    return float(scale)


def check_choice(value: str, choices: tuple[str, ...], name: str) -> str:
    r"""Returns `value` if it is one of `choices`; raises a :class:`ValueError` naming
    the argument and the choices otherwise.

    Example:
        >>> check_choice("full", CONDITIONINGS, "conditioning")
        'full'
    """

    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_options(options: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    r"""Raises a :class:`TypeError` naming the options that are not `known`.

    Example:
        >>> check_options({"bogus": 1}, ["alpha"], "LUNet")
        Traceback (most recent call last):
          ...
        TypeError: LUNet got unexpected options: bogus (known: alpha)
    """

    unknown = sorted(set(options) - set(known))
    if unknown:
        listing = ", ".join(sorted(known)) or "none"
        raise TypeError(f"{where} got unexpected options: {', '.join(unknown)} (known: {listing})")
