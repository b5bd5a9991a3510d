r"""LU blocks inside zuko's flows: interleaving, the hybrid builders, and composition by
name with the constructors it calls.

zuko's builders separate their transformations by fixed permutations (MAF's alternating
orders, RealNVP's alternating masks, GF's random rotations). An LU block is their
learned generalisation, as Glow's 1x1 convolutions generalised RealNVP's permutations.

* :func:`interleave` puts LU blocks into any zuko flow; :class:`LUMAF`, :class:`LUNSF`
  and :class:`LURealNVP` are zuko's builders with LU blocks interleaved, and
  :func:`nsf_flow` is zuko's NSF with a settable spline domain.
* :func:`compose` builds a flow from names of the ``zuko.transforms`` group of
  :mod:`zuko_lu.registry`; :func:`maf`, :func:`nsf`, :func:`naf`, :func:`coupling` and
  :func:`softclip` are the constructors under which the registry knows zuko's own
  transformations, with the signature :py:`(features, context=0, index=0, **kwargs)`
  that :func:`compose` calls; :func:`builder` makes a :func:`compose` spec a flow
  class (for lampe's ``build=``, for instance).

Conditional LU blocks. In a conditional hybrid, each LU block takes the context by
default (``lu_context=True``): a hyper-network, (64, 64) by default, maps it to shifts of
the block's diagonal and bias. ``lu_context=False`` gives blocks that do not depend on
the context (no hyper-network), and :py:`lu={"hidden_features": (16,)}` a lighter one.
Measured on two-moons posteriors (2-D :math:`\theta`, 2-D :math:`x`, 3 transformations
with (50, 50) hyper-networks, 3,000 simulations, held-out NLL, mean of 3 seeds; step
time at batch 256, one thread, against the plain flow; ``benchmarks/lu_context.py``):

=========================  ============  ============  ===========  ===========
variant                    NSF: NLL      NSF: time     MAF: NLL     MAF: time
=========================  ============  ============  ===========  ===========
zuko's flow, no LU blocks  -2.61         1             -2.30        1
``lu_context=True``        **-2.93**     1.27x         -2.38        1.64x
(16,) hyper-network        -2.70         1.19x         **-2.41**    1.43x
``lu_context=False``       -2.65         1.09x         -2.32        1.20x
=========================  ============  ============  ===========  ===========

The gain of LU blocks in a conditional posterior comes from their conditioning:
context-free blocks cost little but gain little (0.02-0.04 nats), and the lighter
hyper-network loses most of LUNSF's gain (0.09 against 0.31 nats), while it ties with
the default in LUMAF (within the seeds' spread, about 0.05) at 13% less time. So the
default stays conditional with the (64, 64) hyper-network for all three hybrids;
``lu_context=False`` is the cheap option where the context matters little, and
:py:`lu={"hidden_features": (16,)}` a cheaper LUMAF.
"""

from __future__ import annotations

__all__ = [
    "LUMAF",
    "LUNSF",
    "LURealNVP",
    "Builder",
    "builder",
    "compose",
    "coupling",
    "interleave",
    "maf",
    "naf",
    "nsf",
    "nsf_flow",
    "softclip",
]

import copy
import inspect

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

# first: zuko's import turns torch's argument validation off, this one keeps it
from .validation import zuko  # noqa: F401

# isort: split

import torch
import torch.nn as nn

from zuko.distributions import DiagNormal
from zuko.flows import (
    MAF,
    NSF,
    ElementWiseTransform,
    FFJTransform,
    GeneralCouplingTransform,
    MaskedAutoregressiveTransform,
    RealNVP,
)
from zuko.flows.neural import MNN
from zuko.lazy import (
    Flow,
    LazyComposedTransform,
    LazyInverse,
    LazyTransform,
    UnconditionalDistribution,
    UnconditionalTransform,
)
from zuko.transforms import MonotonicRQSTransform, SoftclipTransform

from . import registry
from .flows import LULinear
from .options import check_context, check_features

#: The spline domain :math:`[-B, B]` of zuko's NSF (the identity outside).
BOUND = 5.0

