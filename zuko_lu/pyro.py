r"""The Pyro face of LU-Net: transform modules and helper constructors.

As in Pyro, a transform runs from base to data. The forward of :func:`lu_net` is the
paper's layer map (data to latent in the paper), so for density estimation take its
inverse, :py:`TransformedDistribution(base, [lu_net(D).inv])`: it models the same density
as :class:`zuko_lu.LUNet` with the same weights (:func:`from_zuko`, :func:`to_zuko`), and
its :meth:`log_prob` runs the cheap direction. The maths is :mod:`zuko_lu.transforms` and
the parameters :class:`zuko_lu.parameters.LUParameters`, shared with the zuko face.

This module does not import zuko: importing zuko sets
:py:`torch.distributions.Distribution._validate_args = False`, which would silently turn
off Pyro's argument validation.
"""

from __future__ import annotations

__all__ = [
    "ConditionalLULinear",
    "LULinear",
    "LeakySoftplus",
    "conditional_lu_linear",
    "conditional_lu_net",
    "from_zuko",
    "leaky_softplus",
    "lu_linear",
    "lu_net",
    "to_zuko",
]

import re

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn

from pyro.distributions.conditional import (
    ConditionalComposeTransformModule,
    ConditionalTransformModule,
)
from pyro.distributions.torch_transform import ComposeTransformModule, TransformModule
from pyro.nn import DenseNN
from torch import Tensor
from torch.distributions import constraints

from .parameters import LUParameters, check_alpha, check_choice, check_features, slope_logits
from .transforms import LeakySoftplusTransform, LUTransform, slope


class _Cached:
    # Caches the last (x, y) like torch's Transform, but reuses it only while the module's
    # tensors and the grad mode are unchanged: keyed on x alone, it would return a stale y
    # after an optimizer step on the same data, or one without a graph after no_grad.

    def _state(self) -> tuple:
        tensors = (*self.parameters(), *self.buffers())
        # Tracing in the key: a pair cached outside a trace would enter it as a constant.
        grad, tracing = torch.is_grad_enabled(), torch.jit.is_tracing()
        return (grad, tracing, *((t._version, t.data_ptr()) for t in tensors))

    def clear_cache(self) -> None:
        self._cached = (None, None, None)

    def __getstate__(self) -> dict:  # copies and pickles leave the cache out
        return {**super().__getstate__(), "_cached": (None, None, None)}

    def _cache(self, v: Tensor, i: int, f: Callable[[Tensor], Tensor]) -> Tensor:
        if self._cache_size == 0:
            return f(v)
        state = self._state()
        if self._cached[i] is v and self._cached[2] == state:
            return self._cached[1 - i]
        w = f(v)
        self._cached = (v, w, state) if i == 0 else (w, v, state)
        return w

    def __call__(self, x: Tensor) -> Tensor:
        return self._cache(x, 0, self._call)

    def _inv_call(self, y: Tensor) -> Tensor:
        return self._cache(y, 1, self._inverse)


