r"""The Pyro face of the image flows: transform modules and helper constructors.

Direction: as :func:`zuko_lu.pyro.lu_net`'s, the forward of every module here is the
normalising map (data to latent, zuko's direction), the same map as
:mod:`zuko_lu.glow`'s with the same parameters, computed by :mod:`zuko_lu.image_core`.
A Pyro transform runs from base to data, so for density estimation take the inverse,
:py:`TransformedDistribution(base, [glow(shape).inv])`: its :meth:`log_prob` runs the
forward, computing each :math:`\log |\det J|` in the same pass, and the data-dependent
initialisation of the ActNorms sees the data. (An LU 1x1 convolution alone is an
invertible linear map either way; its inverse is two triangular solves.)

Event shapes: without a `shape`, a module maps images :math:`(*, C, H, W)` (event
dimension 3, like Pyro's :class:`~pyro.distributions.transforms.GeneralizedChannelPermute`);
with a `shape` :math:`(C, H, W)`, flat vectors :math:`(*, C H W)` (event dimension 1).
:class:`MultiScaleSplit` and :func:`glow` work on flat vectors.

This module imports neither zuko nor :mod:`zuko_lu.pyro`: importing zuko turns off torch's
distribution argument validation, on which Pyro relies.
"""

from __future__ import annotations

__all__ = [
    "ActNorm",
    "ConditionalConvAffineCoupling",
    "ConditionalImageChain",
    "ConditionalLUConv1x1",
    "ConditionalMultiScaleSplit",
    "ConvAffineCoupling",
    "ImageChain",
    "LUConv1x1",
    "MultiScaleSplit",
    "actnorm",
    "conditional_conv_affine_coupling",
    "conditional_glow",
    "conditional_lu_conv1x1",
    "conv_affine_coupling",
    "glow",
    "lu_conv1x1",
    "squeeze",
]

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn as nn

from pyro.distributions.conditional import ConditionalTransform, ConditionalTransformModule
from pyro.distributions.torch_transform import TransformModule
from pyro.nn import DenseNN
from torch import Tensor
from torch.distributions import Transform, constraints

from .image_core import (
    MIXINGS,
    ActNormParameters,
    AffineCouplingTransform,
    ChainTransform,
    ChannelPermuteTransform,
    ConvNet,
    ImageTransform,
    LUConv1x1Transform,
    LUParameters,
    MultiScaleTransform,
    SqueezeTransform,
    check_choice,
    check_int,
    check_shape,
)


def _channels(channels: int, shape: Sequence[int] | None) -> int:
    check_int(channels, "channels")
    if shape is not None and check_shape(shape)[0] != channels:
        raise ValueError(f"shape: expected {channels} channels, got {tuple(shape)}")
    return channels


def _check_context(context_dim: int, context: Tensor) -> None:
    if context.dim() < 1 or context.shape[-1] != context_dim:
        raise ValueError(
            f"context: expected a last dimension of size {context_dim}, got shape "
            f"{tuple(context.shape)}"
        )


class _Module(ImageTransform, TransformModule):
    # A transform module whose forward is a transformation of the core, built from the
    # module's parameters on every call (so that it follows every parameter change).

    __repr__ = nn.Module.__repr__

    def transform(self) -> Transform:
        raise NotImplementedError

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Returns both :math:`y = f(x)` and :math:`\log |\det J_f(x)|`."""

        return self.transform().call_and_ladj(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.transform().inv(y)


class LUConv1x1(_Module):
    r"""Creates an invertible LU 1x1 convolution as a Pyro transform module.

    .. math:: y_{:, h, w} = P L U x_{:, h, w} + b, \qquad
        \log |\det J| = H W \sum_i \log |U_{ii}|

    The parameters are an :class:`~zuko_lu.parameters.LUParameters` of the channels
    (``self.params``): :math:`U`'s diagonal can never reach zero, :math:`P` is fixed, and
    in eval mode without gradients :math:`W` and :math:`W^{-1}` are cached. Unlike Pyro's
    :class:`~pyro.distributions.transforms.GeneralizedChannelPermute`, it has a bias and a
    constrained diagonal. See :class:`zuko_lu.image_core.LUConv1x1Transform`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        channels: The number of channels :math:`C`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        init: ``"orthogonal"`` (PLU of a random orthogonal matrix) or ``"identity"``.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t, x = LUConv1x1(3), torch.randn(2, 3, 4, 4)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        channels: int,
        shape: Sequence[int] | None = None,
        init: str = "orthogonal",
        diagonal: str = "exp",
    ) -> None:
        super().__init__(shape)
        _channels(channels, shape)
        self.params = LUParameters(channels, bias=True, init=init, diagonal=diagonal)

    def transform(self) -> LUConv1x1Transform:
        r"""Returns the convolution as a :mod:`zuko_lu.image_core` transformation."""

        return LUConv1x1Transform.from_parameters(self.params, shape=self.shape)


