r"""A registry of transformations and flows, read from installed entry points.

Neither zuko nor Pyro reads entry points: this module is the reading side. Any installed
distribution can add names to a group by declaring entry points, for instance in its
``pyproject.toml``,

.. code-block:: toml

    [project.entry-points."zuko.transforms"]
    my_layer = "my_package.layers:MyLazyTransform"

and the name is then listed by :func:`names` and loaded by :func:`load` (and usable in
:func:`zuko_lu.compose`), with no change to zuko-lu. The groups zuko-lu reads and writes
are

* ``zuko.transforms``: lazy transformations, called as
  :py:`cls(features, context=context, **kwargs)` (``context`` only when the constructor
  has a ``context`` parameter);
* ``zuko.flows``: flow builders, called as :py:`cls(features, context, **kwargs)`;
* ``pyro.transforms``: Pyro helper constructors.

Nothing is cached: every call reads the installed distributions' metadata afresh, so a
distribution installed (or put on :py:`sys.path`) meanwhile is seen at once. This module
imports neither zuko nor Pyro; loading a name imports only the module that defines it.
"""

from __future__ import annotations

__all__ = [
    "GROUPS",
    "load",
    "names",
]

import importlib.metadata as metadata
import re

from typing import Any

GROUPS = ("zuko.transforms", "zuko.flows", "pyro.transforms")


def _distribution(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return "<unknown distribution>" if dist is None else dist.name


def _entries(group: str) -> dict[str, list[metadata.EntryPoint]]:
    r"""Returns the entry points of a group by name, each value registered once."""

    if not isinstance(group, str):
        raise TypeError(f"group: expected a string, got {group!r}")

    entries = {}
    for ep in metadata.entry_points(group=group):
        found = entries.setdefault(ep.name, [])
        if all(other.value != ep.value for other in found):
            found.append(ep)

    return entries


def names(group: str) -> list[str]:
    r"""Returns the names registered in an entry-point group, by every installed
    distribution, sorted and each listed once (even when several distributions register
    it: :func:`load` reports such a conflict).

    Arguments:
        group: An entry-point group, e.g. ``"zuko.transforms"`` (see :data:`GROUPS`).
            A group that no distribution uses is empty.

    Returns:
        The sorted list of names.

    Example:
        >>> {"lu", "leaky_softplus", "maf", "nsf"} <= set(names("zuko.transforms"))
        True
        >>> {"lunet", "lumaf", "lunsf", "lurealnvp"} <= set(names("zuko.flows"))
        True
        >>> names("no.such.group")
        []
    """

    return sorted(_entries(group))


def load(group: str, name: str, distribution: str | None = None) -> Any:  # noqa: ANN401
    r"""Loads the object that an entry point registers under a name.

    Arguments:
        group: An entry-point group, e.g. ``"zuko.transforms"`` (see :data:`GROUPS`).
        name: A name in that group (see :func:`names`).
        distribution: The distribution whose entry point to load, e.g. ``"zuko-lu"``.
            Needed only when several distributions register `name` differently.

    Returns:
        The registered object, typically a class or a function.

    Raises:
        LookupError: If no installed distribution registers `name` in `group` (the
            message lists the known names), or if several do with different targets
            and `distribution` does not choose one (the message names them all).
        ImportError: If the entry point fails to load (the message names the
            distribution that registered it and the target; the cause is chained).

    Example:
        >>> LULinear = load("zuko.transforms", "lu")
        >>> LULinear.__name__
        'LULinear'
        >>> _ = torch.manual_seed(0)
        >>> t = LULinear(3, context=0)
        >>> t()(torch.ones(3)).tolist()  # the identity at initialisation
        [1.0, 1.0, 1.0]
    """

    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {name!r}")

    entries = _entries(group)
    found = entries.get(name, [])

    if distribution is not None:
        found = [ep for ep in found if _same(_distribution(ep), distribution)]

    if not found:
        known = ", ".join(map(repr, sorted(entries))) or "none"
        where = "" if distribution is None else f" by distribution {distribution!r}"
        raise LookupError(
            f"no entry point named {name!r} in group {group!r}{where}; known names: {known}"
        )

    if len(found) > 1:
        listing = "; ".join(sorted(f"{_distribution(ep)!r} ({ep.value})" for ep in found))
        raise LookupError(
            f"the name {name!r} in group {group!r} is registered by several "
            f"distributions: {listing}. Pass distribution=... to choose one, or "
            f"uninstall one of them"
        )

    ep = found[0]

    try:
        return ep.load()
    except Exception as error:
        raise ImportError(
            f"the entry point {name!r} of group {group!r}, registered by distribution "
            f"{_distribution(ep)!r} as {ep.value!r}, failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error


def _same(a: str, b: str) -> bool:
    r"""Whether two distribution names are equal after PEP 503 normalisation."""

    return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()