#: Whether the LU blocks of the conditional hybrids (:class:`LUMAF`, :class:`LUNSF`,
#: :class:`LURealNVP`) take the context, by default: yes, with the (64, 64) hyper-network
#: of :class:`zuko_lu.LULinear`, chosen by measurement (see the module's notes).
LU_CONTEXT = True


def _context_of(t: nn.Module, features: int) -> int | None:
    r"""Returns the context width a lazy transformation takes, or :py:`None` if its type
    tells nothing (a context-free transformation, or an unknown type)."""

    if isinstance(t, LazyInverse):
        return _context_of(t.transform, features)
    if isinstance(t, LazyComposedTransform):
        found = {_context_of(s, features) for s in t.transforms} - {None}
        return found.pop() if len(found) == 1 else None
    if isinstance(getattr(t, "context", None), int) and not isinstance(t.context, bool):
        return t.context

    net = getattr(t, "ode", None) if isinstance(t, FFJTransform) else getattr(t, "hyper", None)
    widths = [getattr(m, "in_features", None) for m in net.modules()] if net else []
    width = next((w for w in widths if isinstance(w, int)), None)
    if isinstance(t, MaskedAutoregressiveTransform):
        return width - features
    if isinstance(t, GeneralCouplingTransform):
        return width - int(t.mask.sum())
    if isinstance(t, ElementWiseTransform):
        return 0 if width is None else width
    if isinstance(t, FFJTransform):
        return width - features - 2 * len(t.freqs)
    return None


def _features_of(flow: Flow) -> int | None:
    try:
        shape = flow.base().event_shape
    except Exception:  # a conditional base, for instance
        shape = ()
    if len(shape) == 1:
        return shape[0]
    found = {getattr(t, "features", None) for t in flow.transform.transforms} - {None}
    return found.pop() if len(found) == 1 else None


def interleave(
    flow: Flow,
    features: int | None = None,
    context: int | None = None,
    inplace: bool = False,
    first: bool = False,
    **kwargs,
) -> Flow:
    r"""Creates a flow with an LU block between each pair of consecutive transformations
    of a flow (and, optionally, one before the first).

    The flow's transformation :math:`f = f_n \circ \dots \circ f_1` becomes
    :math:`f_n \circ W_{n-1} \circ f_{n-1} \circ \dots \circ W_1 \circ f_1`, each
    :math:`W_k` an :class:`zuko_lu.LULinear` block (with the flow's context width, so a
    conditional flow gets conditional blocks); every existing transformation is kept,
    fixed permutations or rotations included. With :py:`first=True`, a block
    :math:`W_0` also comes before :math:`f_1`, on the data side; with a context (and
    :py:`conditioning="full"`), it maps the data by an affine map chosen by the context,
    so that :math:`f_1` sees them shifted, scaled and rotated for each context. The base
    is kept. With the default identity initialisation, the blocks of an unconditional
    flow start as the identity, so the density of a trained flow is unchanged until the
    blocks train.

    :math:`D` is read from the base's event shape (or from the transformations'
    ``features`` attributes), and the context width from the first transformation that
    tells it: an integer ``context`` attribute (zuko-lu's blocks, and plugins that follow
    the convention), or the input width of the hyper-network of zuko's masked
    autoregressive, coupling, element-wise and free-form transformations. Pass them
    when they cannot be inferred.

    Arguments:
        flow: A flow whose transformation is a composition
            (:class:`zuko.lazy.LazyComposedTransform`), as zuko's builders make.
        features: The number of features :math:`D`, if it cannot be inferred.
        context: The number of context features, if it cannot be inferred.
        inplace: If :py:`False` (the default), the flow is deep-copied (trained
            parameters included) and the copy is returned; the input is untouched. If
            :py:`True`, the flow's ``transform`` is replaced and the flow returned.
        first: Whether an LU block also comes before the first transformation.
        kwargs: Keyword arguments passed to :class:`zuko_lu.LULinear` (`init`,
            `diagonal`, `conditioning`, `hidden_features`, ...).

    Returns:
        The flow (of the input's class) with :math:`n - 1` LU blocks interleaved
        (:math:`n` with `first`).

    Example:
        >>> import zuko
        >>> _ = torch.manual_seed(0)
        >>> flow = interleave(zuko.flows.MAF(3, context=2, transforms=3))
        >>> [type(t).__name__ for t in flow.transform.transforms][:3]
        ['MaskedAutoregressiveTransform', 'LULinear', 'MaskedAutoregressiveTransform']
        >>> flow(torch.randn(5, 2)).log_prob(torch.randn(5, 3)).shape
        torch.Size([5])
    """

    if not isinstance(flow, Flow) or not isinstance(flow.transform, LazyComposedTransform):
        raise TypeError(
            "flow: expected a zuko.lazy.Flow whose transform is a LazyComposedTransform, "
            f"got {type(flow).__name__} with {type(getattr(flow, 'transform', None)).__name__}"
        )

    if not isinstance(first, bool):
        raise ValueError(f"first: expected a bool, got {first!r}")

    features = _features_of(flow) if features is None else features
    if features is None:
        raise ValueError("features: cannot be inferred from the flow; pass features=...")
    check_features(features)

    if context is None:
        found = [_context_of(t, features) for t in flow.transform.transforms]
        context = next((c for c in found if c is not None), None)
        if context is None:
            raise ValueError("context: cannot be inferred from the flow; pass context=...")

    if not inplace:
        flow = copy.deepcopy(flow)

    tensors = [*flow.parameters(), *flow.buffers()]
    like = next((p for p in tensors if p.is_floating_point()), None)
    to = {} if like is None else {"device": like.device, "dtype": like.dtype}

    transforms = []
    for i, t in enumerate(flow.transform.transforms):
        if i > 0 or first:
            transforms.append(LULinear(features, context, **kwargs).to(**to).train(flow.training))
        transforms.append(t)

    flow.transform = LazyComposedTransform(*transforms)

    return flow