class _Permutation(_Module):
    # A fixed channel permutation, in a buffer (saved with the state, moved by .to()).

    def __init__(self, shape: Sequence[int], mode: str) -> None:
        super().__init__(shape)
        C = self.shape[0]
        perm = torch.randperm(C) if mode == "permute" else torch.arange(C - 1, -1, -1)
        self.register_buffer("perm", perm)

    def transform(self) -> ChannelPermuteTransform:
        return ChannelPermuteTransform(self.perm, self.shape)


class ConditionalLUConv1x1(ConditionalTransformModule):
    r"""Creates a conditional LU 1x1 convolution as a Pyro module.

    A hyper-network (:class:`pyro.nn.DenseNN`, last layer at 1/100 of its usual scale) maps
    a context to shifts of :math:`\log |U_{ii}|` and :math:`b` (``"diag"``, :math:`2C`
    numbers) or of all the parameters (``"full"``, :math:`C^2 + C`); a batch of contexts
    :math:`(*, K)` gives a batch of convolutions (unlike Pyro's conditional
    :class:`~pyro.distributions.transforms.ConditionalGeneralizedChannelPermute`).

    Arguments:
        channels: The number of channels :math:`C`.
        context_dim: The number of context features :math:`K`.
        hidden_dims: The hyper-network's hidden widths, :py:`[64, 64]` if :py:`None`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        init: ``"orthogonal"`` or ``"identity"``.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        conditioning: ``"diag"`` or ``"full"``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConditionalLUConv1x1(3, 2, [8])
        >>> x, c = torch.randn(4, 3, 2, 2), torch.randn(4, 2)
        >>> torch.allclose(t.condition(c).inv(t.condition(c)(x)), x, atol=1e-5)
        True
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(
        self,
        channels: int,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        shape: Sequence[int] | None = None,
        init: str = "orthogonal",
        diagonal: str = "exp",
        conditioning: str = "diag",
    ) -> None:
        super().__init__()
        _channels(channels, shape)
        self.shape = None if shape is None else check_shape(shape)
        if self.shape is not None:
            self.domain = self.codomain = constraints.real_vector
        self.context_dim = check_int(context_dim, "context_dim")
        self.conditioning = check_choice(conditioning, ("diag", "full"), "conditioning")
        self.params = LUParameters(channels, bias=True, init=init, diagonal=diagonal)
        hidden = [64, 64] if hidden_dims is None else list(hidden_dims)
        self.hyper = DenseNN(context_dim, hidden, [self.params.context_features(conditioning)])
        with torch.no_grad():
            self.hyper.layers[-1].weight.mul_(1e-2)
            self.hyper.layers[-1].bias.zero_()

    def condition(self, context: Tensor) -> LUConv1x1Transform:
        r"""Returns the convolution for a context of shape :math:`(*, K)`."""

        _check_context(self.context_dim, context)
        shift, mode = self.hyper(context), self.conditioning
        return LUConv1x1Transform.from_parameters(self.params, shift, mode, self.shape)


class ActNorm(_Module):
    r"""Creates an activation normalisation (ActNorm) as a Pyro transform module.

    .. math:: y_{c, h, w} = (x_{c, h, w} + b_c) \, e^{s_c}, \qquad
        \log |\det J| = H W \sum_c s_c

    The first forward in training mode sets :math:`b` and :math:`s` so that the batch's
    output is standardised per channel (see :class:`zuko_lu.image_core.ActNormParameters`):
    use the module through :py:`.inv` in a distribution, so that the data go through
    its forward.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        channels: The number of channels :math:`C`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ActNorm(2)
        >>> y = t(1 + 3 * torch.randn(10, 2, 4, 4))
        >>> round(y.std().item(), 2), bool(t.params.initialized)
        (1.0, True)
    """

    def __init__(self, channels: int, shape: Sequence[int] | None = None) -> None:
        super().__init__(shape)
        _channels(channels, shape)
        self.params = ActNormParameters(channels)

    def transform(self) -> Transform:
        r"""Returns the ActNorm as a :mod:`zuko_lu.image_core` transformation."""

        return self.params(self.shape)


class ConvAffineCoupling(_Module):
    r"""Creates an affine coupling over the channels with a small convolutional network,
    as a Pyro transform module.

    .. math:: y_a = x_a, \qquad y_b = (x_b + t) \odot \sigma(r + 2), \qquad (t, r) = f(x_a)

    :math:`f` is a :class:`zuko_lu.image_core.ConvNet` (its last layer zero-initialised).
    See :class:`zuko_lu.image_core.AffineCouplingTransform`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        channels: The number of channels :math:`C \geq 2`.
        hidden_channels: The hidden channels of the network.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        split: The number of channels :math:`C_a` of :math:`x_a` (:math:`C // 2` if :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t, x = ConvAffineCoupling(2, 8, shape=(2, 4, 4)), torch.randn(3, 32)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6), t.log_abs_det_jacobian(x, t(x)).shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int = 64,
        shape: Sequence[int] | None = None,
        split: int | None = None,
        context_dim: int = 0,
    ) -> None:
        super().__init__(shape)
        _channels(channels, shape)
        if channels < 2:
            raise ValueError(f"channels: expected at least 2 channels to couple, got {channels}")
        self.split = channels // 2 if split is None else split
        if not 0 < self.split < channels:
            raise ValueError(f"split: expected an integer in [1, {channels - 1}], got {split!r}")
        hidden = check_int(hidden_channels, "hidden_channels")
        self.net = ConvNet(self.split, 2 * (channels - self.split), hidden, context_dim)

    def transform(self, context: Tensor | None = None) -> AffineCouplingTransform:
        r"""Returns the coupling as a :mod:`zuko_lu.image_core` transformation."""

        return AffineCouplingTransform(partial(self.net, c=context), self.shape, self.split)


