r"""zuko-lu: LU-Net normalizing flows for zuko and Pyro.

The maths core, :mod:`zuko_lu.transforms`, depends on torch alone. The zuko face
(:class:`LULinear`, :class:`LeakySoftplus`, :class:`LUNet` in :mod:`zuko_lu.flows`; the
hybrids and :func:`compose` in :mod:`zuko_lu.hybrids`) is loaded lazily on first
access, so that ``import zuko_lu`` does not import zuko: importing zuko turns off
torch's distribution argument validation, on which Pyro relies, and zuko-lu puts it
back after zuko's import (see :mod:`zuko_lu.validation`). The Pyro face is
:mod:`zuko_lu.pyro`, the conversions between the faces :mod:`zuko_lu.convert`.
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib

from typing import Any

# name -> submodule that defines it (loaded on first access, PEP 562)
_LAZY = {
    "LULinear": "flows",
    "LeakySoftplus": "flows",
    "LUNet": "flows",
    "LUMAF": "hybrids",
    "LUNSF": "hybrids",
    "LURealNVP": "hybrids",
    "interleave": "hybrids",
    "compose": "hybrids",
    "Glow": "glow",
    "builder": "hybrids",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from .validation import kept_validation  # zuko's import turns validation off

        with kept_validation():
            module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