class LULinear(_Cached, TransformModule):
    r"""Creates an LU block :math:`y = L U x + b` as a Pyro transform module.

    .. math:: \log |\det J| = \sum_i \log |U_{ii}|

    Direction: base to data, like every Pyro transform. The forward is the cheap direction
    (one matrix product), the inverse two triangular solves. The parameters are
    :class:`zuko_lu.parameters.LUParameters` in ``self.params``, as in the zuko face.

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        input_dim: The number of features :math:`D`.
        bias: Whether the block has a bias :math:`b`.
        init: ``"identity"`` or ``"orthogonal"`` (PLU of a random orthogonal matrix).
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        cache_size: 1 to cache the last :math:`(x, y)` pair (dropped when a parameter
            changes), 0 not to.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t, x = LULinear(3, init="orthogonal"), torch.randn(2, 3)
        >>> torch.allclose(t.inv(t(x).clone()), x, atol=1e-6)
        True
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([2])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        bias: bool = True,
        init: str = "identity",
        diagonal: str = "exp",
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        check_features(input_dim, "input_dim")
        self.params = LUParameters(input_dim, bias=bias, init=init, diagonal=diagonal)
        self.clear_cache()

    __repr__ = nn.Module.__repr__

    def _call(self, x: Tensor) -> Tensor:
        return self.params()(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.params().inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.params().log_abs_det_jacobian(x, y)


class LeakySoftplus(_Cached, TransformModule):
    r"""Creates the leaky-softplus activation of LU-Net as a Pyro transform module.

    .. math:: y = \alpha x + (1 - \alpha) \log(1 + e^x), \qquad
        \frac{dy}{dx} \in (\alpha, 1)

    Elementwise (event dimension 0, like Pyro's :class:`ELUTransform`): its
    :math:`\log |\det J|` has the shape of :math:`x`. Direction: base to data; the forward
    is the cheap direction, the inverse a few Halley steps
    (:class:`zuko_lu.transforms.LeakySoftplusTransform`).

    Arguments:
        alpha: The slope :math:`\alpha \in (0, 1)` as :math:`x \to -\infty` (its initial
            value if `learnable`).
        input_dim: The number of features :math:`D`, required if `learnable`.
        learnable: Whether each feature learns its slope
            :math:`\alpha_i = \operatorname{sigmoid}(a_i)` (parameter ``logit``).
        cache_size: 1 to cache the last :math:`(x, y)` pair, 0 not to.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t, x = LeakySoftplus(0.1, input_dim=3, learnable=True), torch.randn(2, 3)
        >>> torch.allclose(t.inv(t(x).clone()), x, atol=1e-6)
        True
        >>> t.log_abs_det_jacobian(x, t(x)).shape
        torch.Size([2, 3])
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(
        self,
        alpha: float = 0.1,
        input_dim: int | None = None,
        learnable: bool = False,
        cache_size: int = 1,
    ) -> None:
        super().__init__(cache_size=cache_size)
        self.alpha = check_alpha(alpha)
        self.input_dim = None if input_dim is None else check_features(input_dim, "input_dim")
        self.logit = None
        if learnable:
            if input_dim is None:
                raise ValueError("input_dim: expected an integer >= 1 when learnable=True")
            self.logit = slope_logits(self.alpha, input_dim)
        self.clear_cache()

    __repr__ = nn.Module.__repr__

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, input_dim={self.input_dim}, learnable={self.logit is not None}"
        )

    def transform(self) -> LeakySoftplusTransform:
        r"""Returns the activation as a :mod:`zuko_lu.transforms` transformation."""

        return LeakySoftplusTransform(self.alpha if self.logit is None else slope(self.logit))

    def _call(self, x: Tensor) -> Tensor:
        return self.transform()(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.transform().inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.transform().log_abs_det_jacobian(x, y)


class ConditionalLULinear(ConditionalTransformModule):
    r"""Creates a conditional LU block :math:`y = L U x + b` as a Pyro module.

    A hyper-network (:class:`pyro.nn.DenseNN`, last layer at 1/100 of its usual scale as in
    the zuko face) maps a context :math:`c` to shifts of the parameters, and
    :meth:`condition` returns the block; a batch of contexts :math:`(*, C)` gives a batch
    of blocks for :math:`x` of shape :math:`(*, D)`. With ``conditioning="diag"`` the
    context sets a scale of the output and :math:`b` (:math:`2D` numbers), with ``"full"``
    all of :math:`L`, :math:`U` and :math:`b` (:math:`D^2 + D`). Direction: base to data;
    the forward is the cheap direction, the inverse two triangular solves.

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        input_dim: The number of features :math:`D`.
        context_dim: The number of context features :math:`C`.
        hidden_dims: The hyper-network's hidden widths, :py:`[64, 64]` (zuko's) if :py:`None`.
        bias: Whether the block has a bias :math:`b`.
        init: ``"identity"`` or ``"orthogonal"``.
        diagonal: The parameterisation of :math:`U`'s diagonal, ``"exp"`` or ``"softplus"``.
        conditioning: ``"diag"`` or ``"full"``.
        nonlinearity: The hyper-network's activation, :class:`torch.nn.ReLU` if :py:`None`.
        cache_size: The cache size of the conditioned transformations.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = ConditionalLULinear(3, 2, hidden_dims=[8])
        >>> x, c = torch.randn(4, 3), torch.randn(4, 2)
        >>> torch.allclose(t.condition(c).inv(t.condition(c)(x)), x, atol=1e-6)
        True
    """

    bijective = True
    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: Sequence[int] | None = None,
        bias: bool = True,
        init: str = "identity",
        diagonal: str = "exp",
        conditioning: str = "diag",
        nonlinearity: nn.Module | None = None,
        cache_size: int = 1,
    ) -> None:
        super().__init__()
        check_features(input_dim, "input_dim")
        self.context_dim = check_features(context_dim, "context_dim")
        self.conditioning = check_choice(conditioning, ("diag", "full"), "conditioning")
        hidden = [64, 64] if hidden_dims is None else list(hidden_dims)
        if not hidden:
            raise ValueError("hidden_dims: expected at least one hidden width")

        self.params = LUParameters(input_dim, bias=bias, init=init, diagonal=diagonal)
        K = self.params.context_features(conditioning)
        act = nn.ReLU() if nonlinearity is None else nonlinearity
        self.hyper = DenseNN(context_dim, hidden, [K], nonlinearity=act)
        with torch.no_grad():
            self.hyper.layers[-1].weight.mul_(1e-2)
            self.hyper.layers[-1].bias.zero_()
        self.cache_size = cache_size

    def condition(self, context: Tensor) -> LUTransform:
        r"""Returns the block for a context of shape :math:`(*, C)`."""

        # Under torch.jit.trace sizes are traced tensors: the trace is for one shape.
        if (
            context.dim() < 1
            or not torch.jit.is_tracing()
            and context.shape[-1] != self.context_dim
        ):
            raise ValueError(
                f"context: expected a last dimension of size {self.context_dim}, got shape "
                f"{tuple(context.shape)}"
            )

        shift = self.hyper(context)
        return self.params(shift, mode=self.conditioning, cache_size=self.cache_size)