class ConditionalConvAffineCoupling(ConditionalTransformModule):
    r"""Creates a conditional affine coupling over the channels as a Pyro module: the
    context enters the network through an embedding added to its first layer (see
    :class:`ConvAffineCoupling`); a batch of contexts gives a batch of couplings.

    Arguments:
        channels: The number of channels :math:`C \geq 2`.
        context_dim: The number of context features :math:`K`.
        hidden_channels: The hidden channels of the network.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        split: The number of channels :math:`C_a` of :math:`x_a` (:math:`C // 2` if :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConditionalConvAffineCoupling(2, 3, 8)
        >>> x, c = torch.randn(5, 2, 4, 4), torch.randn(5, 3)
        >>> t.condition(c)(x).shape
        torch.Size([5, 2, 4, 4])
    """

    domain = constraints.independent(constraints.real, 3)
    codomain = constraints.independent(constraints.real, 3)
    bijective = True

    def __init__(
        self,
        channels: int,
        context_dim: int,
        hidden_channels: int = 64,
        shape: Sequence[int] | None = None,
        split: int | None = None,
    ) -> None:
        super().__init__()
        self.context_dim = check_int(context_dim, "context_dim")
        self.coupling = ConvAffineCoupling(channels, hidden_channels, shape, split, context_dim)
        if shape is not None:
            self.domain = self.codomain = constraints.real_vector

    def condition(self, context: Tensor) -> AffineCouplingTransform:
        r"""Returns the coupling for a context of shape :math:`(*, K)`."""

        _check_context(self.context_dim, context)
        return self.coupling.transform(context)