def _interleave_lu(
    flow: Flow, features: int, context: int, lu: Mapping[str, Any] | None, lu_context: bool
) -> None:
    # the hybrids' LU blocks: conditional (with the flow's context) or not
    if not isinstance(lu_context, bool):
        raise ValueError(f"lu_context: expected a bool, got {lu_context!r}")
    if lu is not None and not isinstance(lu, Mapping):
        raise ValueError(f"lu: expected a mapping of LULinear options, got {lu!r}")
    interleave(flow, features, context if lu_context else 0, inplace=True, **(lu or {}))


class LUMAF(MAF):
    r"""Creates a masked autoregressive flow (MAF) with LU blocks between its
    transformations (see :func:`interleave`).

    Arguments:
        features: The number of features.
        context: The number of context features.
        transforms: The number of autoregressive transformations.
        randperm: Whether features are randomly permuted between transformations.
        lu: Keyword arguments passed to :class:`zuko_lu.LULinear`, and
            :func:`interleave`'s `first`.
        lu_context: Whether the LU blocks take the context (see :data:`LU_CONTEXT`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.MaskedAutoregressiveTransform`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = LUMAF(3, transforms=2, lu={"init": "orthogonal"})
        >>> x = flow().sample((4,))
        >>> flow().log_prob(x).shape
        torch.Size([4])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        lu: Mapping[str, Any] | None = None,
        lu_context: bool = LU_CONTEXT,
        **kwargs,
    ) -> None:
        check_features(features)
        check_context(context)
        super().__init__(features, context, transforms=transforms, randperm=randperm, **kwargs)
        _interleave_lu(self, features, context, lu, lu_context)


def _spline(bins: int, bound: float, slope: float) -> dict[str, Any]:
    # the univariate transformation of zuko's NSF, with its domain [-bound, bound]
    univariate = partial(MonotonicRQSTransform, bound=float(bound), slope=slope)
    return {"univariate": univariate, "shapes": [(bins,), (bins,), (bins - 1,)]}


def nsf_flow(
    features: int,
    context: int = 0,
    bins: int = 8,
    bound: float = BOUND,
    slope: float = 1e-3,
    **kwargs,
) -> Flow:
    r"""Creates zuko's neural spline flow (NSF) with a settable spline domain: its
    splines are the identity outside :math:`[-B, B]`. The modules, and so the state
    dict, are those of :class:`zuko.flows.NSF`, which fixes :math:`B = 5`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        bins: The number of bins :math:`K`.
        bound: The spline domain's bound :math:`B`.
        slope: The minimum slope of the splines.
        kwargs: Keyword arguments passed to :class:`zuko.flows.MAF` (`transforms`,
            `randperm`, `passes`, `hidden_features`, ...).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = nsf_flow(2, bound=10.0, transforms=1)
        >>> flow().transform(torch.tensor([[9.0, -11.0]]))  # the identity beyond 10 only
        tensor([[  9.0726, -11.0000]], grad_fn=<WhereBackward0>)
    """

    return MAF(features, context, **_spline(bins, bound, slope), **kwargs)


class LUNSF(NSF):
    r"""Creates a neural spline flow (NSF) with LU blocks between its transformations
    (see :func:`interleave`). Its splines are the identity outside :math:`[-B, B]`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        bins: The number of bins :math:`K`.
        bound: The spline domain's bound :math:`B` (zuko's is 5).
        slope: The minimum slope of the spline transformation(s).
        lu: Keyword arguments passed to :class:`zuko_lu.LULinear`, and
            :func:`interleave`'s `first`.
        lu_context: Whether the LU blocks take the context (see :data:`LU_CONTEXT`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.MAF` (`transforms`,
            `randperm`, `passes`, `hidden_features`, ...).

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = LUNSF(2, context=1, transforms=2, bound=8.0)
        >>> flow(torch.randn(1)).sample((4,)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        bins: int = 8,
        bound: float = BOUND,
        slope: float = 1e-3,
        lu: Mapping[str, Any] | None = None,
        lu_context: bool = LU_CONTEXT,
        **kwargs,
    ) -> None:
        check_features(features)
        check_context(context)
        # NSF's own constructor is MAF's with the splines of the default bound
        MAF.__init__(self, features, context, **_spline(bins, bound, slope), **kwargs)
        _interleave_lu(self, features, context, lu, lu_context)


class LURealNVP(RealNVP):
    r"""Creates a RealNVP flow with LU blocks between its coupling transformations
    (see :func:`interleave`).

    Arguments:
        features: The number of features.
        context: The number of context features.
        transforms: The number of coupling transformations.
        randmask: Whether random coupling masks are used.
        lu: Keyword arguments passed to :class:`zuko_lu.LULinear`, and
            :func:`interleave`'s `first`.
        lu_context: Whether the LU blocks take the context (see :data:`LU_CONTEXT`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.GeneralCouplingTransform`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = LURealNVP(4, transforms=3)
        >>> len(flow.transform.transforms)
        5
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randmask: bool = False,
        lu: Mapping[str, Any] | None = None,
        lu_context: bool = LU_CONTEXT,
        **kwargs,
    ) -> None:
        check_features(features)
        check_context(context)
        super().__init__(features, context, transforms=transforms, randmask=randmask, **kwargs)
        _interleave_lu(self, features, context, lu, lu_context)


