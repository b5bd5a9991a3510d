r"""The maths core of the image flows: Glow's building blocks as transformations.

This module depends on :mod:`torch` alone, and on :mod:`zuko_lu` only through the public
:class:`~zuko_lu.transforms.LUTransform` and :class:`~zuko_lu.parameters.LUParameters`.
It is shared by the zuko face (:mod:`zuko_lu.glow`) and the Pyro face
(:mod:`zuko_lu.pyro_images`).

Event shapes. Every transformation takes an optional image `shape` :math:`(C, H, W)`:

* with a `shape`, it maps flat vectors :math:`(*, C H W)` (event dimension 1, the
  ``real_vector`` events that zuko's flows and lampe expect), laid out as
  :py:`x.flatten(-3)` of images, and reshapes inside;
* without, it maps images :math:`(*, C, H, W)` (event dimension 3).

:class:`SqueezeTransform` changes the image shape (not the size);
:class:`MultiScaleTransform` works on flat vectors only. The transformations run in the
normalising direction (data to latent, zuko's); their inverses sample.

The modules at the end (:class:`ConvNet`, :class:`ActNormParameters`) hold the learnable
parameters that both faces share.
"""

from __future__ import annotations

__all__ = [
    "ActNormParameters",
    "ActNormTransform",
    "AffineCouplingTransform",
    "ChainTransform",
    "ChannelPermuteTransform",
    "ConvNet",
    "LUConv1x1Transform",
    "MIXINGS",
    "MultiScaleTransform",
    "SqueezeTransform",
    "check_shape",
]

import math
import weakref

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from torch import LongTensor, Size, Tensor
from torch.distributions import ComposeTransform, Transform, constraints

from .parameters import LUParameters
from .transforms import LUTransform

Shape = tuple[int, int, int]

#: The channel mixings of the Glow flows (:class:`zuko_lu.glow.Glow`,
#: :func:`zuko_lu.pyro_images.glow`): learned LU 1x1 convolutions, a fixed random
#: permutation, or the reversal of the channels.
MIXINGS = ("lu", "permute", "reverse")


def check_shape(shape: Sequence[int], name: str = "shape") -> Shape:
    r"""Returns an image shape :math:`(C, H, W)` as a tuple of positive integers, or
    raises a :class:`ValueError` naming the argument.

    Example:
        >>> check_shape([1, 28, 28])
        (1, 28, 28)
    """

    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"{name}: expected a shape (C, H, W), got {shape!r}") from None
    if len(shape) != 3 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(f"{name}: expected a shape (C, H, W) of integers >= 1, got {shape!r}")
    return shape


