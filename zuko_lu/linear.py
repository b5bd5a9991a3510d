r"""The LU block as a zuko lazy transformation."""

from __future__ import annotations

__all__ = [
    "LULinear",
]

from collections.abc import Sequence

import torch

from torch import Tensor
from zuko.lazy import LazyTransform
from zuko.nn import MLP

from .parameters import LUParameters, check_choice, check_features
from .transforms import LUTransform


class LULinear(LazyTransform):
    r"""Creates a lazy LU block :math:`y = L U x + b`.

    The block's :math:`\log |\det J|` is :math:`\sum_i \log |U_{ii}|`, an :math:`O(D)`
    sum, and its inverse is two triangular solves. :math:`U`'s diagonal is
    :math:`\sigma_i e^{r_i}` with a fixed sign by default, so it can never reach zero
    (see :class:`zuko_lu.parameters.LUParameters`). As a zuko transformation, the block
    maps data to latent: the forward is the cheap direction of density evaluation
    (one matrix product) and the inverse that of sampling (two triangular solves).

    With :py:`context > 0`, a hyper-network (:class:`zuko.nn.MLP`) maps the context to
    shifts of the parameters, and a batch of contexts gives a batch of blocks. With
    ``conditioning="diag"`` (the default) the context gives :math:`U`'s diagonal (as a
    scale of the output) and :math:`b`: :math:`2D` outputs, so the block scales to large
    :math:`D`; with ``"full"`` it gives all of :math:`L`, :math:`U` and :math:`b`:
    :math:`D^2 + D` outputs, for small :math:`D`. The hyper-network's last layer starts
    at 1/100 of its usual scale, so that every context starts near the same block.

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features.
        bias: Whether the block has a bias :math:`b`.
        init: ``"identity"`` (the default) or ``"orthogonal"``: the PLU factors of a
            random orthogonal matrix, the permutation :math:`P` kept fixed (Glow's). Both
            give :math:`\operatorname{cond}(W) = 1`.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        conditioning: ``"diag"`` or ``"full"``, when :py:`context > 0`.
        hidden_features: The hidden widths of the hyper-network.
        kwargs: Keyword arguments passed to :class:`zuko.nn.MLP`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = LULinear(3, context=2)
        >>> x, c = torch.randn(4, 3), torch.randn(4, 2)
        >>> y, ladj = t(c).call_and_ladj(x)
        >>> y.shape, ladj.shape
        (torch.Size([4, 3]), torch.Size([4]))
        >>> torch.allclose(t(c).inv(y), x, atol=1e-6)
        True
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        bias: bool = True,
        init: str = "identity",
        diagonal: str = "exp",
        conditioning: str = "diag",
        hidden_features: Sequence[int] = (64, 64),
        **kwargs,
    ) -> None:
        super().__init__()

        check_features(features)
        if isinstance(context, bool) or not isinstance(context, int) or context < 0:
            raise ValueError(f"context: expected an integer >= 0, got {context!r}")

        self.params = LUParameters(features, bias=bias, init=init, diagonal=diagonal)
        self.context = context
        self.conditioning = check_choice(conditioning, ("diag", "full"), "conditioning")

        if context > 0:
            out = self.params.context_features(conditioning)
            self.hyper = MLP(context, out, hidden_features, **kwargs)
            with torch.no_grad():
                self.hyper[-1].weight.mul_(1e-2)
                self.hyper[-1].bias.zero_()
        else:
            self.hyper = None

    @property
    def features(self) -> int:
        return self.params.features

    def forward(self, c: Tensor | None = None) -> LUTransform:
        r"""
        Arguments:
            c: The context :math:`c`, with shape :math:`(*, C)`. Ignored if the block
                is unconditional.

        Returns:
            The block :math:`y = L U x + b` (for the context :math:`c`).
        """

        if self.hyper is None:
            return self.params()

        if c is None or c.dim() < 1 or c.shape[-1] != self.context:
            shape = None if c is None else tuple(c.shape)
            raise ValueError(
                f"c: expected a context with a last dimension of size {self.context}, "
                f"got {'None' if shape is None else f'shape {shape}'}"
            )

        return self.params(self.hyper(c), mode=self.conditioning)