def _parameters(f: Callable) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(f).parameters
    except (TypeError, ValueError):
        return {"context": None}


def compose(
    spec: Sequence[str | tuple[str, Mapping[str, Any]]],
    features: int,
    context: int = 0,
    **kwargs: Mapping[str, Any],
) -> Flow:
    r"""Creates a flow from a list of names in the ``zuko.transforms`` group.

    Each name is loaded with :func:`zuko_lu.registry.load` (zuko-lu's and any installed
    plugin's entry points, then zuko's transformations under the constructors of this
    module), so that the transformations of any installed plugin mix in, and called as
    :py:`cls(features, **options)`, with :py:`context=context` added when the constructor
    has a ``context`` parameter. The options of a layer are those given for its name (a
    keyword argument of :func:`compose`, applied to every layer of that name) updated by
    those given with the layer (a :py:`(name, options)` pair in `spec`).

    Orders and masks alternate: a constructor with an ``index`` parameter (:func:`maf`,
    :func:`nsf`, :func:`naf`, :func:`coupling`) receives the count of such layers before
    it, and reverses its order (or flips its mask) when it is odd, as zuko's builders do,
    so that consecutive autoregressive layers never share an order, with or without LU
    blocks between them. The base is a standard diagonal normal.

    Arguments:
        spec: A sequence of names, or :py:`(name, options)` pairs.
        features: The number of features :math:`D`.
        context: The number of context features.
        kwargs: For each name of `spec`, the options of the layers of that name.

    Returns:
        The flow, a :class:`zuko.lazy.Flow`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> spec = ["maf", "lu", "nsf", ("lu", {"init": "orthogonal"})]
        >>> flow = compose(spec, 3, context=2, maf={"hidden_features": (32, 32)})
        >>> c = torch.randn(2)
        >>> flow(c).log_prob(flow(c).sample((5,))).shape
        torch.Size([5])
    """

    check_features(features)
    check_context(context)
    if isinstance(spec, str) or not spec:
        raise ValueError(f"spec: expected a non-empty sequence of names, got {spec!r}")

    entries = []
    for entry in spec:
        if isinstance(entry, str):
            entries.append((entry, {}))
        elif isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], Mapping):
            entries.append(entry)
        else:
            raise ValueError(f"spec: expected names or (name, options) pairs, got {entry!r}")

    unused = set(kwargs) - {name for name, _ in entries}
    if unused:
        raise ValueError(f"options given for names not in spec: {', '.join(sorted(unused))}")
    for name, options in kwargs.items():
        if not isinstance(options, Mapping):
            raise ValueError(f"{name}: expected a mapping of options, got {options!r}")

    transforms, index = [], 0
    for name, options in entries:
        cls = registry.load("zuko.transforms", name)
        options = {**kwargs.get(name, {}), **options}
        parameters = _parameters(cls)
        if "context" in parameters:
            options = {"context": context, **options}
        if "index" in parameters:
            options.setdefault("index", index)
            index += 1

        t = cls(features, **options)
        if not isinstance(t, LazyTransform):
            raise TypeError(f"{name!r} built a {type(t).__name__}, not a zuko LazyTransform")
        transforms.append(t)

    base = UnconditionalDistribution(
        DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
    )

    return Flow(transforms, base)


