r"""Image flows for zuko: Glow's building blocks as lazy transformations, and
:class:`Glow`, a multi-scale flow with LU 1x1 convolutions.

Every lazy transformation here takes an image `shape` :math:`(C, H, W)` and maps flat
vectors :math:`(*, C H W)` (laid out as :py:`x.flatten(-3)` of images): zuko's
``real_vector`` events, so that a :class:`zuko.lazy.Flow` over images works with zuko's
:meth:`log_prob` and :meth:`sample` and with lampe. The maths is
:mod:`zuko_lu.image_core`, shared with the Pyro face (:mod:`zuko_lu.pyro_images`).
"""

from __future__ import annotations

__all__ = [
    "ActNorm",
    "ChannelPermutation",
    "ConvCoupling",
    "Glow",
    "LUConv1x1",
    "MultiScaleSplit",
    "Squeeze",
]

import math

from collections.abc import Sequence
from functools import partial

# first: zuko's import turns torch's argument validation off, this one keeps it
from .validation import zuko  # noqa: F401

# isort: split

import torch

from torch import Tensor
from zuko.distributions import DiagNormal
from zuko.lazy import Flow, LazyComposedTransform, LazyTransform, UnconditionalDistribution
from zuko.nn import MLP

from .image_core import (
    MIXINGS,
    ActNormParameters,
    ActNormTransform,
    AffineCouplingTransform,
    ChannelPermuteTransform,
    ConvNet,
    LUConv1x1Transform,
    LUParameters,
    MultiScaleTransform,
    Shape,
    SqueezeTransform,
    check_choice,
    check_int,
    check_shape,
)


def check_context(context: int, c: Tensor | None) -> None:
    if c is None or c.dim() < 1 or c.shape[-1] != context:
        got = "None" if c is None else f"shape {tuple(c.shape)}"
        raise ValueError(f"c: expected a context (*, {context}), got {got}")


