r"""A registry of transformations and flows, read from installed entry points.

Neither zuko nor Pyro reads entry points: this module is the reading side. Any installed
distribution can add names to a group by declaring entry points, for instance in its
``pyproject.toml``,

.. code-block:: toml

    [project.entry-points."zuko.transforms"]
    my_layer = "my_package.layers:MyLazyTransform"

and the name is then listed by :func:`names` and loaded by :func:`load` (and usable in
:func:`zuko_lu.compose`), with no change to zuko-lu. zuko-lu's own entry points declare
only what zuko-lu defines; zuko's built-in flows and transformations, which zuko
registers nowhere, are known from one table of this module, :data:`BUILTINS`, used for a
name that no entry point declares (entry points take precedence). The groups are

* ``zuko.transforms``: lazy transformations, called as
  :py:`cls(features, context=context, **kwargs)` (``context`` only when the constructor
  has a ``context`` parameter);
* ``zuko.flows``: flow builders, called as :py:`cls(features, context=0, **kwargs)`,
  returning a :class:`zuko.lazy.Flow` (or any lazy distribution module);
* ``pyro.transforms``: Pyro helper constructors.

Nothing is cached: every call reads the installed distributions' metadata afresh, so a
distribution installed (or put on :py:`sys.path`) meanwhile is seen at once. This module
imports neither zuko nor Pyro; loading a name imports only the module that defines it.
"""

from __future__ import annotations

__all__ = [
    "BUILTINS",
    "GROUPS",
    "ZUKO",
    "load",
    "names",
]

import importlib
import importlib.metadata as metadata
import re

from typing import Any

#: The entry-point groups that zuko-lu reads and writes.
GROUPS = ("zuko.transforms", "zuko.flows", "pyro.transforms")

#: The source that :func:`names` reports for the names of :data:`BUILTINS`.
ZUKO = "zuko"

#: zuko's built-in flows and transformations, by group and name, as ``module:object``:
#: zuko's flow builders (``nsf`` with a settable spline ``bound``), and its
#: transformations under the constructors that :func:`zuko_lu.compose` calls.
BUILTINS = {
    "zuko.flows": {
        "maf": "zuko.flows:MAF",
        "nsf": "zuko_lu.hybrids:nsf_flow",
        "ncsf": "zuko.flows:NCSF",
        "nice": "zuko.flows:NICE",
        "realnvp": "zuko.flows:RealNVP",
        "naf": "zuko.flows:NAF",
        "unaf": "zuko.flows:UNAF",
        "sospf": "zuko.flows:SOSPF",
        "bpf": "zuko.flows:BPF",
        "gf": "zuko.flows:GF",
        "cnf": "zuko.flows:CNF",
    },
    "zuko.transforms": {
        "maf": "zuko_lu.hybrids:maf",
        "nsf": "zuko_lu.hybrids:nsf",
        "coupling": "zuko_lu.hybrids:coupling",
        "naf": "zuko_lu.hybrids:naf",
        "softclip": "zuko_lu.hybrids:softclip",
        "elementwise": "zuko.flows.gaussianization:ElementWiseTransform",
        "ffj": "zuko.flows.continuous:FFJTransform",
    },
}


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


def names(group: str, *, sources: bool = False) -> list[str] | dict[str, str]:
    r"""Returns the names of a group: those that installed distributions register as
    entry points and those of zuko's built-ins (:data:`BUILTINS`), sorted and each
    listed once (even when several distributions register it: :func:`load` reports
    such a conflict).

    Arguments:
        group: A group, e.g. ``"zuko.transforms"`` (see :data:`GROUPS`). A group that
            no distribution uses and :data:`BUILTINS` lacks is empty.
        sources: Whether to return, for each name, where it comes from: the name of the
            distribution that registers it (those of several, joined by ``", "``), or
            ``"zuko"`` (:data:`ZUKO`) for a name of :data:`BUILTINS` that no entry point
            declares.

    Returns:
        The sorted list of names, or with `sources` a dict from each name (sorted) to
        its source.

    Example:
        >>> {"lu", "leaky_softplus", "maf", "nsf"} <= set(names("zuko.transforms"))
        True
        >>> sources = names("zuko.flows", sources=True)
        >>> sources["lunet"], sources["maf"]
        ('zuko-lu', 'zuko')
        >>> names("no.such.group")
        []
    """

    entries = _entries(group)
    found = {name: ZUKO for name in BUILTINS.get(group, {})}
    for name, eps in entries.items():
        found[name] = ", ".join(sorted({_distribution(ep) for ep in eps}))

    if sources:
        return dict(sorted(found.items()))
    return sorted(found)


def load(group: str, name: str, distribution: str | None = None) -> Any:
    r"""Loads the object registered under a name: an entry point's, or else zuko's
    built-in of :data:`BUILTINS`.

    Arguments:
        group: A group, e.g. ``"zuko.transforms"`` (see :data:`GROUPS`).
        name: A name in that group (see :func:`names`).
        distribution: The distribution whose entry point to load, e.g. ``"zuko-lu"``,
            or ``"zuko"`` for the built-in. Needed only when several distributions
            register `name` differently.

    Returns:
        The registered object, typically a class or a function.

    Raises:
        LookupError: If neither an installed distribution nor :data:`BUILTINS` has
            `name` in `group` (the message lists the known names), or if several
            distributions do with different targets and `distribution` does not choose
            one (the message names them all).
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
    builtin = BUILTINS.get(group, {}).get(name)

    if distribution is not None:
        found = [ep for ep in found if _same(_distribution(ep), distribution)]
        if _same(distribution, ZUKO) and builtin is not None:
            return _builtin(group, name, builtin)

    if not found and builtin is not None and distribution is None:
        return _builtin(group, name, builtin)

    if not found:
        known = ", ".join(map(repr, names(group))) or "none"
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
        with _kept_validation():
            return ep.load()
    except Exception as error:
        raise ImportError(
            f"the entry point {name!r} of group {group!r}, registered by distribution "
            f"{_distribution(ep)!r} as {ep.value!r}, failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error


def _builtin(group: str, name: str, target: str) -> Any:
    module, _, attribute = target.partition(":")
    try:
        with _kept_validation():
            return getattr(importlib.import_module(module), attribute)
    except Exception as error:
        raise ImportError(
            f"the built-in {name!r} of group {group!r} ({target}) failed to load: "
            f"{type(error).__name__}: {error}"
        ) from error


def _kept_validation() -> Any:
    # loading a name may import zuko, which turns torch's argument validation off
    from .validation import kept_validation

    return kept_validation()


def _same(a: str, b: str) -> bool:
    r"""Whether two distribution names are equal after PEP 503 normalisation."""

    return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()
