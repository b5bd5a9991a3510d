r"""LU blocks in sbi's neural posterior and likelihood estimators.

sbi (https://github.com/sbi-dev/sbi) builds its zuko estimators from a name
(:py:`NPE(prior, density_estimator="zuko_nsf")`) or from a function of the training
batches, :py:`build(batch_theta, batch_x) -> ConditionalDensityEstimator`, which
:func:`sbi.neural_nets.posterior_nn` returns. :func:`posterior_nn` and
:func:`likelihood_nn` here return such functions for zuko-lu's hybrids and for sbi's
zuko flows with LU blocks interleaved:

* ``"lunsf"``, ``"lumaf"``, ``"lurealnvp"``: the flows of :class:`zuko_lu.LUNSF`,
  :class:`zuko_lu.LUMAF` and :class:`zuko_lu.LURealNVP`;
* any of sbi's zuko models (``"zuko_nsf"``, ``"zuko_maf"``, ``"zuko_nice"``,
  ``"zuko_ncsf"``, ``"zuko_sospf"``, ``"zuko_naf"``, ``"zuko_unaf"``, ``"zuko_gf"``,
  ``"zuko_bpf"``): sbi's own builder, then an LU block between each pair of its flow's
  transformations (see :func:`zuko_lu.interleave`); :py:`lu=False` gives sbi's
  estimator unchanged, the baseline of a comparison.

The estimator is sbi's: a :class:`sbi.neural_nets.estimators.ZukoFlow` built by sbi's
:func:`~sbi.neural_nets.net_builders.flow.build_zuko_flow` (the hybrids) or by sbi's
builder of the model, so sbi's z-scoring of :math:`\theta` (a first transformation of
the flow) and of :math:`x` (before the embedding net), its embedding net and its
shapes are kept, and the estimator trains, samples, evaluates, saves and loads as
sbi's own. The LU blocks sit between the flow's transformations; with
:py:`lu={"first": True}` one also sits between the z-scoring and the first one.

sbi's argument names mean what they mean in sbi: `hidden_features` (an integer :math:`h`
gives each transformation's hyper-network :math:`n` hidden layers of width :math:`h`,
:math:`n` = `num_transforms`, as sbi does), `num_transforms`, `num_bins` (the spline
flows' bins; sbi's default 10), `z_score_theta`, `z_score_x` and `embedding_net`.
Other keyword arguments go to the zuko flow (``randperm``, ``passes``,
``activation``, ...) or to sbi's builder (``x_dist``); a keyword that nothing takes,
or an option of sbi's nflows or mixture estimators (``tail_bound``,
``num_components``, ...), raises a :class:`ValueError` naming it when
:func:`posterior_nn` is called.

This module imports sbi, which is an optional dependency (``pip install
"zuko-lu[sbi]"``), when a function is called; nothing else in zuko-lu imports it.
"""

from __future__ import annotations

__all__ = [
    "HYBRIDS",
    "EstimatorBuilder",
    "build_estimator",
    "likelihood_nn",
    "posterior_nn",
]

import re

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from torch import Tensor

from .hybrids import BOUND, LU_CONTEXT, _spline, interleave
from .validation import kept_validation

if TYPE_CHECKING:  # pragma: no cover
    from sbi.neural_nets.estimators import ZukoFlow

#: zuko-lu's hybrids by sbi-style name, with the zuko flow each interleaves.
HYBRIDS = {"lumaf": "MAF", "lunsf": "NSF", "lurealnvp": "RealNVP"}

# options of sbi's nflows, MDN and mixed estimators, which its zuko builders drop
_NOT_ZUKO = {
    "num_components": "sbi's mixture density networks",
    "tail_bound": "sbi's nflows splines (zuko-lu's lunsf takes bound=)",
    "num_blocks": "sbi's nflows flows",
    "dropout_probability": "sbi's nflows flows",
    "use_batch_norm": "sbi's nflows flows",
    "hidden_layers_spline_context": "sbi's nflows flows",
    "tails": "sbi's nflows splines",
    "min_bin_width": "sbi's nflows splines",
    "min_bin_height": "sbi's nflows splines",
    "min_derivative": "sbi's nflows splines",
    "num_mixture_components": "sbi's MADE",
}


def _sbi() -> Any:
    # sbi's flow builders, imported with torch's argument validation kept (sbi imports zuko)
    with kept_validation():
        from sbi.neural_nets.net_builders import flow

    return flow


def _zuko_models() -> list[str]:
    with kept_validation():
        from sbi.neural_nets.factory import model_builders

    return sorted(name for name in model_builders if name.startswith("zuko_"))