class LUConv1x1(LazyTransform):
    r"""Creates a lazy invertible LU 1x1 convolution.

    .. math:: y_{:, h, w} = P L U x_{:, h, w} + b, \qquad
        \log |\det J| = H W \sum_i \log |U_{ii}|

    The parameters are an :class:`~zuko_lu.parameters.LUParameters` of the channels
    (``self.params``): packed :math:`L` and :math:`U`, :math:`U`'s diagonal
    :math:`\sigma_i e^{r_i}` with a fixed sign (never zero), a fixed :math:`P`, and an
    eval-mode cache of :math:`W` and :math:`W^{-1}`, so that sampling in eval mode costs one
    product too. See :class:`zuko_lu.image_core.LUConv1x1Transform`.

    With :py:`context > 0`, a hyper-network (:class:`zuko.nn.MLP`, last layer at 1/100
    of its usual scale) maps the context to shifts of :math:`\log |U_{ii}|` and :math:`b`
    (``"diag"``) or of all the parameters (``"full"``); a batch of contexts gives a batch
    of convolutions.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context: The number of context features.
        init: ``"orthogonal"`` (PLU of a random orthogonal matrix, :math:`P` fixed;
            Glow's) or ``"identity"``.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        conditioning: ``"diag"`` or ``"full"``, when :py:`context > 0`.
        hidden_features: The hidden widths of the hyper-network.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = LUConv1x1((2, 4, 4), context=3)
        >>> x, c = torch.randn(5, 32), torch.randn(5, 3)
        >>> y, ladj = t(c).call_and_ladj(x)
        >>> y.shape, ladj.shape
        (torch.Size([5, 32]), torch.Size([5]))
        >>> torch.allclose(t(c).inv(y), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int = 0,
        init: str = "orthogonal",
        diagonal: str = "exp",
        conditioning: str = "diag",
        hidden_features: Sequence[int] = (64, 64),
    ) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.context = check_int(context, "context", 0)
        self.conditioning = check_choice(conditioning, ("diag", "full"), "conditioning")
        self.params = LUParameters(self.shape[0], bias=True, init=init, diagonal=diagonal)

        if context > 0:
            out = self.params.context_features(conditioning)
            self.hyper = MLP(context, out, hidden_features)
            with torch.no_grad():
                self.hyper[-1].weight.mul_(1e-2)
                self.hyper[-1].bias.zero_()
        else:
            self.hyper = None

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context={self.context}"

    def forward(self, c: Tensor | None = None) -> LUConv1x1Transform:
        if self.hyper is None:
            return LUConv1x1Transform.from_parameters(self.params, shape=self.shape)

        check_context(self.context, c)
        shift, mode = self.hyper(c), self.conditioning
        return LUConv1x1Transform.from_parameters(self.params, shift, mode, self.shape)


class ChannelPermutation(LazyTransform):
    r"""Creates a lazy fixed permutation of the channels (the mixing that
    :class:`LUConv1x1` replaces).

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        mode: ``"permute"`` (a random permutation, drawn once) or ``"reverse"``.

    Example:
        >>> t = ChannelPermutation((2, 1, 1), mode="reverse")
        >>> t()(torch.tensor([1.0, 2.0]))
        tensor([2., 1.])
    """

    def __init__(self, shape: Sequence[int], mode: str = "permute") -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.mode = check_choice(mode, ("permute", "reverse"), "mode")
        C = self.shape[0]
        perm = torch.randperm(C) if mode == "permute" else torch.arange(C - 1, -1, -1)
        self.register_buffer("perm", perm)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, mode={self.mode!r}"

    def forward(self, c: Tensor | None = None) -> ChannelPermuteTransform:
        return ChannelPermuteTransform(self.perm, shape=self.shape)


class ActNorm(LazyTransform):
    r"""Creates a lazy activation normalisation (ActNorm) with data-dependent
    initialisation.

    .. math:: y_{c, h, w} = (x_{c, h, w} + b_c) \, e^{s_c}, \qquad
        \log |\det J| = H W \sum_c s_c

    The first forward in training mode sets :math:`b` and :math:`s` so that the batch's
    output is standardised per channel (see :class:`zuko_lu.image_core.ActNormParameters`).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        shape: The image shape :math:`(C, H, W)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ActNorm((1, 2, 2))
        >>> y = t()(5 + 3 * torch.randn(100, 4))
        >>> round(abs(y.mean().item()), 4), round(y.std().item(), 2)
        (0.0, 1.0)
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.params = ActNormParameters(self.shape[0])

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, c: Tensor | None = None) -> ActNormTransform:
        return self.params(self.shape)


class Squeeze(LazyTransform):
    r"""Creates a lazy squeeze: :math:`(C, H, W) \to (4C, H / 2, W / 2)` (see
    :class:`zuko_lu.image_core.SqueezeTransform`).

    Arguments:
        shape: The input image shape :math:`(C, H, W)`, with even :math:`H` and :math:`W`.

    Example:
        >>> t = Squeeze((1, 2, 2))
        >>> t()(torch.tensor([1.0, 2.0, 3.0, 4.0]))
        tensor([1., 2., 3., 4.])
        >>> t.out_shape
        (4, 1, 1)
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.out_shape = SqueezeTransform(self.shape).out_shape

    def extra_repr(self) -> str:
        return f"shape={self.shape}"

    def forward(self, c: Tensor | None = None) -> SqueezeTransform:
        return SqueezeTransform(self.shape)


class ConvCoupling(LazyTransform):
    r"""Creates a lazy affine coupling over the channels with a small convolutional
    network.

    .. math::
        y_a = x_a, \qquad y_b = (x_b + t) \odot \sigma(r + 2), \qquad
        (t, r) = f(x_a, c)

    where :math:`f` is a :class:`zuko_lu.image_core.ConvNet` (3x3, 1x1, 3x3
    convolutions, the last zero-initialised, so that the coupling starts as a fixed
    scale) and a context :math:`c` enters as an embedding added to its first layer. See
    :class:`zuko_lu.image_core.AffineCouplingTransform`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        shape: The image shape :math:`(C, H, W)`, with :math:`C \geq 2`.
        context: The number of context features.
        hidden_channels: The hidden channels of the network.
        split: The number of channels :math:`C_a` of :math:`x_a` (:math:`C // 2` if :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConvCoupling((2, 4, 4), context=3, hidden_channels=8)
        >>> x, c = torch.randn(5, 32), torch.randn(3)
        >>> y, ladj = t(c).call_and_ladj(x)
        >>> y.shape, ladj.shape
        (torch.Size([5, 32]), torch.Size([5]))
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int = 0,
        hidden_channels: int = 64,
        split: int | None = None,
    ) -> None:
        super().__init__()
        self.shape = check_shape(shape)
        self.context = check_int(context, "context", 0)
        C = self.shape[0]
        if C < 2:
            raise ValueError(f"shape: expected at least 2 channels to couple, got {self.shape}")
        self.split = C // 2 if split is None else split
        if not 0 < self.split < C:
            raise ValueError(f"split: expected an integer in [1, {C - 1}], got {split!r}")
        hidden = check_int(hidden_channels, "hidden_channels")
        self.net = ConvNet(self.split, 2 * (C - self.split), hidden, context)

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context={self.context}, split={self.split}"

    def forward(self, c: Tensor | None = None) -> AffineCouplingTransform:
        if self.context > 0:
            check_context(self.context, c)
        else:
            c = None
        return AffineCouplingTransform(partial(self.net, c=c), self.shape, self.split)