class MultiScaleSplit(_Module):
    r"""Creates a multi-scale split (factor-out) with a learned prior, as a Pyro
    transform module on flat vectors.

    .. math:: z_2 = (x_2 - \mu(x_1)) \, e^{-\ell(x_1)}, \qquad z = (g(x_1), z_2)

    The first `keep` channels :math:`x_1` go on through `inner` (:math:`g`), the others are
    factored out under a Gaussian whose mean and log-scale come from a zero-initialised
    3x3 convolution of :math:`x_1`. See :class:`zuko_lu.image_core.MultiScaleTransform`.

    Arguments:
        shape: The image shape :math:`(C, H, W)` of the flat input vectors.
        inner: The transformation :math:`g` of the kept part (a transform module on flat
            vectors of size `keep` :math:`H W`), or :py:`None` for the identity.
        keep: The number of kept channels (:math:`C // 2` if :py:`None`).
        prior: Whether the prior is learned (a standard normal if :py:`False`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = MultiScaleSplit((4, 2, 2), ActNorm(2, shape=(2, 2, 2)))
        >>> x = torch.randn(3, 16)
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-5)
        True
    """

    def __init__(
        self,
        shape: Sequence[int],
        inner: Transform | None = None,
        keep: int | None = None,
        prior: bool = True,
        context_dim: int = 0,
    ) -> None:
        super().__init__(check_shape(shape))
        C = self.shape[0]
        self.keep = C // 2 if keep is None else keep
        if not 0 < self.keep < C:
            raise ValueError(f"keep: expected an integer in [1, {C - 1}], got {keep!r}")
        self.inner = inner
        self.prior = ConvNet(self.keep, 2 * (C - self.keep), 0, context_dim) if prior else None

    def transform(self, context: Tensor | None = None) -> MultiScaleTransform:
        r"""Returns the split as a :mod:`zuko_lu.image_core` transformation."""

        inner = self.inner
        if isinstance(inner, ConditionalTransform):
            inner = inner.condition(context)
        prior = None if self.prior is None else partial(self.prior, c=context)
        return MultiScaleTransform(inner, prior, self.shape, self.keep)