def check_int(value: int, name: str, minimum: int = 1) -> int:
    r"""Returns `value` if it is an integer >= `minimum`, or raises a :class:`ValueError`
    naming the argument."""

    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_choice(value: str, choices: Sequence[str], name: str) -> str:
    r"""Returns `value` if it is one of `choices`, or raises a :class:`ValueError`
    naming the argument."""

    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def call_and_ladj(t: Transform, x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Returns :math:`y = t(x)` and :math:`\log |\det J_t(x)|` in one pass: part by part
    for a :class:`torch.distributions.ComposeTransform` whose parts share one event
    dimension (Pyro's compositions), with the transformation's own ``call_and_ladj`` when
    it has one (zuko's, or those of this module), or with two calls."""

    if isinstance(t, ComposeTransform) and all(
        p.domain.event_dim == p.codomain.event_dim == t.domain.event_dim for p in t.parts
    ):
        ladj = 0
        for p in t.parts:
            x, term = call_and_ladj(p, x)
            ladj = ladj + term
        return x, ladj
    if hasattr(t, "call_and_ladj"):
        return t.call_and_ladj(x)
    y = t(x)
    return y, t.log_abs_det_jacobian(x, y)


class ImageTransform(Transform):
    r"""The base of the image transformations: flat vectors or images (see the module)."""

    bijective = True

    def __init__(self, shape: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shape = None if shape is None else check_shape(shape)
        dim = 3 if self.shape is None else 1
        self.domain = self.codomain = constraints.independent(constraints.real, dim)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(shape={self.shape})"

    def _image(self, x: Tensor, name: str = "x") -> Tensor:
        if self.shape is None:
            if x.dim() < 3:
                raise ValueError(f"{name}: expected images (*, C, H, W), got {tuple(x.shape)}")
            return x
        size = math.prod(self.shape)
        if x.dim() < 1 or x.shape[-1] != size:
            raise ValueError(
                f"{name}: expected a last dimension of size {size} (C H W of {self.shape}), "
                f"got shape {tuple(x.shape)}"
            )
        return x.unflatten(-1, self.shape)

    def _out(self, y: Tensor) -> Tensor:
        return y if self.shape is None else y.flatten(-3)

    def _zeros(self, y: Tensor) -> Tensor:
        # log|det J| of a volume-preserving map: zeros of the batch shape
        return y.new_zeros(y.shape[:-1] if self.shape is not None else y.shape[:-3])

    def _call(self, x: Tensor) -> Tensor:
        # The forward computes log|det J| too: it is kept (with weak references to x and
        # y) for a log_abs_det_jacobian(x, y) that follows, as Pyro's distributions call it.
        y, ladj = self.call_and_ladj(x)
        self._memo = weakref.ref(x), weakref.ref(y), ladj
        return y

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        memo = getattr(self, "_memo", None)
        if memo is not None and memo[0]() is x and memo[1]() is y:
            return memo[2]
        return self.call_and_ladj(x)[1]

    def __getstate__(self) -> dict:  # copies and pickles leave the memo out
        state = super().__getstate__()
        state.pop("_memo", None)
        return state


class LUConv1x1Transform(ImageTransform):
    r"""Creates an invertible LU 1x1 convolution: one LU map of the channels per pixel.

    .. math:: y_{:, h, w} = P L U x_{:, h, w} + b, \qquad
        \log |\det J| = H W \sum_i \log |U_{ii}|

    It reuses :class:`~zuko_lu.transforms.LUTransform` on the channels moved last: the
    forward is one matrix product over the channels (:math:`C \times C`, never a dense
    :math:`CHW \times CHW` matrix) and the inverse two triangular solves, or one product
    with :math:`W^{-1}` for a precomputed transformation (the eval-mode cache of
    :class:`~zuko_lu.parameters.LUParameters`).

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        LU: The packed factors :math:`(*, C, C)` (see :class:`~zuko_lu.transforms.LUTransform`),
            whose leading dimensions broadcast against the batch; or an
            :class:`~zuko_lu.transforms.LUTransform` of the channels, whose tensors
            broadcast against channels-last images :math:`(*, H, W, C)` (a batch of
            factors as :math:`(*, 1, 1, C, C)`).
        bias: The bias :math:`b`, with shape :math:`(*, C)` (with tensor factors only).
        perm: A fixed permutation of the channels (with tensor factors only).
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> LU = torch.eye(2) + 0.1 * torch.randn(2, 2)
        >>> t = LUConv1x1Transform(LU, bias=torch.ones(2))
        >>> x = torch.randn(5, 2, 4, 4)
        >>> y, ladj = t.call_and_ladj(x)
        >>> torch.allclose(t.inv(y), x, atol=1e-6)
        True
        >>> ladj.shape, ladj[0]
        (torch.Size([5]), tensor(3.1777))
    """

    def __init__(
        self,
        LU: Tensor | LUTransform,
        bias: Tensor | None = None,
        perm: LongTensor | None = None,
        shape: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(shape, **kwargs)

        if isinstance(LU, LUTransform):
            if bias is not None or perm is not None:
                raise ValueError("bias, perm: expected None with an LUTransform")
            self.lu = LU
        else:
            if LU.dim() > 2:
                LU = LU[..., None, None, :, :]
            if bias is not None and bias.dim() > 1:
                bias = bias[..., None, None, :]
            self.lu = LUTransform(LU, bias=bias, perm=perm)

        if self.shape is not None and self.shape[0] != self.lu.features:
            raise ValueError(
                f"shape: expected {self.lu.features} channels (the LU factors'), got {self.shape}"
            )

    @classmethod
    def from_parameters(
        cls,
        params: LUParameters,
        shift: Tensor | None = None,
        mode: str = "diag",
        shape: Sequence[int] | None = None,
    ) -> LUConv1x1Transform:
        r"""Returns the convolution of learnable parameters, shifted by a context.

        Without a shift, in eval mode and without gradients, the parameters' cached
        transformation (with :math:`W^{-1}`) is reused: the inverse is one product.

        Arguments:
            params: The parameters of the channels' LU map.
            shift: Shifts of the parameters given by a context, with shape :math:`(*, K)`
                (see :meth:`LUParameters.forward <zuko_lu.parameters.LUParameters.forward>`);
                they are broadcast over the pixels.
            mode: The conditioning mode of `shift`, ``"diag"`` or ``"full"``.
            shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        """

        if shift is None:
            return cls(params(), shape=shape)
        return cls(params(shift[..., None, None, :], mode=mode), shape=shape)

    def _inverse(self, y: Tensor) -> Tensor:
        h = self._image(y, "y").movedim(-3, -1)
        return self._out(self.lu.inv(h).movedim(-1, -3))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self._image(x).movedim(-3, -1)
        y = self.lu(h)
        ladj = self.lu.log_abs_det_jacobian(h, y).sum(dim=(-2, -1))
        return self._out(y.movedim(-1, -3)), ladj


class ChannelPermuteTransform(ImageTransform):
    r"""Creates a fixed permutation of the channels.

    .. math:: y_{c, h, w} = x_{p_c, h, w}, \qquad \log |\det J| = 0

    The fixed mixing of RealNVP (``reverse``) and of Glow's baseline (a random shuffle).

    Arguments:
        perm: A permutation :math:`p` of :math:`(0, \dots, C - 1)`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.

    Example:
        >>> t = ChannelPermuteTransform(torch.tensor([1, 0]))
        >>> x = torch.arange(8.0).reshape(2, 2, 2)
        >>> t(x)[0]
        tensor([[4., 5.],
                [6., 7.]])
    """

    def __init__(self, perm: LongTensor, shape: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(shape, **kwargs)
        if perm.dim() != 1 or (self.shape is not None and len(perm) != self.shape[0]):
            raise ValueError(f"perm: expected a permutation of the channels, got {perm}")
        self.perm = perm

    def _call(self, x: Tensor) -> Tensor:
        return self._out(self._image(x)[..., self.perm, :, :])

    def _inverse(self, y: Tensor) -> Tensor:
        return self._out(self._image(y, "y")[..., torch.argsort(self.perm), :, :])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, self._zeros(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._zeros(y)


class SqueezeTransform(ImageTransform):
    r"""Creates a squeeze (space to depth): each :math:`2 \times 2` patch of pixels
    becomes 4 channels.

    .. math:: y_{4c + 2i + j, h, w} = x_{c, 2h + i, 2w + j}, \qquad
        (C, H, W) \to (4C, H / 2, W / 2), \qquad \log |\det J| = 0

    Its inverse is the unsqueeze (depth to space). With a `shape`, the flat vectors keep
    their size :math:`C H W`; the output is laid out as the squeezed image.

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803

    Arguments:
        shape: The input image shape :math:`(C, H, W)` of flat vectors, with even
            :math:`H` and :math:`W`, or :py:`None` for images.

    Example:
        >>> t = SqueezeTransform()
        >>> x = torch.arange(16.0).reshape(1, 4, 4)
        >>> t(x).shape
        torch.Size([4, 2, 2])
        >>> t(x)[:, 0, 0]
        tensor([0., 1., 4., 5.])
        >>> torch.equal(t.inv(t(x)), x)
        True
    """

    def __init__(self, shape: Sequence[int] | None = None, **kwargs) -> None:
        super().__init__(shape, **kwargs)
        if self.shape is not None:
            C, H, W = self.shape
            if H % 2 or W % 2:
                raise ValueError(f"shape: expected an even height and width, got {self.shape}")

    @property
    def out_shape(self) -> Shape | None:
        r"""The output image shape :math:`(4C, H / 2, W / 2)`, with a `shape`."""

        if self.shape is None:
            return None
        C, H, W = self.shape
        return 4 * C, H // 2, W // 2

    def _call(self, x: Tensor) -> Tensor:
        x = self._image(x)
        C, H, W = x.shape[-3:]
        if H % 2 or W % 2:
            raise ValueError(f"x: expected an even height and width, got shape {tuple(x.shape)}")
        x = x.unflatten(-1, (W // 2, 2)).unflatten(-3, (H // 2, 2))  # (*, C, H', 2, W', 2)
        n = x.dim()
        x = x.permute(*range(n - 5), n - 5, n - 3, n - 1, n - 4, n - 2)  # (*, C, 2, 2, H', W')
        return self._out(x.flatten(-5, -3))

    def _inverse(self, y: Tensor) -> Tensor:
        if self.shape is not None:
            y = y.unflatten(-1, self.out_shape)
        elif y.dim() < 3:
            raise ValueError(f"y: expected images (*, C, H, W), got {tuple(y.shape)}")
        C4, H, W = y.shape[-3:]
        if C4 % 4:
            raise ValueError(f"y: expected channels in multiples of 4, got shape {tuple(y.shape)}")
        y = y.unflatten(-3, (C4 // 4, 2, 2))  # (*, C, 2, 2, H', W')
        n = y.dim()
        y = y.permute(*range(n - 5), n - 5, n - 2, n - 4, n - 1, n - 3)  # (*, C, H', 2, W', 2)
        return self._out(y.flatten(-2, -1).flatten(-3, -2))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, self._zeros(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._zeros(y)

    def forward_shape(self, shape: Size) -> Size:
        if self.shape is not None:
            return shape
        *batch, C, H, W = shape
        return Size((*batch, 4 * C, H // 2, W // 2))

    def inverse_shape(self, shape: Size) -> Size:
        if self.shape is not None:
            return shape
        *batch, C, H, W = shape
        return Size((*batch, C // 4, 2 * H, 2 * W))


class ActNormTransform(ImageTransform):
    r"""Creates an activation normalisation (ActNorm): an affine map per channel.

    .. math:: y_{c, h, w} = (x_{c, h, w} + b_c) \, e^{s_c}, \qquad
        \log |\det J| = H W \sum_c s_c

    The data-dependent initialisation (:math:`b = -\text{mean}`,
    :math:`s = -\log \text{std}` over the first batch, so that its output is standardised)
    is :class:`ActNormParameters`'s: given `init`, the transformation calls it on its
    first input images before it maps them.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        shift: The shifts :math:`b`, with shape :math:`(*, C)` (a batch from a context).
        log_scale: The log-scales :math:`s`, with shape :math:`(*, C)`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        init: A function called with the input images :math:`(*, C, H, W)` before
            the forward maps them (it may set `shift` and `log_scale` in place).

    Example:
        >>> t = ActNormTransform(torch.zeros(2), torch.log(torch.tensor([2.0, 0.5])))
        >>> x = torch.ones(3, 2, 2, 2)
        >>> y, ladj = t.call_and_ladj(x)
        >>> y[0, :, 0, 0], ladj
        (tensor([2.0000, 0.5000]), tensor([0., 0., 0.]))
    """

    def __init__(
        self,
        shift: Tensor,
        log_scale: Tensor,
        shape: Sequence[int] | None = None,
        init: Callable[[Tensor], None] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(shape, **kwargs)
        self.shift = shift
        self.log_scale = log_scale
        self.init = init

    def _inverse(self, y: Tensor) -> Tensor:
        y = self._image(y, "y")
        b, s = self.shift[..., None, None], self.log_scale[..., None, None]
        return self._out(y * torch.exp(-s) - b)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self._image(x)
        if self.init is not None:
            self.init(x)
            self.init = None
        b, s = self.shift[..., None, None], self.log_scale[..., None, None]
        y = (x + b) * torch.exp(s)
        ladj = self.log_scale.sum(dim=-1) * (x.shape[-2] * x.shape[-1])
        return self._out(y), ladj.expand(y.shape[:-3])


class AffineCouplingTransform(ImageTransform):
    r"""Creates an affine coupling over the channels, with a stable sigmoid scale.

    .. math::
        y_a = x_a, \qquad y_b = (x_b + t) \odot \sigma(r + 2), \qquad (t, r) = f(x_a),

    .. math:: \log |\det J| = \sum \log \sigma(r + 2)

    where :math:`x_a` are the first `split` channels, :math:`x_b` the others and
    :math:`f` the conditioner (a convolutional network, which may close over a
    context). The scale :math:`\sigma(r + 2) \in (0, 1)` starts near 0.88 at
    :math:`r = 0` and never explodes. The inverse is :math:`x_b = y_b / \sigma(r + 2) - t`.

    References:
        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        conditioner: A function from :math:`x_a`, shape :math:`(*, C_a, H, W)`, to
            :math:`(t, r)` stacked along the channels, shape :math:`(*, 2 C_b, H, W)`.
        shape: The image shape :math:`(C, H, W)` of flat vectors, or :py:`None` for images.
        split: The number of channels :math:`C_a` of :math:`x_a` (:math:`C // 2` if
            :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> conv = torch.nn.Conv2d(1, 2, 3, padding=1)
        >>> t = AffineCouplingTransform(conv, shape=(2, 4, 4))
        >>> x = torch.randn(3, 32)
        >>> y, ladj = t.call_and_ladj(x)
        >>> torch.allclose(t.inv(y), x, atol=1e-5), ladj.shape
        (True, torch.Size([3]))
    """

    def __init__(
        self,
        conditioner: Callable[[Tensor], Tensor],
        shape: Sequence[int] | None = None,
        split: int | None = None,
        **kwargs,
    ) -> None:
        super().__init__(shape, **kwargs)
        self.conditioner = conditioner
        self.split = split

    def _halves(self, x: Tensor) -> tuple[Tensor, Tensor, int]:
        C = x.shape[-3]
        k = C // 2 if self.split is None else self.split
        if not 0 < k < C:
            raise ValueError(f"split: expected an integer in [1, {C - 1}], got {k}")
        return x[..., :k, :, :], x[..., k:, :, :], k

    def _params(self, xa: Tensor) -> tuple[Tensor, Tensor]:
        h = self.conditioner(xa)
        t, r = h.chunk(2, dim=-3)
        return t, r + 2.0

    def _inverse(self, y: Tensor) -> Tensor:
        ya, yb, _ = self._halves(self._image(y, "y"))
        t, r = self._params(ya)
        xb = yb * torch.exp(-F.logsigmoid(r)) - t
        return self._out(torch.cat((ya.expand(*xb.shape[:-3], *ya.shape[-3:]), xb), dim=-3))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        xa, xb, _ = self._halves(self._image(x))
        t, r = self._params(xa)
        log_s = F.logsigmoid(r)
        yb = (xb + t) * log_s.exp()
        y = torch.cat((xa.expand(*yb.shape[:-3], *xa.shape[-3:]), yb), dim=-3)
        return self._out(y), log_s.sum(dim=(-3, -2, -1)).expand(yb.shape[:-3])


class MultiScaleTransform(ImageTransform):
    r"""Creates a multi-scale split (factor-out) with a learned prior.

    The first `keep` channels :math:`x_1` go on through an inner transformation
    :math:`g` (the next levels of the flow); the other channels :math:`x_2` are factored
    out with a Gaussian prior whose mean and scale depend on :math:`x_1`, which amounts
    to a standard normal prior on

    .. math:: z_2 = (x_2 - \mu(x_1)) \, e^{-\ell(x_1)}, \qquad
        z = (g(x_1), z_2), \qquad
        \log |\det J| = \log |\det J_g(x_1)| - \sum \ell(x_1) .

    The inverse recovers :math:`x_1 = g^{-1}(z_1)` first, then
    :math:`x_2 = \mu(x_1) + e^{\ell(x_1)} z_2`. It works on flat vectors (event
    dimension 1): :math:`z` lays :math:`g`'s output (flat, size `keep` :math:`H W`) before
    :math:`z_2` (flat, laid out as an image).

    References:
        | Density estimation using Real NVP (Dinh et al., 2017)
        | https://arxiv.org/abs/1605.08803

        | Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma et al., 2018)
        | https://arxiv.org/abs/1807.03039

    Arguments:
        inner: The transformation :math:`g` of the kept part, on flat vectors of size
            `keep` :math:`H W` (any transformation with event dimension 1, or :py:`None`
            for the identity).
        prior: A function from :math:`x_1`, shape :math:`(*, K, H, W)`, to
            :math:`(\mu, \ell)` stacked along the channels, shape :math:`(*, 2 (C - K), H, W)`,
            or :py:`None` for a standard normal prior on :math:`x_2`.
        shape: The image shape :math:`(C, H, W)` of the flat input vectors.
        keep: The number :math:`K` of kept channels (:math:`C // 2` if :py:`None`).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> conv = torch.nn.Conv2d(2, 4, 3, padding=1)
        >>> t = MultiScaleTransform(SqueezeTransform((2, 2, 2)), conv, shape=(4, 2, 2))
        >>> x = torch.randn(3, 16)
        >>> z, ladj = t.call_and_ladj(x)
        >>> torch.allclose(t.inv(z), x, atol=1e-5), z.shape, ladj.shape
        (True, torch.Size([3, 16]), torch.Size([3]))
    """

    def __init__(
        self,
        inner: Transform | None,
        prior: Callable[[Tensor], Tensor] | None,
        shape: Sequence[int],
        keep: int | None = None,
        **kwargs,
    ) -> None:
        if shape is None:
            raise ValueError("shape: expected the image shape (C, H, W) of flat vectors")
        super().__init__(shape, **kwargs)
        C = self.shape[0]
        self.keep = C // 2 if keep is None else keep
        if not 0 < self.keep < C:
            raise ValueError(f"keep: expected an integer in [1, {C - 1}], got {self.keep}")
        self.inner = inner
        self.prior = prior

    def __repr__(self) -> str:
        name = self.__class__.__name__
        return f"{name}(shape={self.shape}, keep={self.keep}, inner={self.inner})"

    def _prior(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        return self.prior(x1).chunk(2, dim=-3)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x = self._image(x)
        x1, x2 = x[..., : self.keep, :, :], x[..., self.keep :, :, :]

        if self.inner is None:
            z1, ladj = x1.flatten(-3), x1.new_zeros(())
        else:
            z1, ladj = call_and_ladj(self.inner, x1.flatten(-3))

        if self.prior is None:
            z2 = x2
        else:
            mu, log_sigma = self._prior(x1)
            z2 = (x2 - mu) * torch.exp(-log_sigma)
            ladj = ladj - log_sigma.sum(dim=(-3, -2, -1))

        batch = torch.broadcast_shapes(z1.shape[:-1], z2.shape[:-3], ladj.shape)
        z = torch.cat((z1.expand(*batch, -1), z2.flatten(-3).expand(*batch, -1)), dim=-1)
        return z, ladj.expand(batch)

    def _inverse(self, z: Tensor) -> Tensor:
        C, H, W = self.shape
        n = self.keep * H * W
        if z.dim() < 1 or z.shape[-1] != C * H * W:
            raise ValueError(f"z: expected a last dimension of size {C * H * W}, got {z.shape}")
        z1, z2 = z[..., :n], z[..., n:].unflatten(-1, (C - self.keep, H, W))
        x1 = z1 if self.inner is None else self.inner.inv(z1)
        x1 = x1.unflatten(-1, (self.keep, H, W))

        if self.prior is None:
            x2 = z2
        else:
            mu, log_sigma = self._prior(x1)
            x2 = mu + torch.exp(log_sigma) * z2

        batch = torch.broadcast_shapes(x1.shape[:-3], x2.shape[:-3])
        x = torch.cat((x1.expand(*batch, -1, -1, -1), x2.expand(*batch, -1, -1, -1)), dim=-3)
        return x.flatten(-3)


class ChainTransform(ImageTransform):
    r"""Creates a composition :math:`f = f_n \circ \dots \circ f_1` of transformations
    that share one event dimension (flat vectors, or images of one shape).

    .. math:: \log |\det J_f(x)| = \sum_i \log |\det J_{f_i}(x_{i - 1})|

    Unlike :class:`torch.distributions.ComposeTransform`, it computes each part's
    :math:`\log |\det J|` in the same pass as its output (and keeps the sum for a
    following :meth:`log_abs_det_jacobian`), as :class:`zuko.transforms.ComposedTransform`
    does.

    Arguments:
        transforms: The transformations :math:`f_1, \dots, f_n`.

    Example:
        >>> t = ChainTransform([SqueezeTransform((1, 4, 4)), SqueezeTransform((4, 2, 2))])
        >>> t(torch.arange(16.0))[:4]
        tensor([ 0.,  2.,  8., 10.])
    """

    def __init__(self, transforms: Sequence[Transform], **kwargs) -> None:
        super().__init__(None, **kwargs)
        transforms = list(transforms)
        if not transforms:
            raise ValueError("transforms: expected at least one transformation")
        dim = transforms[0].domain.event_dim
        if any(t.domain.event_dim != dim or t.codomain.event_dim != dim for t in transforms):
            raise ValueError("transforms: expected parts of one event dimension")
        self.transforms = transforms
        self.domain = self.codomain = constraints.independent(constraints.real, dim)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({self.transforms})"

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        ladj = 0
        for t in self.transforms:
            x, term = call_and_ladj(t, x)
            ladj = ladj + term
        return x, ladj

    def _inverse(self, y: Tensor) -> Tensor:
        for t in reversed(self.transforms):
            y = t.inv(y)
        return y


class ConvNet(nn.Module):
    r"""Creates the small convolutional network of Glow's couplings and priors.

    With hidden channels: a :math:`3 \times 3` convolution, ReLU, a :math:`1 \times 1`
    convolution, ReLU and a :math:`3 \times 3` convolution; without: that last
    convolution alone. The last convolution starts at zero, so that a coupling starts
    at a fixed scale and a prior at the standard normal. A context :math:`c` enters
    through an embedding, a linear map added as a bias per channel to the first layer's
    output (a class label's embedding when :math:`c` is one-hot).

    Arguments:
        in_channels: The input channels.
        out_channels: The output channels.
        hidden_channels: The hidden channels, or 0 for a single convolution.
        context: The number of context features (0 for none).

    Example:
        >>> net = ConvNet(2, 4, hidden_channels=8, context=3)
        >>> x, c = torch.randn(5, 2, 4, 4), torch.randn(7, 1, 3)
        >>> net(x, c).shape
        torch.Size([7, 5, 4, 4, 4])
    """

    def __init__(
        self, in_channels: int, out_channels: int, hidden_channels: int = 64, context: int = 0
    ) -> None:
        super().__init__()
        self.context = context
        if hidden_channels > 0:
            self.first = nn.Conv2d(in_channels, hidden_channels, 3, padding=1)
            self.middle = nn.Conv2d(hidden_channels, hidden_channels, 1)
            self.last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
            width = hidden_channels
        else:
            self.first = self.middle = None
            self.last = nn.Conv2d(in_channels, out_channels, 3, padding=1)
            width = out_channels
        nn.init.zeros_(self.last.weight)
        nn.init.zeros_(self.last.bias)
        self.embed = nn.Linear(context, width) if context > 0 else None
        if self.embed is not None and self.first is None:
            nn.init.zeros_(self.embed.weight)
            nn.init.zeros_(self.embed.bias)

    def forward(self, x: Tensor, c: Tensor | None = None) -> Tensor:
        r"""
        Arguments:
            x: Images, with shape :math:`(*, C_{in}, H, W)`.
            c: A context, with shape :math:`(*, K)`, broadcast against :math:`x`'s batch.

        Returns:
            The output, with shape :math:`(*, C_{out}, H, W)`.
        """

        batch = x.shape[:-3]
        if self.embed is not None:
            if c is None or c.dim() < 1 or c.shape[-1] != self.context:
                got = None if c is None else tuple(c.shape)
                raise ValueError(f"c: expected a context (*, {self.context}), got {got}")
            batch = torch.broadcast_shapes(batch, c.shape[:-1])
            e = self.embed(c.expand(*batch, -1).reshape(-1, self.context))[..., None, None]

        h = x.expand(*batch, *x.shape[-3:]).reshape(-1, *x.shape[-3:])
        if self.first is not None:
            h = self.first(h)
            if self.embed is not None:
                h = h + e
            h = self.last(F.relu(self.middle(F.relu(h))))
        else:
            h = self.last(h)
            if self.embed is not None:
                h = h + e
        return h.reshape(*batch, *h.shape[-3:])


class ActNormParameters(nn.Module):
    r"""Creates the parameters of an :class:`ActNormTransform`, with Glow's
    data-dependent initialisation.

    The shifts :math:`b` and log-scales :math:`s` start at zero (the identity). On the
    first forward of a transformation built in training mode, they are set from that
    batch, per channel, so that the output has zero mean and unit variance:

    .. math:: b = -\operatorname{mean}(x), \qquad s = -\log(\operatorname{std}(x) + 10^{-6}) .

    The buffer ``initialized`` records it (in the state dict: a loaded module does not
    initialise again). A batch with fewer than 2 values per channel leaves the identity.

    Arguments:
        channels: The number of channels :math:`C`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> params = ActNormParameters(2)
        >>> x = 3 + 2 * torch.randn(64, 2, 4, 4)
        >>> y = params()(x)
        >>> y.mean().abs() < 1e-5, bool(params.initialized)
        (tensor(True), True)
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.shift = nn.Parameter(torch.zeros(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        r"""Sets :math:`b` and :math:`s` from images :math:`x` of shape :math:`(*, C, H, W)`."""

        x = x.detach().movedim(-3, -1).reshape(-1, x.shape[-3])
        if len(x) >= 2:
            self.shift.copy_(-x.mean(dim=0))
            self.log_scale.copy_(-torch.log(x.std(dim=0, correction=0) + 1e-6))
        self.initialized.fill_(True)

    def forward(self, shape: Sequence[int] | None = None) -> ActNormTransform:
        r"""Returns the :class:`ActNormTransform` (for flat vectors of image `shape`, or
        for images)."""

        init = None
        if self.training and not self.initialized:
            init = self.initialize
        return ActNormTransform(self.shift, self.log_scale, shape, init=init)
