r"""Products with packed LU factors that skip their zero triangles.

A dense product with a triangular matrix spends half of its multiply-adds on zeros.
Splitting a factor into :math:`k` panels skips its zero blocks: applying :math:`U` to
:math:`N` rows costs :math:`N D^2 (k + 1) / 2k` multiply-adds instead of :math:`N D^2`,
forming :math:`W = L U` costs :math:`D^3 (k + 1) / 2k` instead of :math:`D^3`, and each
of the two products of its backward :math:`D^3 (k + 1)(2k + 1) / 6k^2` (about
:math:`D^3 / 3`). Each panel is one BLAS call on a strided view, and the backward passes
are written by hand. :func:`lu_product` and :func:`lu_apply` take these paths for a
single matrix on the CPU wide enough for two panels, and fall back to the plain products
otherwise (on accelerators, under :mod:`torch.func` transformations and while
:func:`torch.jit.trace` records). The panel widths and their measurements are in
``docs/maths.rst``.

This module depends on :mod:`torch` alone.
"""

from __future__ import annotations

__all__ = [
    "lu_apply",
    "lu_product",
]

import torch

from torch import Tensor
from torch.autograd.function import once_differentiable

from .compat import functorch_active

# Panel widths: wide enough for BLAS to run near its peak, narrow enough to skip zeros
# (measured: docs/maths.rst, "Measured constants").
PANEL_PRODUCT = 128
PANEL_APPLY = 192


def panels(D: int, width: int) -> list[tuple[int, int]]:
    r"""Returns the :math:`[s, e)` bounds of about-equal panels about `width` wide (one
    panel, the plain product, when :math:`D` is small or a size that
    :func:`torch.jit.trace` records as a tensor)."""

    if isinstance(D, Tensor):
        return [(0, D)]
    k = max(1, round(D / width))
    bounds = [round(i * D / k) for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def factors(LU: Tensor, diag: Tensor | None) -> tuple[Tensor, Tensor]:
    r"""Returns the dense :math:`L` (unit diagonal) and :math:`U` of packed factors,
    with :math:`U`'s diagonal `diag` if it is given."""

    lower, eye = constants(LU.shape[-1], LU)
    U = torch.where(lower, 0.0, LU)
    if diag is not None:
        U.diagonal().copy_(diag)
    return torch.where(lower, LU, eye), U


def split(gL: Tensor, gU: Tensor, diag: bool) -> tuple[Tensor, Tensor | None]:
    r"""Returns the gradient of packed factors from those of dense :math:`L` and
    :math:`U` (each read in its triangle only), and that of :math:`U`'s diagonal if it
    is kept apart (`diag`)."""

    g = torch.where(constants(gL.shape[-1], gL)[0], gL, gU)
    if not diag:
        return g, None
    gd = g.diagonal().clone()
    g.diagonal().zero_()  # LU's own diagonal is not read
    return g, gd


class LUProduct(torch.autograd.Function):
    r"""Forms :math:`W = L U` from packed factors by column panels of :math:`U`,

    .. math:: W_{:, K} = L_{:, :e} U_{:e, K} \quad \text{for each panel } K = [s, e),

    and back by panels that skip both factors' zeros,
    :math:`\bar{L}_{s:, K} = \bar{W}_{s:, s:} U_{K, s:}^\top` and
    :math:`\bar{U}_{K, s:} = L_{s:, K}^\top \bar{W}_{s:, s:}`, kept in their triangles.
    """

    @staticmethod
    def forward(ctx, LU: Tensor, diag: Tensor | None) -> Tensor:
        L, U = factors(LU, diag)
        ctx.save_for_backward(L, U)
        ctx.diag = diag is not None

        W = torch.empty_like(LU)
        for s, e in panels(LU.shape[-1], PANEL_PRODUCT):
            torch.mm(L[:, :e], U[:e, s:e], out=W[:, s:e])
        return W

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor | None]:
        L, U = ctx.saved_tensors
        gL, gU = torch.empty_like(grad), torch.empty_like(grad)

        for s, e in panels(grad.shape[-1], PANEL_PRODUCT):
            torch.mm(grad[s:, s:], U[s:e, s:].T, out=gL[s:, s:e])
            torch.mm(L[s:, s:e].T, grad[s:, s:], out=gU[s:e, s:])

        # Each triangle is read where it was computed: the rest of gL, gU is not.
        return split(gL, gU, ctx.diag)


