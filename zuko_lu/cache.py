r"""The version-keyed caches of both faces.

A cached value is reused only while the tensors it was computed from are unchanged: the
key of a module is where each of its parameters and buffers lives and how often it was
written (autograd's version counter), so that an optimizer step, :meth:`load_state_dict`,
:meth:`to` or an in-place edit all change it. An edit through ``.data`` is invisible to
the version counters: clear the cache after one.

* :class:`VersionCache` holds one value with its key: the eval-mode transformation of
  :class:`~zuko_lu.parameters.LUParameters` (its :math:`W` and :math:`W^{-1}`).
* :class:`CachedTransform` is the last :math:`(x, y)` pair of a transform module, as
  :class:`torch.distributions.Transform` caches it, but keyed on the module's tensors
  and the grad mode too (the Pyro face's transform modules).

This module depends on :mod:`torch` alone.
"""

from __future__ import annotations

__all__ = [
    "CachedTransform",
    "VersionCache",
    "eager",
    "version_key",
]

import functools

from collections.abc import Callable
from typing import Any

import torch
import torch.nn as nn

from torch import Tensor


def version_key(module: nn.Module, recurse: bool = True) -> tuple:
    r"""Returns the key of a module's parameters and buffers: the dtype of the first,
    then the storage address and version counter of each.

    Arguments:
        module: A module.
        recurse: Whether the tensors of submodules count; without, only the module's own
            are read (cheaper, for a call on every eval-mode step).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> key = version_key(m)
        >>> with torch.no_grad():
        ...     _ = m.weight.mul_(2)
        >>> version_key(m) == key
        False
    """

    if recurse:
        tensors = [*module.parameters(), *module.buffers()]
    else:
        tensors = [
            t for t in (*module._parameters.values(), *module._buffers.values()) if t is not None
        ]
    dtype = tensors[0].dtype if tensors else None
    return dtype, *((t.data_ptr(), t._version) for t in tensors)


class VersionCache:
    r"""Creates a cache of one value, kept with the key it was computed under. A copy or
    a pickle of it is empty: the value's tensors belong to the module that computed
    them (views of its parameters, made under :func:`torch.no_grad`, which
    :func:`copy.deepcopy` refuses once a parameter has changed in place), and a copied
    module's parameters have other addresses anyway.

    Example:
        >>> cache = VersionCache()
        >>> cache.get(1, lambda: "a"), cache.get(1, lambda: "b"), cache.get(2, lambda: "c")
        ('a', 'a', 'c')
    """

    __slots__ = ("key", "value")

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        r"""Drops the value."""

        self.key = self.value = None

    def __reduce__(self) -> tuple:
        return type(self), ()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        r"""Returns the value if it was computed under `key`, else :py:`make()`, kept."""

        if self.value is None or self.key != key:
            self.value = make()
            self.key = key
        return self.value


class CachedTransform:
    r"""A mixin of transform modules (a :class:`torch.distributions.Transform` and an
    :class:`torch.nn.Module`) that caches the last :math:`(x, y)` pair like
    :class:`~torch.distributions.Transform` does with ``cache_size=1``, but reuses it
    only while the module's tensors (see :func:`version_key`) and the grad mode are those
    it was computed under: keyed on :math:`x` alone, it would return a stale :math:`y`
    after an optimizer step on the same data, or one without a graph after
    :func:`torch.no_grad`. Copies and pickles leave the cache out.

    The class that mixes it in calls :meth:`clear_cache` at the end of its constructor.
    """

    def _state(self) -> tuple:
        # tracing in the key: a pair cached outside a trace would enter it as a constant
        return torch.is_grad_enabled(), torch.jit.is_tracing(), version_key(self)

    def clear_cache(self) -> None:
        r"""Drops the cached pair."""

        self._cached = (None, None, None)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_cached": (None, None, None)}

    def _cache(self, v: Tensor, i: int, f: Callable[[Tensor], Tensor]) -> Tensor:
        if self._cache_size == 0:
            return f(v)
        state = self._state()
        if self._cached[i] is v and self._cached[2] == state:
            return self._cached[1 - i]
        w = f(v)
        self._cached = (v, w, state) if i == 0 else (w, v, state)
        return w

    def __call__(self, x: Tensor) -> Tensor:
        return self._cache(x, 0, self._call)

    def _inv_call(self, y: Tensor) -> Tensor:
        return self._cache(y, 1, self._inverse)


def eager(method: Callable) -> Callable:
    r"""Decorates a function to run eagerly under :func:`torch.compile` (a graph break),
    like :func:`torch.compiler.disable`, but without importing :mod:`torch._dynamo`
    (and with it sympy) until a compiled graph calls the function: applied at import,
    :func:`torch.compiler.disable` would add seconds to :py:`import zuko_lu.pyro`.

    Example:
        >>> double = eager(lambda x: 2 * x)
        >>> double(torch.ones(2))
        tensor([2., 2.])
    """

    disabled = None

    @functools.wraps(method)
    def call(*args, **kwargs) -> Any:
        nonlocal disabled
        if not torch.compiler.is_compiling():
            return method(*args, **kwargs)
        if disabled is None:
            disabled = torch.compiler.disable(method)
        return disabled(*args, **kwargs)

    return call