class MultiScaleSplit(LazyTransform):
    r"""Creates a lazy multi-scale split: the first `keep` channels go on through the
    `inner` lazy transformations, the others are factored out under a learned Gaussian
    prior conditioned on the kept channels (and the context).

    .. math:: z_2 = (x_2 - \mu(x_1, c)) \, e^{-\ell(x_1, c)}, \qquad z = (g(x_1), z_2)

    The prior :math:`(\mu, \ell)` is a zero-initialised 3x3 convolution of :math:`x_1`
    plus an embedding of the context (a standard normal at first). See
    :class:`zuko_lu.image_core.MultiScaleTransform`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        shape: The image shape :math:`(C, H, W)` of the input.
        inner: The lazy transformations :math:`g` of the kept part, on flat vectors of
            size `keep` :math:`H W` (empty for the identity).
        context: The number of context features.
        keep: The number of kept channels (:math:`C // 2` if :py:`None`).
        prior: Whether the prior is learned (a standard normal if :py:`False`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = MultiScaleSplit((4, 2, 2), [Squeeze((2, 2, 2))])
        >>> x = torch.randn(3, 16)
        >>> z, ladj = t().call_and_ladj(x)
        >>> torch.allclose(t().inv(z), x), ladj
        (True, tensor([0., 0., 0.], grad_fn=<ExpandBackward0>))
    """

    def __init__(
        self,
        shape: Sequence[int],
        inner: Sequence[LazyTransform] = (),
        context: int = 0,
        keep: int | None = None,
        prior: bool = True,
    ) -> None:
        super().__init__()
        self.shape = C, H, W = check_shape(shape)
        self.context = check_int(context, "context", 0)
        self.keep = C // 2 if keep is None else keep
        if not 0 < self.keep < C:
            raise ValueError(f"keep: expected an integer in [1, {C - 1}], got {keep!r}")
        inner = list(inner)
        self.inner = LazyComposedTransform(*inner) if inner else None
        self.prior = ConvNet(self.keep, 2 * (C - self.keep), 0, context) if prior else None

    def extra_repr(self) -> str:
        return f"shape={self.shape}, context={self.context}, keep={self.keep}"

    def forward(self, c: Tensor | None = None) -> MultiScaleTransform:
        if self.context > 0:
            check_context(self.context, c)
        else:
            c = None
        inner = None if self.inner is None else self.inner(c)
        prior = None if self.prior is None else partial(self.prior, c=c)
        return MultiScaleTransform(inner, prior, self.shape, self.keep)


def glow_shape(shape: int | Sequence[int]) -> Shape:
    r"""Returns the image shape of `shape`: :math:`(C, H, W)`, or :math:`(1, k, k)` for
    a number of features :math:`D = k^2` (a square grey image)."""

    if isinstance(shape, int) and not isinstance(shape, bool):
        k = math.isqrt(shape) if shape > 0 else 0
        if k < 1 or k * k != shape:
            raise ValueError(
                f"shape: expected (C, H, W) or a square number of features, got {shape!r}"
            )
        return 1, k, k
    return check_shape(shape)