class LUApply(torch.autograd.Function):
    r"""Applies packed factors to row vectors, :math:`y = x U^\top L^\top` (that is
    :math:`y_i = L U x_i`), as two products by panels, without forming :math:`W`. Only
    the diagonal blocks are masked: off them the packed matrix is read as it lies."""

    @staticmethod
    def forward(ctx, x: Tensor, LU: Tensor, diag: Tensor | None) -> Tensor:
        bounds = panels(LU.shape[-1], PANEL_APPLY)
        blocks = [factors(LU[s:e, s:e], None if diag is None else diag[s:e]) for s, e in bounds]

        z = torch.empty_like(x)
        for (s, e), (_, U) in zip(bounds, blocks, strict=True):  # z = x U^T
            torch.mm(x[:, s:e], U.T, out=z[:, s:e]).addmm_(x[:, e:], LU[s:e, e:].T)

        y = torch.empty_like(x)
        for (s, e), (L, _) in zip(bounds, blocks, strict=True):  # y = z L^T
            torch.mm(z[:, s:e], L.T, out=y[:, s:e]).addmm_(z[:, :s], LU[s:e, :s].T)

        ctx.save_for_backward(x, z, LU, *(B for LU_K in blocks for B in LU_K))
        ctx.diag = diag is not None
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, z, LU, *diagonal = ctx.saved_tensors
        bounds = panels(LU.shape[-1], PANEL_APPLY)
        blocks = list(zip(diagonal[::2], diagonal[1::2], strict=True))

        gz = torch.empty_like(grad)
        for (s, e), (L, _) in zip(bounds, blocks, strict=True):  # gz = grad L
            torch.mm(grad[:, s:e], L, out=gz[:, s:e]).addmm_(grad[:, e:], LU[e:, s:e])

        gx = gLU = gd = None
        if ctx.needs_input_grad[0]:
            gx = torch.empty_like(grad)
            for (s, e), (_, U) in zip(bounds, blocks, strict=True):  # gx = gz U
                torch.mm(gz[:, s:e], U, out=gx[:, s:e]).addmm_(gz[:, :s], LU[:s, s:e])

        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            gLU = torch.empty_like(LU)
            gd = torch.empty_like(LU[0]) if ctx.diag else None
            for s, e in bounds:  # tril(grad^T z, -1) and triu(gz^T x)
                g, h = grad[:, s:e].T, gz[:, s:e].T
                torch.mm(g, z[:, :s], out=gLU[s:e, :s])
                torch.mm(h, x[:, e:], out=gLU[s:e, e:])
                gB, gB_d = split(g @ z[:, s:e], h @ x[:, s:e], ctx.diag)
                gLU[s:e, s:e] = gB
                if gd is not None:
                    gd[s:e] = gB_d

        return gx, gLU, gd


def use_panels(LU: Tensor) -> bool:
    r"""Returns whether the panel products apply: on the CPU, outside
    :mod:`torch.func` transforms (``vmap``, ``jacrev``, ...), which cannot batch the
    writes into views, and outside :func:`torch.jit.trace`, which records neither the
    Python loop over panels nor the hand-written backward."""

    return LU.device.type == "cpu" and not torch.jit.is_tracing() and not functorch_active()


_CONSTANTS: dict[tuple, tuple[Tensor, Tensor]] = {}


def constants(n: int, A: Tensor) -> tuple[Tensor, Tensor]:
    r"""Returns the strictly lower triangle of an :math:`n \times n` matrix, as
    booleans, and the identity, made once per size, dtype and device of `A`."""

    key = (n, A.dtype, A.device)
    if key not in _CONSTANTS:
        lower = torch.ones(n, n, dtype=torch.bool, device=A.device).tril(-1)
        _CONSTANTS[key] = lower, torch.eye(n, dtype=A.dtype, device=A.device)
    return _CONSTANTS[key]


def pack(LU: Tensor, diag: Tensor | None) -> Tensor:
    r"""Returns the packed factors with :math:`U`'s diagonal `diag` (if given)."""

    return LU if diag is None else torch.diagonal_scatter(LU, diag, dim1=-2, dim2=-1)


def lu_product(LU: Tensor, diag: Tensor | None = None) -> Tensor:
    r"""Returns :math:`W = L U` of packed factors (the layout of
    :func:`torch.linalg.lu_factor`, :math:`L`'s unit diagonal implied).

    A single :math:`D \times D` matrix on the CPU takes the panel product,
    differentiable by hand; other factors take one (batched) dense product.

    Arguments:
        LU: The packed factors, with shape :math:`(*, D, D)`.
        diag: :math:`U`'s diagonal, with shape :math:`(*, D)`, if it is kept apart:
            `LU`'s own diagonal is then not read, and gets no gradient.

    Returns:
        The matrix :math:`W`, with shape :math:`(*, D, D)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> LU = torch.randn(5, 5)
        >>> L, U = LU.tril(-1) + torch.eye(5), LU.triu()
        >>> torch.allclose(lu_product(LU), L @ U, atol=1e-6)
        True
    """

    if LU.dim() == 2 and len(panels(LU.shape[-1], PANEL_PRODUCT)) > 1 and use_panels(LU):
        return LUProduct.apply(LU, diag)

    LU = pack(LU, diag)
    U = LU.triu()
    return U.addmm(LU.tril(-1), U) if U.dim() == 2 else U + LU.tril(-1) @ U


def lu_apply(x: Tensor, LU: Tensor, diag: Tensor | None = None) -> Tensor:
    r"""Returns :math:`y_i = L U x_i` for the rows of :math:`x`, by two products that
    skip the factors' zero triangles (cheaper than forming :math:`W` when there are
    fewer rows than features).

    Arguments:
        x: The rows, with shape :math:`(N, D)`.
        LU: The packed factors, with shape :math:`(D, D)`.
        diag: :math:`U`'s diagonal, with shape :math:`(D)`, if it is kept apart.

    Returns:
        The rows :math:`y`, with shape :math:`(N, D)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> x, LU = torch.randn(2, 5), torch.randn(5, 5)
        >>> torch.allclose(lu_apply(x, LU), x @ lu_product(LU).T, atol=1e-6)
        True
    """

    D = LU.shape[-1]
    if x.dim() == 2 and LU.dim() == 2 and len(panels(D, PANEL_APPLY)) > 1 and use_panels(LU):
        return LUApply.apply(x, LU, diag)

    LU = pack(LU, diag)
    y = torch.nn.functional.linear(x, LU.triu())
    return y + torch.nn.functional.linear(y, LU.tril(-1))
