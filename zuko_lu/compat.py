r"""The private torch calls of the library, each with a public fallback.

The maths core takes two shortcuts that torch offers only through private names: a
check that no :mod:`torch.func` transformation (``vmap``, ``jacrev``, ...) is running,
and a softplus that writes into a given buffer. They sit here, and only here, so that a
torch release that renames or removes them breaks one module, whose tests exercise both
branches. Each fallback is correct, only slower: without the check the panel products
are skipped (the plain products work everywhere), and without the buffered softplus
one temporary tensor is made per call.

This module depends on :mod:`torch` alone and imports nothing private at import time.
"""

from __future__ import annotations

__all__ = [
    "functorch_active",
    "softplus_out",
]

import torch
import torch.nn.functional as F

from torch import Tensor


def functorch_active() -> bool:
    r"""Returns whether a :mod:`torch.func` transformation is running, or :py:`True` if
    this torch cannot tell (then callers take their plain path, valid everywhere).

    Example:
        >>> seen = []
        >>> _ = torch.func.vmap(lambda x: seen.append(functorch_active()) or x)(torch.zeros(2))
        >>> functorch_active(), seen
        (False, [True])
    """

    peek = getattr(getattr(torch._C, "_functorch", None), "peek_interpreter_stack", None)
    if peek is None:
        return True
    return peek() is not None


def softplus_out(x: Tensor, beta: float, threshold: float, out: Tensor) -> Tensor:
    r"""Writes :math:`\frac{1}{\beta} \log(1 + e^{\beta x})` (the identity above
    `threshold`, as :func:`torch.nn.functional.softplus`) into `out` and returns it,
    without a temporary tensor where torch allows it.

    Example:
        >>> x, out = torch.tensor([-1.0, 0.0, 50.0]), torch.empty(3)
        >>> softplus_out(x, 1.0, 40.0, out) is out, out
        (True, tensor([ 0.3133,  0.6931, 50.0000]))
    """

    op = getattr(getattr(torch.ops.aten, "softplus", None), "out", None)
    if op is None:
        return out.copy_(F.softplus(x, beta=beta, threshold=threshold))
    return op(x, beta, threshold, out=out)