def _check_model(model: str) -> None:
    choices = [*HYBRIDS, *_zuko_models()]
    if model not in choices:
        raise ValueError(f"model: expected one of {', '.join(choices)}, got {model!r}")


def _lu_options(model: str, lu: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    if isinstance(lu, Mapping):
        return dict(lu)
    if not isinstance(lu, bool):
        raise ValueError(f"lu: expected a bool or a mapping of LULinear options, got {lu!r}")
    if not lu and model in HYBRIDS:
        zuko = "zuko_" + HYBRIDS[model].lower()
        raise ValueError(f"lu: {model!r} has LU blocks by definition; for none use {zuko!r}")
    return {} if lu else None


def build_estimator(
    model: str,
    batch_x: Tensor,
    batch_y: Tensor,
    z_score_x: str | None = "independent",
    z_score_y: str | None = "independent",
    hidden_features: int | list[int] = 50,
    num_transforms: int = 5,
    embedding_net: nn.Module | None = None,
    num_bins: int = 10,
    lu: bool | Mapping[str, Any] = True,
    lu_context: bool = LU_CONTEXT,
    **kwargs,
) -> ZukoFlow:
    r"""Creates sbi's zuko estimator of :math:`p(x \mid y)` for a model, with LU blocks.

    The names and meanings of the arguments are those of sbi's builders
    (:func:`sbi.neural_nets.net_builders.build_zuko_nsf`, ...): :math:`x` is what the
    flow models (:math:`\theta` for a posterior), :math:`y` the condition (passed
    through the embedding net). :func:`posterior_nn` and :func:`likelihood_nn` call it.

    Arguments:
        model: ``"lunsf"``, ``"lumaf"``, ``"lurealnvp"``, or one of sbi's zuko models
            (``"zuko_nsf"``, ``"zuko_maf"``, ...).
        batch_x: A batch of :math:`x`, for the shapes and the z-scoring.
        batch_y: A batch of :math:`y`, likewise.
        z_score_x: sbi's z-scoring of :math:`x`: ``"independent"``, ``"structured"``,
            ``"transform_to_unconstrained"`` (with ``x_dist=``) or ``"none"``.
        z_score_y: sbi's z-scoring of :math:`y`, before the embedding net.
        hidden_features: The hidden widths of the flow's hyper-networks (an integer
            :math:`h` means :py:`[h] * num_transforms`, as in sbi).
        num_transforms: The number of the flow's transformations.
        embedding_net: The embedding net of :math:`y` (:class:`torch.nn.Identity` if
            :py:`None`).
        num_bins: The number of bins of spline flows (ignored by the others).
        lu: Whether LU blocks are interleaved (:py:`True`), or a mapping of
            :class:`zuko_lu.LULinear` options (`init`, `hidden_features`, ...) for them
            and of :func:`~zuko_lu.interleave`'s `first`.
        lu_context: Whether the LU blocks take the (embedded) condition; the default is
            :data:`zuko_lu.hybrids.LU_CONTEXT`, that of the hybrids.
        kwargs: Keyword arguments passed to sbi's builder and the zuko flow; for
            ``"lunsf"``, also `bound` and `slope` (see :class:`zuko_lu.LUNSF`).

    Returns:
        A :class:`sbi.neural_nets.estimators.ZukoFlow`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> theta, x = torch.randn(100, 2), torch.randn(100, 3)
        >>> estimator = build_estimator("lunsf", theta, x, num_transforms=2)
        >>> [type(t).__name__ for t in estimator.net.transform.transforms][::2]  # z-score
        ['UnconditionalTransform', 'LULinear']
        >>> estimator.log_prob(theta[:5].unsqueeze(0), x[:5]).shape
        torch.Size([1, 5])
    """

    _check_model(model)
    options = _lu_options(model, lu)
    if not isinstance(lu_context, bool):
        raise ValueError(f"lu_context: expected a bool, got {lu_context!r}")
    flow = _sbi()
    with kept_validation():
        from sbi.utils.nn_utils import get_numel
        from sbi.utils.sbiutils import z_score_parser

    embedding_net = nn.Identity() if embedding_net is None else embedding_net
    common = {
        "z_score_x": z_score_x,
        "z_score_y": z_score_y,
        "hidden_features": hidden_features,
        "num_transforms": num_transforms,
        "embedding_net": embedding_net,
    }

    if model == "lunsf":
        bound, slope = kwargs.pop("bound", BOUND), kwargs.pop("slope", 1e-3)
        spline = _spline(num_bins, bound, slope)
        estimator = flow.build_zuko_flow("MAF", batch_x, batch_y, **common, **spline, **kwargs)
    elif model in HYBRIDS:
        estimator = flow.build_zuko_flow(HYBRIDS[model], batch_x, batch_y, **common, **kwargs)
    else:
        builder = getattr(flow, f"build_{model}")
        estimator = builder(batch_x, batch_y, num_bins=num_bins, **common, **kwargs)

    if options is None:
        return estimator

    # sbi puts its z-scoring of x (or its map to an unconstrained space) first
    net = estimator.net
    transforms = list(net.transform.transforms)
    scaled = z_score_x == "transform_to_unconstrained" or z_score_parser(z_score_x)[0]
    head, body = transforms[: int(scaled)], transforms[int(scaled) :]
    if len(body) < 2 and not options.get("first"):
        raise ValueError(
            f"lu: {model!r} with num_transforms={num_transforms} has {len(body)} "
            "transformation(s), no place for an LU block"
        )

    features = get_numel(batch_x)
    context = get_numel(batch_y, embedding_net=embedding_net) if lu_context else 0
    body = interleave(net.__class__(body, net.base), features, context, inplace=True, **options)
    net.transform = type(net.transform)(*head, *body.transform.transforms)

    return estimator


def _check_kwargs(
    model: str, lu: bool | Mapping[str, Any], lu_context: bool, kwargs: dict[str, Any]
) -> None:
    # names that nothing takes raise here, not as a warning at training time
    for name in kwargs:
        if name in _NOT_ZUKO:
            raise ValueError(f"{name}: an option of {_NOT_ZUKO[name]}, not of {model!r}")

    # a dry build on a small batch finds the keywords that nothing takes
    dry = {k: v for k, v in kwargs.items() if k != "x_dist"}
    with torch.random.fork_rng(devices=[]):
        try:
            build_estimator(
                model,
                torch.zeros(4, 2),
                torch.zeros(4, 2),
                "none",
                "none",
                8,
                2,
                lu=lu,
                lu_context=lu_context,
                **dry,
            )
        except TypeError as error:
            found = re.search(r"unexpected keyword argument '(\w+)'", str(error))
            if found is None:
                raise
            name = found.group(1)
            where = "lu" if isinstance(lu, Mapping) and name in lu else name
            raise ValueError(
                f"{where}: unknown keyword argument {name!r} for {model!r} (not an "
                "option of sbi's builder, the zuko flow or zuko_lu.LULinear)"
            ) from None
        except Exception:  # another error depends on the real shapes: the build says
            pass


class EstimatorBuilder:
    r"""Creates the function that sbi's ``NPE`` (or ``NLE``) calls as
    :py:`build(batch_theta, batch_x)` to build its density estimator: it calls
    :func:`build_estimator` with :math:`\theta` as :math:`x` and the data as the
    condition (:py:`role="posterior"`), or the other way round
    (:py:`role="likelihood"`). It pickles when its options do.

    Arguments:
        model: The model (see :func:`build_estimator`).
        role: ``"posterior"`` or ``"likelihood"``.
        options: Keyword arguments of :func:`build_estimator`.
    """

    def __init__(self, model: str, role: str, **options: Any) -> None:
        if role not in ("posterior", "likelihood"):
            raise ValueError(f"role: expected 'posterior' or 'likelihood', got {role!r}")
        self.model = model
        self.role = role
        self.options = options

    def __call__(self, batch_theta: Tensor, batch_x: Tensor) -> ZukoFlow:
        if self.role == "posterior":
            return build_estimator(self.model, batch_theta, batch_x, **self.options)
        return build_estimator(self.model, batch_x, batch_theta, **self.options)

    def __repr__(self) -> str:
        options = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({self.model!r}, role={self.role!r}{options})"


def _nn(
    role: str,
    model: str,
    z_score_theta: str | None,
    z_score_x: str | None,
    hidden_features: int | list[int],
    num_transforms: int,
    num_bins: int,
    embedding_net: nn.Module | None,
    lu: bool | Mapping[str, Any],
    lu_context: bool,
    kwargs: dict[str, Any],
) -> EstimatorBuilder:
    _check_model(model)
    _lu_options(model, lu)
    _check_kwargs(model, lu, lu_context, kwargs)
    if embedding_net is not None:
        with kept_validation():
            from sbi.utils.nn_utils import check_net_device

        embedding_net = check_net_device(embedding_net, "cpu")

    # sbi's builders call what they model x and the condition y
    modelled, condition = (
        (z_score_theta, z_score_x) if role == "posterior" else (z_score_x, z_score_theta)
    )
    return EstimatorBuilder(
        model,
        role,
        z_score_x=modelled,
        z_score_y=condition,
        hidden_features=hidden_features,
        num_transforms=num_transforms,
        num_bins=num_bins,
        embedding_net=embedding_net,
        lu=lu,
        lu_context=lu_context,
        **kwargs,
    )


def posterior_nn(
    model: str,
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    hidden_features: int | list[int] = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    embedding_net: nn.Module | None = None,
    lu: bool | Mapping[str, Any] = True,
    lu_context: bool = LU_CONTEXT,
    **kwargs,
) -> EstimatorBuilder:
    r"""Returns the function that builds a posterior estimator :math:`q(\theta \mid x)`
    with LU blocks, for :py:`sbi.inference.NPE(prior, density_estimator=...)`; the
    counterpart of :func:`sbi.neural_nets.posterior_nn`, with the same arguments and
    defaults.

    Arguments:
        model: ``"lunsf"``, ``"lumaf"``, ``"lurealnvp"``, or one of sbi's zuko models
            (``"zuko_nsf"``, ``"zuko_maf"``, ...), whose flow gets LU blocks
            interleaved.
        z_score_theta: sbi's z-scoring of :math:`\theta`: ``"independent"``,
            ``"structured"``, ``"transform_to_unconstrained"`` (with ``x_dist=prior``)
            or ``"none"``.
        z_score_x: sbi's z-scoring of :math:`x`, before the embedding net.
        hidden_features: The hidden widths of the flow's hyper-networks (an integer
            :math:`h` means :py:`[h] * num_transforms`, as in sbi).
        num_transforms: The number of the flow's transformations.
        num_bins: The number of bins of spline flows.
        embedding_net: The embedding net of :math:`x`.
        lu: :py:`True`, :py:`False` (sbi's estimator unchanged; only for sbi's models)
            or a mapping of :class:`zuko_lu.LULinear` options for the LU blocks, and
            :func:`~zuko_lu.interleave`'s `first` (a block also between the z-scoring
            and the flow's first transformation).
        lu_context: Whether the LU blocks take the embedded :math:`x` (see
            :data:`zuko_lu.hybrids.LU_CONTEXT`).
        kwargs: Keyword arguments of the zuko flow (``randperm``, ``passes``, ...), of
            sbi's builder (``x_dist``) or, for ``"lunsf"``, `bound` and `slope`. An
            unknown one raises a :class:`ValueError` naming it.

    Returns:
        An :class:`EstimatorBuilder`, called by sbi as :py:`(batch_theta, batch_x)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> build = posterior_nn("lunsf", hidden_features=16, num_transforms=2)
        >>> theta, x = torch.rand(200, 2), torch.randn(200, 3)
        >>> estimator = build(theta, x)  # as NPE(prior, density_estimator=build) does
        >>> estimator.sample((10,), x[:4]).shape
        torch.Size([10, 4, 2])
        >>> estimator.log_prob(theta[:4].unsqueeze(0), x[:4]).shape
        torch.Size([1, 4])

    See :doc:`/api/sbi` for training with sbi's ``NPE``.
    """

    args = (hidden_features, num_transforms, num_bins, embedding_net, lu, lu_context, kwargs)
    return _nn("posterior", model, z_score_theta, z_score_x, *args)


def likelihood_nn(
    model: str,
    z_score_theta: str | None = "independent",
    z_score_x: str | None = "independent",
    hidden_features: int | list[int] = 50,
    num_transforms: int = 5,
    num_bins: int = 10,
    embedding_net: nn.Module | None = None,
    lu: bool | Mapping[str, Any] = True,
    lu_context: bool = LU_CONTEXT,
    **kwargs,
) -> EstimatorBuilder:
    r"""Returns the function that builds a likelihood estimator :math:`q(x \mid \theta)`
    with LU blocks, for :py:`sbi.inference.NLE(prior, density_estimator=...)`; the
    counterpart of :func:`sbi.neural_nets.likelihood_nn`. The arguments are those of
    :func:`posterior_nn`, the flow modelling :math:`x` (z-scored by `z_score_x`) given
    :math:`\theta` (z-scored by `z_score_theta`, then through `embedding_net`).

    Returns:
        An :class:`EstimatorBuilder`, called by sbi as :py:`(batch_theta, batch_x)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> build = likelihood_nn("zuko_maf", hidden_features=8, num_transforms=2)
        >>> estimator = build(torch.randn(50, 1), torch.randn(50, 3))
        >>> estimator.input_shape, estimator.condition_shape
        (torch.Size([3]), torch.Size([1]))
    """

    args = (hidden_features, num_transforms, num_bins, embedding_net, lu, lu_context, kwargs)
    return _nn("likelihood", model, z_score_theta, z_score_x, *args)