class Builder:
    r"""Creates a flow class for a :func:`compose` spec: called as
    :py:`builder(features, context=0)`, like zuko's flow classes, it returns
    :py:`compose(spec, features, context, **options)`. See :func:`builder`.

    Arguments:
        spec: A sequence of names, or :py:`(name, options)` pairs (see :func:`compose`).
        options: For each name of `spec`, the options of the layers of that name.
    """

    def __init__(
        self,
        spec: Sequence[str | tuple[str, Mapping[str, Any]]],
        **options: Mapping[str, Any],
    ) -> None:
        if isinstance(spec, str) or not spec:
            raise ValueError(f"spec: expected a non-empty sequence of names, got {spec!r}")
        self.spec = list(spec)
        self.options = dict(options)
        names = {entry[0] if isinstance(entry, tuple) else entry for entry in self.spec}
        unused = set(self.options) - names
        if unused:
            raise ValueError(f"options given for names not in spec: {', '.join(sorted(unused))}")

    def __call__(self, features: int, context: int = 0, **options: Mapping[str, Any]) -> Flow:
        r"""
        Arguments:
            features: The number of features :math:`D`.
            context: The number of context features.
            options: For names of the spec, options that update the builder's.

        Returns:
            The flow, :py:`compose(spec, features, context, **options)`.
        """

        merged = dict(self.options)
        for name, more in options.items():
            merged[name] = {**merged.get(name, {}), **more}
        return compose(self.spec, features, context, **merged)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"builder({self.spec!r}{options})"


def builder(
    spec: Sequence[str | tuple[str, Mapping[str, Any]]],
    **options: Mapping[str, Any],
) -> Builder:
    r"""Creates a class-like builder of :func:`compose` flows, for libraries that take a
    flow class: :py:`builder(spec, **options)(features, context)` is
    :py:`compose(spec, features, context, **options)`. lampe's estimators, for
    instance, call their `build` argument as :py:`build(theta_dim, x_dim, **kwargs)`:
    pass :py:`build=zuko_lu.builder(spec, ...)` (the classes :class:`zuko_lu.LUNet`,
    :class:`LUMAF`, :class:`LUNSF` and :class:`LURealNVP` can be passed as they are).
    Options given at the call (lampe's `kwargs`) update those given here, name by
    name. The builder pickles when its options do.

    Arguments:
        spec: A sequence of names, or :py:`(name, options)` pairs (see :func:`compose`).
        options: For each name of `spec`, the options of the layers of that name.

    Returns:
        A :class:`Builder`, called as :py:`(features, context=0) -> Flow`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> build = builder(["maf", "lu", "maf"], maf={"hidden_features": (16, 16)})
        >>> build
        builder(['maf', 'lu', 'maf'], maf={'hidden_features': (16, 16)})
        >>> flow = build(2, 3)
        >>> flow(torch.randn(3)).sample((4,)).shape
        torch.Size([4, 2])
    """

    return Builder(spec, **options)