class ConditionalMultiScaleSplit(ConditionalTransformModule):
    r"""Creates a conditional multi-scale split as a Pyro module: the context enters the
    prior (as an embedding added to its output) and conditions `inner` when it is a
    conditional transform (see :class:`MultiScaleSplit`).

    Arguments:
        shape: The image shape :math:`(C, H, W)` of the flat input vectors.
        context_dim: The number of context features :math:`K`.
        inner: The transformation of the kept part, conditional or not, or :py:`None`.
        keep: The number of kept channels (:math:`C // 2` if :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConditionalMultiScaleSplit((4, 2, 2), 3)
        >>> t.condition(torch.randn(5, 3))(torch.randn(5, 16)).shape
        torch.Size([5, 16])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        shape: Sequence[int],
        context_dim: int,
        inner: Transform | ConditionalTransform | None = None,
        keep: int | None = None,
    ) -> None:
        super().__init__()
        self.context_dim = check_int(context_dim, "context_dim")
        self.split = MultiScaleSplit(shape, None, keep, True, context_dim)
        self.inner = inner

    def condition(self, context: Tensor) -> MultiScaleTransform:
        r"""Returns the split for a context of shape :math:`(*, K)`."""

        _check_context(self.context_dim, context)
        t = self.split.transform(context)
        inner = self.inner
        if isinstance(inner, ConditionalTransform):
            inner = inner.condition(context)
        t.inner = inner
        return t


class ImageChain(_Module):
    r"""Creates a composition of image transformations as one Pyro transform module.

    Unlike :class:`~pyro.distributions.torch_transform.ComposeTransformModule`, its forward
    computes every part's :math:`\log |\det J|` in the same pass (see
    :class:`zuko_lu.image_core.ChainTransform`), so that a distribution's
    :meth:`log_prob` through :py:`.inv` runs each part once.

    Arguments:
        parts: Transformations (modules or not) of one event dimension.

    Example:
        >>> t = ImageChain([squeeze((1, 4, 4)), ActNorm(4, shape=(4, 2, 2))])
        >>> t(torch.randn(3, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(self, parts: Sequence[Transform]) -> None:
        super().__init__(None)
        self.parts = list(parts)
        self.modules_ = nn.ModuleList([p for p in self.parts if isinstance(p, nn.Module)])
        dim = ChainTransform(self.parts).domain
        self.domain = self.codomain = dim

    def transform(self) -> ChainTransform:
        r"""Returns the composition as a :mod:`zuko_lu.image_core` transformation."""

        return ChainTransform(self.parts)


class ConditionalImageChain(ConditionalTransformModule):
    r"""Creates a composition of image transformations, conditional or not, as one Pyro
    module: :meth:`condition` conditions the conditional parts and returns a
    :class:`zuko_lu.image_core.ChainTransform`.

    Arguments:
        parts: Transformations (conditional or not) of one event dimension.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConditionalImageChain([squeeze(), ConditionalLUConv1x1(4, 3, [8])])
        >>> t.condition(torch.randn(5, 3))(torch.randn(5, 1, 4, 4)).shape
        torch.Size([5, 4, 2, 2])
    """

    bijective = True

    def __init__(self, parts: Sequence[Transform | ConditionalTransform]) -> None:
        super().__init__()
        self.parts = list(parts)
        self.modules_ = nn.ModuleList([p for p in self.parts if isinstance(p, nn.Module)])
        self.domain = self.codomain = self.parts[0].domain

    def condition(self, context: Tensor) -> ChainTransform:
        r"""Returns the composition for a context of shape :math:`(*, K)`."""

        parts = [
            p.condition(context) if isinstance(p, ConditionalTransform) else p for p in self.parts
        ]
        return ChainTransform(parts)


def lu_conv1x1(channels: int, **kwargs) -> LUConv1x1:
    r"""Creates an :class:`LUConv1x1`, like Pyro's helpers.

    Example:
        >>> lu_conv1x1(3, shape=(3, 2, 2)).domain.event_dim
        1
    """

    return LUConv1x1(channels, **kwargs)


def conditional_lu_conv1x1(
    channels: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalLUConv1x1:
    r"""Creates a :class:`ConditionalLUConv1x1`, like Pyro's helpers.

    Example:
        >>> t = conditional_lu_conv1x1(3, 2, [8], conditioning="full")
        >>> t.condition(torch.zeros(5, 2))(torch.zeros(5, 3, 4, 4)).shape
        torch.Size([5, 3, 4, 4])
    """

    return ConditionalLUConv1x1(channels, context_dim, hidden_dims, **kwargs)


def actnorm(channels: int, **kwargs) -> ActNorm:
    r"""Creates an :class:`ActNorm`, like Pyro's helpers.

    Example:
        >>> actnorm(3).params.shift.shape
        torch.Size([3])
    """

    return ActNorm(channels, **kwargs)


def squeeze(shape: Sequence[int] | None = None) -> SqueezeTransform:
    r"""Creates a squeeze :math:`(C, H, W) \to (4C, H / 2, W / 2)` (see
    :class:`zuko_lu.image_core.SqueezeTransform`), on flat vectors of image `shape` or on
    images.

    Example:
        >>> squeeze()(torch.zeros(2, 1, 4, 4)).shape
        torch.Size([2, 4, 2, 2])
    """

    return SqueezeTransform(shape)


def conv_affine_coupling(channels: int, hidden_channels: int = 64, **kwargs) -> ConvAffineCoupling:
    r"""Creates a :class:`ConvAffineCoupling`, like Pyro's helpers.

    Example:
        >>> conv_affine_coupling(4, 8).split
        2
    """

    return ConvAffineCoupling(channels, hidden_channels, **kwargs)


def conditional_conv_affine_coupling(
    channels: int, context_dim: int, hidden_channels: int = 64, **kwargs
) -> ConditionalConvAffineCoupling:
    r"""Creates a :class:`ConditionalConvAffineCoupling`, like Pyro's helpers.

    Example:
        >>> conditional_conv_affine_coupling(4, 2, 8).context_dim
        2
    """

    return ConditionalConvAffineCoupling(channels, context_dim, hidden_channels, **kwargs)


def _levels(
    shape: tuple[int, int, int],
    level: int,
    levels: int,
    steps: int,
    hidden: int,
    context_dim: int,
    mixing: str,
    init: str,
) -> list:
    C, H, W = shape
    s = (4 * C, H // 2, W // 2)
    parts = [SqueezeTransform(shape)]
    for _ in range(steps):
        parts.append(ActNorm(s[0], s))
        if mixing == "lu":
            parts.append(LUConv1x1(s[0], s, init=init))
        else:
            parts.append(_Permutation(s, mixing))
        if context_dim:
            parts.append(ConditionalConvAffineCoupling(s[0], context_dim, hidden, s))
        else:
            parts.append(ConvAffineCoupling(s[0], hidden, s))
    if level < levels:
        keep = 2 * C
        inner = _levels(
            (keep, *s[1:]), level + 1, levels, steps, hidden, context_dim, mixing, init
        )
        if context_dim:
            parts.append(ConditionalMultiScaleSplit(s, context_dim, ConditionalImageChain(inner)))
        else:
            parts.append(MultiScaleSplit(s, ImageChain(inner), keep))
    return parts


def glow(
    shape: Sequence[int],
    levels: int = 2,
    steps: int = 8,
    hidden_channels: int = 64,
    mixing: str = "lu",
    init: str = "orthogonal",
) -> ImageChain:
    r"""Creates a Glow-style multi-scale flow on flat vectors, as one Pyro transform
    module: the composition of :class:`zuko_lu.glow.Glow` (same layout: per level a
    squeeze, `steps` steps of :class:`ActNorm`, mixing and :class:`ConvAffineCoupling`,
    then a :class:`MultiScaleSplit` but at the last level).

    Its forward is the normalising map; for density estimation take its inverse,
    :py:`TransformedDistribution(Normal(0, 1).expand([D]).to_event(1), [glow(shape).inv])`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        shape: The image shape :math:`(C, H, W)`; :math:`H` and :math:`W` divisible by
            :math:`2^L`.
        levels: The number of levels :math:`L`.
        steps: The number of steps per level.
        hidden_channels: The hidden channels of the coupling networks.
        mixing: ``"lu"`` (:class:`LUConv1x1`), ``"permute"`` or ``"reverse"``.
        init: The initialisation of the LU convolutions, ``"orthogonal"`` or ``"identity"``.

    Example:
        >>> import pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> base = dist.Normal(torch.zeros(16), 1).to_event(1)
        >>> d = dist.TransformedDistribution(base, [glow((1, 4, 4), steps=2).inv])
        >>> d.log_prob(torch.randn(5, 16)).shape, d.sample((2,)).shape
        (torch.Size([5]), torch.Size([2, 16]))
    """

    return ImageChain(_glow_parts(shape, levels, steps, hidden_channels, 0, mixing, init))


def conditional_glow(
    shape: Sequence[int],
    context_dim: int,
    levels: int = 2,
    steps: int = 8,
    hidden_channels: int = 64,
    mixing: str = "lu",
    init: str = "orthogonal",
) -> ConditionalImageChain:
    r"""Creates a conditional (e.g. class-conditional) Glow-style flow as one Pyro module:
    :func:`glow` whose couplings and split priors take the context through an embedding.

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context_dim: The number of context features :math:`K` (e.g. a one-hot label's).
        levels: The number of levels :math:`L`.
        steps: The number of steps per level.
        hidden_channels: The hidden channels of the coupling networks.
        mixing: ``"lu"``, ``"permute"`` or ``"reverse"``.
        init: The initialisation of the LU convolutions.

    Example:
        >>> import pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> base = dist.Normal(torch.zeros(16), 1).to_event(1)
        >>> t = conditional_glow((1, 4, 4), 10, steps=1)
        >>> d = dist.ConditionalTransformedDistribution(base, [t.inv])
        >>> d.condition(torch.eye(10)[:5]).log_prob(torch.randn(5, 16)).shape
        torch.Size([5])
    """

    check_int(context_dim, "context_dim")
    parts = _glow_parts(shape, levels, steps, hidden_channels, context_dim, mixing, init)
    return ConditionalImageChain(parts)


def _glow_parts(
    shape: Sequence[int],
    levels: int,
    steps: int,
    hidden_channels: int,
    context_dim: int,
    mixing: str,
    init: str,
) -> list:
    shape = check_shape(shape)
    check_int(levels, "levels")
    check_int(steps, "steps")
    check_int(hidden_channels, "hidden_channels")
    check_choice(mixing, MIXINGS, "mixing")
    check_choice(init, ("orthogonal", "identity"), "init")
    C, H, W = shape
    if H % 2**levels or W % 2**levels:
        raise ValueError(
            f"shape: the height and width must be divisible by 2**levels = {2**levels}, "
            f"got {shape} with levels={levels}"
        )
    return _levels(shape, 1, levels, steps, hidden_channels, context_dim, mixing, init)
