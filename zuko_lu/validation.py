r"""Distribution argument validation across zuko's import.

Importing zuko runs :py:`torch.distributions.Distribution._validate_args = False`
(and :py:`Distribution.arg_constraints = {}`) in :mod:`zuko.distributions`: torch's
default argument validation, which :func:`pyro.enable_validation` sets, is turned off
for every distribution of the process, silently. zuko-lu imports zuko in one way only,
with :func:`import_zuko`, which puts the default back to what it was just before; the
zuko face (:mod:`zuko_lu.flows`, :mod:`zuko_lu.hybrids`) calls it first thing, and the
package's lazy names (:py:`zuko_lu.LUNet`, ...) are loaded under
:func:`kept_validation`. So after :py:`import zuko_lu`, any use of the zuko face, or
:func:`zuko_lu.convert.from_zuko`, the validation default is the one the user set.

What is not put back: :py:`Distribution.arg_constraints = {}` (zuko's distributions
declare no constraints and rely on it; it only silences torch's warning for a
distribution class that declares none), and a default changed by a zuko import that
happened before zuko-lu's (the user's own :py:`import zuko`, zuko's documented effect).

This module depends on :mod:`torch` alone; it imports zuko only when called.
"""

from __future__ import annotations

__all__ = [
    "import_zuko",
    "kept_validation",
]

# `from zuko_lu.validation import zuko` is `import_zuko()` as an import statement, which
# the zuko face puts before its own zuko imports (PEP 562)

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from torch.distributions import Distribution


@contextmanager
def kept_validation() -> Iterator[None]:
    r"""Returns a context in which torch's default distribution argument validation
    (:py:`Distribution._validate_args`, which :func:`pyro.enable_validation` sets) may
    change, and after which it is what it was before.

    Example:
        >>> before = Distribution._validate_args
        >>> with kept_validation():
        ...     Distribution.set_default_validate_args(not before)
        >>> Distribution._validate_args == before
        True
    """

    before = Distribution._validate_args
    try:
        yield
    finally:
        Distribution.set_default_validate_args(before)


def import_zuko() -> ModuleType:
    r"""Imports zuko (all of it, as :py:`import zuko` does) with the default argument
    validation kept (see :func:`kept_validation`), and returns it.

    Example:
        >>> zuko = import_zuko()
        >>> zuko.flows.MAF.__name__
        'MAF'
    """

    with kept_validation():
        import zuko
        import zuko.distributions
        import zuko.flows

    return zuko


def __getattr__(name: str) -> Any:
    if name == "zuko":
        return import_zuko()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