def lu_linear(input_dim: int, **kwargs) -> LULinear:
    r"""Creates an :class:`LULinear`, like Pyro's helpers.

    Example:
        >>> lu_linear(3, diagonal="softplus").params.diagonal
        'softplus'
    """

    return LULinear(input_dim, **kwargs)


def conditional_lu_linear(
    input_dim: int, context_dim: int, hidden_dims: Sequence[int] | None = None, **kwargs
) -> ConditionalLULinear:
    r"""Creates a :class:`ConditionalLULinear`, like Pyro's helpers.

    Example:
        >>> t = conditional_lu_linear(3, 2, [8], conditioning="full")
        >>> t.condition(torch.zeros(5, 2)).LU.shape
        torch.Size([5, 3, 3])
    """

    return ConditionalLULinear(input_dim, context_dim, hidden_dims, **kwargs)


def leaky_softplus(input_dim: int | None = None, **kwargs) -> LeakySoftplus:
    r"""Creates a :class:`LeakySoftplus`, like Pyro's helpers.

    Example:
        >>> leaky_softplus(alpha=0.2)(torch.zeros(2))
        tensor([0.5545, 0.5545])
    """

    return LeakySoftplus(input_dim=input_dim, **kwargs)


def lu_net(
    input_dim: int,
    transforms: int = 3,
    alpha: float = 0.1,
    learnable_alpha: bool = False,
    cache_size: int = 1,
    **kwargs,
) -> ComposeTransformModule:
    r"""Creates an LU-Net: :math:`T` LU blocks with activations and a last LU block.

    .. math:: h_k = \phi(L_k U_k h_{k-1} + b_k) \; (k \le T), \quad y = L_M U_M h_T + b_M

    The forward (base to data in Pyro's terms) is the paper's layer map, the cheap
    direction; it contracts (:math:`\phi' \in (\alpha, 1)`), which keeps a variational
    guide's samples tame. For density estimation in the paper's sense use the inverse,
    :py:`TransformedDistribution(Normal(0, 1).to_event(1), [lu_net(D).inv])`, whose
    :meth:`log_prob` runs the paper's map and equals :class:`zuko_lu.LUNet`'s with the same
    weights (part ``{i}.params.R`` here is ``transform.transforms.{i}.params.R`` there).

    References:
        | LU-Net: Invertible Neural Networks Based on Matrix Factorization (Chan et al., 2023)
        | https://arxiv.org/abs/2302.10524

    Arguments:
        input_dim: The number of features :math:`D`.
        transforms: The number :math:`T` of LU blocks followed by an activation.
        alpha: The activations' slope :math:`\alpha \in (0, 1)`.
        learnable_alpha: Whether the activations learn per-feature slopes.
        cache_size: The parts' cache size.
        kwargs: Keyword arguments passed to :class:`LULinear` (`bias`, `init`, `diagonal`).

    Example:
        >>> import pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> base = dist.Normal(torch.zeros(2), 1).to_event(1)
        >>> d = dist.TransformedDistribution(base, [lu_net(2, transforms=2).inv])
        >>> d.log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    check_features(input_dim, "input_dim")
    check_features(transforms, "transforms")
    parts = []
    for _ in range(transforms + 1):
        parts.append(LULinear(input_dim, cache_size=cache_size, **kwargs))
        parts.append(LeakySoftplus(alpha, input_dim, learnable_alpha, cache_size=cache_size))
    return ComposeTransformModule(parts[:-1])


def conditional_lu_net(
    input_dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] | None = None,
    transforms: int = 3,
    alpha: float = 0.1,
    learnable_alpha: bool = False,
    cache_size: int = 1,
    **kwargs,
) -> ConditionalComposeTransformModule:
    r"""Creates a conditional LU-Net: :class:`ConditionalLULinear` blocks joined by
    (unconditional) :class:`LeakySoftplus` activations, laid out as :func:`lu_net`.

    Arguments:
        input_dim: The number of features :math:`D`.
        context_dim: The number of context features :math:`C`.
        hidden_dims: The hidden widths of each block's hyper-network.
        transforms: The number :math:`T` of LU blocks followed by an activation.
        alpha: The activations' slope :math:`\alpha \in (0, 1)`.
        learnable_alpha: Whether the activations learn per-feature slopes.
        cache_size: The parts' cache size.
        kwargs: Keyword arguments passed to :class:`ConditionalLULinear`.

    Example:
        >>> import pyro.distributions as dist
        >>> _ = torch.manual_seed(0)
        >>> t = conditional_lu_net(2, 3, transforms=1, hidden_dims=[8])
        >>> base = dist.Normal(torch.zeros(2), 1).to_event(1)
        >>> d = dist.ConditionalTransformedDistribution(base, [t.inv])
        >>> d.condition(torch.randn(5, 3)).log_prob(torch.randn(5, 2)).shape
        torch.Size([5])
    """

    check_features(input_dim, "input_dim")
    check_features(transforms, "transforms")
    parts = []
    for _ in range(transforms + 1):
        kwargs["cache_size"] = cache_size
        parts.append(ConditionalLULinear(input_dim, context_dim, hidden_dims, **kwargs))
        parts.append(LeakySoftplus(alpha, input_dim, learnable_alpha, cache_size=cache_size))
    return ConditionalComposeTransformModule(parts[:-1])


def _options(blocks: Sequence[nn.Module], name: str) -> dict:
    # The constructor options of an LU-Net (of either face), read off its blocks.
    lus, acts = blocks[::2], blocks[1::2]
    if (
        len(blocks) < 3
        or len(blocks) % 2 == 0
        or not all(isinstance(getattr(b, "params", None), LUParameters) for b in lus)
        or not all(isinstance(getattr(a, "alpha", None), float) for a in acts)
    ):
        raise ValueError(f"{name}: expected LU blocks joined by leaky-softplus activations")

    p, hyper = lus[0].params, getattr(lus[0], "hyper", None)
    options = dict(
        transforms=len(acts),
        alpha=acts[0].alpha,
        learnable_alpha=acts[0].logit is not None,
        bias=p.bias is not None,
        init="identity" if p.perm is None else "orthogonal",
        diagonal=p.diagonal,
    )
    if hyper is not None:
        leaves = [m for m in hyper.modules() if not any(m.children())]
        linear = [m for m in leaves if isinstance(getattr(m, "weight", None), Tensor)]
        if not all(isinstance(m, (nn.ReLU, *map(type, linear))) for m in leaves):
            raise ValueError(f"{name}: only hyper-networks with ReLU activations convert")
        options["context"] = getattr(lus[0], "context_dim", getattr(lus[0], "context", 0))
        options["conditioning"] = lus[0].conditioning
        options["hidden"] = [m.weight.shape[-2] for m in linear[:-1]]
    return options


def _convert(source: nn.Module, blocks: list, make: Callable, target: Callable, state: dict):
    # Builds `make()` (without touching the global RNG) on the source's device and dtype,
    # loads the mapped state and copies the activations' slopes.
    with torch.random.fork_rng(devices=[]):
        module = make()
    tensor = next(source.parameters())
    module = module.to(device=tensor.device, dtype=tensor.dtype)
    target(module).load_state_dict(state)
    for src, dst in zip(blocks[1::2], list(target(module))[1::2], strict=True):
        dst.alpha = src.alpha
    return module


def from_zuko(flow: nn.Module) -> ComposeTransformModule | ConditionalComposeTransformModule:
    r"""Returns the Pyro LU-Net with the weights of a zuko :class:`zuko_lu.LUNet`.

    The state-dict keys map one to one: ``transform.transforms.{i}.params.R`` (``.bias``,
    ``.sign``, ``.perm``, an activation's ``.logit``) becomes ``{i}.params.R``, and a
    conditional block's ``hyper.{2j}.weight`` (:class:`zuko.nn.MLP`) becomes
    ``hyper.layers.{j}.weight`` (:class:`pyro.nn.DenseNN`). Then, for data :math:`x`,
    :py:`flow().log_prob(x)` equals
    :py:`TransformedDistribution(Normal(0, 1).to_event(1), [from_zuko(flow).inv]).log_prob(x)`
    (with :class:`ConditionalTransformedDistribution` and :py:`.condition(c)` for
    :py:`flow(c)`). The flow is left as it is.

    Arguments:
        flow: An LU-Net built by :class:`zuko_lu.LUNet` (ReLU hyper-networks).

    Example:
        >>> from zuko_lu import LUNet
        >>> from_zuko(LUNet(2, transforms=1))[0].params.R.shape
        torch.Size([2, 2])
    """

    blocks = list(flow.transform.transforms)
    o = _options(blocks, "flow")
    D = blocks[0].params.features
    if "context" in o:
        o["hidden_dims"] = o.pop("hidden")
        make = lambda: conditional_lu_net(D, o.pop("context"), **o)
    else:
        make = lambda: lu_net(D, **o)

    state = flow.transform.transforms.state_dict()
    sub = lambda m: f"hyper.layers.{int(m.group(1)) // 2}."
    state = {re.sub(r"hyper\.(\d+)\.", sub, k): v for k, v in state.items()}
    return _convert(flow, blocks, make, lambda m: m, state)


def to_zuko(module: nn.Module) -> nn.Module:
    r"""Returns the zuko :class:`zuko_lu.LUNet` with the weights of a Pyro LU-Net built by
    :func:`lu_net` or :func:`conditional_lu_net`: the inverse of :func:`from_zuko`.

    This function imports zuko (and so turns off torch's distribution argument validation).

    Arguments:
        module: A Pyro LU-Net (ReLU hyper-networks).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> to_zuko(lu_net(2, transforms=1))().log_prob(torch.zeros(1, 2)).shape
        torch.Size([1])
    """

    from .flows import LUNet  # imports zuko

    blocks = list(module)
    o = _options(blocks, "module")
    if "hidden" in o:
        o["hidden_features"] = o.pop("hidden")
    D = blocks[0].params.features

    sub = lambda m: f"hyper.{2 * int(m.group(1))}."
    state = {re.sub(r"hyper\.layers\.(\d+)\.", sub, k): v for k, v in module.state_dict().items()}
    return _convert(module, blocks, lambda: LUNet(D, **o), lambda f: f.transform.transforms, state)
