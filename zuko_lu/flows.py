r"""The LU-Net flow."""

from __future__ import annotations

__all__ = [
    "LUNet",
]

import torch

from zuko.distributions import DiagNormal
from zuko.lazy import Flow, UnconditionalDistribution

from .activation import LeakySoftplus
from .linear import LULinear
from .parameters import check_features


class LUNet(Flow):
    r"""Creates an LU-Net: LU blocks joined by leaky-softplus activations.

    The flow maps data :math:`x` to latent :math:`z` through :math:`M = T + 1` blocks,

    .. math::
        h_0 = x, \quad h_k = \phi(L_k U_k h_{k-1} + b_k) \; (k \le T), \quad
        z = L_M U_M h_T + b_M,

    with a standard normal base, so that

    .. math::
        \log p(x) = \log \mathcal{N}(z; 0, I)
            + \sum_{k=1}^{M} \sum_i \log |U_{k,ii}|
            + \sum_{k=1}^{T} \sum_i \log \phi'(a_{k,i}) .

    Density evaluation costs :math:`M` matrix products; sampling :math:`2M` triangular
    solves and :math:`T` vectorised Halley inversions.

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features.
        transforms: The number :math:`T` of LU blocks followed by an activation; one
            more LU block ends the flow.
        alpha: The activations' slope :math:`\alpha \in (0, 1)`.
        learnable_alpha: Whether the activations learn per-feature slopes.
        kwargs: Keyword arguments passed to :class:`zuko_lu.LULinear` (`bias`, `init`,
            `diagonal`, `conditioning`, `hidden_features`, ...).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = LUNet(3, context=4, transforms=2)
        >>> c = torch.randn(4)
        >>> x = flow(c).sample((2,))
        >>> x.shape
        torch.Size([2, 3])
        >>> flow(c).log_prob(x).shape
        torch.Size([2])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        alpha: float = 0.1,
        learnable_alpha: bool = False,
        **kwargs,
    ) -> None:
        check_features(features)
        check_features(transforms, "transforms")

        blocks = []
        for _ in range(transforms):
            blocks.append(LULinear(features, context, **kwargs))
            blocks.append(LeakySoftplus(features, alpha=alpha, learnable=learnable_alpha))
        blocks.append(LULinear(features, context, **kwargs))

        base = UnconditionalDistribution(
            DiagNormal,
            torch.zeros(features),
            torch.ones(features),
            buffer=True,
        )

        super().__init__(blocks, base)
