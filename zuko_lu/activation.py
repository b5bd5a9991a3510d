r"""The leaky-softplus activation as a zuko lazy transformation."""

from __future__ import annotations

__all__ = [
    "LeakySoftplus",
]


from torch import Tensor
from zuko.lazy import LazyTransform
from zuko.transforms import DependentTransform

from .parameters import check_alpha, check_features, slope_logits
from .transforms import LeakySoftplusTransform, slope


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