# zuko's transformations under the short names of the registry, as compose calls them


def _masked(features: int, context: int, index: int, **kwargs) -> LazyTransform:
    if "order" not in kwargs and "adjacency" not in kwargs:
        kwargs["order"] = torch.arange(features).flip(0) if index % 2 else torch.arange(features)
    return MaskedAutoregressiveTransform(features, context, **kwargs)


def maf(features: int, context: int = 0, index: int = 0, **kwargs) -> LazyTransform:
    r"""Creates a masked autoregressive affine transformation (MAF's), its order
    ascending, or descending for an odd `index`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        index: The position among ordered layers (see :func:`compose`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.MaskedAutoregressiveTransform`.

    Example:
        >>> maf(3, index=1).order.tolist()
        [2, 1, 0]
    """

    return _masked(features, context, index, **kwargs)


def nsf(
    features: int,
    context: int = 0,
    index: int = 0,
    bins: int = 8,
    bound: float = BOUND,
    slope: float = 1e-3,
    **kwargs,
) -> LazyTransform:
    r"""Creates a masked autoregressive rational-quadratic spline transformation (NSF's),
    the identity outside :math:`[-B, B]`; its order alternates as in :func:`maf`.

    Arguments:
        bins: The number of bins :math:`K`.
        bound: The spline domain's bound :math:`B`.
        slope: The minimum slope of the splines.
        kwargs: The arguments of :func:`maf`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = nsf(2, bins=4)
        >>> t()(torch.tensor([6.0, -7.0]))
        tensor([ 6., -7.], grad_fn=<WhereBackward0>)
    """

    return _masked(features, context, index, **_spline(bins, bound, slope), **kwargs)


def naf(
    features: int, context: int = 0, index: int = 0, signal: int = 16, **kwargs
) -> LazyTransform:
    r"""Creates a masked autoregressive monotonic-network transformation (NAF's); its
    order alternates as in :func:`maf`. zuko's NAF puts a :func:`softclip` between two.

    Arguments:
        signal: The number of signal features of the monotonic network.
        kwargs: The arguments of :func:`maf`; `network`, a dict, goes to ``MNN``.

    Example:
        >>> type(naf(3)).__name__
        'MaskedAutoregressiveTransform'
    """

    univariate = MNN(signal=signal, stack=features, **kwargs.pop("network", {}))
    shapes = [(signal,)]
    return _masked(features, context, index, univariate=univariate, shapes=shapes, **kwargs)


def coupling(features: int, context: int = 0, index: int = 0, **kwargs) -> LazyTransform:
    r"""Creates an affine coupling transformation (RealNVP's), its checkered mask
    flipped for an odd `index`.

    Arguments:
        features: The number of features.
        context: The number of context features.
        index: The position among ordered layers (see :func:`compose`).
        kwargs: Keyword arguments passed to :class:`zuko.flows.GeneralCouplingTransform`.

    Example:
        >>> coupling(4, index=1).mask.tolist()
        [False, True, False, True]
    """

    kwargs.setdefault("mask", torch.arange(features) % 2 == index % 2)
    return GeneralCouplingTransform(features, context, **kwargs)


def softclip(features: int, bound: float = 11.0) -> LazyTransform:
    r"""Creates an elementwise soft clip :math:`x / (1 + |x / B|)` onto :math:`(-B, B)`,
    which zuko's NAF and SOSPF put between their transformations.

    Arguments:
        features: The number of features (unused: the map is elementwise).
        bound: The bound :math:`B`.

    Example:
        >>> softclip(3, bound=1.0)()(torch.tensor([1.0, -3.0]))
        tensor([ 0.5000, -0.7500])
    """

    return UnconditionalTransform(SoftclipTransform, bound=bound)