class Glow(Flow):
    r"""Creates a Glow-style multi-scale flow with LU 1x1 convolutions.

    Each level squeezes the image (:math:`(C, H, W) \to (4C, H / 2, W / 2)`) and applies
    `steps` steps of flow, each an :class:`ActNorm`, a channel mixing and a
    :class:`ConvCoupling`; every level but the last then factors out half of the
    channels (:class:`MultiScaleSplit`, with a learned prior) and the next level
    transforms the other half. With a standard normal base,

    .. math:: \log p(x \mid c) = \log \mathcal{N}(z; 0, I) + \log |\det J_f(x)| .

    The mixing is ``"lu"`` (:class:`LUConv1x1`, learned, PLU of a random orthogonal
    matrix at first: Glow's), ``"permute"`` (a fixed random channel permutation) or
    ``"reverse"`` (RealNVP's), so that the contribution of the LU layer can be measured.
    With :py:`context > 0` (for instance a one-hot class label) the context enters each
    coupling network and each split prior through an embedding: a class-conditional Glow.

    Events are flat vectors of :math:`C H W` features (the :py:`x.flatten(-3)` of images).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        shape: The image shape :math:`(C, H, W)`, or a number of features :math:`D = k^2`
            for a grey :math:`(1, k, k)` image. :math:`H` and :math:`W` must be divisible
            by :math:`2^L`.
        levels: The number of levels :math:`L`.
        steps: The number of steps per level.
        hidden_channels: The hidden channels of the coupling networks.
        context: The number of context features.
        mixing: ``"lu"``, ``"permute"`` or ``"reverse"``.
        init: The initialisation of the LU convolutions, ``"orthogonal"`` or ``"identity"``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = Glow((1, 4, 4), levels=2, steps=2, hidden_channels=8, context=3)
        >>> c = torch.eye(3)[1]
        >>> x = flow(c).sample((5,))
        >>> x.shape, flow(c).log_prob(x).shape
        (torch.Size([5, 16]), torch.Size([5]))
    """

    def __init__(
        self,
        shape: int | Sequence[int],
        levels: int = 2,
        steps: int = 8,
        hidden_channels: int = 64,
        context: int = 0,
        mixing: str = "lu",
        init: str = "orthogonal",
    ) -> None:
        shape = glow_shape(shape)
        check_int(levels, "levels")
        check_int(steps, "steps")
        check_int(hidden_channels, "hidden_channels")
        check_int(context, "context", 0)
        check_choice(mixing, MIXINGS, "mixing")
        check_choice(init, ("orthogonal", "identity"), "init")

        C, H, W = shape
        if H % 2**levels or W % 2**levels:
            raise ValueError(
                f"shape: the height and width must be divisible by 2**levels = {2**levels} "
                f"(a squeeze halves them at each level), got {shape} with levels={levels}"
            )

        self.image_shape = shape
        self.levels, self.steps, self.mixing = levels, steps, mixing
        options = dict(steps=steps, hidden=hidden_channels, context=context, mixing=mixing)
        transforms = self._level(shape, 1, levels, init=init, **options)
        D = C * H * W
        base = UnconditionalDistribution(DiagNormal, torch.zeros(D), torch.ones(D), buffer=True)
        super().__init__(transforms, base)

    @classmethod
    def _level(
        cls,
        shape: Shape,
        level: int,
        levels: int,
        steps: int,
        hidden: int,
        context: int,
        mixing: str,
        init: str,
    ) -> list[LazyTransform]:
        squeeze = Squeeze(shape)
        s = squeeze.out_shape
        transforms = [squeeze]
        for _ in range(steps):
            transforms.append(ActNorm(s))
            if mixing == "lu":
                transforms.append(LUConv1x1(s, init=init))
            else:
                transforms.append(ChannelPermutation(s, mode=mixing))
            transforms.append(ConvCoupling(s, context=context, hidden_channels=hidden))
        if level < levels:
            C, H, W = s
            keep = C // 2
            inner = cls._level(
                (keep, H, W), level + 1, levels, steps, hidden, context, mixing, init
            )
            transforms.append(MultiScaleSplit(s, inner, context=context, keep=keep))
        return transforms
