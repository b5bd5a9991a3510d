r"""The zuko face of LU-Net: the LU block, the leaky-softplus activation and the
LU-Net flow, as zuko lazy modules.

As in zuko, a transformation maps data to latent: the forward is the direction of
density evaluation, the inverse that of sampling. The maths is
:mod:`zuko_lu.transforms` and the parameters :class:`zuko_lu.parameters.LUParameters`,
shared with the Pyro face (:mod:`zuko_lu.pyro`).
"""

from __future__ import annotations

__all__ = [
    "LULinear",
    "LUNet",
    "LeakySoftplus",
]

from collections.abc import Sequence

# first: zuko's import turns torch's argument validation off, this one keeps it
from .validation import zuko  # noqa: F401

# isort: split

import torch

from torch import Tensor
from zuko.distributions import DiagNormal
from zuko.lazy import Flow, LazyTransform, UnconditionalDistribution
from zuko.nn import MLP
from zuko.transforms import DependentTransform

from .options import (
    CONDITIONINGS,
    DIAG,
    EXP,
    IDENTITY,
    check_alpha,
    check_choice,
    check_context,
    check_features,
    check_options,
)
from .parameters import LUParameters, slope_logits
from .transforms import LeakySoftplusTransform, LUTransform, slope


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
        hidden_features: The hidden widths of the hyper-network, :py:`(64, 64)` if
            :py:`None`; only with :py:`context > 0`.
        init_scale: The starting scale :math:`s > 0` of :math:`W` (:math:`s I`, or
            :math:`s Q` with the orthogonal initialisation), as in the Pyro face.
        kwargs: Keyword arguments passed to :class:`zuko.nn.MLP`; only with
            :py:`context > 0`.

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
        init: str = IDENTITY,
        diagonal: str = EXP,
        conditioning: str = DIAG,
        hidden_features: Sequence[int] | None = None,
        init_scale: float = 1.0,
        **kwargs,
    ) -> None:
        super().__init__()

        check_features(features)
        check_context(context)

        self.params = LUParameters(
            features, bias=bias, init=init, diagonal=diagonal, init_scale=init_scale
        )
        self.context = context
        self.conditioning = check_choice(conditioning, CONDITIONINGS, "conditioning")

        if context == 0 and (hidden_features is not None or kwargs):
            given = ["hidden_features"] * (hidden_features is not None) + sorted(kwargs)
            raise TypeError(
                f"LULinear got hyper-network options without a context: {', '.join(given)} "
                "(an unconditional block has no hyper-network)"
            )

        if context > 0:
            out = self.params.context_features(conditioning)
            hidden = (64, 64) if hidden_features is None else hidden_features
            self.hyper = MLP(context, out, hidden, **kwargs)
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


class LeakySoftplus(LazyTransform):
    r"""Creates a lazy leaky-softplus activation, elementwise over the features.

    .. math:: y = \alpha x + (1 - \alpha) \log(1 + e^x)

    The forward is the cheap direction (density evaluation); the inverse runs a few
    Halley steps (sampling). See :class:`zuko_lu.transforms.LeakySoftplusTransform`.

    Arguments:
        features: The number of features :math:`D`, required if `learnable`.
        alpha: The slope :math:`\alpha \in (0, 1)` as :math:`x \to -\infty` (its initial
            value if `learnable`).
        learnable: Whether each feature learns its own slope
            :math:`\alpha_i = \operatorname{sigmoid}(a_i)`, kept inside :math:`(0, 1)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = LeakySoftplus(3, learnable=True)
        >>> x = torch.randn(3)
        >>> torch.allclose(t().inv(t()(x)), x)
        True
        >>> t().log_abs_det_jacobian(x, t()(x))
        tensor(-2.5505, grad_fn=<SumBackward1>)
    """

    def __init__(
        self,
        features: int | None = None,
        alpha: float = 0.1,
        learnable: bool = False,
    ) -> None:
        super().__init__()

        self.alpha = check_alpha(alpha)
        self.features = None if features is None else check_features(features)

        if learnable:
            if features is None:
                raise ValueError("features: expected an integer >= 1 when learnable=True")
            self.logit = slope_logits(self.alpha, features)
        else:
            self.logit = None

    def extra_repr(self) -> str:
        return f"features={self.features}, alpha={self.alpha}, learnable={self.logit is not None}"

    def forward(self, c: Tensor | None = None) -> DependentTransform:
        r"""
        Arguments:
            c: A context :math:`c`. This argument is always ignored.

        Returns:
            The activation, over the last dimension.
        """

        alpha = self.alpha if self.logit is None else slope(self.logit)
        return DependentTransform(LeakySoftplusTransform(alpha), 1)


# the options of an LU block without a hyper-network
_BLOCK_OPTIONS = ("bias", "init", "diagonal", "conditioning")


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
            `diagonal`; with a context also `conditioning`, `hidden_features` and
            :class:`zuko.nn.MLP`'s). Any other raises a :class:`TypeError`.

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
        if context == 0:
            check_options(kwargs, _BLOCK_OPTIONS, "LUNet without context")

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
