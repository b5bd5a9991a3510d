r"""Learnable parameters of an LU block, shared by the zuko and the Pyro faces.

This module depends on :mod:`torch` alone.
"""

from __future__ import annotations

__all__ = [
    "LUParameters",
    "slope_logits",
]

import math

import torch
import torch.nn as nn

from torch import Tensor

from .cache import VersionCache, eager, version_key
from .options import (
    CONDITIONINGS,
    DIAG,
    DIAGONALS,
    EXP,
    IDENTITY,
    INITS,
    ORTHOGONAL,
    check_choice,
    check_features,
    check_scale,
)
from .transforms import LUTransform

EPS = 1e-3  # floor of |U_ii| with the softplus diagonal


def slope_logits(alpha: float, features: int) -> nn.Parameter:
    r"""Returns learnable logits :math:`a_i` of per-feature slopes, all starting at
    :math:`\alpha` (read through :func:`zuko_lu.transforms.slope`).

    Example:
        >>> torch.sigmoid(slope_logits(0.1, 2))
        tensor([0.1000, 0.1000], grad_fn=<SigmoidBackward0>)
    """

    return nn.Parameter(torch.full((features,), math.log(alpha / (1 - alpha))))


class LUParameters(nn.Module):
    r"""Creates the learnable parameters of an LU block :math:`y = P L U x + b`.

    One :math:`D \times D` parameter :math:`R` holds every free entry: its strictly lower
    part is :math:`L`'s, its strictly upper part is :math:`U`'s, and its diagonal
    :math:`r` parameterises :math:`U`'s diagonal so that it can never reach zero,

    .. math::
        U_{ii} = \sigma_i e^{r_i} \quad \text{(exp, the default)} \qquad \text{or} \qquad
        U_{ii} = \sigma_i (\operatorname{softplus}(r_i) + 10^{-3}) \quad \text{(softplus)},

    with a fixed sign :math:`\sigma_i \in \{-1, +1\}`. With the exp diagonal,
    :math:`\log |\det W| = \sum_i r_i` exactly.

    Two initialisations, both with :math:`\operatorname{cond}(W) = 1`: the identity
    (:math:`L = U = I`, :math:`b = 0`), and the PLU factors of a random orthogonal
    matrix, with the permutation :math:`P` kept fixed (Glow's). An `init_scale`
    :math:`s` multiplies the starting :math:`U`, so that :math:`W` starts as :math:`s I`
    (or :math:`s Q`), with :math:`\log |\det W| = D \log s`: the last block of a
    variational guide's flow starts narrow this way (:func:`zuko_lu.pyro.lu_guide`
    uses :math:`s = 0.1`). With the softplus diagonal, :math:`s` must be at least
    :math:`2 \cdot 10^{-3}` to be exact (the diagonal's floor is :math:`10^{-3}`).

    A context can shift the parameters (see :meth:`forward`): with ``"diag"`` it
    shifts :math:`\log |U_{ii}|` through a scale of the output and shifts :math:`b`
    (:math:`2D` numbers per context; :math:`L` and :math:`U` stay shared, nothing
    :math:`D \times D` is formed per context); with ``"full"`` it shifts all of
    :math:`R` and :math:`b` (:math:`D^2 + D` numbers per context). The transformation
    gets :math:`R` as it is with :math:`U`'s diagonal apart (see
    :class:`~zuko_lu.transforms.LUTransform`), so that no product copies :math:`R` to
    put the diagonal in.

    In eval mode with gradients off, the transformation (and so :math:`W` and
    :math:`W^{-1}`, see :meth:`LUTransform.precompute`) is built once and reused until
    a parameter or buffer changes: an
    optimizer step, :meth:`load_state_dict`, :meth:`to`, or an in-place edit. An edit
    through ``.data`` is invisible to autograd's version counters: call
    :meth:`clear_cache` after one.

    Arguments:
        features: The number of features :math:`D`.
        bias: Whether the block has a bias :math:`b`.
        init: The initialisation, ``"identity"`` or ``"orthogonal"``.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        init_scale: The starting scale :math:`s > 0` of :math:`W`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> LUParameters(2, init_scale=0.1)().weight.detach()
        tensor([[0.1000, 0.0000],
                [0.0000, 0.1000]])
        >>> params = LUParameters(3, init="orthogonal")
        >>> t = params()
        >>> W = t.weight
        >>> torch.allclose(W @ W.T, torch.eye(3), atol=1e-6)
        True
        >>> params.context_features("diag"), params.context_features("full")
        (6, 12)
    """

    def __init__(
        self,
        features: int,
        bias: bool = True,
        init: str = IDENTITY,
        diagonal: str = EXP,
        init_scale: float = 1.0,
    ) -> None:
        super().__init__()

        self.features = D = check_features(features)
        scale = check_scale(init_scale)
        self.diagonal = check_choice(diagonal, DIAGONALS, "diagonal")
        check_choice(init, INITS, "init")

        R = torch.zeros(D, D)
        sign = torch.ones(D)
        perm = None

        if init == ORTHOGONAL:
            Q, _ = torch.linalg.qr(torch.randn(D, D))
            P, L, U = torch.linalg.lu(Q)
            U = scale * U  # W = s Q
            R = L.tril(-1) + U.triu(1)
            d = U.diagonal()
            sign = d.sign()
            perm = P.argmax(dim=1)  # (P v)_i = v_{perm_i}
        else:
            d = torch.full((D,), scale)

        R.diagonal().copy_(self._unconstrain(d.abs()))
        self.R = nn.Parameter(R)
        self.bias = nn.Parameter(torch.zeros(D)) if bias else None
        self.register_buffer("sign", sign)
        self.register_buffer("perm", perm)

        self._cache = VersionCache()

    def extra_repr(self) -> str:
        bias = self.bias is not None
        return f"features={self.features}, bias={bias}, diagonal={self.diagonal!r}"

    def _constrain(self, r: Tensor) -> Tensor:
        if self.diagonal == EXP:
            return r.exp()
        return nn.functional.softplus(r) + EPS

    def _unconstrain(self, d: Tensor) -> Tensor:
        if self.diagonal == EXP:
            return d.log()
        d = (d - EPS).clamp(min=EPS)
        return d + torch.log(-torch.expm1(-d))  # inverse softplus

    def context_features(self, mode: str) -> int:
        r"""Returns how many numbers a context must give in a conditioning mode."""

        check_choice(mode, CONDITIONINGS, "conditioning")
        D, b = self.features, int(self.bias is not None)
        return (1 + b) * D if mode == DIAG else D * D + b * D

    def pack(self, R: Tensor | None = None) -> Tensor:
        r"""Returns the packed :math:`LU` matrix of raw parameters :math:`R` (the
        module's by default)."""

        return self.transform(self.R if R is None else R, None).packed

    def transform(self, R: Tensor, bias: Tensor | None, **kwargs) -> LUTransform:
        r = R.diagonal(dim1=-2, dim2=-1)
        d = self._constrain(r)
        log_d = r if self.diagonal == EXP else d.log()
        return LUTransform._from_parts(
            R, bias, perm=self.perm, log_diag=log_d, diag=self.sign * d, **kwargs
        )

    def clear_cache(self) -> None:
        r"""Drops the cached transformation of eval mode."""

        self._cache.clear()

    def forward(self, shift: Tensor | None = None, mode: str = DIAG, **kwargs) -> LUTransform:
        r"""
        Arguments:
            shift: Raw shifts given by a context, with shape :math:`(*, K)` where
                :math:`K` is :meth:`context_features` of `mode`.
            mode: The conditioning mode, ``"diag"`` or ``"full"``.
            kwargs: Keyword arguments passed to :class:`LUTransform` (``cache_size``);
                with them, the eval-mode cache is bypassed.

        Returns:
            The transformation :math:`y = P L U x + b`.
        """

        if shift is None:
            if self.training or torch.is_grad_enabled() or kwargs or torch.jit.is_tracing():
                return self.transform(self.R, self.bias, **kwargs)
            return self._cached()

        K = self.context_features(mode)

        if shift.shape[-1] != K:
            raise ValueError(
                f"shift: expected a last dimension of size {K}, got shape {tuple(shift.shape)}"
            )

        D = self.features
        bias = self.bias

        if mode == DIAG:
            log_scale = shift[..., :D]
            if bias is not None:
                bias = bias + shift[..., D:]
            return self.transform(self.R, bias, log_scale=log_scale, **kwargs)

        R = self.R + shift[..., : D * D].unflatten(-1, (D, D))
        if bias is not None:
            bias = bias + shift[..., D * D :]
        return self.transform(R, bias, **kwargs)

    @eager
    def _cached(self) -> LUTransform:
        # Eager even under torch.compile (a graph break): the key reads storage
        # addresses, and W, W^-1 then enter the compiled graphs as inputs. Only the
        # module's own tensors are read: this runs on every eval-mode call.
        make = lambda: self.transform(self.R, self.bias).precompute()
        return self._cache.get(version_key(self, recurse=False), make)

    @torch.no_grad()
    def condition_number(self) -> float:
        r"""Returns the 2-norm condition number of :math:`W`, in float64."""

        W = LUTransform(self.pack().double(), perm=self.perm).weight
        return torch.linalg.cond(W).item()
